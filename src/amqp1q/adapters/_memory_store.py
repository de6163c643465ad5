"""The in-memory broker's queues and consumers' links: what :class:`MemoryBroker` holds.

A :class:`MemoryQueue` keeps ready jobs in priority order (higher first, FIFO within one) and
delayed ones until due, and hands them to the :class:`MemoryReceiver` s with credit in turn; a
receiver settles them as a broker would (release, retry with a delay, dead-letter to
``QUEUE/$deadletterqueue``) and gives back what it held when it closes.
"""

from __future__ import annotations

import asyncio
import datetime
import heapq
import time
from collections import deque
from typing import TYPE_CHECKING, Final

import attrs

from .._adapter import Incoming, Outcome, Settlement
from .._errors import AlreadySettled, DeliveryStale, QueueStateError
from .._job import Headers

if TYPE_CHECKING:
    from .memory import MemoryBroker

__all__ = ["DEAD_LETTER_SUFFIX", "Entry", "MemoryQueue", "MemoryReceiver", "to_incoming"]

DEAD_LETTER_SUFFIX: Final = "/$deadletterqueue"


@attrs.define(slots=True, eq=False)
class Entry:
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


class MemoryQueue:
    def __init__(self, broker: MemoryBroker, name: str) -> None:
        self.broker = broker
        self.name = name
        self._ready: list[tuple[int, int, Entry]] = []  # (-priority, seq, entry)
        self._scheduled: list[tuple[float, int, Entry]] = []  # (due monotonic, seq, entry)
        self._receivers: list[MemoryReceiver] = []
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

    @property
    def in_flight(self) -> int:
        """Jobs delivered to its consumers and not yet settled."""
        return sum(receiver.in_flight for receiver in self._receivers)

    def waiting(self, now: float, *, scheduled: bool = False) -> list[Entry]:
        """The ready (or the scheduled) jobs not past their time to live, in delivery order."""
        heap: list[tuple[float, int, Entry]] = [*(self._scheduled if scheduled else self._ready)]
        return [
            entry
            for _, _, entry in sorted(heap, key=lambda item: item[:2])
            if not entry.expired(now)
        ]

    def cancel_scheduled(self, job_id: str) -> bool:
        """Take the scheduled job ``job_id`` out; False if it is not scheduled (any more)."""
        kept = [item for item in self._scheduled if item[2].id != job_id]
        if len(kept) == len(self._scheduled):
            return False
        heapq.heapify(kept)
        self._scheduled[:] = kept
        return True

    def put(self, entry: Entry, delay: float | None = None) -> None:
        if delay:
            heapq.heappush(self._scheduled, (time.monotonic() + delay, entry.seq, entry))
            self._arm_timer()
        else:
            heapq.heappush(self._ready, (-entry.priority, entry.seq, entry))
        self.pump()

    def attach(self, receiver: MemoryReceiver) -> None:
        self._receivers.append(receiver)

    def detach(self, receiver: MemoryReceiver) -> None:
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

    def _next_receiver(self) -> MemoryReceiver | None:
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


class MemoryReceiver:
    def __init__(self, queue: MemoryQueue, *, auto_ack: bool) -> None:
        self._queue = queue
        self._auto_ack = auto_ack
        self.credit = 0
        self._buffer: deque[Entry] = deque()
        self._unsettled: set[Entry] = set()
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

    def deliver(self, entry: Entry) -> None:
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
                return to_incoming(entry)
            if self._closed:
                return None
            self._queue.pump()
            if self._buffer:
                continue
            event.clear()
            await event.wait()

    def settle(self, incoming: Incoming, settlement: Settlement) -> None:
        entry: Entry = incoming.token
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


def to_incoming(entry: Entry) -> Incoming:
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
