"""Operating an in-memory queue (``JobQueue.depth()``, ``peek()``, ...): read straight from the
:class:`~amqp1q.adapters.memory.MemoryBroker`, exact at the moment asked."""

from __future__ import annotations

import datetime
import time
from typing import TYPE_CHECKING

from .._adapter import Incoming
from .._inspection import PeekedJob, QueueDepth
from .._job import Receipt
from ._memory_store import DEAD_LETTER_SUFFIX

if TYPE_CHECKING:
    from ._memory_store import Entry
    from .memory import MemoryBroker

__all__ = ["MemoryOperations", "stamp_times"]


def stamp_times(
    entry: Entry, now: datetime.datetime, delay: float | None, ttl: float | None
) -> None:
    """When a delayed job is due, and when a job with a time to live expires (counted from
    when it is due, as Service Bus counts it)."""
    if delay:
        entry.scheduled_for = now + datetime.timedelta(seconds=delay)
    if ttl:
        entry.expires_at = time.monotonic() + (delay or 0.0) + ttl


class MemoryOperations:
    """The :class:`~amqp1q._inspection.QueueOperations` of one memory queue."""

    def __init__(self, broker: MemoryBroker, queue: str) -> None:
        self._broker = broker
        self._queue = queue

    async def depth(self) -> QueueDepth:
        queue = self._broker.queue(self._queue)
        dead = self._broker.queue(self._queue + DEAD_LETTER_SUFFIX)
        now = time.monotonic()
        ready = queue.waiting(now)
        waiting = [entry.enqueued_at for entry in ready]
        return QueueDepth(
            self._queue,
            ready=len(ready),
            scheduled=len(queue.waiting(now, scheduled=True)),
            in_flight=queue.in_flight,
            dead_lettered=len(dead.waiting(now)) + len(dead.waiting(now, scheduled=True)),
            oldest_enqueued_at=min(waiting) if waiting else None,
            published=queue.published,
            delivered=queue.delivered,
            acked=queue.acked,
            source="memory",
        )

    async def peek(self, count: int, *, dead_letter: bool) -> list[PeekedJob]:
        name = self._queue + (DEAD_LETTER_SUFFIX if dead_letter else "")
        queue = self._broker.queue(name)
        now = time.monotonic()
        state = "dead-lettered" if dead_letter else "ready"
        found = [(entry, state) for entry in queue.waiting(now)]
        if len(found) < count:
            found += [(entry, "scheduled") for entry in queue.waiting(now, scheduled=True)]
        return [_peeked(entry, state) for entry, state in found[:count]]

    async def purge(self, *, dead_letter: bool) -> int:
        queue = self._broker.queue(self._queue + (DEAD_LETTER_SUFFIX if dead_letter else ""))
        count = queue.depth
        queue.purge()
        return count

    async def cancel_scheduled(self, receipt: Receipt) -> bool:
        return self._broker.queue(self._queue).cancel_scheduled(receipt.job_id)


def _peeked(entry: Entry, state: str) -> PeekedJob:
    incoming = Incoming(
        id=entry.id,
        name=entry.name,
        body=entry.body,
        content_type=entry.content_type,
        headers=entry.headers,
        attempt=entry.delivery_count + 1,
        priority=entry.priority,
        enqueued_at=entry.enqueued_at,
        dead_letter_reason=entry.dead_letter_reason,
        dead_letter_description=entry.dead_letter_description,
    )
    scheduled_for = entry.scheduled_for if state == "scheduled" else None
    return PeekedJob.of(
        incoming, state=state, sequence_number=entry.seq, scheduled_for=scheduled_for
    )
