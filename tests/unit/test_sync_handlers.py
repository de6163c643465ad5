"""Sync (``def``) handlers in the worker: run in threads, once per attempt, bounded, never on
the loop. On memory:// queues (the worker is the same over every backend)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Callable

import anyio.from_thread
import pytest

from amqp1q import Job, JobQueue, ReceivedJob, Registry, RetryPolicy
from amqp1q._sync_handlers import ThreadedHandlers, is_async_handler
from amqp1q.worker import run_worker

pytestmark = pytest.mark.anyio


def _url() -> str:
    return f"memory://sync-{uuid.uuid4().hex[:8]}/jobs"


async def _push(url: str, *jobs: Job) -> None:
    async with JobQueue.from_url(url) as queue:
        await queue.push_many(jobs)


async def _until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout:g} s")
        await asyncio.sleep(0.01)


async def _left(url: str) -> tuple[list[ReceivedJob], list[ReceivedJob]]:
    """What is left: (jobs on the queue, dead-lettered jobs), each acked as read."""
    found: tuple[list[ReceivedJob], list[ReceivedJob]] = ([], [])
    async with JobQueue.from_url(url) as queue:
        for index, source in enumerate((queue, queue.dead_letter_queue())):
            if source is not queue:
                await source.open()
            async with source.consume() as consumer:
                while (job := await consumer.receive(timeout=0.1)) is not None:
                    await job.ack()
                    found[index].append(job)
            if source is not queue:
                await source.close()
    return found


class _Worker:
    def __init__(self, registry: Registry, url: str, **options: object) -> None:
        retry = RetryPolicy(max_attempts=3, initial_delay=0)
        self.stop = asyncio.Event()
        self.task = asyncio.ensure_future(
            run_worker(registry, JobQueue.from_url(url, retry=retry), stop=self.stop, **options)  # type: ignore[arg-type]
        )

    async def finish(self) -> int:
        self.stop.set()
        return await asyncio.wait_for(self.task, 10)


async def test_a_sync_handler_runs_once_in_a_thread_and_its_job_is_acked() -> None:
    """Issue 19: a `def` handler ran, then failed with TypeError and was retried: the email
    went out once per attempt (5 times)."""
    sent: list[tuple[object, int]] = []
    registry = Registry()

    @registry.handler("send_email")
    def send_email(job: ReceivedJob) -> None:
        sent.append((job.payload, threading.get_ident()))

    url = _url()
    await _push(url, Job("send_email", {"to": "a@b.c"}))
    worker = _Worker(registry, url)
    await _until(lambda: len(sent) == 1)
    await asyncio.sleep(0.1)  # a retry, if there were one, would come at once (initial_delay 0)
    assert await worker.finish() == 0
    assert [payload for payload, _ in sent] == [{"to": "a@b.c"}]
    assert sent[0][1] != threading.get_ident()  # not the event loop's thread
    assert await _left(url) == ([], [])


async def test_a_failing_sync_handler_runs_once_per_attempt_then_is_dead_lettered() -> None:
    attempts: list[int] = []
    registry = Registry()

    @registry.handler("flaky")
    def flaky(job: ReceivedJob) -> None:
        attempts.append(job.attempt)
        raise ConnectionError("smtp down")

    url = _url()
    await _push(url, Job("flaky"))
    worker = _Worker(registry, url)
    await _until(lambda: len(attempts) == 3)
    assert await worker.finish() == 0
    assert attempts == [1, 2, 3]
    ready, dead = await _left(url)
    assert ready == []
    assert [job.dead_letter_reason for job in dead] == ["max attempts exceeded"]
    assert "ConnectionError: smtp down" in (dead[0].dead_letter_description or "")


async def test_a_blocking_sync_handler_leaves_the_loop_free() -> None:
    """While a sync handler blocks for 1 s, an async job on the same worker completes."""
    finished: list[tuple[str, float]] = []
    started = time.monotonic()
    registry = Registry()

    @registry.handler("blocking")
    def blocking(job: ReceivedJob) -> None:
        time.sleep(1.0)
        finished.append(("blocking", time.monotonic() - started))

    @registry.handler("quick")
    async def quick(job: ReceivedJob) -> None:
        finished.append(("quick", time.monotonic() - started))

    url = _url()
    worker = _Worker(registry, url, concurrency=2)
    await _push(url, Job("blocking"))
    await asyncio.sleep(0.2)
    await _push(url, Job("quick"))
    await _until(lambda: len(finished) == 2)
    assert await worker.finish() == 0
    assert [name for name, _ in finished] == ["quick", "blocking"]
    assert finished[0][1] < 0.9


async def test_threads_are_bounded_by_the_worker_concurrency() -> None:
    lock = threading.Lock()
    running = peak = done = 0
    registry = Registry()

    @registry.handler("work")
    def work(job: ReceivedJob) -> None:
        nonlocal running, peak, done
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.1)
        with lock:
            running -= 1
            done += 1

    url = _url()
    await _push(url, *(Job("work", n) for n in range(12)))
    worker = _Worker(registry, url, concurrency=3, prefetch=12)
    await _until(lambda: done == 12)
    assert await worker.finish() == 0
    assert peak == 3


async def test_past_the_job_timeout_a_sync_handler_runs_on_and_its_outcome_stands(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A thread cannot be stopped: a warning names the job, and the job is settled by how the
    handler ends (here: it returns, so it is acked, not retried)."""
    calls: list[int] = []
    registry = Registry()

    @registry.handler("slow")
    def slow(job: ReceivedJob) -> None:
        time.sleep(0.5)
        calls.append(job.attempt)

    url = _url()
    await _push(url, Job("slow", id="slow-1"))
    with caplog.at_level(logging.WARNING, logger="amqp1q.worker"):
        worker = _Worker(registry, url, job_timeout=0.1)
        await _until(lambda: len(calls) == 1)
        await asyncio.sleep(0.1)
        assert await worker.finish() == 0
    assert calls == [1]
    assert await _left(url) == ([], [])
    [warning] = [r.getMessage() for r in caplog.records if "job timeout" in r.getMessage()]
    assert "job slow-1 ('slow')" in warning
    assert "past its 0.1 s job timeout" in warning


async def test_cancelled_past_the_grace_a_sync_handler_job_is_released(
    caplog: pytest.LogCaptureFixture,
) -> None:
    release = threading.Event()
    ran: list[str] = []
    registry = Registry()

    @registry.handler("stuck")
    def stuck(job: ReceivedJob) -> None:
        ran.append("started")
        release.wait(10)
        ran.append("ended")

    url = _url()
    await _push(url, Job("stuck", id="stuck-1"))
    with caplog.at_level(logging.INFO, logger="amqp1q.worker"):
        worker = _Worker(registry, url, grace=0.1)
        await _until(lambda: ran == ["started"])
        assert await worker.finish() == 0  # did not wait for the thread
        assert ran == ["started"]
        release.set()
        await _until(lambda: ran == ["started", "ended"])
        await _until(lambda: any("has ended" in r.getMessage() for r in caplog.records))
    ready, dead = await _left(url)
    assert [(job.id, job.attempt) for job in ready] == [("stuck-1", 1)]  # released, no attempt
    assert dead == []
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "sync handler for job stuck-1 ('stuck') was cancelled" in messages


async def test_a_sync_call_cancelled_before_its_thread_starts_never_runs() -> None:
    gate = threading.Event()
    ran: list[str] = []
    threads = ThreadedHandlers(1)
    url = _url()
    await _push(url, Job("a", id="a"), Job("b", id="b"))
    async with JobQueue.from_url(url) as queue, queue.consume(prefetch=2) as consumer:
        first, second = await consumer.receive(), await consumer.receive()
        assert first is not None
        assert second is not None

        def handler(job: ReceivedJob) -> None:
            ran.append(job.id)
            gate.wait(10)

        holding = asyncio.ensure_future(threads.run(handler, first, None))
        await _until(lambda: ran == ["a"])
        waiting = asyncio.ensure_future(threads.run(handler, second, None))
        await asyncio.sleep(0.1)  # it waits for the only thread
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        gate.set()
        await holding
        await asyncio.sleep(0.1)
        assert ran == ["a"]
        assert threads.abandoned == 0
        await first.ack()
        await second.ack()


async def test_a_sync_handler_can_settle_by_hand_through_anyio_from_thread() -> None:
    attempts: list[int] = []
    registry = Registry()

    @registry.handler("later")
    def later(job: ReceivedJob) -> None:
        attempts.append(job.attempt)
        if job.attempt == 1:
            anyio.from_thread.run(job.retry, 0)

    url = _url()
    await _push(url, Job("later"))
    worker = _Worker(registry, url)
    await _until(lambda: attempts == [1, 2])
    assert await worker.finish() == 0
    assert await _left(url) == ([], [])


async def test_a_plain_function_returning_a_coroutine_has_it_awaited() -> None:
    seen: list[object] = []

    async def record(payload: object) -> None:
        seen.append(payload)

    registry = Registry()
    registry.add("wrapped", lambda job: record(job.payload))
    url = _url()
    await _push(url, Job("wrapped", 7))
    worker = _Worker(registry, url)
    await _until(lambda: seen == [7])
    assert await worker.finish() == 0
    assert await _left(url) == ([], [])


def test_async_handlers_are_told_from_sync_ones() -> None:
    async def coroutine(job: ReceivedJob) -> None: ...

    def plain(job: ReceivedJob) -> None: ...

    class AsyncCallable:
        async def __call__(self, job: ReceivedJob) -> None: ...

    class SyncCallable:
        def __call__(self, job: ReceivedJob) -> None: ...

    assert is_async_handler(coroutine)
    assert is_async_handler(AsyncCallable())
    assert not is_async_handler(plain)
    assert not is_async_handler(SyncCallable())
    assert not is_async_handler(lambda job: None)
