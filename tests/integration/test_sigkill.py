"""A consumer process killed with SIGKILL mid-job: its unsettled jobs go to another consumer."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator

import pytest

from amqp1q import Job, JobQueue
from amqp1q.testing import Broker

from ..conftest import RABBITMQ_URL

pytestmark = pytest.mark.anyio

CHILD = """
import asyncio, sys
from amqp1q import JobQueue

async def main(url, queue):
    async with JobQueue.from_url(url, queue=queue, prefetch=3) as q:
        async with q.consume() as consumer:
            held = [await consumer.receive() for _ in range(3)]
            print("holding", " ".join(j.id for j in held), flush=True)
            await asyncio.sleep(3600)  # mid-job, forever: SIGKILL ends it

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


@pytest.fixture(params=["embedded", "rabbitmq"])
async def target(request: pytest.FixtureRequest) -> AsyncIterator[tuple[str, str]]:
    name = f"amqp1q-kill-{request.param}"
    if request.param == "embedded":
        async with Broker() as broker:
            yield broker.url, name
        return
    queue = request.getfixturevalue("rabbitmq_queue")  # declared, deleted afterwards
    yield RABBITMQ_URL, queue


async def test_jobs_of_a_killed_consumer_are_redelivered(target: tuple[str, str]) -> None:
    url, name = target
    async with JobQueue.from_url(url, queue=name) as queue:
        jobs = [Job("held", i) for i in range(5)]
        await queue.push_many(jobs)
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-c", CHILD, url, name, stdout=asyncio.subprocess.PIPE
        )
        assert child.stdout is not None
        line = (await asyncio.wait_for(child.stdout.readline(), 20)).decode()
        held = set(line.split()[1:])
        assert len(held) == 3
        child.send_signal(signal.SIGKILL)
        assert await asyncio.wait_for(child.wait(), 10) == -signal.SIGKILL
        async with queue.consume(prefetch=5) as consumer:
            got = [await asyncio.wait_for(consumer.receive(), 10) for _ in range(5)]
            assert all(job is not None for job in got)
            assert {job.id for job in got if job} == {j.id for j in jobs}
            for job in got:
                assert job is not None
                await job.ack()
