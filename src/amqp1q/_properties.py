"""A job's application properties: the names amqp1q reserves, and the one mapping both ways.

Every adapter carries a job's headers as AMQP application properties, and with them a few
facts of amqp1q's own and of the broker's. Writing and reading them happens here, once, for the
Proton codec, the Service Bus adapter and RoadRunner's envelope alike:

=====================================  ===========================================================
``x-amqp1q-attempt``                   the attempt a re-published copy is on (only when above 1)
``x-amqp1q-dead-letter-reason``,       why amqp1q dead-lettered a job by publishing it to the
``x-amqp1q-dead-letter-description``   dead-letter queue (brokers that cannot dead-letter)
``x-amqp1q-not-before``                milliseconds since the epoch before which a delayed job is
                                       not handed out (brokers without delayed delivery)
``DeadLetterReason``,                  the broker's own dead-letter facts (Service Bus, and the
``DeadLetterErrorDescription``         embedded broker in its image)
``traceparent``, ``tracestate``,       trace context (:data:`TRACE_CONTEXT`): headers like any
``Diagnostic-Id``                      other, read and written by ``_tracing``
=====================================  ===========================================================

Beside them, one fact travels in the message's properties rather than its application
properties: ``Job.group``, the ordering key, is the AMQP ``group-id`` (the Service Bus SessionId,
which the SDK writes there too). :func:`read_group` reads it back, the same on every wire: a
string, or bytes in UTF-8; anything else (a number, binary) is a ``decode_error`` and the job
has no group. ``Job.group`` goes out as it is.

Reading (:func:`read_properties`) is the same whatever the wire, which is why the rules follow
what the azure-servicebus SDK can tell apart (it hands every AMQP string over as ``bytes``, and a
timestamp as its integer):

- a name is text: a string, or bytes in UTF-8. Any other name is a ``decode_error``, and the
  property is skipped;
- a value's text is: a string as it is; bytes in UTF-8 (a binary value cannot be told from a
  string); ``true``/``false``; an integer -- a timestamp too, in milliseconds since the epoch --
  a float or a UUID written out. Any other value (null, a list, a map, bytes not in UTF-8) is a
  ``decode_error``, and the property is skipped;
- ``x-amqp1q-attempt`` is a whole number from 1, or its decimal text; anything else is a
  ``decode_error`` and the job's attempt is counted from 1. ``x-amqp1q-not-before`` is a whole
  number, or a ``decode_error``;
- amqp1q's reason and description, when it dead-lettered the job itself, come before the
  broker's; either pair is read as a pair;
- other ``x-amqp1q-*`` names are never headers (a newer amqp1q's, ignored);
- the first problem found is the one reported.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any, Final, NamedTuple

from ._job import RESERVED_HEADER_PREFIX

__all__ = [
    "ATTEMPT",
    "BROKER_DEAD_LETTER_DESCRIPTION",
    "BROKER_DEAD_LETTER_REASON",
    "DEAD_LETTER_DESCRIPTION",
    "DEAD_LETTER_REASON",
    "NOT_BEFORE",
    "TRACE_CONTEXT",
    "PropertyFacts",
    "dead_letter_properties",
    "job_properties",
    "read_group",
    "read_properties",
    "text_of",
]

ATTEMPT: Final = RESERVED_HEADER_PREFIX + "attempt"
DEAD_LETTER_REASON: Final = RESERVED_HEADER_PREFIX + "dead-letter-reason"
DEAD_LETTER_DESCRIPTION: Final = RESERVED_HEADER_PREFIX + "dead-letter-description"
NOT_BEFORE: Final = RESERVED_HEADER_PREFIX + "not-before"
BROKER_DEAD_LETTER_REASON: Final = "DeadLetterReason"
BROKER_DEAD_LETTER_DESCRIPTION: Final = "DeadLetterErrorDescription"
#: Application properties that carry trace context (W3C, and Azure's Diagnostic-Id).
TRACE_CONTEXT: Final = ("traceparent", "tracestate", "Diagnostic-Id")

_BROKER_DEAD_LETTER: Final = frozenset({BROKER_DEAD_LETTER_REASON, BROKER_DEAD_LETTER_DESCRIPTION})


class PropertyFacts(NamedTuple):
    """What a received message's application properties say (see the module docstring).
    (A named tuple: one is made per message received, on the hot path.)"""

    #: The job's headers: every property that is not amqp1q's or the broker's own.
    headers: dict[str, str]
    #: The attempt the message was sent on (1 unless a re-published copy says more); the
    #: broker's delivery count is added to it by the adapter.
    attempt: int = 1
    dead_letter_reason: str | None = None
    dead_letter_description: str | None = None
    #: ``x-amqp1q-not-before``: milliseconds since the epoch, or None.
    not_before: int | None = None
    #: The first property that could not be read, said in words; None if all could.
    error: str | None = None


def read_properties(properties: Mapping[Any, Any] | None) -> PropertyFacts:
    """The job's headers and amqp1q's facts from a message's application properties."""
    headers: dict[str, str] = {}
    if not properties:
        return PropertyFacts(headers)
    own: dict[str, str] = {}  # amqp1q's and the broker's dead-letter facts
    attempt = 1
    not_before: int | None = None
    error: str | None = None
    for raw_key, value in properties.items():
        key = raw_key if type(raw_key) is str else _name(raw_key)
        if key is None:
            error = error or f"an application property name is not text: {raw_key!r}"
            continue
        if key.startswith(RESERVED_HEADER_PREFIX):
            if key == ATTEMPT:
                number = _whole_number(value)
                if number is not None and number >= 1:
                    attempt = number
                else:
                    error = error or f"{ATTEMPT} is not a number from 1: {_shown(value)!r}"
            elif key == NOT_BEFORE:
                not_before = _whole_number(value)
                if not_before is None:
                    error = error or f"{NOT_BEFORE} is not a number: {_shown(value)!r}"
            elif key in (DEAD_LETTER_REASON, DEAD_LETTER_DESCRIPTION):
                error = _keep_text(own, key, value, error)
            continue  # amqp1q's own, never a header
        if key in _BROKER_DEAD_LETTER:
            error = _keep_text(own, key, value, error)
        elif type(value) is str:  # the usual header: nothing to convert
            headers[key] = value
        else:
            error = _keep_text(headers, key, value, error)
    if not own:
        return PropertyFacts(headers, attempt, not_before=not_before, error=error)
    reason: str | None
    if DEAD_LETTER_REASON in own:
        reason, description = own[DEAD_LETTER_REASON], own.get(DEAD_LETTER_DESCRIPTION)
    else:
        reason = own.get(BROKER_DEAD_LETTER_REASON)
        description = own.get(BROKER_DEAD_LETTER_DESCRIPTION)
    return PropertyFacts(headers, attempt, reason, description, not_before, error)


def read_group(value: Any) -> tuple[str | None, str | None]:
    """A received message's group (its ``group-id``, or SessionId) and, when the value is there
    but not text, the problem in words (the job then has no group)."""
    if value is None or type(value) is str:
        return value or None, None
    if isinstance(value, (bytes, bytearray, memoryview)):
        text = text_of(value)
        if text is not None:
            return text or None, None
        return None, "the group-id is binary, not UTF-8 text"
    return None, f"the group-id is a {type(value).__name__}, not text"


def _keep_text(into: dict[str, str], key: str, value: Any, error: str | None) -> str | None:
    """Put ``value``'s text in ``into[key]``; return the (first) error so far."""
    text = value if type(value) is str else text_of(value)
    if text is not None:
        into[key] = text
        return error
    if error is not None:
        return error
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"application property {key!r} is binary, not UTF-8 text"
    return f"application property {key!r} is a {type(value).__name__}, not text"


def text_of(value: Any) -> str | None:
    """A property value's text (see the module docstring); None where it has none."""
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
    return None


def _name(key: Any) -> str | None:
    if isinstance(key, str):
        return key
    if isinstance(key, (bytes, bytearray, memoryview)):
        return text_of(key)
    return None


def _whole_number(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return int(value)
    text = text_of(value) if isinstance(value, (str, bytes, bytearray, memoryview)) else None
    if text is not None and text.isascii() and text.isdigit():
        return int(text)
    return None


def _shown(value: Any) -> Any:
    """How a bad value is quoted in an error: its text where it has one."""
    text = text_of(value) if isinstance(value, (bytes, bytearray, memoryview)) else None
    return value if text is None else text


# -- writing --------------------------------------------------------------------------------------


def job_properties(
    headers: Mapping[str, str], *, attempt: int = 1, extra: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The application properties a job goes out with: its headers, ``x-amqp1q-attempt`` when
    the attempt is above 1, then ``extra`` (an adapter's own: a delay plan's, a dead-letter's)."""
    properties: dict[str, Any] = dict(headers.items()) if headers else {}
    if attempt > 1:
        properties[ATTEMPT] = attempt
    if extra:
        properties.update(extra)
    return properties


def dead_letter_properties(reason: str | None, description: str | None) -> dict[str, str]:
    """What a job amqp1q dead-letters by publishing it to the dead-letter queue carries."""
    properties = {DEAD_LETTER_REASON: reason or "rejected"}
    if description:
        properties[DEAD_LETTER_DESCRIPTION] = description
    return properties
