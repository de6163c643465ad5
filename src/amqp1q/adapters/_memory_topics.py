"""Topics of the in-memory broker: :class:`MemoryTopic`, and what a topic or a subscription
refuses.

A topic holds no jobs of its own: a job pushed to it is copied to each of its subscriptions,
each an ordinary memory queue named as on Service Bus, ``TOPIC/Subscriptions/NAME`` (so its
dead-letter queue is ``TOPIC/Subscriptions/NAME/$deadletterqueue``). A subscription receives
what is pushed after it was made, as a Service Bus subscription does.
"""

from __future__ import annotations

from typing import Final

from .._adapter import Entity
from .._errors import UnsupportedFeature
from .._job import Job

__all__ = [
    "SUBSCRIPTIONS",
    "MemoryTopic",
    "refuse_dead_letters",
    "refuse_push",
    "refuse_receive",
]

#: Between a topic's name and a subscription's, in the subscription's queue name.
SUBSCRIPTIONS: Final = "/Subscriptions/"


class MemoryTopic:
    """A topic of a :class:`~amqp1q.adapters.memory.MemoryBroker` and its subscriptions."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._subscriptions: dict[str, str] = {}

    @property
    def subscriptions(self) -> list[str]:
        return list(self._subscriptions)

    def queue_of(self, subscription: str) -> str:
        """The queue a subscription's copies wait in."""
        return f"{self.name}{SUBSCRIPTIONS}{subscription}"

    def subscribe(self, subscription: str) -> str:
        """Add ``subscription`` (once); the queue it reads."""
        queue = self._subscriptions.get(subscription)
        if queue is None:
            queue = self._subscriptions[subscription] = self.queue_of(subscription)
        return queue

    def queues(self) -> list[str]:
        """The queues a job pushed to the topic is copied to."""
        return list(self._subscriptions.values())


def refuse_push(entity: Entity, queue: str, job: Job) -> UnsupportedFeature:
    return UnsupportedFeature(
        f"jobs are pushed to the topic {entity.topic!r}, not to one of its subscriptions: "
        "use client.topic(NAME)",
        queue=queue,
        job_id=job.id,
    )


def refuse_receive(entity: Entity) -> UnsupportedFeature:
    return UnsupportedFeature(
        f"a topic is consumed through its subscriptions: use client.subscription({entity.name!r}, "
        "NAME)",
        queue=entity.name,
    )


def refuse_dead_letters(entity: Entity) -> UnsupportedFeature:
    return UnsupportedFeature(
        "a topic has no dead-letter queue; its subscriptions each have one", queue=entity.name
    )
