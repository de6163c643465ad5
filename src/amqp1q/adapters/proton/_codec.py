"""Job <-> AMQP 1.0 message bytes (the bare message of part 3 of the specification).

A job travels as one message:

- header: ``durable``, ``priority``, and ``ttl`` where a broker profile delays by expiry;
- message-annotations: only when the profile schedules by annotation (``x-opt-delivery-time``...);
- properties: ``message-id`` = job id, ``subject`` = job name, ``content-type``, ``creation-time``,
  a request's ``reply-to`` and ``correlation-id``, and ``group-id`` = the job's group when it
  has one;
- application-properties: the job's headers (strings), plus ``x-amqp1q-attempt`` after a retry
  that had to re-publish, plus whatever the adapter adds (dead-letter reason...): written by
  :func:`amqp1q._properties.job_properties`, as every adapter writes them;
- one data section: the job's body bytes.

:func:`encode_job` is the hot path and writes those sections directly. :func:`decode_message`
reads any well-formed message (every section, every body kind) into a :class:`Message`, and
:func:`encode_message` writes one back, which is what the embedded broker and tests need.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Final

import attrs

from ..._job import Job
from ..._properties import job_properties
from ._types import (
    BYTE,
    AMQPDecodeError,
    Described,
    Symbol,
    Timestamp,
    UByte,
    UInt,
    decode,
    decode_fields,
    decode_map,
    encode_binary,
    encode_into,
    encode_map,
    string_bytes,
    symbol_bytes,
)

__all__ = [
    "HEADER",
    "MESSAGE_ANNOTATIONS",
    "AMQPDecodeError",
    "Message",
    "decode_message",
    "encode_job",
    "encode_message",
    "split_sections",
]

HEADER: Final = 0x70
DELIVERY_ANNOTATIONS: Final = 0x71
MESSAGE_ANNOTATIONS: Final = 0x72
PROPERTIES: Final = 0x73
APPLICATION_PROPERTIES: Final = 0x74
DATA: Final = 0x75
AMQP_SEQUENCE: Final = 0x76
AMQP_VALUE: Final = 0x77
FOOTER: Final = 0x78

_SECTION_NAMES: Final = {
    "amqp:header:list": HEADER,
    "amqp:delivery-annotations:map": DELIVERY_ANNOTATIONS,
    "amqp:message-annotations:map": MESSAGE_ANNOTATIONS,
    "amqp:properties:list": PROPERTIES,
    "amqp:application-properties:map": APPLICATION_PROPERTIES,
    "amqp:data:binary": DATA,
    "amqp:amqp-sequence:list": AMQP_SEQUENCE,
    "amqp:amqp-value:*": AMQP_VALUE,
    "amqp:footer:map": FOOTER,
}


@attrs.define(slots=True)
class Message:
    """A decoded AMQP message: every field of every section, ``None`` where absent."""

    # header
    durable: bool | None = None
    priority: int | None = None
    ttl: int | None = None
    first_acquirer: bool | None = None
    delivery_count: int | None = None
    # annotations
    delivery_annotations: dict[Any, Any] | None = None
    message_annotations: dict[Any, Any] | None = None
    # properties
    message_id: Any = None
    user_id: bytes | None = None
    to: str | None = None
    subject: str | None = None
    reply_to: str | None = None
    correlation_id: Any = None
    content_type: str | None = None
    content_encoding: str | None = None
    absolute_expiry_time: int | None = None
    creation_time: int | None = None
    group_id: str | None = None
    group_sequence: int | None = None
    reply_to_group_id: str | None = None
    # application data
    application_properties: dict[Any, Any] | None = None
    #: ``"data"`` (bytes, the data sections joined), ``"value"`` (any AMQP value),
    #: ``"sequence"`` (a list of the sequence sections' items), or ``None`` for no body.
    body_kind: str | None = None
    body: Any = None
    footer: dict[Any, Any] | None = None


# -- encoding a job ------------------------------------------------------------------------------

_HEADER_DURABLE: Final = b"\x00\x53\x70"
_PROPERTIES: Final = b"\x00\x53\x73"
_ANNOTATIONS: Final = b"\x00\x53\x72"
_APP_PROPERTIES: Final = b"\x00\x53\x74"
_DATA: Final = b"\x00\x53\x75"


def encode_job(
    job: Job,
    *,
    priority: int | None = None,
    attempt: int = 1,
    annotations: Mapping[Symbol, Any] | None = None,
    to: str | None = None,
    extra_properties: Mapping[str, Any] | None = None,
    ttl: int | None = None,
    creation_time: int | None = None,
) -> bytes:
    """The message bytes for ``job`` (see the module docstring for the layout).

    ``priority`` overrides the job's own (the queue's default applies when both are unset);
    ``attempt`` > 1 is carried as the ``x-amqp1q-attempt`` application property.
    """
    # header: [durable, priority, ttl] -- a handful of shapes, cached
    if priority is None:
        priority = job.priority
    if ttl is None:
        header = _header_bytes(job.durable, priority)
    else:
        fields = (b"\x41" if job.durable else b"\x42") + (
            b"\x40" if priority is None else b"\x50" + BYTE[priority]
        )
        fields += b"\x70" + ttl.to_bytes(4, "big")
        header = _HEADER_DURABLE + b"\xc0" + BYTE[len(fields) + 1] + b"\x03" + fields
    parts = [header]
    if annotations:
        section = bytearray(_ANNOTATIONS)
        encode_map(section, annotations)
        parts.append(bytes(section))
    # properties: [message-id, user-id, to, subject, reply-to, correlation-id, content-type,
    #              content-encoding, absolute-expiry-time, creation-time(, group-id)]
    stamp = int(time.time() * 1000) if creation_time is None else creation_time
    fields = b"".join(
        (
            string_bytes(job.id),
            b"\x40\x40" if to is None else b"\x40" + string_bytes(to),
            string_bytes(job.name),
            _REPLY_NONE if job.reply_to is None and job.correlation_id is None else _reply(job),
            b"\x40" if job.content_type is None else symbol_bytes(job.content_type),
            b"\x40\x40\x83",
            stamp.to_bytes(8, "big", signed=True),
        )
    )
    count = b"\x0a"
    if job.group is not None:
        fields += string_bytes(job.group)
        count = b"\x0b"
    size = len(fields)
    if size < 255:
        parts.append(_PROPERTIES + b"\xc0" + BYTE[size + 1] + count)
    else:
        parts.append(_PROPERTIES + b"\xd0" + (size + 4).to_bytes(4, "big") + b"\x00\x00\x00")
        parts.append(count)
    parts.append(fields)
    # application-properties
    headers = job.headers
    if attempt > 1 or extra_properties:
        section = bytearray(_APP_PROPERTIES)
        encode_map(section, job_properties(headers, attempt=attempt, extra=extra_properties))
        parts.append(bytes(section))
    elif headers:
        parts.append(_headers_section(headers))
    body = job.body
    size = len(body)
    if size < 256:
        parts.append(_DATA + b"\xa0" + BYTE[size])
    else:
        parts.append(_DATA + b"\xb0" + size.to_bytes(4, "big"))
    parts.append(body)
    return b"".join(parts)


def _headers_section(headers: Mapping[str, str]) -> bytes:
    """The application-properties section of a job's headers alone: what ``encode_map`` writes
    for them (text names to text values), without its per-value type dispatch (a traced push
    carries its trace context in every job)."""
    body = b"".join([string_bytes(name) + string_bytes(value) for name, value in headers.items()])
    count = 2 * len(headers)
    if len(body) < 255 and count <= 255:
        return _APP_PROPERTIES + b"\xc1" + BYTE[len(body) + 1] + BYTE[count] + body
    return (
        _APP_PROPERTIES
        + b"\xd1"
        + (len(body) + 4).to_bytes(4, "big")
        + count.to_bytes(4, "big")
        + body
    )


_REPLY_NONE: Final = b"\x40\x40"


def _reply(job: Job) -> bytes:
    """A request's reply-to and correlation-id (strings)."""
    return (b"\x40" if job.reply_to is None else string_bytes(job.reply_to)) + (
        b"\x40" if job.correlation_id is None else string_bytes(job.correlation_id)
    )


_HEADERS: dict[tuple[bool, int | None], bytes] = {}


def _header_bytes(durable: bool, priority: int | None) -> bytes:
    key = (durable, priority)
    header = _HEADERS.get(key)
    if header is None:
        fields = b"\x41" if durable else b"\x42"
        if priority is not None:
            fields += b"\x50" + BYTE[priority]
        count = b"\x02" if priority is not None else b"\x01"
        header = _HEADERS[key] = _HEADER_DURABLE + b"\xc0" + BYTE[len(fields) + 1] + count + fields
    return header


# -- decoding ------------------------------------------------------------------------------------


def decode_message(data: bytes | bytearray | memoryview) -> Message:
    """Every section of an encoded message. Raises :class:`AMQPDecodeError` if malformed."""
    message = Message()
    offset = 0
    end = len(data)
    data_parts: list[bytes] | None = None
    sequence: list[Any] | None = None
    try:
        while offset < end:
            if data[offset] != 0x00:
                raise AMQPDecodeError(f"byte {offset} does not start a described section")
            if data[offset + 1] == 0x53:  # the usual smallulong descriptor
                code = data[offset + 2]
                offset += 3
            else:
                descriptor, offset = decode(data, offset + 1)
                code = _section_code(descriptor)
            if code == DATA:
                kind = data[offset]
                if kind == 0xA0:
                    size = data[offset + 1]
                    start = offset + 2
                elif kind == 0xB0:
                    size = int.from_bytes(data[offset + 1 : offset + 5], "big")
                    start = offset + 5
                else:
                    raise AMQPDecodeError("a data section does not hold binary")
                offset = start + size
                if offset > end:
                    raise AMQPDecodeError("truncated data section")
                if data_parts is None:
                    data_parts = []
                data_parts.append(bytes(data[start:offset]))
                continue
            if code == HEADER:
                if data[offset : offset + 4] == _DURABLE_ONLY:  # amqp1q's own, most often
                    message.durable = True
                    offset += 4
                    continue
                fields, offset = decode_fields(data, offset)
                _header(message, fields)
                continue
            if code == PROPERTIES:
                fields, offset = decode_fields(data, offset)
                _properties(message, fields)
                continue
            if code == APPLICATION_PROPERTIES:
                value, offset = decode_map(data, offset)
                message.application_properties = _as_map(value, "application-properties")
                continue
            value, offset = decode(data, offset)
            if code == MESSAGE_ANNOTATIONS:
                message.message_annotations = _as_map(value, "message-annotations")
            elif code == DELIVERY_ANNOTATIONS:
                message.delivery_annotations = _as_map(value, "delivery-annotations")
            elif code == AMQP_VALUE:
                message.body_kind = "value"
                message.body = value
            elif code == AMQP_SEQUENCE:
                if sequence is None:
                    sequence = []
                sequence.extend(_as_list(value, "amqp-sequence"))
            elif code == FOOTER:
                message.footer = _as_map(value, "footer")
            else:
                raise AMQPDecodeError(f"unknown message section 0x{code:02x}")
    except IndexError as exc:
        raise AMQPDecodeError("truncated message") from exc
    if data_parts is not None:
        message.body_kind = "data"
        message.body = data_parts[0] if len(data_parts) == 1 else b"".join(data_parts)
    elif sequence is not None:
        message.body_kind = "sequence"
        message.body = sequence
    return message


def _section_code(descriptor: Any) -> int:
    if isinstance(descriptor, int):
        return int(descriptor) & 0xFFFFFFFF if descriptor >> 32 == 0 else -1
    if isinstance(descriptor, str) and descriptor in _SECTION_NAMES:
        return _SECTION_NAMES[descriptor]
    raise AMQPDecodeError(f"unknown message section descriptor {descriptor!r}")


def _as_list(value: Any, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise AMQPDecodeError(f"the {what} section is not a list")
    return value


def _as_map(value: Any, what: str) -> dict[Any, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise AMQPDecodeError(f"the {what} section is not a map")
    return value


def _header(message: Message, fields: list[Any]) -> None:
    if len(fields) != 5:
        fields = (fields + _NONE_5)[:5]
    message.durable, priority, ttl, message.first_acquirer, count = fields
    message.priority, message.ttl, message.delivery_count = priority, ttl, count
    if priority is None and ttl is None and count is None:
        return
    for value in (priority, ttl, count):
        # Unsigned integers: receivers add and compare them (a "3" would raise TypeError there).
        if value is not None and (type(value) is bool or not isinstance(value, int) or value < 0):
            raise AMQPDecodeError(
                f"a header field is not an unsigned integer (a {type(value).__name__})"
            )


_NONE_5: Final[list[None]] = [None] * 5
#: A header list holding only durable = true (a list8 of one item: the byte 0x41).
_DURABLE_ONLY: Final = b"\xc0\x02\x01\x41"


def _properties(message: Message, fields: list[Any]) -> None:
    if len(fields) != 13:
        fields = (fields + _NONE_13)[:13]
    (
        message.message_id,
        message.user_id,
        message.to,
        message.subject,
        message.reply_to,
        message.correlation_id,
        message.content_type,
        message.content_encoding,
        message.absolute_expiry_time,
        message.creation_time,
        message.group_id,
        message.group_sequence,
        message.reply_to_group_id,
    ) = fields


_NONE_13: Final[list[None]] = [None] * 13


# -- encoding any message -----------------------------------------------------------------------


def encode_message(message: Message) -> bytes:
    """The bytes of ``message``; the inverse of :func:`decode_message`."""
    out = bytearray()
    header = [
        message.durable,
        None if message.priority is None else UByte(message.priority),
        None if message.ttl is None else UInt(message.ttl),
        message.first_acquirer,
        None if message.delivery_count is None else UInt(message.delivery_count),
    ]
    _section(out, HEADER, _trim(header))
    if message.delivery_annotations:
        _section(out, DELIVERY_ANNOTATIONS, message.delivery_annotations)
    if message.message_annotations:
        _section(out, MESSAGE_ANNOTATIONS, message.message_annotations)
    properties = [
        message.message_id,
        message.user_id,
        message.to,
        message.subject,
        message.reply_to,
        message.correlation_id,
        None if message.content_type is None else Symbol(message.content_type),
        None if message.content_encoding is None else Symbol(message.content_encoding),
        None if message.absolute_expiry_time is None else Timestamp(message.absolute_expiry_time),
        None if message.creation_time is None else Timestamp(message.creation_time),
        message.group_id,
        None if message.group_sequence is None else UInt(message.group_sequence),
        message.reply_to_group_id,
    ]
    properties = _trim(properties)
    if properties:
        _section(out, PROPERTIES, properties)
    if message.application_properties:
        _section(out, APPLICATION_PROPERTIES, message.application_properties)
    kind = message.body_kind
    if kind == "data":
        out += _DATA
        encode_binary(out, message.body)
    elif kind == "value":
        _section(out, AMQP_VALUE, message.body)
    elif kind == "sequence":
        _section(out, AMQP_SEQUENCE, list(message.body))
    elif kind is not None:
        raise ValueError(f"unknown body kind {kind!r}")
    if message.footer:
        _section(out, FOOTER, message.footer)
    return bytes(out)


def _section(out: bytearray, code: int, value: Any) -> None:
    out += b"\x00\x53" + bytes((code,))
    encode_into(out, value)


def _trim(fields: list[Any]) -> list[Any]:
    while fields and fields[-1] is None:
        fields.pop()
    return fields


def split_sections(data: bytes | bytearray | memoryview) -> list[tuple[int, int, int]]:
    """``(section code, start, end)`` for each section, so a broker can rewrite one in place."""
    sections = []
    offset = 0
    end = len(data)
    while offset < end:
        start = offset
        if data[offset] != 0x00:
            raise AMQPDecodeError(f"byte {offset} does not start a described section")
        descriptor, offset = decode(data, offset + 1)
        if isinstance(descriptor, Described):
            raise AMQPDecodeError("a section descriptor is itself described")
        code = _section_code(descriptor)
        _, offset = decode(data, offset)
        sections.append((code, start, offset))
    return sections
