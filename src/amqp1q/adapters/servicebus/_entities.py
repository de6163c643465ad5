"""What a Service Bus entity is to the adapter: a queue, a topic or a topic's subscription.

A queue is pushed to and consumed; a topic only pushed to (each subscription gets a copy); a
subscription only consumed, at ``TOPIC/Subscriptions/NAME`` (its dead-letter queue is that
plus ``/$DeadLetterQueue``, which the SDK reads as a sub-queue). Settling a subscription's job
never pushes a copy back: the copy would go to the topic, and so to every subscription.
"""

from __future__ import annotations

from typing import Any, Final

from ..._adapter import SUBSCRIPTION, TOPIC, Entity
from ..._errors import UnsupportedFeature
from ._sdk import (
    NEXT_AVAILABLE_SESSION,
    ServiceBusClient,
    ServiceBusReceiveMode,
    ServiceBusReceiver,
    ServiceBusSubQueue,
)

__all__ = [
    "SUBSCRIPTIONS",
    "entity_path",
    "push_refusal",
    "refuse_topic",
    "sdk_receiver",
]

#: Between a topic's name and a subscription's in the subscription's entity path.
SUBSCRIPTIONS: Final = "/Subscriptions/"


def entity_path(node: Entity) -> str:
    """The entity's path on the namespace: a subscription's is under its topic."""
    if node.kind == SUBSCRIPTION:
        return f"{node.topic}{SUBSCRIPTIONS}{node.name}"
    return node.name


def push_refusal(node: Entity, *, dead_letters: bool) -> str | None:
    """Why nothing is pushed to this entity, or None."""
    if dead_letters:
        return "Service Bus takes no pushes to a dead-letter queue"
    if node.kind == SUBSCRIPTION:
        return (
            f"jobs are pushed to the topic {node.topic!r}, not to one of its subscriptions: "
            "use client.topic(NAME)"
        )
    return None


def refuse_topic(node: Entity, queue: str, *, what: str) -> None:
    """Raise UnsupportedFeature for consuming a topic (``what="consume"``) or reading its
    dead-letter queue: both are its subscriptions'."""
    if node.kind != TOPIC:
        return
    if what == "consume":
        message = (
            f"a topic is consumed through its subscriptions: use "
            f"client.subscription({node.name!r}, NAME)"
        )
    else:
        message = "a topic has no dead-letter queue; its subscriptions each have one"
    raise UnsupportedFeature(message, queue=queue)


def sdk_receiver(
    client: ServiceBusClient,
    node: Entity,
    *,
    dead_letters: bool,
    auto_ack: bool,
    socket_timeout: float,
    next_session_wait: float | None = None,
) -> ServiceBusReceiver:
    """An SDK receiver (not open yet) for the entity, or its dead-letter queue: PEEK_LOCK
    (RECEIVE_AND_DELETE with ``auto_ack``), with the SDK's own prefetch off. With
    ``next_session_wait``: a session receiver for the next available session, waiting that
    long for one when it opens (and as long for messages in each pull)."""
    mode = ServiceBusReceiveMode.RECEIVE_AND_DELETE if auto_ack else ServiceBusReceiveMode.PEEK_LOCK
    options: dict[str, Any] = {
        "receive_mode": mode,
        "prefetch_count": 0,
        "socket_timeout": socket_timeout,
    }
    if next_session_wait is not None:
        options["session_id"] = NEXT_AVAILABLE_SESSION
        options["max_wait_time"] = next_session_wait
    if dead_letters:
        options["sub_queue"] = ServiceBusSubQueue.DEAD_LETTER
    if node.kind == SUBSCRIPTION:
        assert node.topic is not None
        return client.get_subscription_receiver(node.topic, node.name, **options)
    return client.get_queue_receiver(node.name, **options)
