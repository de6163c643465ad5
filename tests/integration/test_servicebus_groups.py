"""Groups on Service Bus are sessions: amqp1q's Service Bus adapter and azure-servicebus's own
session sender and receiver, both ways, on the embedded broker's emulation.

``push(Job(group=...))`` sets the SessionId; ``consume(groups=N)`` holds up to N sessions with
the SDK's session receivers (next available session, lock renewal, let go when idle), and each
job carries its session's state (``job.group_state()`` / ``set_group_state()``).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from amqp1q import Job, JobQueue, LockLost, UnsupportedFeature
from amqp1q.adapters.servicebus import ServiceBusAdapter
from amqp1q.testing import Broker

from . import test_servicebus_sessions as sessions
from .test_servicebus_sdk import _receive

servicebus = pytest.importorskip("azure.servicebus")
servicebus_aio = pytest.importorskip("azure.servicebus.aio")

ServiceBusMessage = servicebus.ServiceBusMessage
NEXT_AVAILABLE_SESSION = servicebus.NEXT_AVAILABLE_SESSION
ServiceBusClient = servicebus_aio.ServiceBusClient

pytestmark = [pytest.mark.anyio]

broker = sessions.broker  # the fixtures: a Service Bus emulation, a queue with sessions
queue = sessions.queue
_client = sessions._client

SESSIONS = ("customer-1", "customer-2", "customer-3")


def _jobs(broker: Broker, queue: str, **settings: Any) -> JobQueue:
    """amqp1q's Service Bus adapter on ``queue`` (``settings``: the adapter's, as
    ``session_idle``)."""
    url = broker.servicebus_connection_string(queue)
    return JobQueue(ServiceBusAdapter.from_connection_string(url, **settings))


async def test_the_sdks_session_sender_to_amqp1q_groups_same_order_session_payload_headers(
    broker: Broker, queue: str
) -> None:
    async with _client(broker) as client, client.get_queue_sender(queue) as sender:
        await sender.send_messages(
            [
                ServiceBusMessage(
                    json.dumps({"n": n}).encode(),
                    session_id=session,
                    subject="step",
                    content_type="application/json",
                    application_properties={"tenant": session, "n": n},
                )
                for n in range(10)
                for session in SESSIONS
            ]
        )
    got: dict[str, list[Any]] = {session: [] for session in SESSIONS}
    async with _jobs(broker, queue) as jobs, jobs.consume(groups=2, prefetch=4) as consumer:
        while sum(map(len, got.values())) < 30:
            job = await asyncio.wait_for(consumer.receive(), 10)
            assert job is not None
            assert job.group is not None
            got[job.group].append((job.name, job.payload, dict(job.headers)))
            await job.ack()
    for session in SESSIONS:
        assert got[session] == [
            ("step", {"n": n}, {"tenant": session, "n": str(n)}) for n in range(10)
        ]
    assert len(broker.queue(queue)) == 0


async def test_amqp1q_groups_to_the_sdks_session_receiver_same_order_session_payload_headers(
    broker: Broker, queue: str
) -> None:
    async with _jobs(broker, queue) as jobs:
        await jobs.push_many(
            [
                Job("step", {"n": n}, group=session, headers={"tenant": session})
                for n in range(10)
                for session in SESSIONS
            ]
        )
        await jobs.push(Job("step", {"n": 10}, group="customer-2", headers={"tenant": "x"}))
    async with _client(broker) as client:
        for session in ("customer-2", "customer-1"):
            async with client.get_queue_receiver(queue, session_id=session) as receiver:
                messages = await _receive(receiver, 12 if session == "customer-2" else 10, 5)
                assert {m.session_id for m in messages} == {session}
                assert [json.loads(b"".join(m.body)) for m in messages] == [
                    {"n": n} for n in range(len(messages))
                ]
                assert {m.subject for m in messages} == {"step"}
                tenants = [m.application_properties[b"tenant"] for m in messages]
                assert tenants == [session.encode()] * 10 + [b"x"] * (len(messages) - 10)
                for message in messages:
                    await receiver.complete_message(message)
        async with client.get_queue_receiver(
            queue, session_id=NEXT_AVAILABLE_SESSION, max_wait_time=2
        ) as receiver:
            assert receiver.session.session_id == "customer-3"


async def test_group_state_is_the_sessions_state_both_ways(broker: Broker, queue: str) -> None:
    async with _client(broker) as client:
        async with client.get_queue_sender(queue) as sender:
            await sender.send_messages(ServiceBusMessage(b"{}", session_id="ckpt", subject="a"))
        async with client.get_queue_receiver(queue, session_id="ckpt") as receiver:
            await receiver.session.set_state(b"from-the-sdk")
    async with _jobs(broker, queue, session_idle=0.2) as jobs:
        await jobs.push(Job("b", {}, group="ckpt"))
        async with jobs.consume(groups=1) as consumer:
            for _ in range(2):
                job = await asyncio.wait_for(consumer.receive(), 10)
                assert job is not None
                if job.name == "a":
                    assert await job.group_state() == b"from-the-sdk"
                    await job.set_group_state(b"from-amqp1q")
                else:
                    assert await job.group_state() == b"from-amqp1q"
                await job.ack()
        await asyncio.sleep(0.5)  # idle: the session was let go
    async with _client(broker) as client:
        async with client.get_queue_receiver(queue, session_id="ckpt") as receiver:
            assert await receiver.session.get_state() == b"from-amqp1q"


async def test_group_state_elsewhere_is_unsupported() -> None:
    async with JobQueue.from_url("memory://no-sessions") as jobs:
        await jobs.push(Job("x", {}, group="g"))
        async with jobs.consume(groups=1) as consumer:
            job = await asyncio.wait_for(consumer.receive(), 5)
            assert job is not None
            with pytest.raises(UnsupportedFeature, match="Service Bus sessions"):
                await job.group_state()
            with pytest.raises(UnsupportedFeature):
                await job.set_group_state(b"x")
            await job.ack()


async def test_a_session_is_held_while_its_job_runs_past_the_lock_and_let_go_when_idle() -> None:
    async with Broker(servicebus=True, lock_duration=1.0) as broker:
        broker.declare("slow", requires_session=True)
        async with _jobs(broker, "slow", session_idle=0.3) as jobs:
            await jobs.push_many([Job("s", {"n": n}, group="long") for n in range(2)])
            async with jobs.consume(groups=1) as consumer:
                first = await asyncio.wait_for(consumer.receive(), 10)
                assert first is not None
                async with first.process():
                    await asyncio.sleep(2.5)  # the session lock (1 s) is renewed meanwhile
                second = await asyncio.wait_for(consumer.receive(), 10)
                assert second is not None
                assert second.payload == {"n": 1}
                await second.ack()
                await asyncio.sleep(1.0)  # nothing more: the session is let go
                assert broker.queue("slow").holders == {}  # type: ignore[attr-defined]
                # so the SDK may lock it while this consumer is still open
                async with _client(broker) as client:
                    async with client.get_queue_receiver("slow", session_id="long") as receiver:
                        assert receiver.session.session_id == "long"
        assert len(broker.queue("slow")) == 0


async def test_a_retry_in_a_session_keeps_its_place(broker: Broker, queue: str) -> None:
    async with _jobs(broker, queue) as jobs:
        await jobs.push_many([Job("s", {"n": n}, group="g") for n in range(3)])
        seen = []
        async with jobs.consume(groups=1, prefetch=3) as consumer:
            while len(seen) < 4:
                job = await asyncio.wait_for(consumer.receive(), 10)
                assert job is not None
                seen.append((job.payload["n"], job.attempt))
                if seen[-1] == (1, 1):
                    await job.retry(delay=0.1)
                else:
                    await job.ack()
    assert seen == [(0, 1), (1, 1), (1, 2), (2, 1)]


async def test_groups_on_a_queue_without_sessions_say_what_is_needed(broker: Broker) -> None:
    async with _jobs(broker, "plain") as jobs:
        with pytest.raises(UnsupportedFeature, match="requires sessions"):
            async with jobs.consume(groups=2) as consumer:
                await consumer.receive(timeout=1)


async def test_a_job_without_a_group_is_refused_by_a_session_queue(
    broker: Broker, queue: str
) -> None:
    async with _jobs(broker, queue) as jobs:
        with pytest.raises(Exception, match="SessionId was not set") as caught:
            await jobs.push(Job("free", {}))
        assert type(caught.value).__name__ == "JobRejected"


async def test_a_job_held_past_max_lock_renewal_loses_its_session_and_comes_back() -> None:
    async with Broker(servicebus=True, lock_duration=1.0) as broker:
        broker.declare("stuck", requires_session=True)
        async with _jobs(broker, "stuck", max_lock_renewal=1.0) as jobs:
            await jobs.push_many([Job("s", {"n": n}, group="g") for n in range(2)])
            async with jobs.consume(groups=1) as consumer:
                job = await asyncio.wait_for(consumer.receive(), 10)
                assert job is not None
                with pytest.raises(LockLost):
                    async with job.process():
                        await asyncio.sleep(10)  # cancelled once the session's lock runs out
        async with _jobs(broker, "stuck") as jobs, jobs.consume(groups=1) as consumer:
            again = await asyncio.wait_for(consumer.receive(), 10)
            assert again is not None
            assert (again.payload, again.attempt) == ({"n": 0}, 2)
            await again.ack()
