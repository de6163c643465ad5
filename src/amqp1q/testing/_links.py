"""The broker's two link roles: taking messages in, handing them out against credit."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import TYPE_CHECKING, Any, ClassVar, Final, Protocol

from ..adapters.proton.wire import (
    ACCEPTED,
    APPLICATION_PROPERTIES,
    HEADER,
    MESSAGE_ANNOTATIONS,
    MODIFIED,
    REJECTED,
    RELEASED,
    AMQPDecodeError,
    Condition,
    Delivery,
    DeliveryOutcome,
    Described,
    ReceiverLink,
    SenderLink,
    Symbol,
    Timestamp,
    UByte,
    UInt,
    ULong,
    decode,
    encode,
    split_sections,
)
from ._store import BrokerQueue, Stored

if TYPE_CHECKING:
    from ._broker import Broker

__all__ = ["Incoming", "Locks", "Outgoing", "Role", "Taking", "now_ms"]

log = logging.getLogger("amqp1q.testing")

#: Credit an incoming link keeps granted; topped up as messages arrive.
INCOMING_CREDIT: Final = 500
DEFAULT_PRIORITY: Final = 4


def now_ms() -> int:
    return int(time.time() * 1000)


class Role(Protocol):
    """What a connection holds for each link the client attached."""

    def closed(self) -> None:
        """The link or its connection went away: let go of what it held."""


class Taking:
    """A link the client sends on: each message goes to :meth:`take`, and the credit is topped
    up to ``window`` whenever half of it has been used."""

    window: ClassVar[int] = INCOMING_CREDIT

    def __init__(self, link: ReceiverLink) -> None:
        self.link = link
        link.on_message = self._on_message
        link.flow(self.window)

    def take(self, delivery: Delivery, payload: bytes) -> bool:
        """Settle one message; False when that closed the link (it gets no more credit)."""
        raise NotImplementedError

    def closed(self) -> None:
        """Nothing is held for a message once it is settled."""

    def _on_message(self, delivery: Delivery, payload: bytes) -> None:
        link = self.link
        if self.take(delivery, payload) and link.credit < self.window // 2:
            link.flow(self.window - link.credit)


class Incoming(Taking):
    """A link the client sends on: messages go into ``queue``."""

    def __init__(self, broker: Broker, link: ReceiverLink, queue: BrokerQueue) -> None:
        self.broker = broker
        self.queue = queue
        super().__init__(link)

    def take(self, delivery: Delivery, payload: bytes) -> bool:
        broker = self.broker
        limit = broker.max_message_size
        if limit and len(payload) > limit:
            delivery.settle(
                REJECTED,
                condition=Condition(
                    "amqp:link:message-size-exceeded",
                    f"{len(payload)} bytes is over this link's max-message-size {limit}",
                ),
            )
            return True
        try:
            messages = unpack_batch(payload) or [payload]
            stored = [to_stored(message) for message in messages]
        except AMQPDecodeError as exc:
            delivery.settle(
                REJECTED, condition=Condition("amqp:decode-error", f"not a message: {exc}")
            )
            return True
        if broker.servicebus is not None and not _has_body(payload):
            self._refuse_empty_batch(delivery)
            return False
        if self.queue.requires_session:
            refusal = next(filter(None, map(self.queue.admits, stored)), None)
            if refusal is not None:  # (a batch is taken whole or not at all)
                info = {"entity": self.queue.name}  # (azure-servicebus reads an info field)
                delivery.settle(REJECTED, condition=Condition(*refusal, info))
                return True
        now = now_ms()
        for item in stored:
            if item.due_at == 0 and broker.default_delay_ms:
                item.due_at = now + broker.default_delay_ms
            self.queue.put(item, now)
        broker.stats_received += len(stored)
        if not delivery.remote_settled:
            delivery.settle(ACCEPTED)
        return True

    def _refuse_empty_batch(self, delivery: Delivery) -> None:
        """A batch (format 0x80013700) with no data sections, as @azure/service-bus sends for an
        empty ``ServiceBusMessageBatch``: Service Bus force-detaches the link. The delivery is
        rejected first, so the client's send fails at once, with the reason (the JS SDK waits
        out its operation timeout for a send whose link was detached under it)."""
        why = "received a batch message with no data in it"
        delivery.settle(REJECTED, condition=Condition("amqp:not-allowed", why))
        self.link.close(Condition("amqp:link:detach-forced", why))


def unpack_batch(payload: bytes) -> list[bytes] | None:
    """The messages of a Service Bus batch (message format 0x80013700, which proton's C API
    does not expose): a body of data sections that are each a whole encoded message."""
    sections = split_sections(payload)
    datas = [span for span in sections if span[0] == 0x75]
    if len(datas) < 1 or any(code in (0x76, 0x77) for code, _, _ in sections):
        return None
    out = []
    for _, start, _ in datas:
        value, _ = decode(payload, start)
        inner = bytes(value.value) if isinstance(value, Described) else b""
        if len(inner) < 4 or inner[0] != 0 or inner[1] != 0x53 or not 0x70 <= inner[2] <= 0x78:
            return None
        try:
            split_sections(inner)
        except AMQPDecodeError:
            return None
        out.append(inner)
    return out


def _has_body(payload: bytes) -> bool:
    """Whether a message has a body section (data, amqp-sequence or amqp-value)."""
    return any(0x75 <= code <= 0x77 for code, _, _ in split_sections(payload))


def to_stored(payload: bytes) -> Stored:
    """A received message as the store keeps it: priority and schedule read from its header."""
    priority = DEFAULT_PRIORITY
    due_at = 0
    ttl = 0
    for code, start, _ in split_sections(payload):
        if code == HEADER:
            header, _ = decode(payload, start)
            fields = header.value if isinstance(header, Described) else []
            if len(fields) > 1 and fields[1] is not None:
                priority = int(fields[1])
            if len(fields) > 2 and fields[2]:
                ttl = int(fields[2])
        elif code == MESSAGE_ANNOTATIONS:
            annotations, _ = decode(payload, start)
            value = annotations.value if isinstance(annotations, Described) else {}
            due_at = _due_at(value if isinstance(value, dict) else {})
    return Stored(payload, priority=priority, due_at=due_at, ttl=ttl)


def _due_at(annotations: dict[Any, Any]) -> int:
    for key in ("x-opt-scheduled-enqueue-time", "x-opt-delivery-time"):
        value = annotations.get(key)
        if isinstance(value, int) and value > 0:
            return int(value)
    delay = annotations.get("x-opt-delivery-delay")
    if isinstance(delay, int) and delay > 0:
        return now_ms() + int(delay)
    return 0


class Outgoing:
    """A link the client receives on: ``queue`` offers it messages while it has credit."""

    def __init__(
        self,
        broker: Broker,
        link: SenderLink,
        queue: BrokerQueue,
        *,
        presettled: bool,
        lock_tokens: bool,
    ) -> None:
        self.broker = broker
        self.link = link
        self.queue = queue
        self.presettled = presettled
        self.lock_tokens = lock_tokens
        self.out: dict[int, Stored] = {}
        self.by_token: dict[bytes, Stored] = {}
        link.on_flow = self._on_flow
        self._subscribe()

    def _subscribe(self) -> None:
        self.queue.subscribe(self.offer)

    def _lock_ms(self) -> int:
        """How long a delivery's lock lasts from now (0: no lock)."""
        return self.broker.lock_duration_ms if self.lock_tokens else 0

    def _track(self, tag: bytes, stored: Stored) -> None:
        """Start the delivery's lock timer."""
        self.broker.locks.track(self, tag, stored)

    def _on_flow(self, link: SenderLink) -> None:
        self.queue.dispatch()
        if link.drain_requested and link.credit > 0:
            link.drained()

    def offer(self, queue: BrokerQueue, stored: Stored) -> bool:
        link = self.link
        if not link.alive or link.credit <= 0:
            return False
        broker = self.broker
        payload = stamp(stored, self._lock_ms())
        tag = uuid.uuid4().bytes if self.lock_tokens else None
        if self.presettled:
            link.send(payload, None, tag=tag)
            queue.delivered(stored)
            queue.accept(stored)
        else:
            queue.delivered(stored)
            self.out[stored.sequence] = stored
            if tag is not None:
                self.by_token[tag] = stored
                self._track(tag, stored)
            link.send(payload, self._settler(stored, tag), tag=tag)
        broker.stats_delivered += 1
        return True

    def _settler(self, stored: Stored, tag: bytes | None) -> Any:
        def settled(outcome: DeliveryOutcome) -> None:
            self.settle(stored, tag, outcome)

        return settled

    def settle(self, stored: Stored, tag: bytes | None, outcome: DeliveryOutcome) -> None:
        if self.out.pop(stored.sequence, None) is None:
            return
        if tag is not None:
            self.by_token.pop(tag, None)
            self.broker.locks.forget(tag)
        queue = self.queue
        state = outcome.state
        now = now_ms()
        if state == ACCEPTED:
            queue.accept(stored)
        elif state == RELEASED:
            queue.release(stored, count=False, now_ms=now)
        elif state == MODIFIED:
            if outcome.undeliverable_here and not outcome.delivery_failed:
                queue.release(stored, count=False, now_ms=now)
            else:
                queue.release(stored, count=True, now_ms=now)
        elif state == REJECTED:
            queue.dead_letter(stored, _dead_letter_info(outcome.condition), now)
        else:
            queue.release(stored, count=True, now_ms=now)

    def lock_expired(self, tag: bytes) -> None:
        """A lock ran out: the message goes back, counted, and settling it later is refused."""
        stored = self.by_token.pop(tag, None)
        if stored is None:
            return
        self.out.pop(stored.sequence, None)
        self.queue.release(stored, count=True, now_ms=now_ms())

    def closed(self) -> None:
        """The link or its connection went away: everything it held goes back, counted."""
        self.queue.unsubscribe(self.offer)
        now = now_ms()
        for tag in list(self.by_token):
            self.broker.locks.forget(tag)
        self.by_token.clear()
        for stored in list(self.out.values()):
            self.queue.release(stored, count=True, now_ms=now)
        self.out.clear()


def _dead_letter_info(condition: Condition | None) -> dict[str, Any]:
    info: dict[str, Any] = {}
    if condition is not None:
        if condition.info:
            for key in ("DeadLetterReason", "DeadLetterErrorDescription"):
                if key in condition.info:
                    info[key] = str(condition.info[key])
        if "DeadLetterReason" not in info:
            info["DeadLetterReason"] = condition.description or condition.name
    else:
        info["DeadLetterReason"] = "rejected"
    return info


def stamp(stored: Stored, lock_ms: int) -> bytes:
    """The message as delivered: its header's delivery-count and the broker's annotations
    (plus, for a dead-lettered message, the reason among its application properties)."""
    payload = stored.payload
    header_fields: list[Any] = [True]
    annotations: dict[Any, Any] = {}
    tail = bytearray()
    info = stored.dead_letter_info
    for code, start, end in split_sections(payload):
        if code == HEADER:
            header, _ = decode(payload, start)
            if isinstance(header, Described) and isinstance(header.value, list):
                header_fields = list(header.value)
        elif code == MESSAGE_ANNOTATIONS:
            value, _ = decode(payload, start)
            if isinstance(value, Described) and isinstance(value.value, dict):
                annotations = dict(value.value)
        elif code == APPLICATION_PROPERTIES and info:
            value, _ = decode(payload, start)
            props = dict(value.value) if isinstance(value, Described) and value.value else {}
            props.update(info)
            tail += encode(Described(ULong(APPLICATION_PROPERTIES), props))
            info = None
        elif code > MESSAGE_ANNOTATIONS:
            if info and code > APPLICATION_PROPERTIES:  # no application-properties: add them
                tail += encode(Described(ULong(APPLICATION_PROPERTIES), dict(info)))
                info = None
            tail += payload[start:end]
    header_fields += [None] * (5 - len(header_fields))
    header_fields[1] = UByte(stored.priority)
    header_fields[3] = stored.delivery_count == 0
    header_fields[4] = UInt(stored.delivery_count)
    annotations.update({Symbol(k): v for k, v in stored.annotations.items()})
    annotations[Symbol("x-opt-enqueued-time")] = Timestamp(stored.enqueued_at)
    annotations[Symbol("x-opt-sequence-number")] = stored.sequence
    if lock_ms:
        annotations[Symbol("x-opt-locked-until")] = Timestamp(now_ms() + lock_ms)
    out = bytearray(encode(Described(ULong(HEADER), header_fields)))
    out += encode(Described(ULong(MESSAGE_ANNOTATIONS), annotations))
    out += tail
    return bytes(out)


class Locks:
    """Peek-lock timers: a delivery not settled before its lock ends goes back to its queue."""

    def __init__(self) -> None:
        self._timers: dict[bytes, tuple[asyncio.TimerHandle, Outgoing]] = {}

    def track(self, outgoing: Outgoing, tag: bytes, _: Any) -> None:
        loop = asyncio.get_running_loop()
        duration = outgoing.broker.lock_duration_ms / 1000
        handle = loop.call_later(duration, self._expire, tag)
        self._timers[tag] = (handle, outgoing)

    def renew(self, tag: bytes) -> int | None:
        """Extend the lock; returns the new locked-until (ms) or None if it has gone."""
        entry = self._timers.get(tag)
        if entry is None:
            return None
        handle, outgoing = entry
        handle.cancel()
        self.track(outgoing, tag, None)
        return now_ms() + outgoing.broker.lock_duration_ms

    def forget(self, tag: bytes) -> None:
        entry = self._timers.pop(tag, None)
        if entry is not None:
            entry[0].cancel()

    def owner(self, tag: bytes) -> Outgoing | None:
        entry = self._timers.get(tag)
        return entry[1] if entry is not None else None

    def _expire(self, tag: bytes) -> None:
        entry = self._timers.pop(tag, None)
        if entry is not None:
            entry[1].lock_expired(tag)

    def clear(self) -> None:
        for handle, _ in self._timers.values():
            handle.cancel()
        self._timers.clear()
