"""A consumer: credit-based prefetch behind an async iterator, its hand-out, pause and close.

Credit accounting lives here, once, for every adapter. ``granted`` counts credit given to the
adapter and not yet used (deliveries on the wire or buffered in the adapter); ``in_hand`` counts
jobs handed to the application and not yet settled; ``held`` counts jobs a consumer with
``groups`` holds back until their group's turn (:mod:`amqp1q._groups`). The invariant
``granted + held + in_hand <= prefetch`` is the prefetch bound: a consumer never holds more than
``prefetch`` jobs it has not settled. Credit is topped up on settlement (on hand-out with
``auto_ack``), never on delivery.

With ``groups=N`` a task reads the receiver into a :class:`~amqp1q._groups.Sequencer`, and jobs
are handed out from there: a group's next once the one before is settled, N groups at most. A
retry or release of a job in hand goes back to its group there, not to the broker (which would
queue it behind the group's later jobs); on closing, what is held is released to the broker. A
job delivered again after it was acked (the ack was lost with a connection) is acked again, not
handed out.

Settling the jobs handed out (and the retry policy applied to a failed one) is
:mod:`._settling`'s (:class:`~amqp1q._settling.SettlingMixin`); a settled job leaves the
consumer's hands there, which tops credit up here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import TYPE_CHECKING

import attrs

from . import _metrics
from ._adapter import ACK, RELEASE, Incoming, Receiver
from ._errors import QueueStateError
from ._groups import Sequencer
from ._received import ReceivedJob
from ._settling import ConsumerState, SettlingMixin, wait_settled
from ._shield import CleanupTimeout, shielded
from ._stats import Counters

if TYPE_CHECKING:
    from ._queue import JobQueue

__all__ = ["Consumer", "ConsumerHooks"]

log = logging.getLogger("amqp1q.consumer")


@attrs.frozen(slots=True)
class ConsumerHooks:
    """What a consumer needs of its queue beyond the queue's public facts: the counters behind
    ``queue.stats()``, the check that the queue is open, and word of its opening and closing
    (the queue closes its open consumers). The queue makes one and hands it to each consumer."""

    counters: Counters
    check_open: Callable[[], None]
    opened: Callable[[Consumer], None]
    closed: Callable[[Consumer], None]


class Consumer(SettlingMixin):
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
        groups: int | None = None,
    ) -> None:
        self._queue = queue
        self._receiver = receiver
        self._hooks = hooks
        self._counters = hooks.counters
        self.prefetch = prefetch
        self.auto_ack = auto_ack
        self._state = ConsumerState.NEW
        self._open_lock = asyncio.Lock()
        self._owned_by_context = False
        self._granted = 0
        self._in_hand = 0
        self._paused = False
        self._idle = asyncio.Event()
        self._idle.set()
        self._closed_event = asyncio.Event()
        self.groups = groups
        self._sequencer = Sequencer(groups, receiver.stale) if groups else None
        self._pump: asyncio.Task[None] | None = None
        self._pump_error: BaseException | None = None

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
        return self._state in (ConsumerState.CLOSING, ConsumerState.CLOSED)

    def __repr__(self) -> str:
        groups = f" groups={self.groups}" if self.groups else ""
        return (
            f"<Consumer queue={self.queue_name!r} {self._state.value} prefetch={self.prefetch}"
            f"{groups} in_hand={self._in_hand}{' paused' if self._paused else ''}>"
        )

    # -- lifecycle ------------------------------------------------------------------------------

    async def open(self) -> None:
        """Attach and grant the first credit. Iterating or entering opens it too."""
        async with self._open_lock:
            if self._state is ConsumerState.OPEN:
                return
            if self._state is not ConsumerState.NEW:
                raise QueueStateError("this consumer is closed", queue=self.queue_name)
            self._hooks.check_open()
            await self._receiver.open()
            self._state = ConsumerState.OPEN
            self._hooks.opened(self)
            if self._sequencer is not None:
                self._pump = asyncio.create_task(self._read_in(self._sequencer))
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
        if self._state is ConsumerState.NEW:
            await self.open()
        if self._state is not ConsumerState.OPEN:
            return None
        if self._sequencer is not None:
            incoming = await self._take_in_order(self._sequencer, timeout)
        elif timeout is None:
            incoming = await self._receiver.receive()
        else:
            try:
                incoming = await asyncio.wait_for(self._receiver.receive(), timeout)
            except asyncio.TimeoutError:
                return None
        if incoming is None:
            return None
        if self._sequencer is None:
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

    async def _read_in(self, sequencer: Sequencer) -> None:
        """The task that reads the receiver into the sequencer (``groups``)."""
        try:
            while True:
                incoming = await self._receiver.receive()
                if incoming is None:
                    return
                self._granted -= 1
                if sequencer.seen(incoming):
                    await self._ack_again(incoming)
                else:
                    sequencer.add(incoming)
        except Exception as exc:  # the receiver failed for good: the next receive raises it
            self._pump_error = exc
        finally:
            sequencer.end()

    async def _ack_again(self, incoming: Incoming) -> None:
        """A job acked before, delivered again (its ack was lost with a connection): acked, not
        handed out, where it would run after its group's later jobs."""
        log.info(
            "job %s was delivered again after it was acked; acked again",
            incoming.id,
            extra={"queue": self.queue_name, "job_id": incoming.id},
        )
        try:
            pending = self._receiver.settle(incoming, ACK)
            if pending is not None:
                await wait_settled(pending)
        except Exception:  # its link died too: the broker delivers it again
            log.debug("could not ack job %s again", incoming.id, exc_info=True)
        self._top_up()

    async def _take_in_order(self, sequencer: Sequencer, timeout: float | None) -> Incoming | None:
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while self._state is ConsumerState.OPEN:
            incoming = sequencer.take()
            self._top_up()  # a stale job dropped frees its credit
            if incoming is not None:
                return incoming
            if sequencer.ended:
                if self._pump_error is not None:
                    raise self._pump_error
                return None
            if deadline is None:
                await sequencer.wait()
                continue
            try:
                await asyncio.wait_for(sequencer.wait(), max(deadline - loop.time(), 0))
            except asyncio.TimeoutError:
                return None
        return None

    async def wait_closed(self) -> None:
        """Wait until the consumer has closed (for example, after its ``async for`` ended)."""
        await self._closed_event.wait()

    def pause(self) -> None:
        """Stop granting credit. Jobs already granted are drained back (see :meth:`drain`)."""
        self._paused = True

    async def drain(self) -> None:
        """Pause, and return jobs received but not handed out; nothing more arrives."""
        self._paused = True
        if self._state is ConsumerState.OPEN:
            await self._receiver.drain()
            self._granted = 0

    def resume(self) -> None:
        """Grant credit again, up to ``prefetch`` minus jobs in hand."""
        self._paused = False
        self._top_up()

    async def close(self, grace: float | None = None) -> None:
        """Stop, release what is buffered, wait up to ``grace`` s for jobs in hand, detach."""
        if self._state in (ConsumerState.CLOSING, ConsumerState.CLOSED):
            await self._closed_event.wait()
            return
        was_open = self._state is ConsumerState.OPEN
        self._state = ConsumerState.CLOSING
        grace = self._queue.close_timeout if grace is None else grace
        try:
            if was_open:
                await shielded(
                    self._close(grace), grace + self._queue.close_timeout, "consumer close"
                )
        except CleanupTimeout:
            log.warning("consumer of %r did not close in time", self.queue_name)
        finally:
            self._state = ConsumerState.CLOSED
            self._counters.in_flight -= self._in_hand
            self._in_hand = 0
            self._idle.set()
            self._hooks.closed(self)
            self._closed_event.set()

    async def _close(self, grace: float) -> None:
        pump, self._pump = self._pump, None
        if pump is not None:
            pump.cancel()  # receive() is cancellation-safe: nothing is lost
            await asyncio.gather(pump, return_exceptions=True)
        try:
            await self._receiver.drain()
            self._granted = 0
        except Exception:
            log.debug("drain failed while closing a consumer of %r", self.queue_name, exc_info=True)
        if self._sequencer is not None:
            await self._give_back(self._sequencer)
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

    async def _give_back(self, sequencer: Sequencer) -> None:
        """Release what the sequencer holds, group by group in order (the broker puts a released
        job back where it was, so the order holds for the next consumer)."""
        for incoming in sequencer.take_all():
            try:
                pending = self._receiver.settle(incoming, RELEASE)
                if pending is not None:
                    await wait_settled(pending)
            except Exception:  # noqa: PERF203 - one that fails goes back with its link
                log.debug("could not release job %s on close", incoming.id, exc_info=True)

    # -- credit ---------------------------------------------------------------------------------

    def _top_up(self) -> None:
        if self._paused or self._state is not ConsumerState.OPEN:
            return
        held = 0 if self._sequencer is None else self._sequencer.held
        want = self.prefetch - self._granted - self._in_hand - held
        if want > 0:
            self._granted += want
            self._receiver.flow(want)
