"""Job <-> ``ServiceBusMessage``: what a push sends and what a receive hands to the facade.

No network here: :func:`to_message` builds the SDK message for a job (or a re-sent copy of a
received one), :func:`to_roadrunner_message` the same in RoadRunner's envelope
(``wire_format="roadrunner"``), :func:`to_incoming` decodes a received message into an
:class:`Incoming` -- a RoadRunner envelope included, whatever ``wire_format`` says.
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Mapping
from typing import Any, Final, Protocol

from ..._adapter import Incoming
from ..._job import RESERVED_HEADER_PREFIX, Headers, Job
from ..._roadrunner import DELAY_PROPERTY, encode_envelope, received_envelope
from ..._tracing import TRACE_HEADERS
from ._sdk import ServiceBusMessage

__all__ = ["ATTEMPT_PROPERTY", "to_incoming", "to_message", "to_roadrunner_message"]

ATTEMPT_PROPERTY: Final = RESERVED_HEADER_PREFIX + "attempt"


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
    in ``x-amqp1q-attempt``."""
    return _message(
        job.name, job.body, job.id, job.content_type, job.headers, attempt, scheduled_at
    )


def to_roadrunner_message(job: Job, pipeline: str, *, attempt: int = 1) -> ServiceBusMessage:
    """``job`` as the RoadRunner ``amqp1`` driver writes it (:mod:`amqp1q._roadrunner`): the
    envelope naming ``pipeline`` as the body, and the application properties the Proton adapter
    writes beside it -- the headers, ``x-delay`` (milliseconds) for a delayed job and an
    ``attempt`` above 1. No subject or content type; no message-id either, unless the job is
    delayed: Service Bus schedules a message by its id, so a delayed one carries the job's."""
    extra = {DELAY_PROPERTY: int(job.delay * 1000)} if job.delay else None
    envelope = encode_envelope(job, pipeline)
    message_id = job.id if job.delay else None
    return _message("", envelope, message_id, None, job.headers, attempt, None, extra)


def _message(
    name: str,
    body: bytes,
    message_id: str | None,
    content_type: str | None,
    headers: Mapping[str, str],
    attempt: int,
    scheduled_at: datetime.datetime | None,
    extra: Mapping[str, Any] | None = None,
) -> ServiceBusMessage:
    properties: dict[str | bytes, Any] = {}
    properties.update(headers)
    for key in TRACE_HEADERS:
        if key in properties:
            properties[key.encode()] = properties.pop(key)
    if extra:
        properties.update(extra)
    if attempt != 1:
        properties[ATTEMPT_PROPERTY] = attempt
    message = ServiceBusMessage(
        body,
        message_id=message_id,
        subject=name or None,
        content_type=content_type,
        application_properties=properties or None,
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

    Application properties come from the SDK as bytes: names and values are decoded to ``str``
    (numbers, booleans and UUIDs are written out); ``x-amqp1q-*`` are amqp1q's own and the
    broker's ``DeadLetterReason`` / ``DeadLetterErrorDescription`` become
    ``dead_letter_reason`` / ``dead_letter_description``. ``attempt`` is the ``x-amqp1q-attempt``
    the copy was sent with (1 if none) plus the broker's delivery count. A RoadRunner envelope
    gives the job's name, id, payload, headers and priority, as on the Proton adapter.
    """
    headers: dict[str, str] = {}
    base_attempt = 1
    reason: str | None = None
    description: str | None = None
    decode_error: str | None = None
    for raw_key, raw_value in (message.application_properties or {}).items():
        key = _text(raw_key)
        if key is None:
            decode_error = decode_error or "an application property name is not text"
            continue
        value = _text(raw_value)
        if key == ATTEMPT_PROPERTY:
            try:
                base_attempt = max(1, int(value or 1))
            except ValueError:
                decode_error = decode_error or f"{ATTEMPT_PROPERTY} is not a number: {value!r}"
            continue
        if key == "DeadLetterReason":
            reason = value
            continue
        if key == "DeadLetterErrorDescription":
            description = value
            continue
        if key.startswith(RESERVED_HEADER_PREFIX):
            continue
        if value is None:
            decode_error = decode_error or (
                f"application property {key!r} is a {type(raw_value).__name__}, not text"
            )
            continue
        headers[key] = value
    if reason is None:
        reason = getattr(message, "dead_letter_reason", None)
        description = description or getattr(message, "dead_letter_error_description", None)
    body, body_error = _body(message)
    message_id, name = _text(message.message_id), _text(message.subject)
    priority = None
    if body_error is None and decode_error is None:
        envelope = received_envelope(body, message_id=message_id, subject=name)
        if envelope is not None:  # a RoadRunner amqp1 job (see amqp1q._roadrunner)
            headers = envelope.job_headers(headers)
            message_id = envelope.id or message_id
            name = envelope.name
            priority = envelope.priority
            body = envelope.body
    delivery_count = getattr(message, "delivery_count", None) or 0
    content_type: Any = message.content_type
    if isinstance(content_type, bytes):
        content_type = content_type.decode("utf-8", "replace")
    return Incoming(
        id=message_id or "",
        name=name or "",
        body=body,
        content_type=content_type,
        headers=Headers._trusted(headers),
        attempt=base_attempt + delivery_count,
        token=token,
        priority=priority,
        enqueued_at=getattr(message, "enqueued_time_utc", None),
        dead_letter_reason=reason,
        dead_letter_description=description,
        decode_error=body_error or decode_error,
    )


def _text(value: Any) -> str | None:
    """An application property (or field) as text; ``None`` for what has no text form."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, uuid.UUID)):
        return str(value)
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    return None


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
