"""What issue 19's two halves do together: sync (``def``) handlers with typed payloads, middleware
around sync handlers, and the stall watchdog naming a job whose handler runs inside middleware.
On memory:// queues (the worker is the same over every backend)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Callable

import attrs
import pytest

from amqp1q import CallNext, Handled, Job, JobQueue, Outcome, ReceivedJob, Registry, RetryPolicy
from amqp1q.worker import run_worker

from .test_sync_handlers import _until

pytestmark = pytest.mark.anyio


@attrs.frozen
class Email:
    to: str
    subject: str


async def _work(registry: Registry, jobs: list[Job], done: Callable[[], bool]) -> str:
    """Run ``jobs`` through a worker on a fresh memory queue until ``done()``; the queue's URL."""
    url = f"memory://kinds-{uuid.uuid4().hex[:8]}/jobs"
    async with JobQueue.from_url(url) as queue:
        await queue.push_many(jobs)
    stop = asyncio.Event()
    retry = RetryPolicy(max_attempts=2, initial_delay=0)
    worker = asyncio.ensure_future(
        run_worker(registry, JobQueue.from_url(url, retry=retry), stop=stop, stall_warning=0.3)
    )
    await _until(done)
    await asyncio.sleep(0.3)  # the watchdog's next tick; a stray retry would show meanwhile
    stop.set()
    assert await asyncio.wait_for(worker, 10) == 0
    return url


async def _dead_letters(url: str) -> list[ReceivedJob]:
    async with JobQueue.from_url(url) as queue, queue.dead_letter_queue() as dlq:
        async with dlq.consume() as consumer:
            found = []
            while (job := await consumer.receive(timeout=0.1)) is not None:
                await job.ack()
                found.append(job)
    return found


async def test_a_sync_handler_gets_its_typed_payload_in_a_thread() -> None:
    got: list[tuple[Email, int]] = []
    registry = Registry()

    @registry.handler("send_email")
    def send_email(job: ReceivedJob, email: Email) -> None:
        got.append((email, threading.get_ident()))

    await _work(
        registry, [Job("send_email", Email(to="a@b.c", subject="Hi"))], lambda: len(got) == 1
    )
    [(email, thread)] = got
    assert email == Email(to="a@b.c", subject="Hi")
    assert thread != threading.get_ident()  # not the event loop's thread


async def test_a_payload_that_does_not_fit_a_sync_handler_is_dead_lettered_unrun() -> None:
    ran: list[object] = []
    registry = Registry()

    @registry.handler("send_email")
    def send_email(job: ReceivedJob, email: Email) -> None:
        ran.append(email)

    handled: list[Handled] = []

    @registry.add_middleware
    async def record(job: ReceivedJob, call_next: CallNext) -> None:
        handled.append(await call_next())

    url = await _work(registry, [Job("send_email", {"to": 1})], lambda: len(handled) == 1)
    assert ran == []
    assert handled[0].outcome is Outcome.REJECT
    [letter] = await _dead_letters(url)
    assert letter.dead_letter_reason == "invalid payload"
    assert letter.dead_letter_description == (
        "the payload is not a valid Email: to: expected str, got int; subject: missing"
    )


async def test_middleware_runs_around_a_sync_handler_and_sees_its_outcome() -> None:
    order: list[str] = []
    registry = Registry()

    @registry.add_middleware
    async def outer(job: ReceivedJob, call_next: CallNext) -> None:
        order.append(f"in {job.name} {job.attempt}")
        handled = await call_next()
        order.append(f"out {job.name} {job.attempt} {handled.outcome.value} {handled.error!r}")

    @registry.handler("ok")
    def ok(job: ReceivedJob) -> None:
        order.append("ok ran")

    @registry.handler("boom")
    def boom(job: ReceivedJob) -> None:
        order.append(f"boom ran {job.attempt}")
        raise RuntimeError("boom")

    await _work(registry, [Job("ok")], lambda: len(order) == 3)
    assert order == ["in ok 1", "ok ran", "out ok 1 ack None"]
    order.clear()
    url = await _work(registry, [Job("boom")], lambda: len(order) == 6)
    assert order == [
        "in boom 1",
        "boom ran 1",
        "out boom 1 retry RuntimeError('boom')",
        "in boom 2",
        "boom ran 2",
        "out boom 2 reject RuntimeError('boom')",
    ]
    [letter] = await _dead_letters(url)
    assert letter.dead_letter_reason == "max attempts exceeded"


async def test_the_watchdog_names_an_async_handler_blocking_inside_middleware(
    caplog: pytest.LogCaptureFixture,
) -> None:
    done: list[str] = []
    registry = Registry()

    @registry.add_middleware
    async def passes(job: ReceivedJob, call_next: CallNext) -> None:
        await call_next()

    @registry.handler("resize_image")
    async def resize_image(job: ReceivedJob, size: int) -> None:
        time.sleep(0.8)  # noqa: ASYNC251 - blocking work in an async def: what it shows
        done.append(job.id)

    @registry.handler("thumbnail")
    def thumbnail(job: ReceivedJob, size: int) -> None:
        time.sleep(0.8)  # in its thread: the loop goes on
        done.append(job.id)

    with caplog.at_level(logging.WARNING, logger="amqp1q.worker"):
        await _work(registry, [Job("thumbnail", 64, id="thumb-1")], lambda: done == ["thumb-1"])
        assert [r for r in caplog.records if "event loop was blocked" in r.getMessage()] == []
        await _work(registry, [Job("resize_image", 64, id="img-7")], lambda: done[-1] == "img-7")
    [stall] = [r for r in caplog.records if "event loop was blocked" in r.getMessage()]
    assert "with job img-7 ('resize_image') in hand" in stall.getMessage()
