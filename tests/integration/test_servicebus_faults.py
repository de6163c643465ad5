"""The Service Bus adapter under connection faults (FaultProxy in front of the embedded broker's
Service Bus emulation): a consume loop goes on through cuts, or raises a typed error once the
reconnect policy gives up; pushes are sent again. The chaos run's counts go in
docs/reliability.md."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import random
import time
from collections.abc import AsyncIterator

import pytest

from amqp1q import Amqp1qError, ConnectionLost, DeliveryStale, Job, JobQueue, ReconnectPolicy
from amqp1q.testing import Broker, FaultProxy

pytest.importorskip("azure.servicebus")

pytestmark = [pytest.mark.anyio]

FAST = ReconnectPolicy(initial_delay=0.01, max_delay=0.2)
log = logging.getLogger(__name__)


@pytest.fixture
async def broker() -> AsyncIterator[Broker]:
    async with Broker(servicebus=True) as broker:
        yield broker


@pytest.fixture
async def proxy(broker: Broker) -> AsyncIterator[FaultProxy]:
    async with FaultProxy(broker.host, broker.port) as proxy:
        yield proxy


def _url(proxy: FaultProxy, queue: str) -> str:
    return (
        f"Endpoint=sb://127.0.0.1:{proxy.port};SharedAccessKeyName=k;SharedAccessKey=v;"
        f"UseDevelopmentEmulator=true;EntityPath={queue}"
    )


async def test_a_consume_loop_and_pushes_go_on_through_a_cut(
    broker: Broker, proxy: FaultProxy
) -> None:
    states: list[str] = []
    async with JobQueue.from_url(_url(proxy, "cut"), reconnect=FAST) as queue:
        queue.on_state_change(states.append)
        await queue.push_many([Job("n", i) for i in range(3)])
        got: list[int] = []
        async for job in queue.consume(prefetch=3):
            got.append(job.payload)
            if len(got) == 1:
                assert proxy.cut() >= 2  # the sender's and the receiver's connections
                # Its receiver is gone: the ack fails (at once, or in the background before the
                # consumer has noticed), and the job comes again.
                with contextlib.suppress(DeliveryStale):
                    await job.ack()
                await queue.push(Job("n", 3))  # on a fresh sender
                continue
            await job.ack()
            if set(got) >= {0, 1, 2, 3}:
                break
        assert queue.health() == "connected"
    assert got.count(got[0]) == 2  # the job whose ack was cut off, delivered again
    assert "reconnecting" in states
    assert states[-1] == "connected"
    assert len(broker.queue("cut")) == 0


async def test_the_consume_loop_raises_connection_lost_once_the_policy_gives_up(
    proxy: FaultProxy,
) -> None:
    policy = ReconnectPolicy(initial_delay=0.01, max_delay=0.05, max_attempts=3)
    async with JobQueue.from_url(_url(proxy, "gone"), reconnect=policy) as queue:
        await queue.push(Job("n", 1))
        with pytest.raises(ConnectionLost, match="in 3 attempts"):  # noqa: PT012
            async for job in queue.consume():
                await job.ack()
                proxy.refuse()  # no connection gets through any more
                proxy.cut()
        assert queue.health() == "failed"


async def test_with_reconnect_off_a_cut_ends_the_consume_loop_with_connection_lost(
    proxy: FaultProxy,
) -> None:
    async with JobQueue.from_url(_url(proxy, "off"), reconnect=False) as queue:
        await queue.push(Job("n", 1))
        started = time.monotonic()
        with pytest.raises(ConnectionLost, match="reconnect is off"):  # noqa: PT012
            async for job in queue.consume():
                await job.ack()
                proxy.cut()
        assert time.monotonic() - started < 10


N = 5000
CUTS = 50
END = "chaos.end"


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_fifty_cuts_lose_nothing_and_one_consume_loop_reaches_the_last_job(
    proxy: FaultProxy,
) -> None:
    rng = random.Random(20261206)
    pushed: set[str] = set()
    consumed: set[str] = set()
    duplicates = 0
    before = asyncio.all_tasks()
    started = time.monotonic()
    async with JobQueue.from_url(
        _url(proxy, "chaos"), prefetch=50, reconnect=FAST, push_timeout=60
    ) as queue:
        loop_ended = asyncio.Event()
        end_seen = False

        async def produce() -> None:
            for first in range(0, N, 50):
                jobs = [Job("chaos", {"i": i}) for i in range(first, first + 50)]
                results = await queue.push_many(jobs, return_exceptions=True)
                for job, result in zip(jobs, results, strict=True):
                    assert not isinstance(result, Amqp1qError), result
                    pushed.add(job.id)
            # Pushed once every job is confirmed: the consumer has seen all when it has seen
            # this one and every confirmed id.
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
                    pass  # its receiver was cut off: Service Bus delivers it again
                if end_seen and consumed >= pushed:
                    break
            loop_ended.set()

        tasks = [asyncio.create_task(produce()), asyncio.create_task(consume())]
        # Cuts at random moments spread over the run: one per ~1/60 of the progress.
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
        await asyncio.wait_for(asyncio.gather(*tasks), 150)
        reconnects = queue._adapter.supervisor.reconnects  # type: ignore[attr-defined]
        assert queue.health() == "connected"
    elapsed = time.monotonic() - started
    log.warning(
        "Service Bus chaos: %d jobs, %d cuts, %d duplicates, %d reconnects, %.1f s",
        N,
        cuts,
        duplicates,
        reconnects,
        elapsed,
    )
    assert cuts == CUTS, f"only {cuts} cuts landed before the run ended"
    assert len(pushed) == N
    assert consumed >= pushed, f"{len(pushed - consumed)} jobs lost"
    assert reconnects >= CUTS // 2  # a cut between two pushes costs the sender nothing yet
    leftover = [t for t in asyncio.all_tasks() - before if not t.done()]
    assert leftover == [asyncio.current_task()] or not leftover, leftover
    gc.collect()  # a socket left open would warn (an error here) now, in this test
