"""What operating a queue reads and does, below the facade: :class:`QueueDepth`,
:class:`PeekedJob` and the :class:`QueueOperations` an adapter offers.

An adapter that can look inside its queue returns a :class:`QueueOperations` from its
``operations()`` method; the facade (``JobQueue.depth()``, ``peek()``, ``purge_dead_letters()``,
``Receipt.cancel()``; see ``_operations``) calls it. Each backend uses the means its broker has
(the memory broker directly; the embedded broker over AMQP, through its ``$management`` node;
RabbitMQ through its management HTTP API; Service Bus through the SDK's peek); what a broker
cannot do raises :class:`~amqp1q.UnsupportedFeature` naming the broker and the operation.
"""

from __future__ import annotations

import base64
import datetime
from typing import Any, Final, Protocol

import attrs

from ._adapter import Incoming
from ._errors import UnsupportedFeature
from ._job import Headers, Receipt
from ._payload import decode_payload

__all__ = [
    "PEEK_STATES",
    "PeekedJob",
    "QueueDepth",
    "QueueOperations",
    "body_for_display",
    "unsupported",
]

#: What :attr:`PeekedJob.state` may say (None where the broker does not tell).
PEEK_STATES: Final = ("ready", "scheduled", "in-flight", "dead-lettered")


@attrs.frozen(slots=True)
class QueueDepth:
    """How many jobs a queue holds, as its broker counts them (``None``: the broker cannot say).

    - ``ready``: waiting to be delivered; ``scheduled``: pushed with a delay, not yet due;
      ``in_flight``: delivered to a consumer, not yet settled; ``dead_lettered``: in the
      queue's dead-letter queue.
    - ``oldest_enqueued_at``: when the oldest waiting job entered the queue, where known.
    - ``published``, ``delivered``, ``acked``: the broker's running totals for the queue
      (RabbitMQ's ``message_stats``; the embedded and memory brokers count them too), from
      which the dashboard draws rates; ``None`` where the broker keeps none (Service Bus).
    - ``exact``: counted when asked (memory, the embedded broker); False where the numbers are
      a sample that can lag (RabbitMQ's management statistics, every few seconds) or a bounded
      count (Service Bus, counted by peeking).
    - ``source``: what counted them (``"memory"``, ``"amqp1q-broker"``,
      ``"rabbitmq-management"``, ``"servicebus-peek"``).
    """

    queue: str
    ready: int | None = None
    scheduled: int | None = None
    in_flight: int | None = None
    dead_lettered: int | None = None
    oldest_enqueued_at: datetime.datetime | None = None
    published: int | None = None
    delivered: int | None = None
    acked: int | None = None
    exact: bool = True
    source: str = ""

    @property
    def total(self) -> int:
        """Every job the queue holds that the broker counted (ready, scheduled, in flight)."""
        return sum(n for n in (self.ready, self.scheduled, self.in_flight) if n is not None)

    def oldest_age(self, now: datetime.datetime | None = None) -> float | None:
        """Seconds since the oldest waiting job was enqueued (None: none, or not known)."""
        if self.oldest_enqueued_at is None:
            return None
        now = now or datetime.datetime.now(datetime.timezone.utc)
        return max(0.0, (now - self.oldest_enqueued_at).total_seconds())

    def to_dict(self) -> dict[str, Any]:
        """As JSON-ready values (times in ISO 8601), for ``amqp1q stats`` and the dashboard."""
        oldest = self.oldest_enqueued_at
        return {
            "queue": self.queue,
            "ready": self.ready,
            "scheduled": self.scheduled,
            "in_flight": self.in_flight,
            "dead_lettered": self.dead_lettered,
            "oldest_enqueued_at": oldest.isoformat() if oldest is not None else None,
            "oldest_age": self.oldest_age(),
            "published": self.published,
            "delivered": self.delivered,
            "acked": self.acked,
            "exact": self.exact,
            "source": self.source,
        }


_UNDECODED: Final[Any] = object()


@attrs.frozen(slots=True)
class PeekedJob:
    """A job seen in a queue without taking it (``JobQueue.peek()``): read-only, unsettleable.

    ``state`` says where it is (``ready``, ``scheduled``, ``in-flight``, ``dead-lettered``) when
    the broker tells; ``sequence_number`` is the broker's, where it numbers messages.
    """

    id: str
    name: str
    body: bytes
    content_type: str | None
    headers: Headers
    attempt: int
    priority: int | None = None
    enqueued_at: datetime.datetime | None = None
    dead_letter_reason: str | None = None
    dead_letter_description: str | None = None
    state: str | None = None
    sequence_number: int | None = None
    scheduled_for: datetime.datetime | None = None
    #: Set when the message could not be read as a job (its raw body is in ``body``).
    decode_error: str | None = None

    @classmethod
    def of(
        cls,
        incoming: Incoming,
        *,
        state: str | None = None,
        sequence_number: int | None = None,
        scheduled_for: datetime.datetime | None = None,
    ) -> PeekedJob:
        """The view of a message an adapter decoded as it decodes a delivery."""
        return cls(
            id=incoming.id,
            name=incoming.name,
            body=incoming.body,
            content_type=incoming.content_type,
            headers=incoming.headers,
            attempt=incoming.attempt,
            priority=incoming.priority,
            enqueued_at=incoming.enqueued_at,
            dead_letter_reason=incoming.dead_letter_reason,
            dead_letter_description=incoming.dead_letter_description,
            state=state,
            sequence_number=sequence_number,
            scheduled_for=scheduled_for,
            decode_error=incoming.decode_error,
        )

    @property
    def payload(self) -> Any:
        """The payload: decoded JSON, or ``bytes``. Raises PayloadError if undecodable."""
        return decode_payload(self.body, self.content_type)

    def to_dict(self) -> dict[str, Any]:
        """As JSON-ready values (``amqp1q peek`` prints one per line). The payload is JSON when
        the job's is; any other body is ``{"text": ...}`` when it is UTF-8 text with a text
        content type, else ``{"base64": ...}`` -- never bytes escaped to look like text."""
        return {
            "id": self.id,
            "name": self.name,
            "state": self.state,
            "attempt": self.attempt,
            "priority": self.priority,
            "enqueued_at": _iso(self.enqueued_at),
            "scheduled_for": _iso(self.scheduled_for),
            "sequence_number": self.sequence_number,
            "headers": dict(self.headers),
            "content_type": self.content_type,
            "dead_letter_reason": self.dead_letter_reason,
            "dead_letter_description": self.dead_letter_description,
            "decode_error": self.decode_error,
            "payload": body_for_display(self.body, self.content_type),
        }


def body_for_display(body: bytes, content_type: str | None) -> dict[str, Any]:
    """A body as one unambiguous JSON value: ``{"json": value}`` for a JSON payload,
    ``{"text": str}`` for UTF-8 text with a ``text/*`` content type, ``{"base64": str}`` for
    anything else (binary payloads, undecodable JSON)."""
    kind = (content_type or "").split(";", 1)[0].strip().lower()
    if kind == "application/json" or kind.endswith("+json"):
        try:
            return {"json": decode_payload(body, content_type)}
        except Exception:
            pass
    elif kind.startswith("text/"):
        try:
            return {"text": body.decode("utf-8")}
        except UnicodeDecodeError:
            pass
    return {"base64": base64.b64encode(body).decode("ascii")}


def _iso(value: datetime.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


class QueueOperations(Protocol):
    """What an adapter's ``operations()`` offers (see the module docstring). Each method may
    raise :class:`~amqp1q.UnsupportedFeature` where its broker cannot do it."""

    async def depth(self) -> QueueDepth: ...

    async def peek(self, count: int, *, dead_letter: bool) -> list[PeekedJob]: ...

    async def purge(self, *, dead_letter: bool) -> int: ...

    async def cancel_scheduled(self, receipt: Receipt) -> bool: ...


def unsupported(product: str, what: str, queue: str, why: str = "") -> UnsupportedFeature:
    """The error for an operation ``product`` cannot do on ``queue``."""
    text = f"{product} cannot {what}"
    return UnsupportedFeature(text + (f": {why}" if why else ""), queue=queue)
