"""Consuming: one ``ServiceBusReceiver`` per consumer, its credit pump, locks and settlements.

:class:`QueueReceiver` turns the facade's credit into ``receive_messages`` calls (the SDK's own
prefetch is off, so the link credit follows the consumer's), buffers what arrives, renews the
lock of every message it holds (see :mod:`._locks`), and settles: acks in the background
(bounded), the other outcomes awaited. On close or drain, buffered jobs are given back.

When a receive fails, the SDK receiver is thrown away and a fresh one opened (see
:mod:`._reconnect`): each one is a *generation*. What the old one received is the broker's again
(buffered jobs are dropped, jobs in hand settle as :class:`~amqp1q.DeliveryStale`), and the
consumer goes on. Only when the reconnect policy gives up does ``receive`` raise its error.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
from collections import deque
from collections.abc import Awaitable, Coroutine
from typing import TYPE_CHECKING, Any, Final

from ..._adapter import Incoming, Outcome, Settlement
from ..._errors import AlreadySettled, Amqp1qError, DeliveryStale, QueueStateError
from ._errors import settle_error
from ._locks import Delivery, LockKeeper
from ._mapping import to_incoming
from ._reconnect import is_transient, open_fresh
from ._sdk import (
    CLOSE_TIMEOUT,
    ServiceBusReceivedMessage,
    ServiceBusReceiver,
    close_quietly,
    sb_errors,
)

if TYPE_CHECKING:
    from .adapter import ServiceBusAdapter

__all__ = ["MAX_PENDING_SETTLEMENTS", "QueueReceiver"]

log = logging.getLogger("amqp1q.servicebus")

#: Background settlements (acks) in flight per consumer before ``settle`` makes the caller wait.
MAX_PENDING_SETTLEMENTS: Final = 256
#: After the first message of a pull, how long the SDK goes on collecting more (its own default,
#: 0.2 s, delays every job by that much when the queue is not full).
_FURTHER_PULL: Final = 0.005
#: What Service Bus answers about one message (its lock, or its state): every other failure of
#: a settlement or renewal says the receiver's connection is broken.
_REFUSALS: Final = (
    sb_errors.MessageLockLostError,
    sb_errors.MessageNotFoundError,
    sb_errors.MessageAlreadySettled,
)


class QueueReceiver:
    """One consumer's ``ServiceBusReceiver``, fed by a pump that asks for the credit granted."""

    def __init__(self, adapter: ServiceBusAdapter, *, auto_ack: bool) -> None:
        self._adapter = adapter
        self._auto_ack = auto_ack
        self._queue = adapter.queue
        self._sdk: ServiceBusReceiver | None = None
        self._credit = 0
        self._window = 0  # the most credit outstanding at once: the consumer's prefetch
        self._buffer: deque[Delivery] = deque()
        self._event = asyncio.Event()
        self._pump_wake = asyncio.Event()
        self._pump: asyncio.Task[None] | None = None
        self._pull: asyncio.Task[list[ServiceBusReceivedMessage]] | None = None  # the pump's
        self._lost_by: BaseException | None = None  # why _connection_failed cut the pull short
        self._background: set[asyncio.Task[None]] = set()
        self._locks = LockKeeper(
            f"amqp1q-servicebus-locks-{self._queue}",
            adapter.max_lock_renewal,
            renew=self._renew_lock,
            lose=self._lose,
            spawn=self._in_background,
        )
        self._closed = False
        self._open = False
        self._generation = 0  # how many SDK receivers were opened in place of failed ones
        self._failure: Amqp1qError | None = None  # why the consumer stopped: receive raises it

    @property
    def connected(self) -> bool:
        """Whether this consumer holds an open SDK receiver (its own AMQP connection)."""
        return self._sdk is not None and not self._closed

    # -- lifecycle ------------------------------------------------------------------------------

    async def open(self) -> None:
        if self._closed:
            raise QueueStateError("the receiver is closed", queue=self._queue)
        supervisor = self._adapter.supervisor
        try:
            self._sdk = await self._connect()
        except Amqp1qError as exc:
            # The queue connected before: a consumer cut off while opening is re-dialled.
            if not (supervisor.connected_once and is_transient(exc)):
                raise
            self._sdk = await supervisor.redial(
                f"receiving from {self._queue!r}", self._connect, exc
            )
        supervisor.connected_once = True
        self._open = True
        if self._credit > 0:
            self._start_pump()

    async def _connect(self) -> ServiceBusReceiver:
        """A fresh, open SDK receiver (raise the mapped error, having closed it, if it fails)."""
        adapter = self._adapter
        sdk = adapter.open_sdk_receiver(auto_ack=self._auto_ack)
        if hasattr(sdk, "_further_pull_receive_timeout"):
            sdk._further_pull_receive_timeout = _FURTHER_PULL
        return await open_fresh(sdk, queue=self._queue, display=adapter.display)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._event.set()
        await self._stop_pump()
        await self._wait_background()
        await self._give_back()
        await self._locks.close()
        sdk, self._sdk = self._sdk, None
        if sdk is not None:
            await close_quietly(sdk)
        self._adapter.forget_receiver(self)

    # -- credit and the pump --------------------------------------------------------------------

    def flow(self, credit: int) -> None:
        if self._closed or credit <= 0:
            return
        self._credit += credit
        self._window = max(self._window, self._credit)
        if self._open:
            self._start_pump()

    def _start_pump(self) -> None:
        if self._pump is None or self._pump.done():
            self._pump = asyncio.get_running_loop().create_task(
                self._run_pump(), name=f"amqp1q-servicebus-pump-{self._queue}"
            )
        self._pump_wake.set()

    async def _stop_pump(self) -> None:
        pump, self._pump = self._pump, None
        if pump is not None and not pump.done():
            pump.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(pump, CLOSE_TIMEOUT)

    async def _run_pump(self) -> None:
        sdk = self._sdk
        assert sdk is not None
        loop = asyncio.get_running_loop()
        while not self._closed:
            want = self._credit
            # While jobs wait in the buffer, pull in batches of half the window (as the Proton
            # adapter batches its flow frames): each pull is a round trip.
            if want <= 0 or (self._buffer and want < max(1, self._window // 2)):
                self._pump_wake.clear()
                await self._pump_wake.wait()
                continue
            pull = loop.create_task(
                sdk.receive_messages(
                    max_message_count=want, max_wait_time=self._adapter.receive_wait
                )
            )
            self._pull = pull
            try:
                await asyncio.wait({pull})
            finally:
                self._pull = None
                pull.cancel()  # if the pump itself was cancelled
            try:
                messages = pull.result()
            except (Exception, asyncio.CancelledError) as exc:  # cancelled: _connection_failed
                if self._closed or not await self._reconnect(self._lost_by or exc):
                    return
                sdk = self._sdk
                assert sdk is not None
                continue
            now = loop.time()
            for message in messages:
                delivery = Delivery(message, now, self._generation)
                self._credit -= 1
                self._buffer.append(delivery)
                if not self._auto_ack:
                    self._locks.hold(delivery, now)
            if messages:
                self._event.set()

    def _connection_failed(self, generation: int, exc: BaseException) -> None:
        """A settlement or renewal says the receiver's connection is gone: stop waiting on its
        receive (the SDK notices seconds later), so the pump replaces it now."""
        if generation == self._generation and self._pull is not None:
            self._lost_by = exc
            self._pull.cancel()

    async def _reconnect(self, cause: BaseException) -> bool:
        """Replace the SDK receiver after a failed receive; False once the policy gives up."""
        old, self._sdk = self._sdk, None
        self._lost_by = None
        self._generation += 1
        stale = list(self._buffer)  # the broker takes them back with the old link
        self._buffer.clear()
        self._credit += len(stale)
        for delivery in stale:
            delivery.settled = True
        self._locks.keep_only(self._generation)
        if old is not None:
            self._in_background(close_quietly(old, dead=True))
        what = f"receiving from {self._queue!r}"
        try:
            self._sdk = await self._adapter.supervisor.redial(what, self._connect, cause)
        except Amqp1qError as error:
            log.error("the consumer of %r stops: %s", self._queue, error)
            self._failure = error
            self._event.set()
            return False
        return True

    async def drain(self) -> None:
        self._credit = 0
        await self._stop_pump()
        await self._give_back()

    # -- receiving --------------------------------------------------------------------------------

    async def receive(self) -> Incoming | None:
        if not self._open:
            raise QueueStateError("the receiver is not open", queue=self._queue)
        while not self._buffer:
            if self._failure is not None:
                raise self._failure
            if self._closed:
                return None
            self._event.clear()
            await self._event.wait()
        delivery = self._buffer.popleft()
        if not self._buffer and self._credit > 0:
            self._pump_wake.set()  # nothing left to hand out: pull what the credit allows
        incoming = to_incoming(delivery.message, delivery)
        incoming.guard = delivery.guard
        delivery.incoming = incoming
        return incoming

    # -- locks ----------------------------------------------------------------------------------

    async def _renew_lock(self, delivery: Delivery) -> datetime.datetime | None:
        sdk = self._sdk
        if sdk is None or delivery.generation != self._generation:
            raise DeliveryStale("the receiver it came from is gone", queue=self._queue)
        try:
            until: datetime.datetime | None = await sdk.renew_message_lock(delivery.message)
        except Exception as exc:
            if not isinstance(exc, _REFUSALS):  # the receiver is broken, not the lock
                self._connection_failed(delivery.generation, exc)
            raise
        return until

    def _lose(self, delivery: Delivery, why: str) -> None:
        """Its lock is gone: settling it raises LockLost, code under lock_scope is cancelled."""
        if delivery.settled or delivery.lost is not None:
            return
        lost = delivery.lose(
            f"the job's lock was lost ({why}); Service Bus redelivers it", self._queue
        )
        job_id = delivery.message.message_id
        log.warning("%s", lost, extra={"queue": self._queue, "job_id": job_id})
        if delivery in self._buffer:  # never handed out: drop it, and ask for another
            self._buffer.remove(delivery)
            self._credit += 1
            if not self._closed and self._open:
                self._start_pump()

    # -- settlement -----------------------------------------------------------------------------

    def stale(self, incoming: Incoming) -> bool:
        """True for a delivery from a receiver re-dialled since (its lock went with it)."""
        delivery: Delivery = incoming.token
        return not self._auto_ack and (delivery.generation != self._generation or self._sdk is None)

    def settle(self, incoming: Incoming, settlement: Settlement) -> Awaitable[None] | None:
        delivery: Delivery = incoming.token
        if delivery.settled:
            raise AlreadySettled(
                "the job was already settled", queue=self._queue, job_id=incoming.id
            )
        if self._closed:
            raise DeliveryStale(
                "the consumer closed before the job was settled; Service Bus redelivers it",
                queue=self._queue,
                job_id=incoming.id,
            )
        if delivery.generation != self._generation or self._sdk is None:
            delivery.settled = True
            raise DeliveryStale(
                "the connection was lost before the job was settled; Service Bus redelivers it",
                queue=self._queue,
                job_id=incoming.id,
            )
        delivery.settled = True
        self._locks.release(delivery)
        if delivery.lost is not None:
            raise delivery.lost
        sdk = self._sdk
        message = delivery.message
        outcome = settlement.outcome
        if outcome is Outcome.ACK:
            if len(self._background) < MAX_PENDING_SETTLEMENTS:
                self._in_background(self._apply(incoming, sdk.complete_message(message)))
                return None
            return self._apply(incoming, sdk.complete_message(message))
        if outcome is Outcome.REJECT:
            return self._apply(
                incoming,
                sdk.dead_letter_message(
                    message,
                    reason=settlement.reason or "rejected",
                    error_description=settlement.description,
                ),
            )
        if outcome is Outcome.RETRY and not settlement.delay:
            return self._apply(incoming, sdk.abandon_message(message))
        if not self._adapter.can_resend:
            # No pushes to a dead-letter queue (nor to one subscription of a topic): abandon
            # (the broker counts an attempt).
            return self._apply(incoming, sdk.abandon_message(message))
        attempt = incoming.attempt + 1 if outcome is Outcome.RETRY else incoming.attempt
        return self._resend_then_complete(incoming, message, attempt, settlement.delay)

    async def _apply(self, incoming: Incoming, call: Coroutine[Any, Any, None]) -> None:
        try:
            await call
        except Exception as exc:
            if not isinstance(exc, _REFUSALS):  # the receiver is broken, not the job
                self._connection_failed(incoming.token.generation, exc)
            raise settle_error(exc, queue=self._queue, job_id=incoming.id) from None

    async def _resend_then_complete(
        self,
        incoming: Incoming,
        message: ServiceBusReceivedMessage,
        attempt: int,
        delay: float | None,
    ) -> None:
        """Send the copy first, then complete: a crash between gives a duplicate, never a loss."""
        await self._adapter.resend(incoming, attempt=attempt, delay=delay)
        sdk = self._sdk
        if sdk is None:
            raise DeliveryStale(
                "the consumer closed while the job was re-sent; it may arrive twice",
                queue=self._queue,
                job_id=incoming.id,
            )
        await self._apply(incoming, sdk.complete_message(message))

    def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task[None]) -> None:
        self._background.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if isinstance(exc, DeliveryStale):  # its connection dropped: the reconnect says so, once
            log.debug("a settlement failed: %s", exc, extra={"queue": self._queue})
        elif exc is not None:
            log.warning("a settlement failed: %s", exc, extra={"queue": self._queue})

    async def _wait_background(self) -> None:
        pending = [task for task in self._background if not task.done()]
        if pending:
            await asyncio.wait(pending, timeout=CLOSE_TIMEOUT)

    async def _give_back(self) -> None:
        """Return what was received but never handed out, its attempt not counted."""
        buffered = list(self._buffer)
        self._buffer.clear()
        if not buffered:
            return
        sdk = self._sdk
        if self._auto_ack or sdk is None:
            if self._auto_ack:
                log.warning(
                    "%d job(s) received with auto_ack=True were never handed out: lost",
                    len(buffered),
                    extra={"queue": self._queue},
                )
            return
        for delivery in buffered:
            delivery.settled = True
            self._locks.release(delivery)
        work = [self._give_back_one(sdk, delivery) for delivery in buffered]
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(_gather_quietly(work, self._queue), CLOSE_TIMEOUT)

    async def _give_back_one(self, sdk: ServiceBusReceiver, delivery: Delivery) -> None:
        if delivery.lost is not None:
            return
        incoming = to_incoming(delivery.message, delivery)
        if not self._adapter.can_resend:
            await sdk.abandon_message(delivery.message)
        else:
            await self._resend_then_complete(incoming, delivery.message, incoming.attempt, None)


async def _gather_quietly(work: list[Coroutine[Any, Any, None]], queue: str) -> None:
    results = await asyncio.gather(*work, return_exceptions=True)
    failed = [r for r in results if isinstance(r, BaseException)]
    if failed:
        log.warning(
            "%d buffered job(s) could not be given back; Service Bus redelivers them when "
            "their locks run out: %s",
            len(failed),
            failed[0],
            extra={"queue": queue},
        )
