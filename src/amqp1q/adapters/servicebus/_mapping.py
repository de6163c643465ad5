"""Job <-> ``ServiceBusMessage``: what a push sends and what a receive hands to the facade.

No network here: :func:`to_message` builds the SDK message for a job (or a re-sent copy of a
received one), :func:`to_roadrunner_message` the same in RoadRunner's envelope
(``wire_format="roadrunner"``), :func:`to_incoming` decodes a received message into an
:class:`Incoming` -- a RoadRunner envelope included, whatever ``wire_format`` says.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Mapping
from typing import Any, Protocol

from ..._adapter import Incoming
from ..._job import Job, trusted_headers
from ..._properties import (
    ATTEMPT,
    TRACE_CONTEXT,
    job_properties,
    read_group,
    read_properties,
    text_of,
)
from ..._replies import Reply
from ..._roadrunner import encode_envelope, envelope_properties, received_envelope
from ._sdk import ServiceBusMessage

__all__ = [
    "ATTEMPT_PROPERTY",
    "message_for",
    "reply_message",
    "to_incoming",
    "to_message",
    "to_roadrunner_message",
]

#: The application property a re-sent copy's attempt rides in (see :mod:`amqp1q._properties`).
ATTEMPT_PROPERTY = ATTEMPT


def to_message(
    job: Job,
    *,
    attempt: int = 1,
    scheduled_at: datetime.datetime | None = None,
) -> ServiceBusMessage:
    """The ``ServiceBusMessage`` for ``job``: id = message_id, name = subject, headers =
    application properties (``traceparent`` and ``Diagnostic-Id`` among them pass as they are,
    named in bytes as the SDK's tracing names them: with azure-core tracing on, the SDK then
    keeps them instead of adding a second key of the same name); an ``attempt`` above 1 rides
    in ``x-amqp1q-attempt``; the group is the SessionId."""
    properties = job_properties(job.headers, attempt=attempt)
    message = message_for(job.name, job.body, job.id, job.content_type, properties, scheduled_at)
    _request(message, job)
    if job.group is not None:
        message.session_id = job.group
    if job.ttl:  # the SDK writes whole seconds (a 0.5 s ttl would become none): round up
        message.time_to_live = datetime.timedelta(seconds=math.ceil(job.ttl))
    return message


def to_roadrunner_message(job: Job, pipeline: str, *, attempt: int = 1) -> ServiceBusMessage:
    """``job`` as the RoadRunner ``amqp1`` driver writes it (:mod:`amqp1q._roadrunner`): the
    envelope naming ``pipeline`` as the body, and the application properties the Proton adapter
    writes beside it -- the headers, ``x-delay`` (milliseconds) for a delayed job and an
    ``attempt`` above 1. No subject or content type; no message-id either, unless the job is
    delayed: Service Bus schedules a message by its id, so a delayed one carries the job's. The
    envelope has no place for a group: it is the SessionId, beside it."""
    envelope = encode_envelope(job, pipeline)
    message_id = job.id if job.delay else None
    properties = envelope_properties(job, attempt=attempt)
    message = message_for("", envelope, message_id, None, properties, None)
    if job.group is not None:
        message.session_id = job.group
    _request(message, job)
    return message


def _request(message: ServiceBusMessage, job: Job) -> None:
    """A request's reply-to and correlation-id (see ``amqp1q._replies``)."""
    if job.reply_to is not None:
        message.reply_to = job.reply_to
    if job.correlation_id is not None:
        message.correlation_id = job.correlation_id


def reply_message(reply: Reply) -> ServiceBusMessage:
    """A reply as Service Bus carries it: ``session_id`` the caller's session, if it has one."""
    message = message_for(
        reply.subject or "", reply.body, reply.id, reply.content_type, reply.properties, None
    )
    message.correlation_id = reply.correlation_id
    if reply.session_id is not None:
        message.session_id = reply.session_id
    return message


def message_for(
    name: str,
    body: bytes,
    message_id: str | None,
    content_type: str | None,
    properties: Mapping[str, Any],
    scheduled_at: datetime.datetime | None,
) -> ServiceBusMessage:
    """A ``ServiceBusMessage`` with these fields and application properties (those of
    :mod:`amqp1q._properties`), trace context named in bytes."""
    named: dict[str | bytes, Any] = {}
    for key, value in properties.items():
        named[key.encode() if key in TRACE_CONTEXT else key] = value
    message = ServiceBusMessage(
        body,
        message_id=message_id,
        subject=name or None,
        content_type=content_type,
        application_properties=named or None,
        scheduled_enqueue_time_utc=scheduled_at,
    )
    if message_id is None:
        message.message_id = None  # the SDK made one up (setting the scheduled time)
    return message


class _MessageLike(Protocol):
    """What :func:`to_incoming` reads; a ``ServiceBusReceivedMessage`` has it all."""

    @property
    def body(self) -> Any: ...

    @property
    def application_properties(self) -> Any: ...

    @property
    def message_id(self) -> str | None: ...

    @property
    def subject(self) -> str | None: ...

    @property
    def content_type(self) -> str | None: ...


def to_incoming(message: _MessageLike, token: Any = None) -> Incoming:
    """Decode a received message into what the facade hands out.

    The application properties (names and values as bytes, from the SDK) are read by
    :func:`amqp1q._properties.read_properties`, as on every adapter: the headers, the
    ``x-amqp1q-attempt`` the copy was sent with (to which the broker's delivery count is
    added), and ``dead_letter_reason`` / ``dead_letter_description``; the SessionId is the
    job's group. A RoadRunner envelope
    gives the job's name, id, payload, headers and priority, as on the Proton adapter.
    """
    facts = read_properties(message.application_properties)
    headers = facts.headers
    body, body_error = _body(message)
    message_id, name = text_of(message.message_id), text_of(message.subject)
    request_id = message_id
    priority = None
    if body_error is None and facts.error is None:
        envelope = received_envelope(body, message_id=message_id, subject=name)
        if envelope is not None:  # a RoadRunner amqp1 job (see amqp1q._roadrunner)
            headers = envelope.job_headers(headers)
            message_id = envelope.id or message_id
            name = envelope.name
            priority = envelope.priority
            body = envelope.body
    delivery_count = getattr(message, "delivery_count", None) or 0
    reply_to = text_of(getattr(message, "reply_to", None))
    # A request's reply carries its message id; a reply carries the request's.
    correlation = request_id if reply_to is not None else getattr(message, "correlation_id", None)
    group, group_error = read_group(getattr(message, "session_id", None))
    content_type: Any = message.content_type
    if isinstance(content_type, bytes):
        content_type = content_type.decode("utf-8", "replace")
    return Incoming(
        id=message_id or "",
        name=name or "",
        body=body,
        content_type=content_type,
        headers=trusted_headers(headers),
        attempt=facts.attempt + delivery_count,
        token=token,
        priority=priority,
        enqueued_at=getattr(message, "enqueued_time_utc", None),
        dead_letter_reason=facts.dead_letter_reason,
        dead_letter_description=facts.dead_letter_description,
        reply_to=reply_to,
        correlation_id=text_of(correlation),
        reply_to_session_id=text_of(getattr(message, "reply_to_session_id", None)),
        decode_error=body_error or facts.error or group_error,
        group=group,
    )


def _body(message: _MessageLike) -> tuple[bytes, str | None]:
    body = message.body
    if isinstance(body, (bytes, bytearray, memoryview)):
        return bytes(body), None
    if isinstance(body, str):
        return body.encode("utf-8"), None
    if body is None:
        return b"", None
    try:
        parts = list(body)
    except TypeError:
        return b"", f"the body is an AMQP value ({type(body).__name__}), not data"
    if all(isinstance(part, (bytes, bytearray, memoryview)) for part in parts):
        return b"".join(bytes(part) for part in parts), None
    return b"", "the body is an AMQP sequence or value section, not data"
