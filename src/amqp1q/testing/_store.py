"""The embedded broker's queues: in memory, by address, priority-ordered, with schedules.

No I/O here. A :class:`BrokerQueue` holds ready messages in a heap ordered by priority (highest
first) then arrival, scheduled messages in a heap by due time, and the deliveries out on links
(``unacked``). Consumers register a callback that is offered messages while they have credit.
"""

from __future__ import annotations

import heapq
import itertools
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Final

import attrs

if TYPE_CHECKING:
    from ._topics import BrokerTopic

__all__ = ["DEAD_LETTER_SUFFIX", "SUBSCRIPTIONS", "BrokerQueue", "Store", "Stored", "queue_name"]

DEAD_LETTER_SUFFIX: Final = "/$deadletterqueue"
#: Between a topic's name and a subscription's, in the subscription's queue name.
SUBSCRIPTIONS: Final = "/Subscriptions/"

_sequence = itertools.count(1)


@attrs.define(slots=True, eq=False)
class Stored:
    """One message in a queue: its bytes as received, and the broker's bookkeeping."""

    payload: bytes
    priority: int = 4
    delivery_count: int = 0
    #: Milliseconds since the epoch when it entered the queue.
    enqueued_at: int = 0
    #: Milliseconds since the epoch before which it is not delivered (scheduled).
    due_at: int = 0
    sequence: int = attrs.field(factory=lambda: next(_sequence))
    #: Annotations the broker adds on delivery (on top of the message's own).
    annotations: dict[str, Any] = attrs.field(factory=dict)
    #: The application properties a dead-lettering added (reason, description).
    dead_letter_info: dict[str, Any] | None = None
    ever_delivered: bool = False
    #: The header's ttl (ms): dropped unconsumed that long after it is due; 0: never.
    ttl: int = 0
    #: Its session (the properties' group-id), read only by a queue that requires sessions.
    session_id: str | None = None

    def expired(self, now_ms: int) -> bool:
        return self.ttl > 0 and max(self.enqueued_at, self.due_at) + self.ttl <= now_ms


#: Offered a message; returns True if it took it (it had credit), False otherwise.
Consumer = Callable[["BrokerQueue", Stored], bool]


def _now_ms() -> int:
    return int(time.time() * 1000)


class BrokerQueue:
    """One address's messages."""

    #: Whether every message must carry a session id (see :mod:`._session_store`).
    requires_session = False

    def __init__(self, name: str, store: Store) -> None:
        self.name = name
        self.store = store
        self._ready: list[tuple[int, int, Stored]] = []
        self._scheduled: list[tuple[int, int, Stored]] = []
        self._consumers: list[Consumer] = []
        self._next_consumer = 0
        #: dispatch() under way (a consumer's callback may put or subscribe, re-entering it),
        #: and whether such a re-entry asked for another pass.
        self._dispatching = False
        self._again = False
        #: Messages out on a link, not yet settled, by sequence number.
        self.unacked: dict[int, Stored] = {}
        #: Running totals (the ``amqp1q:queue-stats`` operation): put, delivered, accepted.
        self.published = 0
        self.delivered_total = 0
        self.accepted_total = 0

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self.name!r} ready={self.ready_count} "
            f"scheduled={len(self._scheduled)} unacked={len(self.unacked)}>"
        )

    # -- facts ----------------------------------------------------------------------------------

    @property
    def ready_count(self) -> int:
        return len(self._ready)

    def _ready_items(self) -> list[Stored]:
        """Every ready message (in no particular order)."""
        return [s for _, _, s in self._ready]

    @property
    def scheduled_count(self) -> int:
        return len(self._scheduled)

    def __len__(self) -> int:
        """Every message the queue holds: ready, scheduled and out on links."""
        return self.ready_count + len(self._scheduled) + len(self.unacked)

    def peek(self, count: int, from_sequence: int = 0) -> list[Stored]:
        """Up to ``count`` messages in sequence order, ready or scheduled, without taking them."""
        everything = self._ready_items() + [s for _, _, s in self._scheduled]
        everything += list(self.unacked.values())
        everything.sort(key=lambda s: s.sequence)
        return [s for s in everything if s.sequence >= from_sequence][:count]

    def waiting(self, now_ms: int) -> tuple[list[Stored], list[Stored]]:
        """The ready and the scheduled messages whose time to live has not run out."""
        ready = [s for s in self._ready_items() if not s.expired(now_ms)]
        return ready, [s for _, _, s in self._scheduled if not s.expired(now_ms)]

    def cancel_where(self, match: Callable[[Stored], bool]) -> int:
        """Cancel the scheduled messages ``match`` picks; returns how many."""
        kept = [item for item in self._scheduled if not match(item[2])]
        count = len(self._scheduled) - len(kept)
        if count:
            heapq.heapify(kept)
            self._scheduled = kept
            self.store.schedule_changed(self)
        return count

    def messages(self) -> Iterator[Stored]:
        """Ready messages in delivery order (for tests and the management peek)."""
        return iter(sorted(self._ready_items(), key=lambda s: (-s.priority, s.sequence)))

    # -- in -------------------------------------------------------------------------------------

    def admits(self, stored: Stored) -> tuple[str, str] | None:
        """None if the queue takes the message; else the error condition and description."""
        return None

    def put(self, stored: Stored, now_ms: int) -> None:
        if not stored.enqueued_at:
            stored.enqueued_at = now_ms
        self.published += 1
        if stored.due_at > now_ms:
            heapq.heappush(self._scheduled, (stored.due_at, stored.sequence, stored))
            self.store.schedule_changed(self)
            return
        self._push_ready(stored)
        self.dispatch()

    def _push_ready(self, stored: Stored) -> None:
        heapq.heappush(self._ready, (-stored.priority, stored.sequence, stored))

    def cancel_scheduled(self, sequence: int) -> bool:
        for index, (_, seq, _) in enumerate(self._scheduled):
            if seq == sequence:
                self._scheduled.pop(index)
                heapq.heapify(self._scheduled)
                return True
        return False

    def next_due(self) -> int | None:
        return self._scheduled[0][0] if self._scheduled else None

    def promote_due(self, now_ms: int) -> None:
        """Move scheduled messages whose time has come to the ready heap."""
        moved = False
        while self._scheduled and self._scheduled[0][0] <= now_ms:
            _, _, stored = heapq.heappop(self._scheduled)
            self._push_ready(stored)
            moved = True
        if moved:
            self.dispatch()

    # -- out ------------------------------------------------------------------------------------

    def subscribe(self, consumer: Consumer) -> None:
        self._consumers.append(consumer)
        self.dispatch()

    def unsubscribe(self, consumer: Consumer) -> None:
        if consumer in self._consumers:
            self._consumers.remove(consumer)

    def dispatch(self) -> None:
        """Offer ready messages to consumers in turn while any of them has credit.

        A consumer's callback may re-enter (a delivery answered at once puts a message, or a
        new consumer subscribes): the re-entry only asks the pass under way for another, so a
        message is never offered twice nor popped by a pass that did not offer it."""
        if self._dispatching:
            self._again = True
            return
        self._dispatching = True
        try:
            self._again = True
            while self._again:
                self._again = False
                self._dispatch_pass()
        finally:
            self._dispatching = False

    def _dispatch_pass(self) -> None:
        consumers = self._consumers
        ready = self._ready
        while ready and consumers:
            took = False
            for _ in range(len(consumers)):
                if not (ready and consumers):
                    return
                self._next_consumer = (self._next_consumer + 1) % len(consumers)
                consumer = consumers[self._next_consumer]
                entry = heapq.heappop(ready)  # taken before it is offered: a put the
                stored = entry[2]  # callback makes may go ahead of it in the heap
                if stored.ttl and stored.expired(_now_ms()):
                    took = True  # its time to live ran out: dropped unconsumed
                    continue
                if consumer(self, stored):
                    took = True
                else:
                    heapq.heappush(ready, entry)
            if not took:
                return

    def take(self) -> Stored | None:
        """Pop the next ready message (for pulls that are not credit-driven)."""
        if not self._ready:
            return None
        return heapq.heappop(self._ready)[2]

    def purge(self) -> int:
        count = self.ready_count + len(self._scheduled)
        self._ready.clear()
        self._scheduled.clear()
        return count

    # -- settlement -----------------------------------------------------------------------------

    def delivered(self, stored: Stored) -> None:
        stored.ever_delivered = True
        self.delivered_total += 1
        self.unacked[stored.sequence] = stored

    def accept(self, stored: Stored) -> None:
        if self.unacked.pop(stored.sequence, None) is not None:
            self.accepted_total += 1

    def release(self, stored: Stored, *, count: bool, now_ms: int) -> None:
        """Back to the queue, in its place; ``count`` adds one to its delivery count."""
        if self.unacked.pop(stored.sequence, None) is None:
            return
        if count:
            stored.delivery_count += 1
        self._push_ready(stored)
        self.dispatch()

    def dead_letter(self, stored: Stored, info: dict[str, Any] | None, now_ms: int) -> None:
        self.unacked.pop(stored.sequence, None)
        dead = self.store.queue(self.name + DEAD_LETTER_SUFFIX, create=True)
        assert dead is not None
        copy = Stored(
            stored.payload,
            priority=stored.priority,
            delivery_count=stored.delivery_count,
            annotations=dict(stored.annotations),
            dead_letter_info=info,
            enqueued_at=stored.enqueued_at,
        )
        dead.put(copy, now_ms)


class Store:
    """Every queue, by address. ``strict``: only declared queues (and their DLQs) exist."""

    def __init__(
        self,
        *,
        strict: bool = False,
        on_schedule: Callable[[BrokerQueue], None] | None = None,
    ) -> None:
        self.strict = strict
        self._queues: dict[str, BrokerQueue] = {}
        self._on_schedule = on_schedule

    def declare(self, name: str, *, requires_session: bool = False) -> BrokerQueue:
        """The queue ``name`` (made if need be); ``requires_session``: a queue whose messages
        each belong to a session (see :mod:`._session_store`), which an existing queue of that
        name must already be."""
        queue = self._queues.get(name)
        if queue is None:
            if requires_session:
                from ._session_store import SessionQueue

                queue = SessionQueue(name, self)
            else:
                queue = BrokerQueue(name, self)
            self._queues[name] = queue
        elif requires_session and not queue.requires_session:
            raise ValueError(f"{name!r} already exists without sessions")
        return queue

    def declare_topic(self, name: str, subscriptions: Iterable[str] = ()) -> BrokerTopic:
        """The topic ``name`` (see :mod:`._topics`), with ``subscriptions`` added; a queue of
        that name already there is an error."""
        from ._topics import BrokerTopic

        topic = self._queues.get(name)
        if topic is None:
            topic = self._queues[name] = BrokerTopic(name, self)
        if not isinstance(topic, BrokerTopic):
            raise ValueError(f"{name!r} is a queue, not a topic")
        for subscription in subscriptions:
            topic.add_subscription(subscription)
        return topic

    def queue(self, name: str, *, create: bool | None = None) -> BrokerQueue | None:
        """The queue at ``name``; created on first use unless strict (DLQs always exist)."""
        queue = self._queues.get(name)
        if queue is not None:
            return queue
        if create is None:
            create = not self.strict
        if not create and name.endswith(DEAD_LETTER_SUFFIX):
            create = name[: -len(DEAD_LETTER_SUFFIX)] in self._queues
        topic, subscriptions, subscription = name.partition(SUBSCRIPTIONS)
        if subscriptions and create and "/" not in subscription:
            # A subscription's path: its topic (and it) made on first use, unless strict.
            existing = self._queues.get(topic)
            if existing is not None and type(existing) is BrokerQueue:
                return None  # a queue, not a topic: no subscriptions
            return self.declare_topic(topic, [subscription]).subscriptions[subscription]
        return self.declare(name) if create else None

    @property
    def queues(self) -> dict[str, BrokerQueue]:
        return dict(self._queues)

    def delete(self, name: str) -> None:
        """Forget queue ``name`` and what it holds (a dynamic node whose link closed)."""
        self._queues.pop(name, None)

    def schedule_changed(self, queue: BrokerQueue) -> None:
        if self._on_schedule is not None:
            self._on_schedule(queue)


def queue_name(address: str | None) -> str | None:
    """The queue an address names: ``jobs``, ``/jobs``, ``amqps://host:port/jobs`` alike."""
    if not address:
        return None
    if "://" in address:
        address = urllib.parse.urlsplit(address).path
    name = address.lstrip("/")
    if name.lower().endswith(DEAD_LETTER_SUFFIX):  # Service Bus spells it /$DeadLetterQueue
        name = name[: -len(DEAD_LETTER_SUFFIX)] + DEAD_LETTER_SUFFIX
    at = name.lower().find(SUBSCRIPTIONS.lower())
    if at > 0:  # (entity paths are case-insensitive on Service Bus)
        name = name[:at] + SUBSCRIPTIONS + name[at + len(SUBSCRIPTIONS) :]
    return name or None
