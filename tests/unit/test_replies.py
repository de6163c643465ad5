"""Request and reply without a network: what a request and a reply carry on each wire (the
Proton codec, Service Bus's message mapping, RoadRunner's envelope), and how a reply reads."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("azure.servicebus")

from amqp1q import InvalidJob, Job, JobFailed, PayloadValidationError
from amqp1q._adapter import Incoming
from amqp1q._calls import error_reply, read_reply, value_reply
from amqp1q._job import Headers
from amqp1q._replies import ERROR_TYPE
from amqp1q.adapters.proton._codec import (
    Message,
    decode_message,
    encode_job,
    encode_message,
)
from amqp1q.adapters.proton._incoming import to_incoming as proton_incoming
from amqp1q.adapters.proton._replies import encode_reply
from amqp1q.adapters.servicebus._mapping import (
    reply_message,
    to_incoming,
    to_message,
    to_roadrunner_message,
)


def _reply(body: bytes, content_type: str, correlation_id: str = "job-1") -> Incoming:
    return Incoming(
        id="r",
        name="reply",
        body=body,
        content_type=content_type,
        headers=Headers(),
        attempt=1,
        correlation_id=correlation_id,
    )


def test_a_request_carries_reply_to_and_correlation_id_in_the_amqp_properties() -> None:
    job = Job("render", {"id": 1}, reply_to="/queues/replies", correlation_id="c-1")
    message = decode_message(encode_job(job))
    assert (message.reply_to, message.correlation_id, message.message_id) == (
        "/queues/replies",
        "c-1",
        job.id,
    )
    incoming = proton_incoming(encode_job(job), None)
    # What a reply to it must carry: the request's message id.
    assert (incoming.reply_to, incoming.correlation_id) == ("/queues/replies", job.id)


def test_a_plain_job_is_encoded_as_before() -> None:
    job = Job("plain", b"x")
    message = decode_message(encode_job(job))
    assert (message.reply_to, message.correlation_id) == (None, None)
    assert proton_incoming(encode_job(job), None).reply_to is None


def test_a_foreign_request_is_answered_with_its_message_id_whatever_its_correlation_id() -> None:
    raw = encode_message(
        Message(
            message_id="call-7",
            correlation_id="something-else",
            reply_to="replies",
            subject="add",
            body_kind="data",
            body=b"{}",
        )
    )
    incoming = proton_incoming(raw, None)
    assert (incoming.reply_to, incoming.correlation_id) == ("replies", "call-7")


def test_a_reply_is_a_plain_message_with_the_correlation_id() -> None:
    reply = value_reply({"url": "x"}, "call-7", "render", None)
    message = decode_message(encode_reply(reply))
    assert message.correlation_id == "call-7"
    assert message.subject == "render"
    assert message.content_type == "application/json"
    assert json.loads(message.body) == {"url": "x"}
    incoming = proton_incoming(encode_reply(reply), None)
    assert incoming.reply_to is None
    assert incoming.correlation_id == "call-7"  # what the caller routes by


def test_service_bus_requests_and_replies() -> None:
    job = Job("render", {"id": 1}, reply_to="replies", correlation_id="c-1")
    message = to_message(job)
    assert (message.reply_to, message.correlation_id) == ("replies", "c-1")
    message.reply_to_session_id = "caller-1"
    incoming = to_incoming(message)
    assert (incoming.reply_to, incoming.correlation_id, incoming.reply_to_session_id) == (
        "replies",
        job.id,
        "caller-1",
    )
    reply = reply_message(value_reply(3, job.id, "render", "caller-1"))
    assert (reply.correlation_id, reply.session_id, bytes(next(iter(reply.body)))) == (
        job.id,
        "caller-1",
        b"3",
    )
    answered = to_incoming(reply)
    assert (answered.reply_to, answered.correlation_id) == (None, job.id)


def test_a_roadrunner_request_keeps_its_reply_to() -> None:
    job = Job("render", {"id": 1}, reply_to="replies", correlation_id="c-1")
    message = to_roadrunner_message(job, "pipeline")
    assert (message.reply_to, message.correlation_id) == ("replies", "c-1")


def test_a_value_reply_reads_back_as_the_value_or_the_declared_type() -> None:
    assert read_reply(_reply(b"[1, 2]", "application/json"), None, "q", "j") == [1, 2]
    assert read_reply(_reply(b"\x00", "application/octet-stream"), bytes, "q", "j") == b"\x00"
    assert read_reply(_reply(b"[1, 2]", "application/json"), list[int], "q", "j") == [1, 2]
    with pytest.raises(PayloadValidationError) as invalid:
        read_reply(_reply(b'["a"]', "application/json"), list[int], "q", "j")
    assert invalid.value.job_id == "j"


def test_a_failure_reply_raises_job_failed_with_the_remote_error() -> None:
    reply = error_reply("ValueError", "no good", "j", "render", None)
    assert reply.content_type == ERROR_TYPE
    with pytest.raises(JobFailed) as failed:
        read_reply(_reply(reply.body, reply.content_type), None, "q", "j")
    assert (failed.value.error_type, failed.value.error_message) == ("ValueError", "no good")
    assert (failed.value.queue, failed.value.job_id) == ("q", "j")
    with pytest.raises(JobFailed) as garbled:  # a failure reply nobody could read still fails
        read_reply(_reply(b"not json", ERROR_TYPE), None, "q", "j")
    assert garbled.value.error_message == "not json"


@pytest.mark.parametrize("field", ["reply_to", "correlation_id"])
@pytest.mark.parametrize("value", ["", 5, "\ud800"])
def test_reply_fields_are_checked_when_the_job_is_made(field: str, value: object) -> None:
    with pytest.raises(InvalidJob, match=field):
        Job("x", **{field: value})  # type: ignore[arg-type]
