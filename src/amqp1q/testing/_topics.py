"""Topics and the anonymous relay of the embedded broker.

- :class:`BrokerTopic`: a message put into a topic is copied into each of its subscriptions,
  queues named as on Service Bus (``TOPIC/Subscriptions/NAME``; each has its own dead-letter
  queue, ``.../$deadletterqueue``). Copies keep the topic's sequence number, as Service Bus's
  do, so cancelling a scheduled message on the topic cancels every copy. A topic is declared
  with :meth:`~amqp1q.testing.Broker.declare_topic`; without ``strict``, a sender that attaches
  with the ``topic`` target capability declares one, and a receiver attaching to a
  subscription's path declares it (and its topic). A topic itself is not consumed: a receiver
  attaching to it is refused.
- :class:`Relay`: the anonymous relay (``ANONYMOUS-RELAY`` in the broker's Open frame): a link
  with no target, each message put where its ``to`` property says.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from ..adapters.proton.wire import (
    REJECTED,
    AMQPDecodeError,
    Condition,
    Delivery,
    Link,
    ReceiverLink,
    decode_message,
)
from ._links import Incoming, Taking
from ._store import SUBSCRIPTIONS, BrokerQueue, Stored, queue_name

if TYPE_CHECKING:
    from ._broker import Broker

__all__ = ["ANONYMOUS_RELAY", "SUBSCRIPTIONS", "BrokerTopic", "Relay", "asks_for_topic"]

ANONYMOUS_RELAY: Final = "ANONYMOUS-RELAY"


class BrokerTopic(BrokerQueue):
    """A topic: what is put into it goes, copied, to each subscription's queue."""

    def __init__(self, name: str, store: Any) -> None:
        super().__init__(name, store)
        self.subscriptions: dict[str, BrokerQueue] = {}

    def __repr__(self) -> str:
        return f"<BrokerTopic {self.name!r} subscriptions={sorted(self.subscriptions)}>"

    def subscription_name(self, subscription: str) -> str:
        return f"{self.name}{SUBSCRIPTIONS}{subscription}"

    def add_subscription(self, subscription: str) -> BrokerQueue:
        """The subscription's queue (declared on first use)."""
        queue = self.subscriptions.get(subscription)
        if queue is None:
            queue = self.store.declare(self.subscription_name(subscription))
            self.subscriptions[subscription] = queue
        return queue

    def put(self, stored: Stored, now_ms: int) -> None:
        """A copy into each subscription (none: the message is dropped, as Service Bus does)."""
        for queue in list(self.subscriptions.values()):
            copy = Stored(
                stored.payload,
                priority=stored.priority,
                due_at=stored.due_at,
                sequence=stored.sequence,
                annotations=dict(stored.annotations),
            )
            queue.put(copy, now_ms)

    def cancel_scheduled(self, sequence: int) -> bool:
        found = [queue.cancel_scheduled(sequence) for queue in self.subscriptions.values()]
        for queue in self.subscriptions.values():
            self.store.schedule_changed(queue)
        return any(found)


def asks_for_topic(link: Link) -> bool:
    """Whether a sender's target (the client's) carries the ``topic`` capability."""
    data = link.wrapper.remote_target.capabilities
    data.rewind()
    if not data.next():
        return False
    value = data.get_object()
    items = getattr(value, "elements", None)
    names = [str(item) for item in items] if items is not None else [str(value)]
    return "topic" in names


class Relay(Incoming):
    """The anonymous relay: a link with no target; each message goes where its ``to`` says
    (refused with ``amqp:not-found`` where there is no such queue), then as on any link."""

    def __init__(self, broker: Broker, link: ReceiverLink) -> None:
        self.broker = broker
        Taking.__init__(self, link)  # (no queue of its own: each message names one)

    def take(self, delivery: Delivery, payload: bytes) -> bool:
        try:
            to = decode_message(payload).to
        except AMQPDecodeError as exc:
            delivery.settle(REJECTED, condition=Condition("amqp:decode-error", str(exc)))
            return True
        name = queue_name(to)
        queue = self.broker.store.queue(name) if name else None
        if queue is None:
            why = f"no queue {name!r} on this broker" if name else "the message has no `to`"
            delivery.settle(REJECTED, condition=Condition("amqp:not-found", why))
            return True
        self.queue = queue
        return super().take(delivery, payload)
