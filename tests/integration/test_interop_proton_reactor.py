"""A plain python-qpid-proton client (its blocking API, on its own thread) against the
embedded broker and amqp1q: headers, body, subject and id intact both ways."""

from __future__ import annotations

import asyncio

import proton
import pytest
from proton.utils import BlockingConnection

from amqp1q import Job, JobQueue
from amqp1q.testing import Broker

pytestmark = pytest.mark.anyio


def _reactor_send(url: str, address: str, count: int) -> None:
    connection = BlockingConnection(url, timeout=10)
    try:
        sender = connection.create_sender(address)
        for i in range(count):
            message = proton.Message(
                id=f"reactor-{i}",
                subject="reactor.job",
                body=f"payload {i}".encode(),
                properties={"origin": "reactor", "i": str(i)},
                durable=True,
            )
            sender.send(message)  # waits for the disposition: accepted or raises
    finally:
        connection.close()


def _reactor_receive(url: str, address: str, count: int) -> list[proton.Message]:
    connection = BlockingConnection(url, timeout=10)
    try:
        receiver = connection.create_receiver(address, credit=count)
        out = []
        for _ in range(count):
            out.append(receiver.receive(timeout=10))
            receiver.accept()
        return out
    finally:
        connection.close()


async def test_reactor_pushes_amqp1q_consumes() -> None:
    async with Broker() as broker:
        await asyncio.to_thread(_reactor_send, broker.url, "jobs", 3)
        async with JobQueue.from_url(broker.url, queue="jobs") as queue:
            async with queue.consume(prefetch=3) as consumer:
                jobs = [await asyncio.wait_for(consumer.receive(), 5) for _ in range(3)]
                for job in jobs:
                    await job.ack()
    assert [j.id for j in jobs] == ["reactor-0", "reactor-1", "reactor-2"]
    assert [j.name for j in jobs] == ["reactor.job"] * 3
    assert [j.body for j in jobs] == [f"payload {i}".encode() for i in range(3)]
    assert [dict(j.headers) for j in jobs] == [{"origin": "reactor", "i": str(i)} for i in range(3)]


async def test_amqp1q_pushes_reactor_consumes() -> None:
    async with Broker() as broker:
        jobs = [Job("to.reactor", f"b{i}".encode(), headers={"k": f"v{i}"}) for i in range(3)]
        async with JobQueue.from_url(broker.url, queue="jobs") as queue:
            await queue.push_many(jobs)
        messages = await asyncio.to_thread(_reactor_receive, broker.url, "jobs", 3)
        assert len(broker.queue("jobs")) == 0
    assert [m.id for m in messages] == [j.id for j in jobs]
    assert [m.subject for m in messages] == ["to.reactor"] * 3
    assert [bytes(m.body) for m in messages] == [j.body for j in jobs]
    assert [m.properties for m in messages] == [{"k": f"v{i}"} for i in range(3)]
    assert [m.delivery_count for m in messages] == [0, 0, 0]
