"""Decoding a received delivery into the :class:`~amqp1q._adapter.Incoming` the facade hands out.

The application properties are read by :mod:`amqp1q._properties`, as on every adapter: the job's
headers, the attempt a re-published copy carries, a dead-letter's reason, and the time before
which a delayed job is held (on brokers without delayed delivery; see ``_brokers``); and the
``group-id``, the job's group.
"""

from __future__ import annotations

import datetime
import functools
from collections.abc import Mapping
from typing import Any

from ..._adapter import Incoming
from ..._job import Headers, trusted_headers
from ..._properties import read_group, read_properties
from ..._roadrunner import received_envelope
from ._codec import AMQPDecodeError, decode_message

__all__ = ["decode_delivery", "to_incoming"]

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
    facts = read_properties(message.application_properties)
    headers = facts.headers
    decode_error = facts.error
    annotations = message.message_annotations
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
    reply_to = message.reply_to if isinstance(message.reply_to, str) else None
    # A request's reply carries its message id; a reply carries the request's.
    correlation = message.message_id if reply_to is not None else message.correlation_id
    if message.body_kind == "data" and decode_error is None:
        envelope = received_envelope(body, message_id=message.message_id, subject=message.subject)
        if envelope is not None:  # a RoadRunner amqp1 job (see amqp1q._roadrunner)
            headers = envelope.job_headers(headers)
            message.message_id = envelope.id or message.message_id
            message.subject = envelope.name
            message.priority = envelope.priority
            body = envelope.body
    group, group_error = read_group(message.group_id)
    decode_error = decode_error or group_error
    subject: Any = message.subject  # a str when well-formed; the decoder checks nothing
    if subject is not None and not isinstance(subject, str):
        if decode_error is None:
            decode_error = f"the subject is a {type(subject).__name__}, not a string"
        subject = None
    message_id = message.message_id
    # Positional, in Incoming's field order (keywords cost 0.4 us a message more).
    incoming = Incoming(
        message_id if type(message_id) is str else _message_id(message_id),  # id
        subject or "",  # name
        body,
        _text_or_none(message.content_type),
        trusted_headers(headers),
        facts.attempt + delivery_count,  # attempt
        delivery,  # token
        message.priority,
        _enqueued_at(annotations, message.creation_time),
        facts.dead_letter_reason,
        facts.dead_letter_description,
        decode_error,
        group,
        None,  # group_state
        None,  # guard
        reply_to,
        None if correlation is None else _message_id(correlation),  # correlation_id
    )
    return incoming, facts.not_before


def _text_or_none(value: Any) -> str | None:
    return value if value is None or type(value) is str else str(value)


def _message_id(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    return str(value)


def _enqueued_at(
    annotations: Mapping[Any, Any] | None, creation_time: Any
) -> datetime.datetime | None:
    value = annotations.get("x-opt-enqueued-time", creation_time) if annotations else creation_time
    if isinstance(value, int) and value > 0:
        return _datetime(value)
    if isinstance(value, datetime.datetime):
        return value
    return None


@functools.lru_cache(maxsize=64)
def _datetime(milliseconds: int) -> datetime.datetime | None:
    """The time ``milliseconds`` after the epoch (jobs pushed together share one: cached)."""
    try:
        return _EPOCH + datetime.timedelta(milliseconds=milliseconds)
    except OverflowError:  # past year 9999: not a time anyone meant
        return None
