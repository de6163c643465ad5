"""One table of application-property values, read by both adapters off the same wire.

Each row is a message written raw with the Proton codec (or, where the Azure SDK is the
producer, with azure-servicebus), pushed into two queues of the embedded broker in its Service
Bus image; one queue is consumed through the Proton adapter, the other through the Service Bus
adapter (the Azure SDK receiving). Both must hand out the same job -- the one the row expects:
the property mapping is ``amqp1q._properties``, shared, and the SDK's view of the wire (every
string as bytes, timestamps as integers) is what the shared rules are written for.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any, NamedTuple

import pytest

from amqp1q import Job, JobQueue
from amqp1q.adapters.proton._codec import Message, encode_message
from amqp1q.adapters.proton._types import Symbol, Timestamp, ULong
from amqp1q.adapters.proton.adapter import ProtonAdapter
from amqp1q.testing import Broker

pytest.importorskip("azure.servicebus")
from azure.servicebus import ServiceBusMessage
from azure.servicebus.aio import ServiceBusClient

pytestmark = [pytest.mark.anyio]

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
UUID = uuid.UUID("12345678-1234-5678-1234-567812345678")


class Row(NamedTuple):
    """One message's application properties, and the job both adapters must make of them."""

    properties: dict[Any, Any]
    headers: dict[str, str]
    attempt: int = 1
    error: str | None = None
    dead_letter: tuple[str | None, str | None] = (None, None)


BAD_ATTEMPT = "x-amqp1q-attempt is not a number from 1: "
TABLE: dict[str, Row] = {
    "strings": Row({"tenant": "acme", "empty": ""}, {"tenant": "acme", "empty": ""}),
    "unicode": Row({"ключ": "значение ✓", "emoji": "🐇"}, {"ключ": "значение ✓", "emoji": "🐇"}),
    "timestamp": Row({"at": Timestamp(1_700_000_000_123)}, {"at": "1700000000123"}),
    "numbers": Row(
        {"int": 7, "long": ULong(2**63), "neg": -3, "float": 1.5, "yes": True, "no": False},
        {"int": "7", "long": str(2**63), "neg": "-3", "float": "1.5", "yes": "true", "no": "false"},
    ),
    "uuid": Row({"u": UUID}, {"u": str(UUID)}),
    "symbols": Row({Symbol("sym-key"): Symbol("sym-value")}, {"sym-key": "sym-value"}),
    "binary-utf8": Row({"bin": b"plain text"}, {"bin": "plain text"}),
    "binary-not-utf8": Row(
        {"blob": b"\xff\xfe", "ok": "yes"},
        {"ok": "yes"},
        error="application property 'blob' is binary, not UTF-8 text",
    ),
    "binary-key": Row({b"raw-key": "v"}, {"raw-key": "v"}),
    "non-string-key": Row(
        {5: "five", "a": "b"}, {"a": "b"}, error="an application property name is not text: 5"
    ),
    "null-and-list": Row(
        {"n": None, "l": [1, 2], "ok": "yes"},
        {"ok": "yes"},
        error="application property 'n' is a NoneType, not text",
    ),
    "attempt": Row({"x-amqp1q-attempt": 3, "h": "v"}, {"h": "v"}, attempt=3),
    "attempt-as-text": Row({"x-amqp1q-attempt": "4"}, {}, attempt=4),
    "attempt-bad": Row({"x-amqp1q-attempt": "zz"}, {}, error=BAD_ATTEMPT + "'zz'"),
    "attempt-zero": Row({"x-amqp1q-attempt": 0}, {}, error=BAD_ATTEMPT + "0"),
    "attempt-bool": Row({"x-amqp1q-attempt": True}, {}, error=BAD_ATTEMPT + "True"),
    # what the generic profile writes for a delayed job (a time long past: handed out at once)
    "not-before": Row({"x-amqp1q-not-before": 5, "h": "v"}, {"h": "v"}),
    "not-before-bad": Row(
        {"x-amqp1q-not-before": "soon"}, {}, error="x-amqp1q-not-before is not a number: 'soon'"
    ),
    "unknown-reserved": Row({"x-amqp1q-from-the-future": "x", "h": "v"}, {"h": "v"}),
    "dead-letter-amqp1q": Row(
        {
            "x-amqp1q-dead-letter-reason": "max attempts exceeded",
            "x-amqp1q-dead-letter-description": "attempt 5 of 5",
            "DeadLetterReason": "the broker's",
        },
        {},
        dead_letter=("max attempts exceeded", "attempt 5 of 5"),
    ),
    "dead-letter-broker": Row(
        {"DeadLetterReason": "rejected", "DeadLetterErrorDescription": "bad input", "h": "v"},
        {"h": "v"},
        dead_letter=("rejected", "bad input"),
    ),
    "trace-context": Row(
        {"traceparent": TRACEPARENT, "tracestate": "k=v", "Diagnostic-Id": TRACEPARENT},
        {"traceparent": TRACEPARENT, "tracestate": "k=v", "Diagnostic-Id": TRACEPARENT},
    ),
}


def _raw(row: str, properties: dict[Any, Any]) -> bytes:
    return encode_message(
        Message(
            durable=True,
            message_id=row,
            subject="table",
            content_type="text/plain",
            application_properties=properties,
            body_kind="data",
            body=row.encode(),
        )
    )


def _roadrunner() -> bytes:
    """A RoadRunner job: the envelope, no message-id or subject, x-delay beside it."""
    envelope = {
        "header": {"rr_id": "rr-1", "rr_job": "app.Jobs.Mail", "rr_headers": {"k": ["v"]}},
        "body": "hello",
    }
    return encode_message(
        Message(
            application_properties={"k": "v", "x-delay": 1500},
            body_kind="data",
            body=json.dumps(envelope).encode(),
        )
    )


@pytest.fixture
async def broker() -> AsyncIterator[Broker]:
    async with Broker(servicebus=True) as broker:
        yield broker


async def _push_raw(broker: Broker, queue: str, payloads: list[bytes]) -> None:
    async with JobQueue.from_url(broker.url, queue=queue) as jobs:
        adapter = jobs.adapter
        assert isinstance(adapter, ProtonAdapter)
        assert await adapter.republish_raw(payloads) == [None] * len(payloads)


async def _push_sdk(broker: Broker, queue: str, message: ServiceBusMessage) -> None:
    async with (
        ServiceBusClient.from_connection_string(
            broker.servicebus_connection_string(), retry_total=0
        ) as client,
        client.get_queue_sender(queue) as sender,
    ):
        await sender.send_messages(message)


async def _consume(queue: JobQueue, count: int) -> list[tuple[Any, ...]]:
    seen = []
    async with queue, queue.consume(prefetch=count) as consumer:
        for _ in range(count):
            job = await asyncio.wait_for(consumer.receive(), 10)
            assert job is not None
            seen.append(
                (
                    job.id,
                    job.name,
                    job.body,
                    job.content_type,
                    dict(job.headers),
                    job.attempt,
                    job.decode_error,
                    (job.dead_letter_reason, job.dead_letter_description),
                )
            )
            await job.ack()
    return seen


async def test_both_adapters_read_the_same_table_the_same_way(broker: Broker) -> None:
    payloads = [_raw(name, row.properties) for name, row in TABLE.items()]
    payloads.append(_roadrunner())
    # The case: the Azure SDK writes the attempt as a string.
    sdk_message = ServiceBusMessage(
        b"from the sdk", message_id="sdk-zz", subject="table",
        application_properties={"x-amqp1q-attempt": "zz", "h": "v"},
    )  # fmt: skip
    names = {"proton": f"table-p-{uuid.uuid4().hex[:8]}", "sb": f"table-s-{uuid.uuid4().hex[:8]}"}
    for name in names.values():
        await _push_raw(broker, name, payloads)
        await _push_sdk(broker, name, sdk_message)
    count = len(payloads) + 1
    through_proton = await _consume(JobQueue.from_url(broker.url, queue=names["proton"]), count)
    through_sb = await _consume(
        JobQueue.from_url(broker.servicebus_connection_string(names["sb"])), count
    )
    by_proton = {job[0]: job for job in through_proton}
    by_sb = {job[0]: job for job in through_sb}
    assert by_proton == by_sb  # the same jobs, field for field

    for name, row in TABLE.items():
        expected = (name, "table", name.encode(), "text/plain", *row[1:])
        assert by_proton[name] == expected, name
    rr = by_proton["rr-1"]
    assert rr[1:6] == ("app.Jobs.Mail", b"hello", None, {"k": "v"}, 1)
    sdk = by_proton["sdk-zz"]
    assert sdk[4:7] == ({"h": "v"}, 1, "x-amqp1q-attempt is not a number from 1: 'zz'")


async def test_what_each_adapter_writes_reads_back_alike_on_the_other(broker: Broker) -> None:
    """A job pushed through one adapter, consumed through the other, and the reverse."""
    job = Job("mail", {"to": "a@b.c"}, headers={"tenant": "acme", "traceparent": TRACEPARENT})
    proton_queue, sb_queue = (f"cross-{uuid.uuid4().hex[:8]}" for _ in range(2))
    async with JobQueue.from_url(broker.url, queue=proton_queue) as queue:
        await queue.push(job)
    async with JobQueue.from_url(broker.servicebus_connection_string(sb_queue)) as queue:
        await queue.push(job)
    [via_sb] = await _consume(
        JobQueue.from_url(broker.servicebus_connection_string(proton_queue)), 1
    )
    [via_proton] = await _consume(JobQueue.from_url(broker.url, queue=sb_queue), 1)
    assert via_sb == via_proton
    assert via_sb[4] == {"tenant": "acme", "traceparent": TRACEPARENT}
