"""The facade's own rules: lifecycle, argument checks, push timeouts, stats."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import anyio
import pytest

from amqp1q import (
    ConnectFailed,
    InvalidJob,
    InvalidSetting,
    Job,
    JobQueue,
    JobTooLarge,
    PushTimeout,
    QueueStateError,
    Receipt,
)
from amqp1q._adapter import SendResult
from amqp1q.adapters.memory import MemoryAdapter, MemoryBroker

pytestmark = pytest.mark.anyio


class StallingAdapter(MemoryAdapter):
    """A memory queue whose broker never answers opens or pushes (as a frozen broker would)."""

    def __init__(self, *, stall_open: bool = False) -> None:
        super().__init__(MemoryBroker(), "stalled")
        self.stall_open = stall_open

    async def open(self) -> None:
        if self.stall_open:
            await anyio.sleep_forever()

    async def send(self, jobs: Sequence[Job], default_priority: int) -> list[SendResult]:
        await anyio.sleep_forever()
        raise AssertionError("unreachable")


async def test_push_needs_an_open_queue() -> None:
    queue = JobQueue.from_url("memory://unit/q")
    with pytest.raises(QueueStateError, match="async with queue"):
        await queue.push(Job("x"))
    with pytest.raises(QueueStateError):
        queue.consume()


async def test_a_queue_opens_once() -> None:
    queue = JobQueue.from_url("memory://unit/q")
    async with queue:
        with pytest.raises(QueueStateError, match="opened once"):
            await queue.open()
    with pytest.raises(QueueStateError):
        await queue.open()


async def test_push_takes_jobs_only() -> None:
    async with JobQueue.from_url("memory://unit/q") as queue:
        with pytest.raises(InvalidJob, match="Job objects, not dict"):
            await queue.push({"name": "x"})  # type: ignore[arg-type]
        assert await queue.push_many([]) == []


async def test_push_timeout_raises_push_timeout() -> None:
    async with JobQueue(StallingAdapter(), push_timeout=0.2, close_timeout=0.5) as queue:
        job = Job("x")
        with anyio.fail_after(5), pytest.raises(PushTimeout) as info:
            await queue.push(job)
        assert info.value.job_id == job.id
        assert info.value.queue == "stalled"
        with anyio.fail_after(5), pytest.raises(PushTimeout):
            await queue.push(Job("y"), timeout=0.05)
        assert queue.stats().push_failed == 2


async def test_open_timeout_raises_connect_failed() -> None:
    queue = JobQueue(StallingAdapter(stall_open=True), connect_timeout=0.2)
    with anyio.fail_after(5), pytest.raises(ConnectFailed, match=r"within 0\.2 s"):
        await queue.open()


async def test_push_many_returns_exceptions_in_place() -> None:
    adapter = MemoryAdapter(MemoryBroker(), "small", max_message_size=10)
    async with JobQueue(adapter) as queue:
        small, big = Job("s", b"x"), Job("b", b"y" * 100)
        results = await queue.push_many([small, big, small.evolve(id="2")], return_exceptions=True)
        assert isinstance(results[0], Receipt)
        assert isinstance(results[2], Receipt)
        assert isinstance(results[1], JobTooLarge)
        assert results[1].job_id == big.id
        with pytest.raises(JobTooLarge):
            await queue.push_many([small, big])
        with pytest.raises(JobTooLarge, match="100 bytes"):
            await queue.push(big)
        assert queue.stats().pushed == 3


async def test_settings_are_checked() -> None:
    adapter = MemoryAdapter(MemoryBroker(), "q")
    for kwargs in (
        {"prefetch": 0},
        {"priority": 300},
        {"auto_ack": "yes"},
        {"push_timeout": 0},
        {"close_timeout": -1},
        {"retry": 3},
    ):
        with pytest.raises(InvalidSetting):
            JobQueue(adapter, **kwargs)  # type: ignore[arg-type]
    async with JobQueue(adapter) as queue:
        with pytest.raises(InvalidSetting):
            queue.consume(prefetch=0)
        with pytest.raises(InvalidSetting):
            await queue.push(Job("x"), timeout=-1)


async def test_close_of_an_unopened_queue_is_quiet() -> None:
    queue = JobQueue.from_url("memory://unit/q")
    with anyio.fail_after(1):
        await queue.close()
    assert not queue.is_open


async def test_close_waits_for_pushes_in_flight_within_grace() -> None:
    async with JobQueue(StallingAdapter(), push_timeout=30, close_timeout=0.5) as queue:
        pushing = asyncio.create_task(queue.push(Job("x")))
        await anyio.sleep(0.05)
        with anyio.fail_after(5):
            await queue.close(grace=0.2)
        pushing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await pushing
