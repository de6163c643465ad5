"""Operating an in-memory queue (``JobQueue.depth()``, ``peek()``, ...): read straight from the
:class:`~amqp1q.adapters.memory.MemoryBroker`, exact at the moment asked."""

from __future__ import annotations

import datetime
import heapq
import time
from typing import TYPE_CHECKING, Any

from .._adapter import Incoming
from .._inspection import PeekedJob, QueueDepth
from .._job import Receipt

if TYPE_CHECKING:
    from .memory import MemoryBroker, _Entry

__all__ = ["MemoryOperations", "stamp_times"]

DEAD_LETTER_SUFFIX = "/$deadletterqueue"


def stamp_times(
    entry: _Entry, now: datetime.datetime, delay: float | None, ttl: float | None
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
        ready = _live(queue._ready, now)
        scheduled = _live(queue._scheduled, now)
        waiting = [entry.enqueued_at for entry in ready]
        return QueueDepth(
            self._queue,
            ready=len(ready),
            scheduled=len(scheduled),
            in_flight=sum(receiver.in_flight for receiver in queue._receivers),
            dead_lettered=len(_live(dead._ready, now)) + len(_live(dead._scheduled, now)),
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
        ready = [e for _, _, e in sorted(queue._ready, key=lambda item: item[:2])]
        found = [
            (entry, "dead-lettered" if dead_letter else "ready")
            for entry in ready
            if not entry.expired(now)
        ]
        if len(found) < count:
            scheduled = sorted(queue._scheduled, key=lambda item: item[:2])
            found += [(e, "scheduled") for _, _, e in scheduled if not e.expired(now)]
        return [_peeked(entry, state) for entry, state in found[:count]]

    async def purge(self, *, dead_letter: bool) -> int:
        queue = self._broker.queue(self._queue + (DEAD_LETTER_SUFFIX if dead_letter else ""))
        count = queue.depth
        queue.purge()
        return count

    async def cancel_scheduled(self, receipt: Receipt) -> bool:
        queue = self._broker.queue(self._queue)
        kept = [item for item in queue._scheduled if item[2].id != receipt.job_id]
        if len(kept) == len(queue._scheduled):
            return False
        heapq.heapify(kept)
        queue._scheduled[:] = kept
        return True


def _live(heap: list[tuple[Any, int, _Entry]], now: float) -> list[_Entry]:
    return [entry for _, _, entry in heap if not entry.expired(now)]


def _peeked(entry: _Entry, state: str) -> PeekedJob:
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
