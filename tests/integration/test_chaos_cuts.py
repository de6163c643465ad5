"""50 random connection cuts through a fault-injecting proxy during a 5,000-job run:
0 jobs lost, nothing hung, and one ``async for`` consume loop from start to end (the embedded
broker behind FaultProxy, reconnect on). The Service Bus adapter's run is in
test_servicebus_faults.py; the counts of both are in docs/reliability.md."""

from __future__ import annotations

import asyncio
import logging
import random
import time

import pytest

from amqp1q import Amqp1qError, Job, JobQueue, ReconnectPolicy
from amqp1q.adapters.proton._codec import decode_message
from amqp1q.testing import Broker, FaultProxy

pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.timeout(120)]

N = 5000
CUTS = 50
END = "chaos.end"

log = logging.getLogger(__name__)


async def test_fifty_cuts_lose_nothing_and_hang_nothing() -> None:
    rng = random.Random(20261127)
    policy = ReconnectPolicy(initial_delay=0.01, max_delay=0.1)
    pushed: set[str] = set()
    consumed: set[str] = set()
    before = asyncio.all_tasks()
    started = time.monotonic()
    duplicates = 0
    recoveries = 0
    async with Broker() as broker, FaultProxy(broker.host, broker.port) as proxy:
        url = proxy.url_for("amqp")
        async with JobQueue.from_url(
            url, queue="chaos", prefetch=50, reconnect=policy, push_timeout=60
        ) as queue:
            all_consumed = asyncio.Event()
            end_seen = False

            def state_changed(state: str) -> None:
                nonlocal recoveries
                recoveries += state == "connected"

            queue.on_state_change(state_changed)

            async def produce() -> None:
                for first in range(0, N, 50):
                    jobs = [Job("chaos", {"i": i}) for i in range(first, first + 50)]
                    results = await queue.push_many(jobs, return_exceptions=True)
                    for job, result in zip(jobs, results, strict=True):
                        assert not isinstance(result, Amqp1qError), result
                        pushed.add(job.id)
                # Pushed once every job is confirmed: the consumer has seen all when it has
                # seen this one and every confirmed id.
                await queue.push(Job(END, {}))

            async def consume() -> None:
                nonlocal duplicates, end_seen
                # One loop from start to end: it must never end by itself.
                async for job in queue.consume():
                    if job.id in consumed:
                        duplicates += 1
                    else:
                        consumed.add(job.id)
                    end_seen = end_seen or job.name == END
                    try:
                        await job.ack()
                    except Amqp1qError:
                        pass  # its link died: the broker redelivers it
                    if end_seen and consumed >= pushed:
                        break
                all_consumed.set()

            tasks = [asyncio.create_task(produce()), asyncio.create_task(consume())]
            # Cuts at random moments spread over the run: one per ~1/60 of the progress.
            cuts = 0
            step = 2 * N // (CUTS + 10)
            while cuts < CUTS and not all_consumed.is_set():
                target = (cuts + 1) * step + rng.randrange(step // 2)
                while len(pushed) + len(consumed) < target and not all_consumed.is_set():  # noqa: ASYNC110 - polls progress counters
                    await asyncio.sleep(0.005)
                if proxy.cut():
                    cuts += 1
                else:
                    await asyncio.sleep(0.01)  # between connections: try again
            await asyncio.wait_for(asyncio.gather(*tasks), 60)
    log.warning(
        "Proton chaos: %d jobs, %d cuts, %d duplicates, %d reconnects, %.1f s",
        N,
        cuts,
        duplicates,
        recoveries,
        time.monotonic() - started,
    )
    assert cuts == CUTS, f"only {cuts} cuts landed before the run ended"
    assert len(pushed) == N
    assert consumed >= pushed, f"{len(pushed - consumed)} jobs lost"
    # What is left can only be duplicates (a push re-sent after a cut that had been accepted).
    left = [
        decode_message(stored.payload).message_id for stored in broker.queue("chaos").messages()
    ]
    assert set(left) <= consumed
    assert recoveries >= 1
    leftover = [t for t in asyncio.all_tasks() - before if not t.done()]
    assert leftover == [asyncio.current_task()] or not leftover, leftover
