"""The RoadRunner ``amqp1`` driver's message envelope, so PHP workers and amqp1q share a queue.

RoadRunner writes one data section holding JSON::

    {"header": {"rr_id": ID, "rr_job": NAME, "rr_pipeline": PIPELINE,
                "rr_headers": {"key": ["value", ...]}, "rr_delay": SECONDS,
                "rr_priority": N, "rr_auto_ack": false},
     "body": "PAYLOAD AS A STRING"}

with no message-id, subject or content-type; application-properties carry the first value of
each header, and a delay also ``x-delay`` (milliseconds). An earlier RoadRunner spelled the keys
``id``, ``job``, ``pipeline``, ``headers``, ``priority``, ``auto_ack``; and it writes
``rr_headers`` base64-encoded (a Go byte slice in JSON). Reading accepts all of these.

The envelope has no place for a job's group (``Job.group``): RoadRunner's jobs have no ordering
key. It goes beside the envelope, as the message's ``group-id`` (the SessionId on Service Bus),
where amqp1q reads it back and a RoadRunner consumer ignores it.

Shared by the adapters: the Proton adapter writes the envelope as one AMQP data section, the
Service Bus adapter as a ``ServiceBusMessage`` body, both with the application properties of
:func:`envelope_properties`; both recognise it on receipt (:func:`received_envelope`), whatever
``wire_format`` says.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any, Final

from ._errors import InvalidSetting
from ._job import Job
from ._properties import job_properties

__all__ = [
    "DELAY_PROPERTY",
    "ROADRUNNER",
    "WIRE_FORMATS",
    "Envelope",
    "check_wire_format",
    "encode_envelope",
    "envelope_properties",
    "parse_envelope",
    "received_envelope",
]

ROADRUNNER: Final = "roadrunner"
#: ``wire_format=`` values: amqp1q's own format (DESIGN section 3), or RoadRunner's envelope.
WIRE_FORMATS: Final = ("amqp1q", ROADRUNNER)
#: The application property a RoadRunner-format push adds for a delayed job (milliseconds).
DELAY_PROPERTY: Final = "x-delay"


def check_wire_format(name: str, value: object) -> str:
    """``value`` if it is one of :data:`WIRE_FORMATS`; else InvalidSetting naming ``name``."""
    if value not in WIRE_FORMATS:
        raise InvalidSetting(f'{name} must be "amqp1q" or "roadrunner", got {value!r}')
    return str(value)


def encode_envelope(job: Job, pipeline: str) -> bytes:
    """The JSON envelope RoadRunner's consumer reads, for ``job``."""
    header: dict[str, Any] = {
        "rr_id": job.id,
        "rr_job": job.name,
        "rr_pipeline": pipeline,
        "rr_headers": {key: [value] for key, value in job.headers.items()},
        "rr_delay": int(job.delay or 0),
        "rr_priority": job.priority or 0,
        "rr_auto_ack": False,
    }
    body = job.body.decode("utf-8", "replace")
    return json.dumps({"header": header, "body": body}, separators=(",", ":")).encode("utf-8")


def envelope_properties(
    job: Job, *, attempt: int = 1, extra: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The application properties written beside the envelope: the job's headers (RoadRunner
    writes the first value of each), ``x-delay`` (milliseconds) for a delayed job, the attempt
    above 1, then ``extra`` (the adapter's own)."""
    properties = {DELAY_PROPERTY: int(job.delay * 1000)} if job.delay else {}
    if extra:
        properties.update(extra)
    return job_properties(job.headers, attempt=attempt, extra=properties)


class Envelope:
    """What a RoadRunner envelope says about its job."""

    __slots__ = ("body", "headers", "id", "name", "priority")

    def __init__(
        self, name: str, id: str, body: bytes, headers: dict[str, str], priority: int | None
    ) -> None:
        self.name = name
        self.id = id
        self.body = body
        self.headers = headers
        self.priority = priority

    def job_headers(self, properties: Mapping[str, str]) -> dict[str, str]:
        """The job's headers: the message's application properties (less the ``x-delay`` a
        delayed push adds) overlaid with the envelope's own."""
        headers = {key: value for key, value in properties.items() if key != DELAY_PROPERTY}
        headers.update(self.headers)
        return headers


def received_envelope(body: bytes, *, message_id: object, subject: object) -> Envelope | None:
    """The envelope a received message's data-section ``body`` holds, or ``None``.

    Tried only on a message without a message-id or without a subject: amqp1q's own format
    always has both, RoadRunner's neither -- but RabbitMQ 3.x gives a message sent without
    properties its routing key as subject, and Service Bus needs a message-id to schedule one.
    """
    if message_id is not None and subject:
        return None
    return parse_envelope(body)


def parse_envelope(body: bytes) -> Envelope | None:
    """The envelope in ``body``, or ``None`` if ``body`` is not one."""
    if not body.startswith(b"{"):
        return None
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(document, dict) or set(document) - {"header", "body"}:
        return None
    header = document.get("header")
    if not isinstance(header, dict):
        return None
    name = header.get("rr_job", header.get("job"))
    if not isinstance(name, str) or not name:
        return None
    job_id = header.get("rr_id", header.get("id"))
    payload = document.get("body", "")
    data = payload.encode("utf-8") if isinstance(payload, str) else json.dumps(payload).encode()
    priority = header.get("rr_priority", header.get("priority"))
    return Envelope(
        name,
        str(job_id) if job_id is not None else "",
        data,
        _headers(header.get("rr_headers", header.get("headers"))),
        priority if isinstance(priority, int) and not isinstance(priority, bool) else None,
    )


def _headers(value: Any) -> dict[str, str]:
    if isinstance(value, str):  # base64 of JSON: how RoadRunner writes a Go []byte
        try:
            value = json.loads(base64.b64decode(value, validate=True))
        except (binascii.Error, ValueError):
            return {}
    if not isinstance(value, Mapping):
        return {}
    out: dict[str, str] = {}
    for key, values in value.items():
        if not isinstance(key, str):
            continue
        if isinstance(values, list) and values:
            out[key] = str(values[0])
        elif isinstance(values, str):
            out[key] = values
    return out
