"""amqp1q's own operations on a queue's ``$management`` node, answered by the embedded broker
in both its modes (plain and the Service Bus emulation): what ``JobQueue.depth()``,
``peek()``, ``purge_dead_letters()`` and ``Receipt.cancel()`` ask of it over AMQP, so the
broker may be another process.

A request goes to ``QUEUE/$management`` (or ``QUEUE/$deadletterqueue/$management``), as Service
Bus's own operations do: application property ``operation``, an AMQP-value map body, the answer
with ``statusCode`` / ``statusDescription`` on the link from the same node. Operations:

==============================  ============================  ===================================
``amqp1q:queue-stats``          ``{}``                        ``{ready, scheduled, in-flight,
                                                              dead-lettered, oldest-enqueued-time,
                                                              published, delivered, acked}``
``amqp1q:peek``                 ``{from-sequence-number,      ``{messages: [{message}]}`` (204
                                message-count}``              when none): as Service Bus's
                                                              ``peek-message``, plus the state
``amqp1q:purge``                ``{}``                        ``{count}``: ready and scheduled
                                                              messages deleted
``amqp1q:cancel-scheduled``     ``{message-ids: [str]}``      ``{count}``: scheduled messages
                                                              with those ids taken out
==============================  ============================  ===================================

On the plain broker only these answer (Service Bus's own operations stay the emulation's).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from ..adapters.proton.wire import Timestamp, decode_message
from ._links import now_ms, stamp
from ._store import DEAD_LETTER_SUFFIX, BrokerQueue, Stored

__all__ = ["AMQP1Q_OPERATIONS", "MESSAGE_STATE", "Reply", "peek_reply"]

#: The annotation Service Bus puts on a peeked message: 0 active, 1 deferred, 2 scheduled.
MESSAGE_STATE: Final = "x-opt-message-state"
#: status, description, body, error condition
Reply = tuple[int, str, Any, "str | None"]


def _stats(queue: BrokerQueue, body: dict[str, Any]) -> Reply:
    now = now_ms()
    ready, scheduled = queue.waiting(now)
    dead = queue.store.queue(queue.name + DEAD_LETTER_SUFFIX, create=False)
    dead_count = 0
    if dead is not None and not queue.name.endswith(DEAD_LETTER_SUFFIX):
        dead_ready, dead_scheduled = dead.waiting(now)
        dead_count = len(dead_ready) + len(dead_scheduled)
    oldest = min((s.enqueued_at for s in ready), default=None)
    return (
        200,
        "OK",
        {
            "ready": len(ready),
            "scheduled": len(scheduled),
            "in-flight": len(queue.unacked),
            "dead-lettered": dead_count,
            "oldest-enqueued-time": Timestamp(oldest) if oldest is not None else None,
            "published": queue.published,
            "delivered": queue.delivered_total,
            "acked": queue.accepted_total,
        },
        None,
    )


def peek_reply(queue: BrokerQueue, body: dict[str, Any]) -> Reply:
    """Service Bus's ``peek-message`` (and ``amqp1q:peek``): messages in sequence order from
    ``from-sequence-number``, each with its state annotation, without taking any."""
    start = int(body.get("from-sequence-number") or 0)
    count = int(body.get("message-count") or 1)
    now = now_ms()
    found = [stored for stored in queue.peek(count * 2 + 16, start) if not stored.expired(now)]
    found = found[:count]
    if not found:
        return 204, "No messages", None, "com.microsoft:message-not-found"
    return 200, "OK", {"messages": [{"message": _peeked(s, now)} for s in found]}, None


def _peeked(stored: Stored, now: int) -> bytes:
    state = 2 if stored.due_at > now else 0
    stored.annotations[MESSAGE_STATE] = state
    try:
        return stamp(stored, 0)
    finally:
        del stored.annotations[MESSAGE_STATE]


def _purge(queue: BrokerQueue, body: dict[str, Any]) -> Reply:
    count = queue.purge()
    queue.store.schedule_changed(queue)
    return 200, "OK", {"count": count}, None


def _cancel(queue: BrokerQueue, body: dict[str, Any]) -> Reply:
    ids = {str(item) for item in _listed(body.get("message-ids"))}

    def match(stored: Stored) -> bool:
        return str(decode_message(stored.payload).message_id) in ids

    return 200, "OK", {"count": queue.cancel_where(match)}, None


def _listed(value: Any) -> list[Any]:
    items = getattr(value, "items", value)
    if isinstance(items, (list, tuple)):
        return list(items)
    raise TypeError("message-ids must be a list")


AMQP1Q_OPERATIONS: Final[dict[str, Callable[[BrokerQueue, dict[str, Any]], Reply]]] = {
    "amqp1q:queue-stats": _stats,
    "amqp1q:peek": peek_reply,
    "amqp1q:purge": _purge,
    "amqp1q:cancel-scheduled": _cancel,
}
