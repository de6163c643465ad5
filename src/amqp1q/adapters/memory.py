"""The in-memory adapter: a broker inside the process, with the semantics of a real one.

Use it in unit tests of code that pushes and consumes jobs: ``JobQueue.from_url("memory://jobs")``.
Queues live in a :class:`MemoryBroker`; ``memory://QUEUE`` uses the process-wide default broker,
``memory://NAMESPACE/QUEUE`` one per namespace (so tests can keep apart), and
``JobQueue(MemoryAdapter(broker, "jobs"))`` a broker of your own.

What it does, as a broker would: priority ordering (higher first, FIFO within a priority),
delayed delivery, credit-based dispatch to competing consumers, delivery counting, redelivery
of jobs left unsettled when a consumer goes away, a dead-letter queue per queue
(``QUEUE/$deadletterqueue``, read it with ``queue.dead_letter_queue()``), and an optional
``max_message_size``. Topics too (:mod:`._memory_topics`): a job pushed to a topic is copied to
each of its subscriptions (``TOPIC/Subscriptions/NAME``, each a queue with its own dead-letter
queue), and ``Job(to=...)`` routes one job to another queue or topic.
"""

from __future__ import annotations

import datetime
import itertools
from collections.abc import Callable, Sequence
from typing import Final

from .._adapter import (
    SUBSCRIPTION,
    TOPIC,
    Entity,
    SendResult,
    ServerFacts,
)
from .._errors import JobTooLarge
from .._job import Job, Receipt
from .._replies import Reply
from .._urls import DEFAULT_MEMORY_NAMESPACE
from ._memory_inspect import MemoryOperations, stamp_times
from ._memory_replies import MemoryReplies, MemoryReplyLink
from ._memory_store import DEAD_LETTER_SUFFIX, Entry, MemoryQueue, MemoryReceiver
from ._memory_topics import MemoryTopic, refuse_dead_letters, refuse_push, refuse_receive

__all__ = ["DEAD_LETTER_SUFFIX", "MemoryAdapter", "MemoryBroker", "MemoryReplies", "MemoryTopic"]

_FACTS: Final = ServerFacts()


class MemoryBroker:
    """A set of named in-memory queues. ``MemoryBroker.default()`` is the process-wide one."""

    _namespaces: dict[str, MemoryBroker] = {}  # noqa: RUF012 - process-wide registry

    def __init__(self) -> None:
        self._queues: dict[str, MemoryQueue] = {}
        self._topics: dict[str, MemoryTopic] = {}
        self._seq = itertools.count()

    @classmethod
    def default(cls) -> MemoryBroker:
        return cls.namespace(DEFAULT_MEMORY_NAMESPACE)

    @classmethod
    def namespace(cls, name: str) -> MemoryBroker:
        """The broker for ``memory://NAME/...`` URLs, created on first use."""
        broker = cls._namespaces.get(name)
        if broker is None:
            broker = cls._namespaces[name] = cls()
        return broker

    def queue(self, name: str) -> MemoryQueue:
        queue = self._queues.get(name)
        if queue is None:
            queue = self._queues[name] = MemoryQueue(self, name)
        return queue

    def topic(self, name: str, *subscriptions: str) -> MemoryTopic:
        """The topic ``name`` (created if need be), with ``subscriptions`` added: a job
        pushed to it is copied to each of them."""
        topic = self._topics.get(name)
        if topic is None:
            topic = self._topics[name] = MemoryTopic(name)
        for subscription in subscriptions:
            self.queue(topic.subscribe(subscription))
        return topic

    def targets(self, name: str) -> list[MemoryQueue]:
        """Where a job pushed to ``name`` goes: each subscription of a topic, else the queue."""
        topic = self._topics.get(name)
        if topic is None:
            return [self.queue(name)]
        return [self.queue(queue) for queue in topic.queues()]

    def depth(self, name: str) -> int:
        """Jobs waiting in queue ``name`` (ready or delayed), not counting those delivered."""
        queue = self._queues.get(name)
        return 0 if queue is None else queue.depth

    def purge(self, name: str | None = None) -> None:
        """Drop every waiting job from queue ``name`` (from every queue when ``None``)."""
        names = list(self._queues) if name is None else [name]
        for queue_name in names:
            queue = self._queues.get(queue_name)
            if queue is not None:
                queue.purge()

    def next_seq(self) -> int:
        return next(self._seq)

    def has_queue(self, name: str) -> bool:
        return name in self._queues

    @property
    def queue_names(self) -> list[str]:
        """The queues the broker holds now."""
        return list(self._queues)

    def delete(self, name: str) -> None:
        """Forget queue ``name`` and what it holds (a caller's temporary reply queue)."""
        self._queues.pop(name, None)


class MemoryAdapter:
    """The in-memory backend for one queue of a :class:`MemoryBroker`."""

    def __init__(
        self,
        broker: MemoryBroker | None = None,
        queue: str = "jobs",
        *,
        max_message_size: int | None = None,
        display: str | None = None,
        entity: Entity | None = None,
        replies: MemoryReplies | None = None,
    ) -> None:
        self._broker = broker if broker is not None else MemoryBroker.default()
        self._entity = entity if entity is not None else Entity.queue(queue)
        if self._entity.kind == TOPIC:
            self._broker.topic(queue)
        elif self._entity.kind == SUBSCRIPTION:
            assert self._entity.topic is not None
            topic = self._broker.topic(self._entity.topic, self._entity.name)
            queue = topic.queue_of(self._entity.name)
        self._queue_name = queue
        self._max_message_size = max_message_size
        self._display = display or f"memory://{queue}"
        self._receivers: list[MemoryReceiver] = []
        self._owns_replies = replies is None  # a client's adapters share the client's
        self._replies = replies if replies is not None else MemoryReplies(self._broker)

    @property
    def broker(self) -> MemoryBroker:
        return self._broker

    @property
    def queue(self) -> str:
        return self._queue_name

    @property
    def address(self) -> str:
        return self._queue_name

    @property
    def display(self) -> str:
        return self._display

    @property
    def state(self) -> str:
        """Always ``connected``: there is no connection to lose."""
        return "connected"

    @property
    def at_most_once(self) -> bool:
        return False

    @property
    def server_facts(self) -> ServerFacts:
        """No server: ``messaging.system = amqp1q``."""
        return _FACTS

    def on_state_change(self, listener: Callable[[str], None]) -> None:
        """Never called: there is no connection whose state could change."""

    async def open(self) -> None:
        self._broker.queue(self._queue_name)

    async def verify(self) -> None:
        """Nothing to do: a memory queue exists once named."""

    async def close(self) -> None:
        receivers, self._receivers = self._receivers, []
        for receiver in receivers:
            await receiver.close()
        if self._owns_replies:
            await self._replies.close()

    async def send(self, jobs: Sequence[Job], default_priority: int) -> list[SendResult]:
        if self._entity.kind == SUBSCRIPTION:
            return [refuse_push(self._entity, self._queue_name, job) for job in jobs]
        targets = self._broker.targets(self._queue_name)
        limit = self._max_message_size
        now = datetime.datetime.now(datetime.timezone.utc)
        results: list[SendResult] = []
        for job in jobs:
            if limit is not None and len(job.body) > limit:
                results.append(
                    JobTooLarge(
                        f"the job is {len(job.body)} bytes; the queue takes at most {limit}",
                        queue=self._queue_name,
                        job_id=job.id,
                    )
                )
                continue
            for queue in targets if job.to is None else self._broker.targets(job.to):
                entry = Entry(
                    seq=self._broker.next_seq(),
                    id=job.id,
                    name=job.name,
                    body=job.body,
                    content_type=job.content_type,
                    headers=job.headers,
                    priority=default_priority if job.priority is None else job.priority,
                    enqueued_at=now,
                    reply_to=job.reply_to,
                    correlation_id=job.id if job.reply_to is not None else job.correlation_id,
                    group=job.group,
                )
                if job.delay or job.ttl:
                    stamp_times(entry, now, job.delay, job.ttl)
                queue.published += 1
                queue.put(entry, job.delay)
            results.append(Receipt(job_id=job.id, queue=job.to or self._queue_name))
        return results

    def receiver(self, *, auto_ack: bool) -> MemoryReceiver:
        if self._entity.kind == TOPIC:
            raise refuse_receive(self._entity)
        receiver = MemoryReceiver(self._broker.queue(self._queue_name), auto_ack=auto_ack)
        self._receivers.append(receiver)
        return receiver

    # -- request and reply (see amqp1q._replies) ----------------------------------------------

    def reply_link(self) -> MemoryReplyLink:
        return self._replies.link()

    async def send_reply(self, address: str, reply: Reply) -> None:
        self._replies.send(address, reply)

    def group_receiver(self, *, auto_ack: bool, groups: int) -> None:
        """None: the consumer sequences groups over :meth:`receiver` (docs/ordering.md)."""
        return None

    def operations(self) -> MemoryOperations:
        """depth, peek, purge and cancel, read from the broker directly."""
        return MemoryOperations(self._broker, self._queue_name)

    def dead_letter_adapter(self) -> MemoryAdapter:
        if self._entity.kind == TOPIC:
            raise refuse_dead_letters(self._entity)
        return MemoryAdapter(
            self._broker,
            self._queue_name + DEAD_LETTER_SUFFIX,
            max_message_size=self._max_message_size,
            display=self._display + DEAD_LETTER_SUFFIX,
        )
