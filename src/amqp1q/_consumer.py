"""A consumer: credit-based prefetch behind an async iterator, and settlement bookkeeping.

Credit accounting lives here, once, for every adapter. ``granted`` counts credit given to the
adapter and not yet used (deliveries on the wire or buffered in the adapter); ``in_hand`` counts
jobs handed to the application and not yet settled. The invariant ``granted + in_hand <=
prefetch`` is the prefetch bound: a consumer never holds more than ``prefetch`` jobs it has not
settled. Credit is topped up on settlement (on hand-out with ``auto_ack``), never on delivery.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import TYPE_CHECKING

import attrs

from . import _metrics
from ._adapter import Incoming, Outcome, Receiver, ServerFacts, Settlement
from ._calls import replying
from ._errors import PayloadValidationError, PushTimeout, QueueStateError
from ._policy import INVALID_PAYLOAD, NOT_RETRIED
from ._received import ReceivedJob, clip
from ._replies import Reply
from ._shield import CleanupTimeout, shielded
from ._stats import Counters

if TYPE_CHECKING:
    from ._queue import JobQueue

__all__ = ["Consumer", "ConsumerHooks"]

log = logging.getLogger("amqp1q.consumer")


class _State(enum.Enum):
    NEW = "new"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


@attrs.frozen(slots=True)
class ConsumerHooks:
    """What a consumer needs of its queue beyond the queue's public facts: the counters behind
    ``queue.stats()``, the check that the queue is open, and word of its opening and closing
    (the queue closes its open consumers). The queue makes one and hands it to each consumer."""

    counters: Counters
    check_open: Callable[[], None]
    opened: Callable[[Consumer], None]
    closed: Callable[[Consumer], None]


class Consumer:
    """Jobs from one queue, ``prefetch`` at most in hand. Made by :meth:`JobQueue.consume`.

    Iterate it (``async for job in queue.consume()``), or enter it to own its lifetime::

        async with queue.consume(prefetch=50) as jobs:
            async for job in jobs:
                ...

    Without ``async with``, the consumer closes when the ``async for`` loop ends (including by
    ``break``); with it, when the block ends. Closing stops credit, releases jobs received but not
    yet handed out, waits up to the grace period for jobs in hand to be settled, then detaches;
    anything still unsettled goes back to the broker.
    """

    def __init__(
        self,
        queue: JobQueue,
        receiver: Receiver,
        hooks: ConsumerHooks,
        *,
        prefetch: int,
        auto_ack: bool,
    ) -> None:
        self._queue = queue
        self._receiver = receiver
        self._hooks = hooks
        self._counters = hooks.counters
        self.prefetch = prefetch
        self.auto_ack = auto_ack
        self._state = _State.NEW
        self._open_lock = asyncio.Lock()
        self._owned_by_context = False
        self._granted = 0
        self._in_hand = 0
        self._paused = False
        self._idle = asyncio.Event()
        self._idle.set()
        self._closed_event = asyncio.Event()

    # -- facts ----------------------------------------------------------------------------------

    @property
    def queue_name(self) -> str:
        return self._queue.name

    @property
    def in_hand(self) -> int:
        """Jobs handed out and not yet settled."""
        return self._in_hand

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def closed(self) -> bool:
        return self._state in (_State.CLOSING, _State.CLOSED)

    def __repr__(self) -> str:
        return (
            f"<Consumer queue={self.queue_name!r} {self._state.value} prefetch={self.prefetch} "
            f"in_hand={self._in_hand}{' paused' if self._paused else ''}>"
        )

    # -- lifecycle ------------------------------------------------------------------------------

    async def open(self) -> None:
        """Attach and grant the first credit. Iterating or entering opens it too."""
        async with self._open_lock:
            if self._state is _State.OPEN:
                return
            if self._state is not _State.NEW:
                raise QueueStateError("this consumer is closed", queue=self.queue_name)
            self._hooks.check_open()
            await self._receiver.open()
            self._state = _State.OPEN
            self._hooks.opened(self)
            self._top_up()

    async def __aenter__(self) -> Consumer:
        self._owned_by_context = True
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __aiter__(self) -> AsyncIterator[ReceivedJob]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[ReceivedJob]:
        await self.open()
        try:
            while True:
                job = await self.receive()
                if job is None:
                    return
                yield job
        finally:
            if not self._owned_by_context:
                await self.close()

    async def receive(self, timeout: float | None = None) -> ReceivedJob | None:
        """The next job; ``None`` once the consumer or its queue is closed, or on ``timeout``."""
        if self._state is _State.NEW:
            await self.open()
        if self._state is not _State.OPEN:
            return None
        if timeout is None:
            incoming = await self._receiver.receive()
        else:
            try:
                incoming = await asyncio.wait_for(self._receiver.receive(), timeout)
            except asyncio.TimeoutError:
                return None
        if incoming is None:
            return None
        self._granted -= 1
        job = ReceivedJob(incoming, self)
        self._counters.consumed += 1
        if _metrics.active():
            _metrics.consumed(self._queue)
        if self.auto_ack:
            self._top_up()
        else:
            self._in_hand += 1
            self._counters.in_flight += 1
            self._idle.clear()
        return job

    async def wait_closed(self) -> None:
        """Wait until the consumer has closed (for example, after its ``async for`` ended)."""
        await self._closed_event.wait()

    def pause(self) -> None:
        """Stop granting credit. Jobs already granted are drained back (see :meth:`drain`)."""
        self._paused = True

    async def drain(self) -> None:
        """Pause, and return jobs received but not handed out; nothing more arrives."""
        self._paused = True
        if self._state is _State.OPEN:
            await self._receiver.drain()
            self._granted = 0

    def resume(self) -> None:
        """Grant credit again, up to ``prefetch`` minus jobs in hand."""
        self._paused = False
        self._top_up()

    async def close(self, grace: float | None = None) -> None:
        """Stop, release what is buffered, wait up to ``grace`` s for jobs in hand, detach."""
        if self._state in (_State.CLOSING, _State.CLOSED):
            await self._closed_event.wait()
            return
        was_open = self._state is _State.OPEN
        self._state = _State.CLOSING
        grace = self._queue.close_timeout if grace is None else grace
        try:
            if was_open:
                await shielded(
                    self._close(grace), grace + self._queue.close_timeout, "consumer close"
                )
        except CleanupTimeout:
            log.warning("consumer of %r did not close in time", self.queue_name)
        finally:
            self._state = _State.CLOSED
            self._counters.in_flight -= self._in_hand
            self._in_hand = 0
            self._idle.set()
            self._hooks.closed(self)
            self._closed_event.set()

    async def _close(self, grace: float) -> None:
        try:
            await self._receiver.drain()
            self._granted = 0
        except Exception:
            log.debug("drain failed while closing a consumer of %r", self.queue_name, exc_info=True)
        if self._in_hand and grace > 0:
            try:
                await asyncio.wait_for(self._idle.wait(), grace)
            except asyncio.TimeoutError:
                log.warning(
                    "closing a consumer of %r with %d job(s) unsettled after %.1f s; "
                    "the broker redelivers them",
                    self.queue_name,
                    self._in_hand,
                    grace,
                    extra={"queue": self.queue_name},
                )
        await self._receiver.close()

    # -- credit ---------------------------------------------------------------------------------

    def _top_up(self) -> None:
        if self._paused or self._state is not _State.OPEN:
            return
        want = self.prefetch - self._granted - self._in_hand
        if want > 0:
            self._granted += want
            self._receiver.flow(want)

    # -- settlement (internal: called by ReceivedJob, which marks the job settled first) ------

    @property
    def server_facts(self) -> ServerFacts:
        """Where the queue lives, for the job's ``process`` span."""
        return self._queue.adapter.server_facts

    async def settle(
        self, incoming: Incoming, settlement: Settlement, *, job_id: str, by_policy: bool = False
    ) -> None:
        """Apply ``settlement`` to a job in hand (``by_policy``: the retry policy chose the
        outcome, for metrics); however it ends, the job has left the consumer's hands."""
        queue = self._queue
        started = _metrics.start()
        try:
            pending = self._receiver.settle(incoming, settlement)
            if pending is not None:
                await shielded(_wait(pending), queue.settle_timeout, f"settling job {job_id}")
        except BaseException as exc:
            if started is not None:
                _metrics.settled(queue, settlement.outcome, by_policy, started, exc)
            raise
        finally:
            self._left_hand()
        self._counters.settled(settlement.outcome, delayed=bool(settlement.delay))
        if started is not None:
            _metrics.settled(queue, settlement.outcome, by_policy, started, None)

    async def send_reply(self, address: str, reply: Reply) -> None:
        """Send a job's reply to ``address`` (bounded by the queue's push timeout)."""
        queue = self._queue
        adapter = replying(queue.adapter, queue.name)
        try:
            await asyncio.wait_for(adapter.send_reply(address, reply), queue.push_timeout)
        except asyncio.TimeoutError:
            raise PushTimeout(
                f"the reply was not accepted within {queue.push_timeout:g} s",
                queue=queue.name,
                address=address,
            ) from None

    def lost(self, error: BaseException) -> None:
        """A job in hand was lost (its lock): the broker takes it back, nothing is settled."""
        self._left_hand()
        if _metrics.active():
            _metrics.settled(self._queue, Outcome.RELEASE, False, None, error)

    def processed(self, started: float, error: BaseException | None) -> None:
        """``job.process()`` ended, for the metrics (``started``: from ``_metrics.start()``)."""
        _metrics.processed(self._queue, started, error)

    def _left_hand(self) -> None:
        """A job in hand was settled (or its settlement failed): it is no longer ours."""
        if self._state is _State.CLOSED:
            return
        self._in_hand -= 1
        self._counters.in_flight -= 1
        if self._in_hand == 0:
            self._idle.set()
        self._top_up()

    def retry_settlement(self, job: ReceivedJob, delay: float | None) -> Settlement:
        policy = self._queue.retry_policy
        if policy.exhausted(job.attempt):
            return Settlement(
                Outcome.REJECT,
                reason="max attempts exceeded",
                description=f"retry asked on attempt {job.attempt} of {policy.max_attempts}",
            )
        return Settlement(Outcome.RETRY, delay=delay or None)

    def failure_settlement(self, job: ReceivedJob, exc: Exception) -> Settlement:
        """How a job whose handler raised ``exc`` is settled, by the queue's policy (logged)."""
        queue = self._queue
        policy = queue.retry_policy
        detail = clip(f"{type(exc).__name__}: {exc}")
        context = {"queue": self.queue_name, "job_id": job.id, "attempt": job.attempt}
        if isinstance(exc, PayloadValidationError):  # retrying cannot fix a payload
            description = clip(exc.message)
            settlement = Settlement(Outcome.REJECT, reason=INVALID_PAYLOAD, description=description)
            log.warning("job %s dead-lettered: %s", job.id, description, extra=context)
        elif not queue.requeue_on_fail:
            settlement = Settlement(Outcome.REJECT, reason="handler failed", description=detail)
            log.warning(
                "job %s failed; dead-lettered (requeue_on_fail=False)",
                job.id,
                exc_info=exc,
                extra=context,
            )
        elif (refused := policy.dead_letters(exc)) is not None:
            settlement = Settlement(
                Outcome.REJECT, reason=NOT_RETRIED, description=clip(f"{refused}: {detail}")
            )
            log.warning(
                "job %s failed; dead-lettered without retrying (%s)",
                job.id,
                refused,
                exc_info=exc,
                extra=context,
            )
        elif policy.exhausted(job.attempt):
            settlement = Settlement(
                Outcome.REJECT,
                reason="max attempts exceeded",
                description=clip(f"attempt {job.attempt} of {policy.max_attempts}: {detail}"),
            )
            log.warning(
                "job %s failed on attempt %d of %d; dead-lettered",
                job.id,
                job.attempt,
                policy.max_attempts,
                exc_info=exc,
                extra=context,
            )
        else:
            delay = policy.backoff(job.attempt)
            settlement = Settlement(Outcome.RETRY, delay=delay or None)
            log.warning(
                "job %s failed on attempt %d of %d; retrying in %.2f s",
                job.id,
                job.attempt,
                policy.max_attempts,
                delay,
                exc_info=exc,
                extra=context,
            )
        return settlement


async def _wait(pending: Awaitable[None]) -> None:
    await pending
