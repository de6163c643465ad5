"""The Proton adapter's supervisor: a lost connection is re-dialled, consumers re-attached,
pushes whose outcome was lost re-sent; with reconnect off, or out of attempts, a clear error."""

from __future__ import annotations

import asyncio

import pytest

from amqp1q import (
    ConnectionLost,
    Consumer,
    DeliveryStale,
    Job,
    JobQueue,
    PushTimeout,
    ReceivedJob,
    ReconnectPolicy,
)
from amqp1q.testing import Broker

pytestmark = pytest.mark.anyio

FAST = ReconnectPolicy(initial_delay=0.05, max_delay=0.2)


async def _receive(consumer: Consumer, timeout: float = 5) -> ReceivedJob:
    job = await asyncio.wait_for(consumer.receive(), timeout)
    assert job is not None
    return job


async def test_a_consumer_carries_on_after_the_connection_drops() -> None:
    async with Broker() as broker:
        async with JobQueue.from_url(broker.url, queue="q", reconnect=FAST) as queue:
            await queue.push_many([Job("n", i) for i in range(4)])
            async with queue.consume(prefetch=2) as consumer:
                first = await _receive(consumer)
                assert broker.drop_connections() == 1
                await asyncio.sleep(0.2)  # the client sees the drop
                with pytest.raises(DeliveryStale):
                    await first.ack()
                # Everything comes (back) on the new connection, the dropped one counted.
                got = []
                for _ in range(4):
                    job = await _receive(consumer)
                    got.append(job)
                    await job.ack()
                assert sorted(j.payload for j in got) == [0, 1, 2, 3]
                again = next(j for j in got if j.id == first.id)
                assert again.attempt == 2
            assert len(broker.queue("q")) == 0


async def test_a_push_during_an_outage_goes_through_once_the_broker_is_back() -> None:
    async with Broker() as broker:
        async with JobQueue.from_url(broker.url, queue="q", reconnect=FAST) as queue:
            await queue.push(Job("before", b""))
            assert queue.health() == "connected"
            states: list[str] = []
            queue.on_state_change(states.append)
            await broker.stop()
            pushing = asyncio.create_task(queue.push(Job("during", b""), timeout=10))
            await asyncio.sleep(0.5)
            assert not pushing.done()
            assert queue.health() == "reconnecting"
            await broker.start()
            receipt = await asyncio.wait_for(pushing, 10)
            assert receipt.job_id
            assert queue.health() == "connected"
            assert states == ["reconnecting", "connected"]
        assert len(broker.queue("q")) == 2


async def test_a_push_waits_only_up_to_its_timeout_during_an_outage() -> None:
    async with Broker() as broker:
        async with JobQueue.from_url(broker.url, queue="q", reconnect=FAST) as queue:
            await queue.push(Job("before", b""))
            await broker.stop()
            with pytest.raises(PushTimeout):
                await queue.push(Job("during", b""), timeout=0.5)


async def test_without_reconnect_a_drop_is_connection_lost() -> None:
    async with Broker() as broker:
        async with JobQueue.from_url(broker.url, queue="q", reconnect=False) as queue:
            await queue.push(Job("before", b""))
            broker.drop_connections()
            await asyncio.sleep(0.1)
            with pytest.raises(ConnectionLost):
                await queue.push(Job("after", b""), timeout=5)


async def test_out_of_attempts_is_connection_lost() -> None:
    policy = ReconnectPolicy(initial_delay=0.01, max_delay=0.05, max_attempts=3)
    async with Broker() as broker:
        async with JobQueue.from_url(broker.url, queue="q", reconnect=policy) as queue:
            await queue.push(Job("before", b""))
            await broker.stop()
            await asyncio.sleep(1.0)
            assert queue.health() == "failed"
            with pytest.raises(ConnectionLost, match="3 attempts"):
                await queue.push(Job("after", b""), timeout=5)


async def test_a_consumer_ends_when_the_supervisor_gives_up() -> None:
    policy = ReconnectPolicy(initial_delay=0.01, max_delay=0.05, max_attempts=2)
    async with Broker() as broker:
        async with JobQueue.from_url(broker.url, queue="q", reconnect=policy) as queue:
            async with queue.consume() as consumer:
                await broker.stop()
                with pytest.raises(ConnectionLost, match="2 attempts"):
                    await asyncio.wait_for(consumer.receive(), 5)


@pytest.mark.parametrize("profile", ["amqp1q", "generic"])
async def test_a_consumer_waiting_when_the_connection_drops_gets_the_next_job(
    profile: str,
) -> None:
    # Regression: the receiver's buffer was replaced (not emptied) when its link died, and a
    # receive() already waiting watched the old one forever -- RabbitMQ's stop_app/start_app
    # caught it with the consumer idle (tests/integration/test_rabbitmq_restart.py).
    async with Broker() as broker:
        url_queue = JobQueue.from_url(broker.url, queue="q", reconnect=FAST, broker=profile)
        async with url_queue as queue, queue.consume(prefetch=5) as consumer:
            waiting = asyncio.create_task(consumer.receive())
            await asyncio.sleep(0.1)  # the receive is waiting for a delivery
            assert broker.drop_connections() == 1
            await queue.push(Job("after", "after"), timeout=5)  # once reconnected
            job = await asyncio.wait_for(waiting, 5)
            assert job is not None
            assert job.payload == "after"
            await job.ack()
        assert len(broker.queue("q")) == 0


async def test_a_presettled_job_held_across_a_drop_reaches_a_waiting_consumer() -> None:
    # The same, for the jobs that came due (generic profile: delays held by the consumer; with
    # auto_ack the held delivery is pre-settled, so it outlives its link).
    async with Broker() as broker:
        url_queue = JobQueue.from_url(
            broker.url, queue="q", reconnect=FAST, broker="generic", auto_ack=True
        )
        async with url_queue as queue:
            await queue.push(Job("later", "later", delay=0.5))
            async with queue.consume(prefetch=5) as consumer:
                waiting = asyncio.create_task(consumer.receive())
                await asyncio.sleep(0.2)  # held, not yet due; the receive is waiting
                assert broker.drop_connections() == 1
                job = await asyncio.wait_for(waiting, 5)
                assert job is not None
                assert job.payload == "later"
