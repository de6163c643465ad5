"""Typed payloads, retry_on/dead_letter_on and middleware through the worker, on the embedded
broker: in-process with ``run_worker`` and ``JobService``, and ``amqp1q worker`` in a subprocess."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path
from typing import TypedDict

import attrs
import pydantic
import pytest

from amqp1q import CallNext, Job, JobQueue, ReceivedJob, Registry, RetryPolicy
from amqp1q.integrations import JobService
from amqp1q.testing import Broker

from .test_worker import QUEUE, _dead_letters, _push, _Running, _sigterm_once, _start, _until

pytestmark = pytest.mark.anyio


@attrs.frozen
class Email:
    to: str
    subject: str = ""


@dataclasses.dataclass
class Resize:
    width: int
    height: int


class Ping(TypedDict):
    seq: int


class Signup(pydantic.BaseModel):
    email: str
    plan: str = "free"


async def test_typed_handlers_get_built_payloads_and_bad_ones_are_dead_lettered_at_once() -> None:
    got: list[object] = []
    registry = Registry()

    @registry.handler("email")
    async def email(job: ReceivedJob, payload: Email) -> None:
        got.append(payload)

    @registry.handler("resize")
    async def resize(job: ReceivedJob, payload: Resize) -> None:
        got.append(payload)

    @registry.handler("ping")
    async def ping(job: ReceivedJob, payload: Ping) -> None:
        got.append(payload)

    @registry.handler("signup")
    async def signup(job: ReceivedJob, payload: Signup) -> None:
        got.append(payload)

    good = [
        Job("email", Email("a@b.c", "hi")),
        Job("resize", Resize(640, 480)),
        Job("ping", Ping(seq=3)),
        Job("signup", Signup(email="x@y.z", plan="pro")),
    ]
    bad = [
        Job("email", {"subject": 1}),
        Job("resize", {"width": "640", "height": 480}),
        Job("ping", {"seq": None}),
        Job("signup", {"plan": "pro"}),
    ]
    async with Broker() as broker:
        url = f"{broker.url}/{QUEUE}"
        await _push(url, *good, *bad)
        worker = _Running(registry, JobQueue.from_url(url, retry=RetryPolicy(max_attempts=5)))
        dead = await _dead_letters(url, len(bad))
        await _until(lambda: len(got) == len(good))
        assert await worker.finish() == 0
        assert len(broker.queue(QUEUE)) == 0
    assert got == [job.payload for job in good]
    by_name = {letter.name: letter for letter in dead}
    assert {letter.attempt for letter in dead} == {1}  # never retried
    assert {letter.dead_letter_reason for letter in dead} == {"invalid payload"}
    assert by_name["email"].dead_letter_description == (
        "the payload is not a valid Email: to: missing; subject: expected str, got int"
    )
    assert by_name["resize"].dead_letter_description == (
        "the payload is not a valid Resize: width: expected int, got str"
    )
    assert by_name["ping"].dead_letter_description == (
        "the payload is not a valid Ping: seq: expected int, got null"
    )
    assert by_name["signup"].dead_letter_description == (
        "the payload is not a valid Signup: email: Field required"
    )


async def test_job_service_runs_middleware_and_the_retry_policy_on_the_embedded_broker() -> None:
    log: list[str] = []
    registry = Registry()

    @registry.add_middleware
    async def inner(job: ReceivedJob, call_next: CallNext) -> None:
        handled = await call_next()
        log.append(f"inner {job.name} attempt {job.attempt}: {handled.outcome.value}")

    @registry.handler("flaky")
    async def flaky(job: ReceivedJob) -> None:
        if job.attempt == 1:
            raise TimeoutError("slow upstream")

    @registry.handler("broken")
    async def broken(job: ReceivedJob) -> None:
        raise KeyError("user_id")

    async def outer(job: ReceivedJob, call_next: CallNext) -> None:
        handled = await call_next()
        error = type(handled.error).__name__ if handled.error else "-"
        log.append(f"outer {job.name} attempt {job.attempt}: {handled.outcome.value} {error}")

    policy = RetryPolicy(initial_delay=0, retry_on=(TimeoutError, ConnectionError))
    async with Broker() as broker:
        url = f"{broker.url}/{QUEUE}"
        service = JobService(middleware=[outer], grace=5)
        service.add_queue("jobs", JobQueue.from_url(url, retry=policy))
        service.add_worker("jobs", registry)
        async with service.running():
            await service.get("jobs").push_many([Job("flaky"), Job("broken")])
            await _until(lambda: len(log) == 6)
        [letter] = await _dead_letters(url, 1)
    assert sorted(log) == [
        "inner broken attempt 1: reject",
        "inner flaky attempt 1: retry",
        "inner flaky attempt 2: ack",
        "outer broken attempt 1: reject KeyError",
        "outer flaky attempt 1: retry TimeoutError",
        "outer flaky attempt 2: ack -",
    ]
    assert (letter.name, letter.dead_letter_reason) == ("broken", "not retried")
    assert letter.dead_letter_description == "KeyError is not in retry_on: KeyError: 'user_id'"


_MODULE = """
import pathlib

import attrs

from amqp1q import Registry

HERE = pathlib.Path(__file__).parent


def note(line):
    with (HERE / "log.txt").open("a") as out:
        out.write(line + "\\n")


async def timing(job, call_next):
    note(f"before {job.name}")
    handled = await call_next()
    note(f"after {job.name}: {handled.outcome.value}")


registry = Registry(middleware=[timing])


@attrs.frozen
class Email:
    to: str


@registry.handler("email")
async def email(job, payload: Email):
    note(f"email to {payload.to}")
"""


async def test_cli_worker_runs_the_registrys_middleware_and_typed_handlers(tmp_path: Path) -> None:
    (tmp_path / "hk_jobs.py").write_text(textwrap.dedent(_MODULE))
    log = tmp_path / "log.txt"

    def lines() -> list[str]:
        return log.read_text().splitlines() if log.exists() else []

    async with Broker() as broker:
        url = f"{broker.url}/{QUEUE}"
        await _push(url, Job("email", {"to": "a@b.c"}), Job("email", {"to": 5}))
        process = await _start(tmp_path, "hk_jobs:registry", "--url", url)
        code, err = await _sigterm_once(process, lambda: len(lines()) == 5, 15)
        assert code == 0, err
        [letter] = await _dead_letters(url, 1)
    assert sorted(lines()) == sorted(
        [
            "before email",
            "email to a@b.c",
            "after email: ack",
            "before email",
            "after email: reject",
        ]
    )
    assert letter.dead_letter_description == (
        "the payload is not a valid Email: to: expected str, got int"
    )
