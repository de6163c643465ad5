"""RoadRunner's envelope on Service Bus: the Service Bus adapter writes what the Proton adapter
writes (``wire_format="roadrunner"``), and each reads what the other wrote, on the embedded
broker's Service Bus emulation; the raw messages are read with azure-servicebus."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from amqp1q import Job, JobQueue, UnsupportedFeature
from amqp1q._roadrunner import encode_envelope
from amqp1q.adapters.proton._codec import decode_message
from amqp1q.testing import Broker

servicebus = pytest.importorskip("azure.servicebus")
from azure.servicebus.aio import ServiceBusClient  # noqa: E402

from .test_roadrunner_wire import OLDER_HEADER  # noqa: E402
from .test_servicebus_adapter import _jobs as _servicebus  # noqa: E402
from .test_servicebus_adapter import _proton_url, _queue, _sdk_send  # noqa: E402

pytestmark = [pytest.mark.anyio]


@pytest.fixture
async def broker() -> AsyncIterator[Broker]:
    async with Broker(servicebus=True) as broker:
        yield broker


def _proton(broker: Broker, queue: str, **settings: Any) -> JobQueue:
    return JobQueue.from_url(_proton_url(broker), queue=queue, **settings)


async def _sdk_messages(broker: Broker, queue: str, count: int, wait: float = 5.0) -> list[Any]:
    """``count`` raw messages through azure-servicebus (completed), or what came in ``wait``."""
    got: list[Any] = []
    async with (
        ServiceBusClient.from_connection_string(
            broker.servicebus_connection_string(), retry_total=0
        ) as client,
        client.get_queue_receiver(queue) as receiver,
    ):
        deadline = time.monotonic() + wait
        while len(got) < count and time.monotonic() < deadline:
            batch = await receiver.receive_messages(
                max_message_count=count - len(got),
                max_wait_time=max(0.2, deadline - time.monotonic()),
            )
            for message in batch:
                await receiver.complete_message(message)
            got += batch
    return got


async def _consume(queue: JobQueue, count: int) -> list[Any]:
    jobs = []
    async with queue.consume() as consumer:
        for _ in range(count):
            job = await consumer.receive(timeout=5)
            assert job is not None, "no job arrived"
            await job.ack()
            jobs.append(job)
    return jobs


def _text(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value


async def test_a_roadrunner_push_is_the_envelope_azure_servicebus_reads(broker: Broker) -> None:
    name = _queue()
    job = Job("app.Jobs.SendEmail", b'{"to":"a@b.c"}', headers={"tenant": "acme"}, priority=3)
    async with _servicebus(broker, name, wire_format="roadrunner", pipeline="emails") as queue:
        await queue.push(job)  # the priority travels in the envelope: not refused
    [message] = await _sdk_messages(broker, name, 1)
    body = b"".join(message.body)
    assert body == encode_envelope(job, "emails")  # its shape: test_roadrunner_wire.py
    header = json.loads(body)["header"]
    assert (header["rr_id"], header["rr_job"], header["rr_priority"]) == (job.id, job.name, 3)
    assert (message.message_id, message.subject, message.content_type) == (None, None, None)
    properties = {_text(k): _text(v) for k, v in message.application_properties.items()}
    assert properties == {"tenant": "acme"}


async def test_both_adapters_write_the_same_body_and_application_properties(
    broker: Broker,
) -> None:
    job = Job(
        "app.Jobs.SendEmail",
        {"to": "a@b.c"},
        headers={
            "tenant": "acme",
            "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        },
        priority=4,
    )
    later = job.evolve(delay=0.2, priority=None)
    written: dict[str, list[Any]] = {}
    for kind, make in (("proton", _proton), ("servicebus", _servicebus)):
        name = _queue()
        async with make(broker, name, wire_format="roadrunner", pipeline="emails") as queue:
            await queue.push(job)
            await queue.push(later)
        await asyncio.sleep(0.4)  # the delayed one is due
        written[kind] = [decode_message(m.payload) for m in broker.queue(name).messages()]
    proton_now, proton_later = written["proton"]
    sb_now, sb_later = written["servicebus"]
    assert sb_now.body == proton_now.body  # the same envelope bytes
    assert sb_later.body == proton_later.body
    assert sb_now.application_properties == proton_now.application_properties
    assert sb_later.application_properties == proton_later.application_properties
    assert (sb_later.application_properties or {})["x-delay"] == 200
    assert (sb_now.message_id, sb_now.subject, sb_now.content_type) == (None, None, None)
    # Service Bus schedules a message by its id: a delayed one carries the job's
    assert (sb_later.message_id, sb_later.subject) == (job.id, None)


async def test_service_bus_consumes_what_proton_wrote_in_roadrunner_format(
    broker: Broker,
) -> None:
    name = _queue()
    job = Job("app.Jobs.Report", b"plain text", headers={"tenant": "a"}, priority=7)
    later = Job("app.Jobs.Later", b"x", headers={"h": "v"}, delay=0.2)
    async with _proton(broker, name, wire_format="roadrunner") as queue:
        await queue.push(job)
        await queue.push(later)
    async with _servicebus(broker, name) as queue:  # wire_format left as amqp1q: both are read
        first, second = sorted(await _consume(queue, 2), key=lambda j: j.name)
    assert (first.name, first.id, first.body, first.priority) == (
        "app.Jobs.Later",
        later.id,
        b"x",
        0,
    )
    assert dict(first.headers) == {"h": "v"}  # no x-delay: that was the push's
    assert (second.name, second.id, second.body, second.priority) == (
        "app.Jobs.Report",
        job.id,
        b"plain text",
        7,
    )
    assert dict(second.headers) == {"tenant": "a"}
    assert (second.attempt, second.content_type, second.decode_error) == (1, None, None)


async def test_proton_consumes_what_service_bus_wrote_in_roadrunner_format(
    broker: Broker,
) -> None:
    name = _queue()
    job = Job("app.Jobs.SendEmail", {"to": "a@b.c"}, headers={"tenant": "b"}, priority=2)
    later = Job("app.Jobs.Later", b"\xe2\x9c\x93", delay=0.2)
    async with _servicebus(broker, name, wire_format="roadrunner") as queue:
        await queue.push(job)
        await queue.push(later)  # scheduled: with a message-id, still no subject
    async with _proton(broker, name) as queue:
        first, second = sorted(await _consume(queue, 2), key=lambda j: j.name)
    assert (first.name, first.id, first.body, first.priority) == (
        "app.Jobs.Later",
        later.id,
        "\u2713".encode(),
        0,
    )
    assert dict(first.headers) == {}
    assert (second.name, second.id, second.body, second.priority) == (
        "app.Jobs.SendEmail",
        job.id,
        b'{"to":"a@b.c"}',  # RoadRunner sends no content type: the JSON text, as bytes
        2,
    )
    assert dict(second.headers) == {"tenant": "b"}


async def test_a_roadrunner_job_sent_by_another_client_is_read_by_the_service_bus_adapter(
    broker: Broker,
) -> None:
    name = _queue()
    # The SDK gives the message a message-id, as Service Bus may: still no subject.
    envelope = json.dumps({"header": OLDER_HEADER, "body": "text"})
    message = servicebus.ServiceBusMessage(envelope, application_properties={"k": "x"})
    await _sdk_send(broker, name, message)
    async with _servicebus(broker, name) as queue:
        [job] = await _consume(queue, 1)
    assert (job.name, job.id, job.body, job.priority) == ("app.Jobs.Report", "rr-2", b"text", 2)
    assert dict(job.headers) == {"k": "v"}  # the envelope's headers win


async def test_retried_and_released_copies_stay_in_the_envelope(broker: Broker) -> None:
    name = _queue()
    job = Job("app.Jobs.Flaky", b"p", headers={"tenant": "c"})
    async with _servicebus(broker, name, wire_format="roadrunner", pipeline="emails") as queue:
        await queue.push(job)
        async with queue.consume() as consumer:
            got = await consumer.receive(timeout=5)
            assert got is not None
            await got.release()  # a copy, the attempt unchanged
            got = await consumer.receive(timeout=5)
            assert got is not None
            assert (got.id, got.name, got.attempt, dict(got.headers)) == (
                job.id,
                "app.Jobs.Flaky",
                1,
                {"tenant": "c"},
            )
            await got.retry(delay=0.2)  # a scheduled copy with attempt 2
    await asyncio.sleep(0.4)
    [message] = await _sdk_messages(broker, name, 1)
    header = json.loads(b"".join(message.body))["header"]
    assert (header["rr_id"], header["rr_job"], header["rr_pipeline"]) == (
        job.id,
        "app.Jobs.Flaky",
        "emails",
    )
    properties = {_text(k): v for k, v in message.application_properties.items()}
    assert properties == {"tenant": b"c", "x-delay": 200, "x-amqp1q-attempt": 2}
    assert message.subject is None


async def test_a_queue_default_priority_is_still_refused(broker: Broker) -> None:
    # A job's own priority travels in the envelope; the queue's default would be dropped.
    name = _queue()
    async with _servicebus(broker, name, wire_format="roadrunner", priority=5) as queue:
        with pytest.raises(UnsupportedFeature, match="no message priority"):
            await queue.push(Job("x"))
        await queue.push(Job("y", priority=5))
    assert len(broker.queue(name)) == 1
