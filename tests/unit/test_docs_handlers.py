"""The snippets of docs/worker.md's "Typed payloads", "Retrying only some failures" and
"Middleware" sections run: each is executed as written, then its registry, policy or queue is
put to work on the memory backend and what the docs say it does is checked."""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from pathlib import Path
from typing import Any

import pytest

from amqp1q import Job, JobQueue, Outcome, Registry
from amqp1q.worker import WorkerConfig, run_worker

pytestmark = pytest.mark.anyio

DOC = Path(__file__).parents[2] / "docs" / "worker.md"


def _blocks(section: str, language: str = "python") -> list[tuple[int, str]]:
    """The ``language`` blocks under the ``## section`` heading, with their line numbers."""
    text = DOC.read_text()
    start = text.index(f"\n## {section}\n")
    end = text.find("\n## ", start + 1)
    body = text[start : end if end >= 0 else len(text)]
    first = text[:start].count("\n") + 1
    return [
        (first + body[: match.start()].count("\n") + 1, match.group(1))
        for match in re.finditer(rf"```{language}\n(.*?)```", body, re.S)
    ]


def _run(section: str, index: int) -> dict[str, Any]:
    line, code = _blocks(section)[index]
    namespace: dict[str, Any] = {"__name__": f"docs_worker_{index}"}
    exec(compile(code, f"{DOC}:{line}", "exec"), namespace)
    return namespace


def test_the_sections_have_the_snippets_these_tests_run() -> None:
    assert len(_blocks("Typed payloads")) == 1
    assert len(_blocks("Retrying only some failures")) == 1
    assert len(_blocks("Middleware")) == 3


async def _work(registry: Registry, *jobs: Job, **queue_options: Any) -> JobQueue:
    """Run ``jobs`` through a worker on a fresh memory queue until each is settled."""
    url = f"memory://{uuid.uuid4().hex}/docs"
    queue = JobQueue.from_url(url, **queue_options)
    await queue.open()
    await queue.push_many(jobs)
    stop = asyncio.Event()
    worker = asyncio.create_task(run_worker(registry, queue, stop=stop))
    for _ in range(500):
        stats = queue.stats()
        if stats.acked + stats.rejected + stats.retried >= len(jobs):
            break
        await asyncio.sleep(0.01)
    stop.set()
    assert await asyncio.wait_for(worker, 10) == 0
    return queue


async def _dead(queue: JobQueue) -> list[Any]:
    async with JobQueue.from_url(queue.url) as again, again.dead_letter_queue() as dlq:
        async with dlq.consume() as consumer:
            got = []
            while (job := await consumer.receive(timeout=0.2)) is not None:
                await job.ack()
                got.append(job)
    return got


async def test_typed_payloads(capsys: pytest.CaptureFixture[str]) -> None:
    ns = _run("Typed payloads", 0)
    job: Job = ns["job"]
    assert job.body == b'{"to":"a@b.c","subject":"Welcome","body":""}'
    bad = Job("send_email", {"subject": 1})
    queue = await _work(ns["registry"], job, bad)
    assert capsys.readouterr().out == "to a@b.c: Welcome\n"
    [letter] = await _dead(queue)
    assert letter.dead_letter_reason == "invalid payload"
    assert letter.dead_letter_description == (
        "the payload is not a valid Email: to: missing; subject: expected str, got int"
    )


async def test_retrying_only_some_failures() -> None:
    ns = _run("Retrying only some failures", 0)
    queue: JobQueue = ns["queue"]
    assert queue.retry_policy is ns["policy"]
    failures = {
        "reset": ConnectionResetError("reset"),
        "refused": ConnectionRefusedError(111, "refused"),
        "missing": KeyError("user_id"),
    }
    async with queue:
        await queue.push_many([Job(name) for name in failures])
        async with queue.consume() as consumer:
            outcomes = {}
            for _ in failures:
                received = await consumer.receive(timeout=5)
                assert received is not None
                async with received.process():
                    raise failures[received.name]
                outcomes[received.name] = received.outcome
    assert outcomes == {
        "reset": Outcome.RETRY,
        "refused": Outcome.REJECT,
        "missing": Outcome.REJECT,
    }
    letters = {letter.name: letter for letter in await _dead(queue)}
    assert {letter.dead_letter_reason for letter in letters.values()} == {"not retried"}
    assert letters["refused"].dead_letter_description == (
        "ConnectionRefusedError is in dead_letter_on: ConnectionRefusedError: [Errno 111] refused"
    )
    assert letters["missing"].dead_letter_description == (
        "KeyError is not in retry_on: KeyError: 'user_id'"
    )


def test_the_config_files_retry_table_names_exceptions(tmp_path: Path) -> None:
    [(_, text)] = _blocks("Configuration file", "toml")
    path = tmp_path / "worker.toml"
    path.write_text(text)
    policy = WorkerConfig.load(path).retry
    assert policy is not None
    assert policy.retry_on == (ConnectionError, TimeoutError)
    assert policy.dead_letter_on == (ConnectionRefusedError,)


async def test_logging_middleware(caplog: pytest.LogCaptureFixture) -> None:
    ns = _run("Middleware", 0)
    registry: Registry = ns["registry"]

    @registry.handler("ok")
    async def ok(job: Any) -> None:
        pass

    @registry.handler("boom")
    async def boom(job: Any) -> None:
        raise RuntimeError("boom")

    good, bad = Job("ok"), Job("boom")
    with caplog.at_level(logging.INFO, "myapp.jobs"):
        await _work(registry, good, bad)
    lines = sorted(r.getMessage() for r in caplog.records if r.name == "myapp.jobs")
    assert lines == sorted(
        [
            f"job {good.id} (ok) attempt 1 started",
            f"job {good.id}: ack",
            f"job {bad.id} (boom) attempt 1 started",
            f"job {bad.id}: retry after RuntimeError('boom')",
        ]
    )


async def test_timing_middleware() -> None:
    ns = _run("Middleware", 1)
    registry: Registry = ns["registry"]

    @registry.handler("nap")
    async def nap(job: Any) -> None:
        await asyncio.sleep(0.05)

    await _work(registry, Job("nap"), Job("nap"), Job("mystery"))
    assert len(ns["durations"]["nap"]) == 2
    assert min(ns["durations"]["nap"]) >= 0.05
    assert ns["outcomes"] == {("nap", "ack"): 2, ("mystery", "reject"): 1}


async def test_idempotency_key_middleware() -> None:
    ns = _run("Middleware", 2)
    registry: Registry = ns["registry"]
    ran: list[str] = []

    @registry.handler("charge")
    async def charge(job: Any) -> None:
        ran.append(job.headers.get("idempotency-key", job.id))

    first = Job("charge", headers={"idempotency-key": "order-1"})
    again = Job("charge", headers={"idempotency-key": "order-1"})
    other = Job("charge")
    queue = await _work(registry, first)
    await _work(registry, again, other)
    assert ran == ["order-1", other.id]
    assert ns["done"] == {"order-1", other.id}
    assert queue.stats().acked == 1
