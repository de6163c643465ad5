"""Poison and foreign messages from a producer that is not amqp1q (python-qpid-proton's own
client): surfaced as jobs carrying the raw body and a decode error; the consumer keeps going."""

from __future__ import annotations

import asyncio
import uuid

import proton
import pytest
from proton.utils import BlockingConnection

from amqp1q import Job, JobQueue, PayloadError
from amqp1q.testing import Broker

from ..conftest import RABBITMQ_URL

pytestmark = pytest.mark.anyio


def _send_foreign(url: str, address: str) -> None:
    connection = BlockingConnection(url, timeout=10)
    try:
        sender = connection.create_sender(address)
        sender.send(proton.Message(body="a string in an amqp-value"))
        sender.send(proton.Message(body={"a": 1}))
        sequence = proton.Message(body=[1, 2, 3])
        sequence.inferred = True
        sender.send(sequence)
        sender.send(proton.Message(body=b"\xff\xfe not json", content_type="application/json"))
        sender.send(proton.Message(body=b"ok", properties={"list": [1, 2]}, subject="props"))
        bare = proton.Message()
        bare.body = b"no properties at all"
        bare.inferred = True
        sender.send(bare)
    finally:
        connection.close()


async def test_foreign_messages_become_jobs_with_a_decode_error() -> None:
    async with Broker() as broker:
        await asyncio.to_thread(_send_foreign, broker.url, "foreign")
        async with JobQueue.from_url(broker.url, queue="foreign") as queue:
            await queue.push(Job("after", b"fine"))
            async with queue.consume(prefetch=10) as consumer:
                got = [await asyncio.wait_for(consumer.receive(), 5) for _ in range(7)]
                jobs = [job for job in got if job is not None]
                for job in jobs:
                    await job.ack()
    assert len(jobs) == 7
    value, mapping, sequence, bad_json, props, bare, good = jobs
    assert value.body == b"a string in an amqp-value"
    assert value.decode_error == "the body is an AMQP value section, not data"
    assert mapping.body == b"{'a': 1}"
    assert mapping.decode_error is not None
    assert sequence.decode_error == "the body is an AMQP sequence section, not data"
    with pytest.raises(PayloadError):
        _ = bad_json.payload
    assert bad_json.body == b"\xff\xfe not json"
    assert props.decode_error is not None
    assert "'list'" in props.decode_error
    assert props.name == "props"
    assert bare.body == b"no properties at all"
    assert bare.name == ""
    assert bare.decode_error is None
    assert (good.name, good.body, good.decode_error) == ("after", b"fine", None)
    assert uuid.UUID(good.id)


def _send_bare(url: str, address: str) -> None:
    connection = BlockingConnection(url, timeout=10)
    try:
        bare = proton.Message()
        bare.body = b"no id, no properties"
        bare.inferred = True
        connection.create_sender(address).send(bare)
    finally:
        connection.close()


@pytest.mark.rabbitmq
async def test_a_foreign_message_with_no_id_can_be_dead_lettered_on_rabbitmq(
    rabbitmq_queue: str,
) -> None:
    # RabbitMQ 3.x dead-letters by re-publishing to QUEUE.dlq: the copy needs an id of its own.
    await asyncio.to_thread(_send_bare, RABBITMQ_URL, f"/amq/queue/{rabbitmq_queue}")
    async with JobQueue.from_url(RABBITMQ_URL, queue=rabbitmq_queue) as queue:
        async with queue.consume() as consumer:
            job = await consumer.receive(timeout=10)
            assert job is not None
            assert job.id == ""
            await job.reject("poison")
        async with queue.dead_letter_queue() as dlq, dlq.consume() as dead:
            moved = await dead.receive(timeout=10)
            assert moved is not None
            assert moved.body == b"no id, no properties"
            assert moved.id
            assert moved.dead_letter_reason == "poison"
            await moved.ack()
