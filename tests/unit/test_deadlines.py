"""``SharedDeadline``: one timer bounds many pushes under way (the facade's push timeout)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence

import anyio
import pytest

from amqp1q import Job, JobQueue, PushTimeout, Receipt
from amqp1q._adapter import SendResult
from amqp1q._deadlines import SharedDeadline
from amqp1q.adapters.memory import MemoryAdapter, MemoryBroker

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(sys.version_info < (3, 11), reason="Python 3.10 uses asyncio's timeout"),
]


class SlowAdapter(MemoryAdapter):
    """A memory queue that answers a push named "slow" never, any other after ``delay``."""

    def __init__(self, delay: float = 0.0) -> None:
        super().__init__(MemoryBroker(), "slow")
        self.delay = delay

    async def send(self, jobs: Sequence[Job], default_priority: int) -> list[SendResult]:
        if any(job.name == "slow" for job in jobs):
            await anyio.sleep_forever()
        await asyncio.sleep(self.delay)
        return await super().send(jobs, default_priority)


async def test_many_pushes_under_way_time_out_each_and_the_rest_succeed() -> None:
    async with JobQueue(SlowAdapter(0.01), push_timeout=0.3, close_timeout=0.5) as queue:
        jobs = [Job("slow" if i % 3 == 0 else "fast") for i in range(60)]
        with anyio.fail_after(5):
            results = await asyncio.gather(*(queue.push(j) for j in jobs), return_exceptions=True)
        for job, result in zip(jobs, results, strict=True):
            if job.name == "slow":
                assert isinstance(result, PushTimeout)
                assert result.job_id == job.id
            else:
                assert isinstance(result, Receipt)
        assert queue.stats().push_failed == 20
        assert queue.stats().pushed == 40
        # The queue goes on: a push after the timeouts is bounded and answered as before.
        with anyio.fail_after(5):
            assert isinstance(await queue.push(Job("fast")), Receipt)


async def test_a_push_cancelled_from_outside_stays_cancelled() -> None:
    async with JobQueue(SlowAdapter(), push_timeout=0.2, close_timeout=0.5) as queue:
        early = asyncio.create_task(queue.push(Job("slow")))
        await asyncio.sleep(0.05)
        early.cancel()
        with pytest.raises(asyncio.CancelledError):
            await early
        # ... and the shared timer still bounds the next one.
        with anyio.fail_after(5), pytest.raises(PushTimeout):
            await queue.push(Job("slow"))


async def test_waits_ending_in_order_leave_nothing_behind() -> None:
    shared = SharedDeadline(10.0)
    for _ in range(1000):
        wait = shared.enter()
        assert not shared.leave(wait, None)
    assert not shared._waits  # nothing kept for the next 10 s
    first = shared.enter()
    second = shared.enter()
    shared.leave(second, None)
    assert len(shared._waits) == 2  # the older one still under way holds the place
    shared.leave(first, None)
    assert not shared._waits
