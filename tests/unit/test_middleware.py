"""Middleware around every job a worker runs (memory backend): order, outcomes, and what happens
when a middleware raises, skips the handler, or is cancelled — never a lost job."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from typing import Any

import attrs
import pytest

from amqp1q import (
    CallNext,
    Handled,
    InvalidSetting,
    Job,
    JobQueue,
    Outcome,
    PayloadValidationError,
    ReceivedJob,
    Registry,
    RetryPolicy,
)
from amqp1q.integrations import JobService
from amqp1q.worker import NO_HANDLER, run_worker

pytestmark = pytest.mark.anyio


@attrs.frozen
class Greeting:
    name: str


class _Worker:
    """A memory queue, jobs pushed to it, and ``run_worker`` on it until told to stop."""

    def __init__(self, registry: Registry, **queue_options: Any) -> None:
        self.registry = registry
        self.url = f"memory://{uuid.uuid4().hex}/jobs"
        self.queue = JobQueue.from_url(self.url, **queue_options)
        self.stop = asyncio.Event()
        self.task: asyncio.Task[int] | None = None

    async def run(self, *jobs: Job, until: Callable[[], bool], **options: Any) -> None:
        await self.queue.open()
        await self.queue.push_many(jobs)
        self.task = asyncio.create_task(
            run_worker(self.registry, self.queue, stop=self.stop, **options)
        )
        for _ in range(500):
            if until():
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("the condition did not come true within 5 s")
        self.stop.set()
        assert await asyncio.wait_for(self.task, 10) == 0

    async def dead_letters(self) -> list[ReceivedJob]:
        async with JobQueue.from_url(self.url) as queue, queue.dead_letter_queue() as dlq:
            async with dlq.consume(prefetch=50) as consumer:
                got = []
                while (job := await consumer.receive(timeout=0.2)) is not None:
                    await job.ack()
                    got.append(job)
        return got

    async def left(self) -> list[ReceivedJob]:
        async with JobQueue.from_url(self.url) as queue, queue.consume(prefetch=50) as consumer:
            got = []
            while (job := await consumer.receive(timeout=0.2)) is not None:
                await job.ack()
                got.append(job)
        return got


def _recorder(name: str, log: list[str], results: dict[str, Handled] | None = None) -> Any:
    async def middleware(job: ReceivedJob, call_next: CallNext) -> None:
        log.append(f"{name} before {job.name}")
        handled = await call_next()
        log.append(f"{name} after {job.name}: {handled.outcome.value}")
        if results is not None:
            results[job.name] = handled

    middleware.__qualname__ = name
    return middleware


# -- order and outcomes -------------------------------------------------------------------------


async def test_first_registered_is_outermost_and_service_middleware_wraps_the_registry() -> None:
    log: list[str] = []
    registry = Registry(middleware=[_recorder("r1", log)])
    registry.add_middleware(_recorder("r2", log))

    @registry.handler("hello")
    async def hello(job: ReceivedJob) -> None:
        log.append("handler")

    service = JobService(middleware=[_recorder("s1", log)])
    service.add_middleware(_recorder("s2", log))
    assert [m.__qualname__ for m in registry.middleware] == ["r1", "r2"]
    assert [m.__qualname__ for m in service.middleware] == ["s1", "s2"]
    url = f"memory://{uuid.uuid4().hex}/jobs"
    service.add_queue("jobs", JobQueue.from_url(url))
    service.add_worker("jobs", registry)
    async with service.running():
        await service.get("jobs").push(Job("hello"))
        for _ in range(500):
            if len(log) == 9:
                break
            await asyncio.sleep(0.01)
    assert log == [
        "s1 before hello",
        "s2 before hello",
        "r1 before hello",
        "r2 before hello",
        "handler",
        "r2 after hello: ack",
        "r1 after hello: ack",
        "s2 after hello: ack",
        "s1 after hello: ack",
    ]


async def test_middleware_sees_every_outcome_and_the_handlers_error() -> None:
    log: list[str] = []
    results: dict[str, Handled] = {}
    registry = Registry(middleware=[_recorder("seen", log, results)])

    @registry.handler("ok")
    async def ok(job: ReceivedJob) -> None:
        pass

    @registry.handler("flaky")
    async def flaky(job: ReceivedJob) -> None:
        raise ConnectionResetError("try again")

    @registry.handler("bad")
    async def bad(job: ReceivedJob) -> None:
        raise ValueError("cannot work with this")

    @registry.handler("later")
    async def later(job: ReceivedJob) -> None:
        await job.release()

    @registry.handler("greet")
    async def greet(job: ReceivedJob, payload: Greeting) -> None:
        pass

    worker = _Worker(registry, retry=RetryPolicy(initial_delay=60, dead_letter_on=(ValueError,)))
    jobs = [Job(name) for name in ("ok", "flaky", "bad", "greet", "mystery")]
    await worker.run(*jobs, until=lambda: len(results) == 5)
    assert results["ok"] == Handled(Outcome.ACK)
    assert results["flaky"].outcome is Outcome.RETRY
    assert isinstance(results["flaky"].error, ConnectionResetError)
    assert results["bad"].outcome is Outcome.REJECT
    assert isinstance(results["bad"].error, ValueError)
    assert results["greet"].outcome is Outcome.REJECT
    assert isinstance(results["greet"].error, PayloadValidationError)
    assert results["mystery"] == Handled(Outcome.REJECT)  # no handler: around every job
    reasons = {job.name: job.dead_letter_reason for job in await worker.dead_letters()}
    assert reasons == {"bad": "not retried", "greet": "invalid payload", "mystery": NO_HANDLER}

    released = _Worker(registry)
    results.clear()
    await released.run(Job("later"), until=lambda: "later" in results)
    assert results["later"] == Handled(Outcome.RELEASE)


async def test_a_timeout_is_the_handlers_error() -> None:
    results: dict[str, Handled] = {}
    registry = Registry(middleware=[_recorder("seen", [], results)])

    @registry.handler("slow")
    async def slow(job: ReceivedJob) -> None:
        await asyncio.sleep(10)

    worker = _Worker(registry, retry=RetryPolicy(max_attempts=1))
    await worker.run(Job("slow"), until=lambda: "slow" in results, job_timeout=0.05)
    assert results["slow"].outcome is Outcome.REJECT
    assert isinstance(results["slow"].error, TimeoutError)


# -- middleware that fails ----------------------------------------------------------------------


async def test_middleware_raising_before_the_handler_fails_the_job_by_the_policy() -> None:
    ran: list[str] = []
    results: list[Handled] = []

    async def outer(job: ReceivedJob, call_next: CallNext) -> None:
        results.append(await call_next())

    async def auth(job: ReceivedJob, call_next: CallNext) -> None:
        if job.headers.get("token") != "s3cret":
            raise PermissionError("bad token")
        await call_next()

    registry = Registry(middleware=[outer, auth])

    @registry.handler("work")
    async def work(job: ReceivedJob) -> None:
        ran.append(job.id)

    policy = RetryPolicy(dead_letter_on=(PermissionError,))
    worker = _Worker(registry, retry=policy)
    good = Job("work", headers={"token": "s3cret"})
    await worker.run(good, Job("work"), until=lambda: len(results) == 2)
    assert ran == [good.id]
    assert sorted(handled.outcome.value for handled in results) == ["ack", "reject"]
    assert {type(handled.error) for handled in results} == {type(None), PermissionError}
    [letter] = await worker.dead_letters()
    assert letter.dead_letter_reason == "not retried"
    assert letter.dead_letter_description == (
        "PermissionError is in dead_letter_on: PermissionError: bad token"
    )


async def test_middleware_raising_before_the_handler_is_retried_by_default() -> None:
    seen: list[Handled] = []

    async def flaky(job: ReceivedJob, call_next: CallNext) -> None:
        raise ConnectionError("the idempotency store is down")

    async def outer(job: ReceivedJob, call_next: CallNext) -> None:
        seen.append(await call_next())

    registry = Registry(middleware=[outer, flaky])

    @registry.handler("work")
    async def work(job: ReceivedJob) -> None:
        raise AssertionError("never runs")

    worker = _Worker(registry, retry=RetryPolicy(initial_delay=60))
    await worker.run(Job("work"), until=lambda: len(seen) == 1)
    assert seen[0].outcome is Outcome.RETRY
    assert isinstance(seen[0].error, ConnectionError)
    assert worker.queue.stats().retried == 1


async def test_middleware_raising_after_the_job_is_settled_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    results: dict[str, Handled] = {}

    async def broken_metrics(job: ReceivedJob, call_next: CallNext) -> None:
        await call_next()
        raise RuntimeError("metrics backend down")

    registry = Registry(middleware=[_recorder("outer", [], results), broken_metrics])

    @registry.handler("work")
    async def work(job: ReceivedJob) -> None:
        pass

    worker = _Worker(registry)
    with caplog.at_level(logging.WARNING, "amqp1q.worker"):
        await worker.run(Job("work"), until=lambda: "work" in results)
    assert results["work"] == Handled(Outcome.ACK)
    assert worker.queue.stats().acked == 1
    assert "broken_metrics failed after job" in caplog.text


async def test_middleware_may_settle_the_job_and_skip_the_handler() -> None:
    results: dict[str, Handled] = {}
    ran: list[int] = []

    async def dedupe(job: ReceivedJob, call_next: CallNext) -> None:
        if job.payload == 1:
            await job.ack()  # a duplicate: done already
            return
        await call_next()

    registry = Registry(middleware=[_recorder("outer", [], results), dedupe])

    @registry.handler("work")
    async def work(job: ReceivedJob) -> None:
        ran.append(job.payload)

    worker = _Worker(registry)
    await worker.run(Job("work", 1), until=lambda: "work" in results)
    assert results["work"] == Handled(Outcome.ACK)
    assert ran == []


async def test_middleware_returning_without_call_next_dead_letters_the_job() -> None:
    results: dict[str, Handled] = {}

    async def forgetful(job: ReceivedJob, call_next: CallNext) -> None:
        return

    registry = Registry(middleware=[_recorder("outer", [], results), forgetful])

    @registry.handler("work")
    async def work(job: ReceivedJob) -> None:
        raise AssertionError("never runs")

    worker = _Worker(registry)
    await worker.run(Job("work"), until=lambda: "work" in results)
    assert results["work"] == Handled(Outcome.REJECT)
    [letter] = await worker.dead_letters()
    assert letter.dead_letter_reason == "not handled"
    assert "forgetful returned without calling call_next()" in (
        letter.dead_letter_description or ""
    )


async def test_call_next_runs_the_handler_once() -> None:
    ran: list[str] = []
    errors: list[BaseException] = []

    async def twice(job: ReceivedJob, call_next: CallNext) -> None:
        await call_next()
        try:
            await call_next()
        except RuntimeError as exc:
            errors.append(exc)

    registry = Registry(middleware=[twice])

    @registry.handler("work")
    async def work(job: ReceivedJob) -> None:
        ran.append(job.id)

    worker = _Worker(registry)
    await worker.run(Job("work"), until=lambda: bool(errors))
    assert len(ran) == 1
    assert "call_next() was already called" in str(errors[0])


async def test_cancelled_middleware_releases_the_job() -> None:
    started = asyncio.Event()
    finished: list[str] = []

    async def stuck(job: ReceivedJob, call_next: CallNext) -> None:
        started.set()
        try:
            await asyncio.sleep(3600)
        finally:
            finished.append("cleanup")

    registry = Registry(middleware=[stuck])

    @registry.handler("work")
    async def work(job: ReceivedJob) -> None:
        raise AssertionError("never runs")

    worker = _Worker(registry)
    pushed = Job("work")
    await worker.run(pushed, until=started.is_set, grace=0)
    assert finished == ["cleanup"]
    [back] = await worker.left()
    assert (back.id, back.attempt) == (pushed.id, 1)  # released: no attempt counted


async def test_cancelled_handler_reaches_middleware_as_cancellation() -> None:
    started = asyncio.Event()
    seen: list[str] = []

    async def watch(job: ReceivedJob, call_next: CallNext) -> None:
        try:
            await call_next()
        except asyncio.CancelledError:
            seen.append(f"cancelled, {job.outcome and job.outcome.value}")
            raise

    registry = Registry(middleware=[watch])

    @registry.handler("work")
    async def work(job: ReceivedJob) -> None:
        started.set()
        await asyncio.sleep(3600)

    worker = _Worker(registry)
    await worker.run(Job("work"), until=started.is_set, grace=0)
    assert seen == ["cancelled, release"]
    assert len(await worker.left()) == 1


# -- registration -------------------------------------------------------------------------------


def _sync(job: ReceivedJob, call_next: CallNext) -> None: ...


async def _one_argument(job: ReceivedJob) -> None: ...


async def _fine(job: ReceivedJob, call_next: CallNext) -> None: ...


@pytest.mark.parametrize(
    ("middleware", "message"),
    [
        (_fine, r"middleware must be a list of middleware, like \[log_jobs\]"),
        ("log_jobs", r"must be a list of middleware"),
        ([42], r"a middleware must be callable, got 42"),
        ([_sync], r"a middleware must be async \(async def\), got _sync"),
        ([_one_argument], r"a middleware takes \(job, call_next\); _one_argument does not"),
    ],
)
def test_bad_middleware_is_refused_when_registered(middleware: Any, message: str) -> None:
    with pytest.raises(InvalidSetting, match=message):
        Registry(middleware=middleware)
    with pytest.raises(InvalidSetting, match=message):
        JobService(middleware=middleware)


def test_add_middleware_is_a_decorator_and_checks_too() -> None:
    registry = Registry()
    assert registry.add_middleware(_fine) is _fine
    assert registry.middleware == (_fine,)
    with pytest.raises(InvalidSetting, match="must be async"):
        registry.add_middleware(_sync)  # type: ignore[arg-type]
    assert registry.middleware == (_fine,)


async def test_service_middleware_is_added_before_it_starts() -> None:
    service = JobService()
    async with service.running():
        with pytest.raises(InvalidSetting, match="before the service starts"):
            service.add_middleware(_fine)
