"""Service Bus's own operations on a queue's ``$management`` node, as the emulation answers them.

``com.microsoft:renew-lock`` ``{lock-tokens}`` → ``{expirations}``, ``schedule-message``
``{messages}`` → ``{sequence-numbers}``, ``cancel-scheduled-message`` ``{sequence-numbers}``
and ``peek-message`` (the same answer as amqp1q's own ``amqp1q:peek``, :mod:`._management_ops`).
Each takes the broker, the queue and the request's body, and returns status, description,
body and error condition; :class:`~._servicebus.ServiceBusEmulation` routes requests here (the
session operations are :mod:`._sessions`'). Also the readings of a request the emulation shares:
:func:`text_keys` and the lock-lost condition.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from ..adapters.proton.wire import Array, Timestamp
from ._links import now_ms, to_stored
from ._management_ops import Reply, peek_reply
from ._store import BrokerQueue

if TYPE_CHECKING:
    from ._broker import Broker

__all__ = ["LOCK_LOST", "SERVICEBUS_OPERATIONS", "VENDOR", "text_keys"]

VENDOR: Final = "com.microsoft:"
LOCK_LOST: Final = VENDOR + "message-lock-lost"
MESSAGE_NOT_FOUND: Final = VENDOR + "message-not-found"


def _renew_lock(broker: Broker, queue: BrokerQueue, body: dict[str, Any]) -> Reply:
    expirations = []
    for token in _items(body["lock-tokens"]):
        until = broker.locks.renew(_lock_tag(token))
        if until is None:
            return 410, f"the lock {token} has expired or is unknown", None, LOCK_LOST
        expirations.append(Timestamp(until))
    return 200, "OK", {"expirations": Array(0x83, tuple(expirations))}, None


def _schedule(broker: Broker, queue: BrokerQueue, body: dict[str, Any]) -> Reply:
    now = now_ms()
    numbers = []
    messages = [to_stored(bytes(text_keys(e)["message"])) for e in _items(body["messages"])]
    refusal = next(filter(None, map(queue.admits, messages)), None)
    if refusal is not None:
        return 400, refusal[1], None, refusal[0]
    for stored in messages:
        stored.enqueued_at = max(stored.due_at, now)  # Service Bus: enqueued when due
        queue.put(stored, now)
        numbers.append(stored.sequence)
    broker.stats_received += len(numbers)
    return 200, "OK", {"sequence-numbers": Array(0x81, tuple(numbers))}, None


def _cancel_scheduled(broker: Broker, queue: BrokerQueue, body: dict[str, Any]) -> Reply:
    missing = [n for n in _items(body["sequence-numbers"]) if not queue.cancel_scheduled(n)]
    broker.store.schedule_changed(queue)
    if missing:
        return 404, f"no scheduled message {missing}", None, MESSAGE_NOT_FOUND
    return 200, "OK", {}, None


def _peek(broker: Broker, queue: BrokerQueue, body: dict[str, Any]) -> Reply:
    return peek_reply(queue, body)


SERVICEBUS_OPERATIONS: Final[dict[str, Callable[[Broker, BrokerQueue, dict[str, Any]], Reply]]] = {
    VENDOR + "renew-lock": _renew_lock,
    VENDOR + "schedule-message": _schedule,
    VENDOR + "cancel-scheduled-message": _cancel_scheduled,
    VENDOR + "peek-message": _peek,
}


def _lock_tag(token: Any) -> bytes:
    """The delivery tag behind a lock token (the SDK reads tags as little-endian UUIDs)."""
    if isinstance(token, uuid.UUID):
        return token.bytes_le
    if isinstance(token, (bytes, bytearray)) and len(token) == 16:
        return bytes(token)
    return uuid.UUID(str(token)).bytes_le


def _items(value: Any) -> list[Any]:
    if isinstance(value, Array):
        return list(value.items)
    if isinstance(value, (list, tuple)):
        return list(value)
    raise TypeError(f"expected a list or an array, not {type(value).__name__}")


def text_keys(value: Any) -> dict[str, Any]:
    """A map with its string, symbol or binary keys as plain text."""
    if not isinstance(value, dict):
        return {}
    out = {}
    for key, item in value.items():
        if isinstance(key, (bytes, bytearray)):
            key = key.decode("utf-8", "replace")
        out[str(key)] = item
    return out
