"""Small helpers for the semantics suite."""

from __future__ import annotations

import anyio
import attrs

from amqp1q import Consumer, ReceivedJob


@attrs.frozen
class Point:
    """A typed payload (``job.payload_as(Point)``)."""

    x: int
    y: int


async def take(consumer: Consumer, count: int, timeout: float = 10.0) -> list[ReceivedJob]:
    """Receive exactly ``count`` jobs, failing the test if they do not come within ``timeout``."""
    jobs: list[ReceivedJob] = []
    with anyio.fail_after(timeout):
        while len(jobs) < count:
            job = await consumer.receive()
            assert job is not None, f"the consumer ended after {len(jobs)} of {count} jobs"
            jobs.append(job)
    return jobs


async def take_one(consumer: Consumer, timeout: float = 10.0) -> ReceivedJob:
    return (await take(consumer, 1, timeout))[0]


async def assert_nothing_more(consumer: Consumer, wait: float = 0.3) -> None:
    job = await consumer.receive(timeout=wait)
    assert job is None, f"expected no more jobs, got {job!r}"
