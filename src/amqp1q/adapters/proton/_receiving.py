"""Consuming over one receiver link: the :class:`~amqp1q.Receiver` half of the Proton adapter.

Deliveries arrive against credit the facade grants (:meth:`ProtonReceiver.flow`) and wait in a
buffer, still encoded; a delivery is decoded only when it is handed out. Settlement follows the
broker's profile: a native outcome where the broker has one, else the emulation DESIGN
describes (re-publish with the attempt counted, then accept).

Accepts are coalesced: an ack waits (at most ``_ACK_DELAY`` seconds, at most ``_ACK_BATCH``
acks) to go out with the others as one disposition range. Each disposition frame costs
RabbitMQ 3.x about as much as several deliveries, so this raised its delivery rate by about a
fifth (docs/benchmarks.md). An ack still waiting when its link dies is lost exactly like one
written to a socket that then dies: the broker redelivers that job (at-least-once).
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import uuid
from collections import deque
from collections.abc import Awaitable, Mapping
from typing import TYPE_CHECKING, Any

from ..._adapter import Incoming, Outcome, Settlement
from ..._errors import Amqp1qError, DeliveryStale, QueueStateError
from ..._job import RESERVED_HEADER_PREFIX, Headers
from ..._roadrunner import received_envelope
from ._brokers import DEAD_LETTER_CONDITION, DeadLetterStyle
from ._codec import AMQPDecodeError, decode_message
from ._links import (
    ACCEPTED,
    MODIFIED,
    REJECTED,
    RELEASED,
    Condition,
    Delivery,
    Link,
    ReceiverLink,
)

if TYPE_CHECKING:
    from .adapter import ProtonAdapter

__all__ = [
    "ATTEMPT_HEADER",
    "DEAD_LETTER_DESCRIPTION_HEADER",
    "DEAD_LETTER_REASON_HEADER",
    "ProtonReceiver",
    "to_incoming",
]

log = logging.getLogger("amqp1q.proton")

ATTEMPT_HEADER = RESERVED_HEADER_PREFIX + "attempt"
DEAD_LETTER_REASON_HEADER = RESERVED_HEADER_PREFIX + "dead-letter-reason"
DEAD_LETTER_DESCRIPTION_HEADER = RESERVED_HEADER_PREFIX + "dead-letter-description"
_DRAIN_TIMEOUT = 5.0
#: Where Service Bus (and the embedded broker) put a dead-lettered message's reason.
_BROKER_DEAD_LETTER_KEYS = frozenset({"DeadLetterReason", "DeadLetterErrorDescription"})
_YIELD_EVERY = 8
#: Accepts go out together once this many wait, or this many seconds after the first.
_ACK_BATCH = 64
_ACK_DELAY = 0.001
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


class ProtonReceiver:
    """One consumer's receiver link. Made by :meth:`ProtonAdapter.receiver`."""

    def __init__(self, adapter: ProtonAdapter, *, auto_ack: bool) -> None:
        self._adapter = adapter
        self._auto_ack = auto_ack
        self._link: ReceiverLink | None = None
        self._buffer: deque[tuple[Delivery, bytes]] = deque()
        self._event = asyncio.Event()
        self._drained = asyncio.Event()
        self._detached = asyncio.Event()
        self._closed = False
        self._holding = False
        self._opened = False
        self._failure: Amqp1qError | None = None
        self._streak = 0
        self._acks: list[Delivery] = []  # accepted, not yet handed to proton
        self._ack_timer: asyncio.TimerHandle | None = None
        # Credit, counted here rather than read from proton: RabbitMQ 3.x echoes flow frames
        # whose link-credit proton then adopts, and has been seen sending past the credit.
        self._granted = 0  # credit the consumer granted, in all
        self._told = 0  # credit told to the broker, in all
        self._received = 0  # deliveries taken against that credit, in all
        self._over = 0  # deliveries beyond the credit (released at once)

    async def open(self) -> None:
        await self._attach()
        self._opened = True

    async def _attach(self) -> None:
        """A new link, granted the credit the consumer has out (a new link starts with none)."""
        adapter = self._adapter
        link = await adapter.connection.attach_receiver(adapter.address, settled=self._auto_ack)
        link.on_message = self._on_message
        link.on_remote_close = self._on_link_closed
        link.on_drained = self._on_drained
        self._detached.clear()
        self._link = link
        self._told = self._received
        if not self._holding:
            self._flush_credit(link, force=True)

    # -- credit -------------------------------------------------------------------------------

    def flow(self, credit: int) -> None:
        if self._closed or credit <= 0:
            return
        if self._holding:
            # After a drain-less pause the old credit still stands: top it up, never past it.
            self._holding = False
            self._event.set()
            standing = self._granted - self._received + len(self._buffer)
            credit = max(0, credit - standing)
        self._granted += credit
        link = self._link
        if link is not None:
            self._flush_credit(link)

    def _flush_credit(self, link: ReceiverLink, *, force: bool = False) -> None:
        """Tell the broker about new credit -- batched: once what it still holds falls below
        what waits to be told (each flow costs RabbitMQ 3.x a basic.credit)."""
        waiting = self._granted - self._told
        if waiting <= 0:
            return
        at_broker = self._told - self._received
        if self._adapter.profile.fresh_credit:
            # RabbitMQ 3.x takes each flow as a fresh grant, not counting deliveries in flight:
            # top it up only once its credit is used up, when nothing can be in flight.
            due = at_broker <= 0
        else:
            due = at_broker < waiting  # half the window used: one flow frame per half window
        if force or due:
            self._told = self._granted
            # Set proton's credit to what we mean, not add to it: proton adopts the link-credit
            # of the broker's flow frames, which RabbitMQ 3.x sends late and out of date.
            more = (self._told - self._received) - link.credit
            if more > 0:
                link.flow(more)

    async def drain(self) -> None:
        """Void the credit, wait (bounded) for the broker to confirm, release what is buffered.

        Where the broker cannot drain (RabbitMQ 3.x), stop handing jobs out instead: what is
        buffered, and what the standing credit still brings, waits for :meth:`flow` or is
        released by :meth:`close`.
        """
        link = self._link
        if not self._adapter.profile.supports_drain:
            self._holding = True
            return
        if link is not None and link.alive and link.drain():
            self._drained.clear()
            try:
                await asyncio.wait_for(self._drained.wait(), _DRAIN_TIMEOUT)
            except asyncio.TimeoutError:
                log.debug(
                    "drain of %r unanswered after %.0f s", self._adapter.address, _DRAIN_TIMEOUT
                )
        # The credit is void: start counting afresh (the consumer grants anew on resume).
        self._granted = self._told = self._received
        self._release_buffered()

    def _on_drained(self, _: ReceiverLink) -> None:
        self._drained.set()

    def _release_buffered(self) -> int:
        released = 0
        if not self._auto_ack:
            while self._buffer:
                delivery, _ = self._buffer.popleft()
                delivery.settle(RELEASED)
                released += 1
        return released

    # -- receiving ------------------------------------------------------------------------------

    def _on_message(self, delivery: Delivery, payload: bytes) -> None:
        if self._received >= self._told and not delivery.remote_settled:
            # Past the credit we gave (a broker bug): back it goes, the prefetch bound holds.
            self._over += 1
            if self._over in (1, 100, 10_000):
                log.warning(
                    "the broker sent %d deliveries past the credit on %r; released",
                    self._over,
                    self._adapter.address,
                    extra={"queue": self._adapter.queue},
                )
            delivery.settle(RELEASED)
            return
        self._received += 1
        self._buffer.append((delivery, payload))
        self._event.set()
        if not self._holding:
            self._flush_credit(delivery.link)

    def _on_link_closed(self, _: Link, condition: Condition | None) -> None:
        # Deliveries buffered on a dead link were never handed out: the broker redelivers them,
        # and the credit they used is owed again.
        self._received -= len(self._buffer)
        self._buffer.clear()
        self._link = None
        self._drained.set()
        self._detached.set()
        # A dropped connection is recorded (and being re-dialled) before its links die.
        if not self._closed and self._adapter.state == "reconnecting":
            return  # re-attached once it is back
        self._closed = True
        self._event.set()
        if condition is not None:
            log.warning(
                "the broker closed the receiver on %r: %s",
                self._adapter.address,
                condition,
                extra={"queue": self._adapter.queue},
            )

    async def reattach(self) -> None:
        """After a reconnect: a new link, granted the credit the consumer still has out."""
        if not self._closed:
            await self._attach()

    def connection_failed(self, error: Amqp1qError) -> None:
        """The supervisor gave up: the consumer's next receive raises ``error``."""
        self._failure = error
        self._closed = True
        self._buffer.clear()
        self._event.set()
        self._drained.set()

    async def receive(self) -> Incoming | None:
        if self._link is None and not self._opened:
            raise QueueStateError("the receiver is not open", queue=self._adapter.queue)
        buffer = self._buffer
        event = self._event
        while not buffer or self._holding:
            if self._closed:
                if self._failure is not None:
                    raise self._failure
                return None
            event.clear()
            self._streak = 0
            await event.wait()
        self._streak += 1
        if self._streak >= _YIELD_EVERY:
            # Jobs straight from the buffer never suspend the caller: give the loop a turn,
            # so acks and credit go out while the rest are handled (and the loop stays live).
            self._streak = 0
            await asyncio.sleep(0)
            if not buffer or self._holding:
                return await self.receive()
        delivery, payload = buffer.popleft()
        return to_incoming(
            payload, delivery, count_deliveries=self._adapter.profile.counts_attempts
        )

    # -- settlement -----------------------------------------------------------------------------

    def settle(self, incoming: Incoming, settlement: Settlement) -> Awaitable[None] | None:
        delivery: Delivery = incoming.token
        outcome = settlement.outcome
        adapter = self._adapter
        profile = adapter.profile
        if outcome is Outcome.ACK:
            if not delivery.link.alive:
                self._apply(delivery, incoming, ACCEPTED)  # raises DeliveryStale
            acks = self._acks
            acks.append(delivery)
            if len(acks) >= _ACK_BATCH:
                self.flush_acks()
            elif self._ack_timer is None:
                self._ack_timer = asyncio.get_running_loop().call_later(_ACK_DELAY, self.flush_acks)
        elif outcome is Outcome.RELEASE:
            self._apply(delivery, incoming, RELEASED)
        elif outcome is Outcome.RETRY:
            if settlement.delay:
                return self._republish_then_accept(
                    delivery, incoming, adapter.queue, incoming.attempt + 1, settlement.delay, None
                )
            if profile.supports_modified:
                self._apply(delivery, incoming, MODIFIED, delivery_failed=True)
            else:
                return self._republish_then_accept(
                    delivery, incoming, adapter.queue, incoming.attempt + 1, None, None
                )
        elif profile.dead_letter is DeadLetterStyle.REPUBLISH:
            dlq = profile.dead_letter_queue(adapter.queue) or adapter.queue + ".dlq"
            return self._republish_then_accept(
                delivery, incoming, dlq, incoming.attempt, None, settlement
            )
        elif profile.dead_letter is DeadLetterStyle.REJECT_WITH_INFO:
            reason = settlement.reason or "rejected"
            info: dict[str, Any] = {"DeadLetterReason": reason}
            if settlement.description:
                info["DeadLetterErrorDescription"] = settlement.description
            condition = Condition(DEAD_LETTER_CONDITION, reason, info)
            self._apply(delivery, incoming, REJECTED, condition=condition)
        else:
            description = settlement.reason or "rejected"
            if settlement.description:
                description += f": {settlement.description}"
            self._apply(
                delivery, incoming, REJECTED, condition=Condition("amqp1q:rejected", description)
            )
        return None

    def flush_acks(self) -> None:
        """Hand the waiting accepts to proton (one disposition range where they are contiguous)."""
        timer = self._ack_timer
        if timer is not None:
            timer.cancel()
            self._ack_timer = None
        acks = self._acks
        if acks:
            self._acks = []
            for delivery in acks:
                delivery.settle(ACCEPTED)  # False if its link died meanwhile: redelivered

    def _apply(
        self,
        delivery: Delivery,
        incoming: Incoming,
        state: int,
        *,
        condition: Condition | None = None,
        delivery_failed: bool = False,
    ) -> None:
        if not delivery.settle(state, condition=condition, delivery_failed=delivery_failed):
            raise DeliveryStale(
                "the link the job arrived on has closed; the broker redelivers it",
                queue=self._adapter.queue,
                address=self._adapter.address,
                job_id=incoming.id,
            )

    async def _republish_then_accept(
        self,
        delivery: Delivery,
        incoming: Incoming,
        queue: str,
        attempt: int,
        delay: float | None,
        dead_letter: Settlement | None,
    ) -> None:
        """Publish a copy first, then accept: a crash between gives a duplicate, never a loss."""
        if not delivery.link.alive:
            self._apply(delivery, incoming, ACCEPTED)  # raises DeliveryStale
        extra: dict[str, Any] = {}
        if dead_letter is not None:
            extra[DEAD_LETTER_REASON_HEADER] = dead_letter.reason or "rejected"
            if dead_letter.description:
                extra[DEAD_LETTER_DESCRIPTION_HEADER] = dead_letter.description
        job = incoming.copy_as_job(delay)
        await self._adapter.republish(job, queue, attempt=attempt, extra_properties=extra)
        self._apply(delivery, incoming, ACCEPTED)

    # -- closing --------------------------------------------------------------------------------

    async def close(self) -> None:
        """Detach, waiting up to the adapter's ``close_timeout`` for the broker's answer."""
        try:
            if self._closed and self._link is None:
                return
            self._closed = True
            self.flush_acks()
            self._release_buffered()
            self._event.set()
            link = self._link
            if link is not None and link.alive:
                link.close()
                # The detach handshake: once answered, the broker has had the acks sent before it.
                bound = self._adapter.close_timeout
                try:
                    await asyncio.wait_for(self._detached.wait(), bound)
                except asyncio.TimeoutError:
                    log.debug("detach of %r unanswered after %.1f s", self._adapter.address, bound)
                    if link.alive:
                        link.end_session()
        finally:
            self._adapter.forget_receiver(self)


def to_incoming(payload: bytes, delivery: Any, *, count_deliveries: bool = True) -> Incoming:
    """Decode a delivery into what the facade hands out; undecodable input keeps its raw bytes."""
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
        )
    props = message.application_properties or {}
    headers: dict[str, str] = {}
    attempt = 1
    reason = description = None
    decode_error = None
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
    return Incoming(
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
