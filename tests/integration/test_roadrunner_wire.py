"""RoadRunner wire compatibility: its amqp1 driver's JSON envelope, read and written.

The envelope is built by hand from its documented shape (../shared/SEED_NOTES.md)."""

from __future__ import annotations

import asyncio
import base64
import json

import proton
import pytest
from proton.utils import BlockingConnection

from amqp1q import InvalidSetting, Job, JobQueue
from amqp1q.adapters.proton._codec import decode_message
from amqp1q.testing import Broker

pytestmark = pytest.mark.anyio


def _send_raw(url: str, address: str, messages: list[proton.Message]) -> None:
    connection = BlockingConnection(url, timeout=10)
    try:
        sender = connection.create_sender(address)
        for message in messages:
            sender.send(message)
    finally:
        connection.close()


def _roadrunner_message(header: dict[str, object], body: str) -> proton.Message:
    """As RoadRunner writes it: one data section of JSON, no message-id, subject or type."""
    message = proton.Message()
    message.body = json.dumps({"header": header, "body": body}).encode()
    message.inferred = True  # bytes as a data section
    first = header.get("rr_headers") or header.get("headers") or {}
    if isinstance(first, dict):
        message.properties = {k: v[0] for k, v in first.items() if v}
    return message


#: A RoadRunner envelope's header as its current driver writes it ...
CURRENT_HEADER: dict[str, object] = {
    "rr_id": "rr-1",
    "rr_job": "app.Jobs.SendEmail",
    "rr_pipeline": "emails",
    "rr_headers": {"tenant": ["acme", "ignored"], "trace": ["t-1"]},
    "rr_delay": 0,
    "rr_priority": 7,
    "rr_auto_ack": False,
}
#: ... and in the earlier spelling, with headers written as base64 of JSON.
OLDER_HEADER: dict[str, object] = {
    "id": "rr-2",
    "job": "app.Jobs.Report",
    "pipeline": "emails",
    "headers": base64.b64encode(json.dumps({"k": ["v"]}).encode()).decode(),
    "priority": 2,
    "auto_ack": True,
}


async def test_a_roadrunner_job_is_consumed_with_its_name_id_payload_and_headers() -> None:
    current, older = CURRENT_HEADER, OLDER_HEADER
    async with Broker() as broker:
        messages = [
            _roadrunner_message(current, '{"to":"a@b.c"}'),
            _roadrunner_message(older, "plain text payload"),
        ]
        await asyncio.to_thread(_send_raw, broker.url, "emails", messages)
        async with JobQueue.from_url(broker.url, queue="emails") as queue:
            async with queue.consume() as consumer:
                first = await asyncio.wait_for(consumer.receive(), 5)
                second = await asyncio.wait_for(consumer.receive(), 5)
                assert first is not None
                assert second is not None
                for job in (first, second):
                    await job.ack()
    assert (first.name, first.id, first.priority) == ("app.Jobs.SendEmail", "rr-1", 7)
    assert first.body == b'{"to":"a@b.c"}'
    assert dict(first.headers) == {"tenant": "acme", "trace": "t-1"}
    assert first.decode_error is None
    assert (second.name, second.id, second.priority) == ("app.Jobs.Report", "rr-2", 2)
    assert second.body == b"plain text payload"
    assert dict(second.headers) == {"k": "v"}


async def test_pushing_with_the_roadrunner_codec_writes_exactly_that_envelope() -> None:
    job = Job("app.Jobs.SendEmail", b'{"to":"a@b.c"}', headers={"tenant": "acme"}, priority=3)
    async with Broker() as broker:
        url = broker.url
        async with JobQueue.from_url(url, queue="emails", wire_format="roadrunner") as queue:
            await queue.push(job)
            await queue.push(Job("later", b"x", delay=0.2))
        stored = list(broker.queue("emails").messages())
        message = decode_message(stored[0].payload)
        assert message.message_id is None
        assert message.subject is None
        assert message.durable is True
        assert message.application_properties == {"tenant": "acme"}
        assert json.loads(message.body) == {
            "header": {
                "rr_id": job.id,
                "rr_job": "app.Jobs.SendEmail",
                "rr_pipeline": "emails",
                "rr_headers": {"tenant": ["acme"]},
                "rr_delay": 0,
                "rr_priority": 3,
                "rr_auto_ack": False,
            },
            "body": '{"to":"a@b.c"}',
        }
        await asyncio.sleep(0.4)
        delayed = decode_message(list(broker.queue("emails").messages())[1].payload)
        assert (delayed.application_properties or {})["x-delay"] == 200
        # ... and amqp1q reads its own RoadRunner-format jobs back.
        async with JobQueue.from_url(url, queue="emails") as queue:
            async with queue.consume() as consumer:
                back = await asyncio.wait_for(consumer.receive(), 5)
                assert back is not None
                assert (back.name, back.id, back.body) == (job.name, job.id, job.body)
                assert dict(back.headers) == {"tenant": "acme"}
                await back.ack()


def test_an_unknown_wire_format_is_refused() -> None:
    with pytest.raises(InvalidSetting, match="wire_format"):
        JobQueue.from_url("amqp://127.0.0.1/q", wire_format="protobuf")


async def test_the_envelope_names_the_pipeline_given() -> None:
    # RoadRunner pipelines have names of their own; the queue is only one of their settings.
    async with Broker() as broker:
        async with JobQueue.from_url(
            broker.url, queue="mail-q", wire_format="roadrunner", pipeline="emails"
        ) as queue:
            await queue.push(Job("app.Jobs.SendEmail", b"{}"))
        stored = decode_message(next(iter(broker.queue("mail-q").messages())).payload)
        assert json.loads(stored.body)["header"]["rr_pipeline"] == "emails"
