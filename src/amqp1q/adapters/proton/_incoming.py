"""Decoding a received delivery into the :class:`~amqp1q._adapter.Incoming` the facade hands out.

Reserved application properties (``x-amqp1q-*``) are read here and kept out of the job's
headers: the attempt a re-published copy carries, a dead-letter's reason, and the time before
which a delayed job is held (on brokers without delayed delivery; see ``_brokers``).
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Mapping
from typing import Any

from ..._adapter import Incoming
from ..._job import RESERVED_HEADER_PREFIX, Headers
from ..._roadrunner import received_envelope
from ._brokers import NOT_BEFORE_PROPERTY
from ._codec import AMQPDecodeError, decode_message

__all__ = [
    "ATTEMPT_HEADER",
    "DEAD_LETTER_DESCRIPTION_HEADER",
    "DEAD_LETTER_REASON_HEADER",
    "decode_delivery",
    "to_incoming",
]

ATTEMPT_HEADER = RESERVED_HEADER_PREFIX + "attempt"
DEAD_LETTER_REASON_HEADER = RESERVED_HEADER_PREFIX + "dead-letter-reason"
DEAD_LETTER_DESCRIPTION_HEADER = RESERVED_HEADER_PREFIX + "dead-letter-description"
#: Where Service Bus (and the embedded broker) put a dead-lettered message's reason.
_BROKER_DEAD_LETTER_KEYS = frozenset({"DeadLetterReason", "DeadLetterErrorDescription"})
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


def to_incoming(payload: bytes, delivery: Any, *, count_deliveries: bool = True) -> Incoming:
    """Decode a delivery into what the facade hands out; undecodable input keeps its raw bytes."""
    return decode_delivery(payload, delivery, count_deliveries=count_deliveries)[0]


def decode_delivery(
    payload: bytes, delivery: Any, *, count_deliveries: bool = True
) -> tuple[Incoming, int | None]:
    """:func:`to_incoming`, and the job's ``x-amqp1q-not-before`` time (ms) if it has one."""
    try:
        message = decode_message(payload)
    except AMQPDecodeError as exc:
        return Incoming(
            id="",
            name="",
            body=payload,
            content_type=None,
            headers=Headers(),
            attempt=1,
            token=delivery,
            decode_error=f"not an AMQP message: {exc}",
        ), None
    props = message.application_properties or {}
    headers: dict[str, str] = {}
    attempt = 1
    reason = description = None
    decode_error = None
    not_before: int | None = None
    for key, value in props.items():
        if not isinstance(key, str):
            continue
        if key in _BROKER_DEAD_LETTER_KEYS:  # reported as job.dead_letter_reason/description
            continue
        if key.startswith(RESERVED_HEADER_PREFIX):
            if key == ATTEMPT_HEADER and isinstance(value, int) and value > 0:
                attempt = value
            elif key == DEAD_LETTER_REASON_HEADER:
                reason = str(value)
            elif key == DEAD_LETTER_DESCRIPTION_HEADER:
                description = str(value)
            elif key == NOT_BEFORE_PROPERTY and isinstance(value, int):
                not_before = value
            continue
        if isinstance(value, str):
            headers[key] = value
        elif isinstance(value, (bool, int, float, uuid.UUID)):
            headers[key] = str(value).lower() if isinstance(value, bool) else str(value)
        else:
            decode_error = f"application property {key!r} is a {type(value).__name__}, not a string"
    annotations: Mapping[Any, Any] = message.message_annotations or {}
    if reason is None:
        for key in ("DeadLetterReason",):
            if isinstance(props.get(key), str):
                reason = props[key]
                description = props.get("DeadLetterErrorDescription")
    delivery_count = (message.delivery_count or 0) if count_deliveries else 0
    body: bytes
    if message.body_kind == "data" or message.body_kind is None:
        body = message.body or b""
    else:
        # An amqp-value or amqp-sequence body (a foreign producer): kept as bytes a handler can
        # look at -- binary as is, text as UTF-8, anything else as its repr -- and flagged.
        value = message.body
        if isinstance(value, (bytes, bytearray, memoryview)):
            body = bytes(value)
        elif isinstance(value, str):
            body = value.encode("utf-8")
        else:
            body = repr(value).encode("utf-8", "replace")
        if decode_error is None:
            decode_error = f"the body is an AMQP {message.body_kind} section, not data"
    if message.body_kind == "data" and decode_error is None:
        envelope = received_envelope(body, message_id=message.message_id, subject=message.subject)
        if envelope is not None:  # a RoadRunner amqp1 job (see amqp1q._roadrunner)
            headers = envelope.job_headers(headers)
            message.message_id = envelope.id or message.message_id
            message.subject = envelope.name
            message.priority = envelope.priority
            body = envelope.body
    subject: Any = message.subject  # a str when well-formed; the decoder checks nothing
    if subject is not None and not isinstance(subject, str):
        if decode_error is None:
            decode_error = f"the subject is a {type(subject).__name__}, not a string"
        subject = None
    incoming = Incoming(
        id=_message_id(message.message_id),
        name=subject or "",
        body=body,
        content_type=str(message.content_type) if message.content_type is not None else None,
        headers=Headers._trusted(headers),
        attempt=attempt + delivery_count,
        token=delivery,
        priority=message.priority,
        enqueued_at=_enqueued_at(annotations, message.creation_time),
        dead_letter_reason=reason,
        dead_letter_description=str(description) if description is not None else None,
        decode_error=decode_error,
    )
    return incoming, not_before


def _message_id(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    return str(value)


def _enqueued_at(annotations: Mapping[Any, Any], creation_time: Any) -> datetime.datetime | None:
    value = annotations.get("x-opt-enqueued-time", creation_time)
    if isinstance(value, datetime.datetime):
        return value
    if isinstance(value, int) and value > 0:
        try:
            return _EPOCH + datetime.timedelta(milliseconds=value)
        except OverflowError:  # past year 9999: not a time anyone meant
            return None
    return None
