"""Operating a queue: ``depth()``, ``peek()``, ``replay_dead_letters()``,
``purge_dead_letters()`` and ``Receipt.cancel()`` -- the facade's side.

:class:`OperationsMixin` gives :class:`~amqp1q.JobQueue` these methods; the adapter's
``operations()`` (a :class:`~amqp1q._inspection.QueueOperations`) does the broker's part.
Replaying is the facade's own, the same on every broker: the dead-letter queue is consumed, each
job pushed back to the queue as a new delivery (attempt 1; ``amqp1q-replays`` and
``amqp1q-dead-letter-reason`` headers record the replay), and only then the dead-lettered copy
acknowledged -- a crash between gives a duplicate, never a loss.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Final

from ._errors import Amqp1qError, InvalidSetting
from ._inspection import PeekedJob, QueueDepth, QueueOperations
from ._job import Job, Receipt

if TYPE_CHECKING:
    from ._adapter import Adapter
    from ._queue import JobQueue
    from ._received import ReceivedJob

__all__ = ["REPLAYS_HEADER", "REPLAY_REASON_HEADER", "OperationsMixin"]

log = logging.getLogger("amqp1q.queue")

#: Header a replayed job carries: how many times it has been replayed from the dead-letter queue.
REPLAYS_HEADER: Final = "amqp1q-replays"
#: Header a replayed job carries: the reason it had been dead-lettered for.
REPLAY_REASON_HEADER: Final = "amqp1q-dead-letter-reason"
#: How many jobs a filtered replay holds back (unsettled) while it looks for matching ones.
MAX_HELD: Final = 500
#: How long a replay waits for one more dead-lettered job before it takes the queue as empty.
REPLAY_IDLE: Final = 1.0
MAX_PEEK: Final = 1000


def operations_of(adapter: Adapter, queue: str) -> QueueOperations:
    """The adapter's operations (an adapter that has none raises UnsupportedFeature)."""
    return adapter.operations()


class OperationsMixin:
    """``JobQueue``'s operating methods (see the module docstring)."""

    def _bind_receipts(  # type: ignore[misc]
        self: JobQueue, jobs: Sequence[Job], results: Sequence[Receipt | Amqp1qError]
    ) -> None:
        """Make the receipts of delayed jobs cancellable (in place): ``receipt.cancel()``."""

        async def cancel(receipt: Receipt) -> bool:
            self._check_open()
            return await operations_of(self.adapter, self.name).cancel_scheduled(receipt)

        for index, job in enumerate(jobs):
            result = results[index]
            if job.delay and isinstance(result, Receipt):
                cancellable = Receipt(
                    result.job_id, result.queue, result.sequence_number, canceller=cancel
                )
                results[index] = cancellable  # type: ignore[index]

    async def depth(self: JobQueue) -> QueueDepth:  # type: ignore[misc]
        """How many jobs the queue holds -- ready, scheduled, in flight, dead-lettered -- as
        its broker counts them (``None`` for what a broker cannot count); see
        :class:`~amqp1q.QueueDepth`. Raises :class:`~amqp1q.UnsupportedFeature` on a broker
        that counts nothing (Qpid Proton's example brokers)."""
        self._check_open()
        return await operations_of(self.adapter, self.name).depth()

    async def peek(  # type: ignore[misc]
        self: JobQueue, count: int = 10, *, dead_letter: bool = False
    ) -> list[PeekedJob]:
        """Up to ``count`` jobs from the head of the queue (or of its dead-letter queue),
        without taking them: nothing is delivered, settled or counted as an attempt.
        Dead-lettered jobs carry their ``dead_letter_reason`` and ``dead_letter_description``."""
        self._check_open()
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_PEEK:
            raise InvalidSetting(f"count must be an int from 1 to {MAX_PEEK}, got {count!r}")
        return await operations_of(self.adapter, self.name).peek(count, dead_letter=dead_letter)

    async def purge_dead_letters(self: JobQueue) -> int:  # type: ignore[misc]
        """Delete every job in the queue's dead-letter queue; returns how many (where the
        broker says)."""
        self._check_open()
        return await operations_of(self.adapter, self.name).purge(dead_letter=True)

    async def replay_dead_letters(  # type: ignore[misc]
        self: JobQueue,
        limit: int | None = None,
        filter: Callable[[ReceivedJob], bool] | None = None,
    ) -> int:
        """Move dead-lettered jobs back to the queue; returns how many were moved.

        Each goes back as a first attempt (``attempt == 1``) with the same id, name, payload,
        headers and priority, plus the headers ``amqp1q-replays`` (how many times it has been
        replayed) and ``amqp1q-dead-letter-reason``. It is pushed first and taken off the
        dead-letter queue only once the broker accepted it. ``limit`` caps the count;
        ``filter`` picks which jobs go (the others stay in the dead-letter queue, at most
        500 of them looked at per call).
        """
        self._check_open()
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)):
            raise InvalidSetting(f"limit must be an int or None, got {limit!r}")
        if limit is not None and limit <= 0:
            return 0
        return await _replay(self, limit, filter)


async def _replay(
    queue: JobQueue, limit: int | None, keep: Callable[[ReceivedJob], bool] | None
) -> int:
    expected: int | None = None
    try:
        depth = await operations_of(queue.adapter, queue.name).depth()
    except Amqp1qError:
        depth = None
    if depth is not None and depth.exact and depth.dead_lettered is not None:
        expected = depth.dead_lettered
        if expected == 0:
            return 0
    prefetch = MAX_HELD if keep is not None else min(100, limit or 100)
    replayed = 0
    seen = 0
    held: list[ReceivedJob] = []
    async with queue.dead_letter_queue() as dlq:
        consumer = dlq.consume(prefetch=prefetch)
        try:
            while expected is None or seen < expected:
                job = await consumer.receive(timeout=REPLAY_IDLE)
                if job is None:
                    break
                seen += 1
                if keep is not None and not keep(job):
                    held.append(job)
                    if len(held) >= MAX_HELD:
                        log.warning(
                            "replay of %s: %d dead-lettered jobs did not match the filter; "
                            "stopping here",
                            queue.name,
                            len(held),
                            extra={"queue": queue.name},
                        )
                        break
                    continue
                await queue.push(_replayed(job))
                await job.ack()
                replayed += 1
                if limit is not None and replayed >= limit:
                    break
        finally:
            for job in held:
                await asyncio.shield(job.release())
            await consumer.close()
    return replayed


def _replayed(job: ReceivedJob) -> Job:
    """The job to push back: the dead-lettered one as a first attempt, the replay recorded."""
    copy = job.incoming.copy_as_job()
    try:
        replays = int(copy.headers.get(REPLAYS_HEADER, "0")) + 1
    except ValueError:
        replays = 1
    extra = {REPLAYS_HEADER: str(replays)}
    if job.dead_letter_reason:
        extra[REPLAY_REASON_HEADER] = job.dead_letter_reason
    return copy.evolve(headers=copy.headers.with_(**extra))
