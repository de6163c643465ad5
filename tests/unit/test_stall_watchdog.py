"""The stall watchdog: a handler that blocks the event loop is named in a warning."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable

import pytest

from amqp1q import Job, JobQueue, ReceivedJob, Registry
from amqp1q._watchdog import JobsInHand, StallWatchdog
from amqp1q.worker import run_worker

pytestmark = pytest.mark.anyio


async def _until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout:g} s")
        await asyncio.sleep(0.01)


def _stalls(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if "event loop was blocked" in r.getMessage()]


async def _run(
    registry: Registry, jobs: list[Job], done: Callable[[], bool], **options: object
) -> None:
    url = f"memory://stall-{uuid.uuid4().hex[:8]}/jobs"
    async with JobQueue.from_url(url) as queue:
        await queue.push_many(jobs)
    stop = asyncio.Event()
    worker = asyncio.ensure_future(
        run_worker(registry, JobQueue.from_url(url), stop=stop, **options)  # type: ignore[arg-type]
    )
    await _until(done)
    await asyncio.sleep(0.3)  # the watchdog's next tick
    stop.set()
    assert await asyncio.wait_for(worker, 10) == 0


@pytest.mark.parametrize("then", ["awaits", "returns"])
async def test_a_handler_blocking_the_loop_is_named_with_the_stall_length(
    then: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 19: 2 s of sync work in an `async def` stalled the worker (concurrency 32) with
    no word. The culprit is named whether it awaits after blocking or returns at once."""
    done: list[str] = []
    registry = Registry()

    @registry.handler("resize_image")
    async def resize_image(job: ReceivedJob) -> None:
        time.sleep(1.0)  # noqa: ASYNC251 - blocking work in an async def: what it shows
        if then == "awaits":
            await asyncio.sleep(0.3)
        done.append(job.id)

    with caplog.at_level(logging.WARNING, logger="amqp1q.worker"):
        await _run(registry, [Job("resize_image", id="img-7")], lambda: done == ["img-7"])
    [record] = _stalls(caplog)
    message = record.getMessage()
    assert "job img-7 ('resize_image') in hand" in message
    assert "make the handler a plain `def`" in message
    assert 0.8 <= record.stall_seconds <= 1.6  # type: ignore[attr-defined]
    assert record.job_ids == ["img-7"]  # type: ignore[attr-defined]
    assert record.job_names == ["resize_image"]  # type: ignore[attr-defined]


async def test_handlers_that_await_raise_no_warning(caplog: pytest.LogCaptureFixture) -> None:
    done: list[str] = []
    registry = Registry()

    @registry.handler("patient")
    async def patient(job: ReceivedJob) -> None:
        await asyncio.sleep(0.8)
        done.append(job.id)

    @registry.handler("threaded")
    def threaded(job: ReceivedJob) -> None:
        time.sleep(0.8)  # a plain def runs in a thread: the loop is free
        done.append(job.id)

    jobs = [Job("patient"), Job("threaded")]
    with caplog.at_level(logging.WARNING, logger="amqp1q.worker"):
        await _run(registry, jobs, lambda: len(done) == 2)
    assert _stalls(caplog) == []


async def test_the_threshold_is_configurable_and_none_turns_it_off(
    caplog: pytest.LogCaptureFixture,
) -> None:
    done: list[str] = []
    registry = Registry()

    @registry.handler("block")
    async def block(job: ReceivedJob) -> None:
        time.sleep(float(job.payload))  # noqa: ASYNC251 - the blocking it warns of
        done.append(job.id)

    with caplog.at_level(logging.WARNING, logger="amqp1q.worker"):
        await _run(registry, [Job("block", 0.4)], lambda: len(done) == 1, stall_warning=None)
        await _run(registry, [Job("block", 0.4)], lambda: len(done) == 2, stall_warning=0)
        assert _stalls(caplog) == []
        await _run(registry, [Job("block", 0.4)], lambda: len(done) == 3)  # under 0.5 s
        assert _stalls(caplog) == []
        await _run(registry, [Job("block", 0.4)], lambda: len(done) == 4, stall_warning=0.2)
    [record] = _stalls(caplog)
    assert "(stall warning: 0.2 s)" in record.getMessage()


async def test_the_watchdog_names_the_jobs_in_hand_or_says_there_were_none(
    caplog: pytest.LogCaptureFixture,
) -> None:
    jobs = JobsInHand()
    with (
        caplog.at_level(logging.WARNING, logger="amqp1q.worker"),
        StallWatchdog(0.2, jobs) as watchdog,
    ):
        await asyncio.sleep(0.1)
        time.sleep(0.4)  # noqa: ASYNC251 - a stall with nothing in hand
        await asyncio.sleep(0.15)
        assert watchdog.stalls == 1
    assert watchdog.interval == pytest.approx(0.04)
    [record] = _stalls(caplog)
    assert "with no job in hand; something other than a handler blocked it" in (record.getMessage())
    assert 0.3 <= record.stall_seconds <= 0.7  # type: ignore[attr-defined]
