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

import asyncio
import datetime
import heapq
import itertools
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Final

import attrs

from .._adapter import (
    SUBSCRIPTION,
    TOPIC,
    Entity,
    Incoming,
    Outcome,
    SendResult,
    ServerFacts,
    Settlement,
)
from .._errors import AlreadySettled, DeliveryStale, JobTooLarge, QueueStateError
from .._job import Headers, Job, Receipt
from .._replies import Reply
from .._urls import DEFAULT_MEMORY_NAMESPACE
from ._memory_inspect import MemoryOperations, stamp_times
from ._memory_topics import MemoryTopic, refuse_dead_letters, refuse_push, refuse_receive

__all__ = ["DEAD_LETTER_SUFFIX", "MemoryAdapter", "MemoryBroker", "MemoryReplies", "MemoryTopic"]

DEAD_LETTER_SUFFIX: Final = "/$deadletterqueue"
_FACTS: Final = ServerFacts()


@attrs.define(slots=True, eq=False)
class _Entry:
    """A message held by the broker."""

    seq: int
    id: str
    name: str
    body: bytes
    content_type: str | None
    headers: Headers
    priority: int
    enqueued_at: datetime.datetime
    delivery_count: int = 0
    dead_letter_reason: str | None = None
    dead_letter_description: str | None = None
    #: ``time.monotonic()`` after which it is dropped unconsumed (``Job.ttl``), or None.
    expires_at: float | None = None
    #: When a delayed job is due (for peeking), or None.
    scheduled_for: datetime.datetime | None = None
    #: A request's reply-to (and the id its reply carries), or a reply's correlation id.
    reply_to: str | None = None
    correlation_id: str | None = None
    group: str | None = None

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and self.expires_at <= now


class MemoryBroker:
    """A set of named in-memory queues. ``MemoryBroker.default()`` is the process-wide one."""

    _namespaces: dict[str, MemoryBroker] = {}  # noqa: RUF012 - process-wide registry

    def __init__(self) -> None:
        self._queues: dict[str, _MemoryQueue] = {}
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

    def queue(self, name: str) -> _MemoryQueue:
        queue = self._queues.get(name)
        if queue is None:
            queue = self._queues[name] = _MemoryQueue(self, name)
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

    def targets(self, name: str) -> list[_MemoryQueue]:
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


class _MemoryQueue:
    def __init__(self, broker: MemoryBroker, name: str) -> None:
        self.broker = broker
        self.name = name
        self._ready: list[tuple[int, int, _Entry]] = []  # (-priority, seq, entry)
        self._scheduled: list[tuple[float, int, _Entry]] = []  # (due monotonic, seq, entry)
        self._receivers: list[_MemoryReceiver] = []
        self._rr = 0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_due = 0.0
        self._timer_loop: asyncio.AbstractEventLoop | None = None
        #: Running totals (``JobQueue.depth()``): jobs put, delivered, acknowledged.
        self.published = 0
        self.delivered = 0
        self.acked = 0

    @property
    def depth(self) -> int:
        return len(self._ready) + len(self._scheduled)

    def purge(self) -> None:
        self._ready.clear()
        self._scheduled.clear()

    def put(self, entry: _Entry, delay: float | None = None) -> None:
        if delay:
            heapq.heappush(self._scheduled, (time.monotonic() + delay, entry.seq, entry))
            self._arm_timer()
        else:
            heapq.heappush(self._ready, (-entry.priority, entry.seq, entry))
        self.pump()

    def attach(self, receiver: _MemoryReceiver) -> None:
        self._receivers.append(receiver)

    def detach(self, receiver: _MemoryReceiver) -> None:
        if receiver in self._receivers:
            self._receivers.remove(receiver)

    def pump(self) -> None:
        """Promote due scheduled entries, then hand ready entries to receivers with credit."""
        if self._scheduled:
            now = time.monotonic()
            while self._scheduled and self._scheduled[0][0] <= now:
                _, _, entry = heapq.heappop(self._scheduled)
                heapq.heappush(self._ready, (-entry.priority, entry.seq, entry))
            self._arm_timer()
        while self._ready:
            receiver = self._next_receiver()
            if receiver is None:
                return
            _, _, entry = heapq.heappop(self._ready)
            if entry.expires_at is not None and entry.expired(time.monotonic()):
                continue  # its time to live ran out: dropped, as a broker drops it
            self.delivered += 1
            receiver.deliver(entry)

    def _next_receiver(self) -> _MemoryReceiver | None:
        count = len(self._receivers)
        for i in range(count):
            receiver = self._receivers[(self._rr + i) % count]
            if receiver.credit > 0:
                self._rr = (self._rr + i + 1) % count
                return receiver
        return None

    def _arm_timer(self) -> None:
        if not self._scheduled:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # promoted on the next operation made from a loop
        due = self._scheduled[0][0]
        if (
            self._timer is not None
            and not self._timer.cancelled()
            and self._timer_loop is loop
            and not loop.is_closed()
            and self._timer_due <= due
        ):
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_due = due
        self._timer_loop = loop
        self._timer = loop.call_later(max(0.0, due - time.monotonic()), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.pump()


class _MemoryReceiver:
    def __init__(self, queue: _MemoryQueue, *, auto_ack: bool) -> None:
        self._queue = queue
        self._auto_ack = auto_ack
        self.credit = 0
        self._buffer: deque[_Entry] = deque()
        self._unsettled: set[_Entry] = set()
        self._event: asyncio.Event | None = None
        self._open = False
        self._closed = False

    @property
    def in_flight(self) -> int:
        """Jobs delivered to this receiver and not yet settled."""
        return len(self._buffer) + len(self._unsettled)

    async def open(self) -> None:
        if self._closed:
            raise QueueStateError("the receiver is closed", queue=self._queue.name)
        self._event = asyncio.Event()
        self._open = True
        self._queue.attach(self)

    def flow(self, credit: int) -> None:
        if self._closed or credit <= 0:
            return
        self.credit += credit
        self._queue.pump()

    def deliver(self, entry: _Entry) -> None:
        self.credit -= 1
        self._buffer.append(entry)
        if self._event is not None:
            self._event.set()

    async def receive(self) -> Incoming | None:
        event = self._event
        if event is None:
            raise QueueStateError("the receiver is not open", queue=self._queue.name)
        while True:
            if self._buffer:
                entry = self._buffer.popleft()
                if not self._auto_ack:
                    self._unsettled.add(entry)
                return _incoming(entry)
            if self._closed:
                return None
            self._queue.pump()
            if self._buffer:
                continue
            event.clear()
            await event.wait()

    def settle(self, incoming: Incoming, settlement: Settlement) -> None:
        entry: _Entry = incoming.token
        if entry not in self._unsettled:
            if self._closed:
                raise DeliveryStale(
                    "the consumer closed before the job was settled; the job was redelivered",
                    queue=self._queue.name,
                    job_id=incoming.id,
                )
            raise AlreadySettled(
                "the job was already settled", queue=self._queue.name, job_id=incoming.id
            )
        self._unsettled.discard(entry)
        queue = self._queue
        outcome = settlement.outcome
        if outcome is Outcome.ACK:
            queue.acked += 1
            return
        if outcome is Outcome.RELEASE:
            queue.put(entry)
        elif outcome is Outcome.RETRY:
            entry.delivery_count += 1
            if settlement.delay:
                entry.seq = queue.broker.next_seq()  # re-published: to the back of the queue
            queue.put(entry, settlement.delay)
        else:
            entry.dead_letter_reason = settlement.reason
            entry.dead_letter_description = settlement.description
            entry.seq = queue.broker.next_seq()
            queue.broker.queue(queue.name + DEAD_LETTER_SUFFIX).put(entry)

    def stale(self, incoming: Incoming) -> bool:
        return False  # no connection to lose

    async def drain(self) -> None:
        self.credit = 0
        if not self._auto_ack:
            while self._buffer:
                self._queue.put(self._buffer.popleft())

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.credit = 0
        self._queue.detach(self)
        queue = self._queue
        if not self._auto_ack:
            # Received but never handed out: back untouched. Handed out but unsettled: back
            # with the delivery counted, as a broker does when a link dies under a delivery.
            while self._buffer:
                queue.put(self._buffer.popleft())
            for entry in sorted(self._unsettled, key=lambda e: e.seq):
                entry.delivery_count += 1
                queue.put(entry)
        self._buffer.clear()
        self._unsettled.clear()
        if self._event is not None:
            self._event.set()


def _incoming(entry: _Entry) -> Incoming:
    return Incoming(
        id=entry.id,
        name=entry.name,
        body=entry.body,
        content_type=entry.content_type,
        headers=entry.headers,
        attempt=entry.delivery_count + 1,
        token=entry,
        priority=entry.priority,
        enqueued_at=entry.enqueued_at,
        dead_letter_reason=entry.dead_letter_reason,
        dead_letter_description=entry.dead_letter_description,
        reply_to=entry.reply_to,
        correlation_id=entry.correlation_id,
        group=entry.group,
    )


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
        self._receivers: list[_MemoryReceiver] = []
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
                entry = _Entry(
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

    def receiver(self, *, auto_ack: bool) -> _MemoryReceiver:
        if self._entity.kind == TOPIC:
            raise refuse_receive(self._entity)
        receiver = _MemoryReceiver(self._broker.queue(self._queue_name), auto_ack=auto_ack)
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


# -- request and reply -------------------------------------------------------------------------

#: The name of a caller's temporary reply queue starts with this.
REPLY_PREFIX: Final = "$replies/"


class MemoryReplies:
    """The reply link of one client (a ``from_url`` queue, or a ``connect()`` client): a
    temporary queue of its own, deleted when the link closes."""

    def __init__(self, broker: MemoryBroker) -> None:
        self._broker = broker
        self._link: MemoryReplyLink | None = None

    def link(self) -> MemoryReplyLink:
        link = self._link
        if link is None or link.closed:
            link = self._link = MemoryReplyLink(self._broker)
        return link

    def send(self, address: str, reply: Reply) -> None:
        broker = self._broker
        if address.startswith(REPLY_PREFIX) and not broker.has_queue(address):
            return  # its caller has gone: nobody would read it
        broker.queue(address).put(
            _Entry(
                seq=broker.next_seq(),
                id=reply.id,
                name=reply.subject or "reply",
                body=reply.body,
                content_type=reply.content_type,
                headers=Headers(reply.properties) if reply.properties else Headers(),
                priority=0,
                enqueued_at=datetime.datetime.now(datetime.timezone.utc),
                correlation_id=reply.correlation_id,
            )
        )

    async def close(self) -> None:
        link, self._link = self._link, None
        if link is not None:
            await link.close()


class MemoryReplyLink:
    """A temporary reply queue and the receiver reading it (at most once: replies are
    settled on delivery)."""

    _CREDIT: Final = 1000

    def __init__(self, broker: MemoryBroker) -> None:
        self._broker = broker
        self.address = f"{REPLY_PREFIX}{broker.next_seq()}-{id(self):x}"
        self.session_id: str | None = None
        self._receiver: _MemoryReceiver | None = None
        self.closed = False

    async def open(self) -> None:
        receiver = _MemoryReceiver(self._broker.queue(self.address), auto_ack=True)
        await receiver.open()
        receiver.flow(self._CREDIT)
        self._receiver = receiver

    async def receive(self) -> Incoming | None:
        receiver = self._receiver
        if receiver is None or self.closed:
            return None
        incoming = await receiver.receive()
        if incoming is not None:
            receiver.flow(1)
        return incoming

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        receiver, self._receiver = self._receiver, None
        if receiver is not None:
            await receiver.close()
        self._broker.delete(self.address)
