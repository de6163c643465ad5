"""The Service Bus adapter under 50 random connection cuts (FaultProxy in front of the embedded
broker's Service Bus emulation) during a 5,000-job run: one ``async for`` consume loop from
start to end, 0 jobs lost, nothing hung. The counts go in docs/reliability.md."""

from __future__ import annotations

import asyncio
import logging
import random
import time

import pytest

from amqp1q import Amqp1qError, Job, JobQueue, ReconnectPolicy
from amqp1q.testing import Broker, FaultProxy

pytest.importorskip("azure.servicebus")

pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.timeout(180)]

N = 5000
CUTS = 50
END = "chaos.end"

log = logging.getLogger(__name__)


async def test_fifty_cuts_lose_nothing_and_one_consume_loop_reaches_the_last_job() -> None:
    rng = random.Random(20261206)
    policy = ReconnectPolicy(initial_delay=0.01, max_delay=0.2)
    pushed: set[str] = set()
    consumed: set[str] = set()
    duplicates = 0
    before = asyncio.all_tasks()
    started = time.monotonic()
    async with Broker(servicebus=True) as broker, FaultProxy(broker.host, broker.port) as proxy:
        url = (
            f"Endpoint=sb://127.0.0.1:{proxy.port};SharedAccessKeyName=k;SharedAccessKey=v;"
            "UseDevelopmentEmulator=true;EntityPath=chaos"
        )
        async with JobQueue.from_url(url, prefetch=50, reconnect=policy, push_timeout=60) as queue:
            all_pushed = asyncio.Event()
            loop_ended = asyncio.Event()
            end_seen = False

            async def produce() -> None:
                for first in range(0, N, 50):
                    jobs = [Job("chaos", {"i": i}) for i in range(first, first + 50)]
                    results = await queue.push_many(jobs, return_exceptions=True)
                    for job, result in zip(jobs, results, strict=True):
                        assert not isinstance(result, Amqp1qError), result
                        pushed.add(job.id)
                # Pushed only once every job is confirmed: the consumer knows it has seen all
                # when it has this one and every confirmed id.
                await queue.push(Job(END, {}))
                all_pushed.set()

            async def consume() -> None:
                nonlocal duplicates, end_seen
                # One loop from start to end: it must never end by itself.
                async for job in queue.consume():
                    if job.name == END:
                        end_seen = True
                    elif job.id in consumed:
                        duplicates += 1
                    else:
                        consumed.add(job.id)
                    try:
                        await job.ack()
                    except Amqp1qError:
                        pass  # its link died: the broker redelivers it
                    if end_seen and consumed >= pushed:
                        break
                loop_ended.set()

            tasks = [asyncio.create_task(produce()), asyncio.create_task(consume())]
            cuts = 0
            step = 2 * N // (CUTS + 10)
            while cuts < CUTS and not loop_ended.is_set():
                target = (cuts + 1) * step + rng.randrange(step // 2)
                while len(pushed) + len(consumed) < target and not loop_ended.is_set():  # noqa: ASYNC110 - polls progress counters
                    await asyncio.sleep(0.005)
                if proxy.cut():
                    cuts += 1
                else:
                    await asyncio.sleep(0.01)  # between connections: try again
            await asyncio.wait_for(asyncio.gather(*tasks), 120)
            reconnects = queue._adapter.supervisor.reconnects  # type: ignore[attr-defined]
            assert queue.health() == "connected"
    elapsed = time.monotonic() - started
    log.warning(
        "servicebus chaos: %d jobs, %d cuts, %d duplicates, %d reconnects, %.1f s",
        N,
        cuts,
        duplicates,
        reconnects,
        elapsed,
    )
    print(
        f"\n{N} jobs, {cuts} cuts, {duplicates} duplicates, {reconnects} reconnects, {elapsed:.1f} s"
    )
    assert cuts == CUTS, f"only {cuts} cuts landed before the run ended"
    assert len(pushed) == N
    assert consumed >= pushed, f"{len(pushed - consumed)} jobs lost"
    assert reconnects >= 1
    leftover = [t for t in asyncio.all_tasks() - before if not t.done()]
    assert leftover == [asyncio.current_task()] or not leftover, leftover
