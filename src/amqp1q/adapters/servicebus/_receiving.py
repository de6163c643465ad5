"""Consuming: one ``ServiceBusReceiver`` per consumer, its credit pump, locks and settlements.

:class:`_Receiver` turns the facade's credit into ``receive_messages`` calls (the SDK's own
prefetch is off, so the link credit follows the consumer's), buffers what arrives, renews the
lock of every message it holds (see :mod:`._locks`), and settles: acks in the background
(bounded), the other outcomes awaited. On close or drain, buffered jobs are given back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import deque
from collections.abc import Awaitable, Coroutine
from typing import TYPE_CHECKING, Any, Final

from ..._adapter import Incoming, Outcome, Settlement
from ..._errors import AlreadySettled, DeliveryStale, LockLost, QueueStateError
from ._errors import _describe, _open_error, _settle_error
from ._locks import _Delivery
from ._mapping import to_incoming
from ._sdk import (
    _CLOSE_TIMEOUT,
    ServiceBusReceivedMessage,
    ServiceBusReceiver,
    _open_once,
    sb_errors,
)

if TYPE_CHECKING:
    from .adapter import ServiceBusAdapter

log = logging.getLogger("amqp1q.servicebus")

#: Background settlements (acks) in flight per consumer before ``settle`` makes the caller wait.
MAX_PENDING_SETTLEMENTS: Final = 256
#: Lock renewals in flight at once per consumer.
MAX_CONCURRENT_RENEWALS: Final = 32
#: After the first message of a pull, how long the SDK goes on collecting more (its own default,
#: 0.2 s, delays every job by that much when the queue is not full).
_FURTHER_PULL: Final = 0.005


class _Receiver:
    """One consumer's ``ServiceBusReceiver``, fed by a pump that asks for the credit granted."""

    def __init__(self, adapter: ServiceBusAdapter, *, auto_ack: bool) -> None:
        self._adapter = adapter
        self._auto_ack = auto_ack
        self._queue = adapter.queue
        self._sdk: ServiceBusReceiver | None = None
        self._credit = 0
        self._window = 0  # the most credit outstanding at once: the consumer's prefetch
        self._buffer: deque[_Delivery] = deque()
        self._event = asyncio.Event()
        self._pump_wake = asyncio.Event()
        self._pump: asyncio.Task[None] | None = None
        self._held: dict[int, _Delivery] = {}  # locked: buffered or in hand, by id()
        self._renewer: asyncio.Task[None] | None = None
        self._renew_wake = asyncio.Event()
        self._renewals = asyncio.Semaphore(MAX_CONCURRENT_RENEWALS)
        self._background: set[asyncio.Task[None]] = set()
        self._closed = False
        self._open = False

    # -- lifecycle ------------------------------------------------------------------------------

    async def open(self) -> None:
        if self._closed:
            raise QueueStateError("the receiver is closed", queue=self._queue)
        adapter = self._adapter
        sdk = adapter.open_sdk_receiver(auto_ack=self._auto_ack)
        if hasattr(sdk, "_further_pull_receive_timeout"):
            sdk._further_pull_receive_timeout = _FURTHER_PULL
        try:
            await _open_once(sdk)
        except sb_errors.ServiceBusError as exc:
            with contextlib.suppress(Exception):
                await sdk.close()
            raise _open_error(exc, queue=self._queue, display=adapter.display) from None
        self._sdk = sdk
        self._open = True
        if self._credit > 0:
            self._start_pump()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._event.set()
        await self._stop_pump()
        await self._wait_background()
        await self._give_back()
        renewer, self._renewer = self._renewer, None
        if renewer is not None:
            renewer.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(renewer, _CLOSE_TIMEOUT)
        self._held.clear()
        sdk, self._sdk = self._sdk, None
        if sdk is not None:
            try:
                await asyncio.wait_for(sdk.close(), _CLOSE_TIMEOUT)
            except (Exception, asyncio.TimeoutError):
                log.debug("closing a Service Bus receiver failed", exc_info=True)
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
                await asyncio.wait_for(pump, _CLOSE_TIMEOUT)

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
            try:
                messages = await sdk.receive_messages(
                    max_message_count=want, max_wait_time=self._adapter.receive_wait
                )
            except Exception as exc:
                log.warning(
                    "receiving from %r failed; the consumer ends: %s",
                    self._queue,
                    _describe(exc),
                    extra={"queue": self._queue},
                )
                self._closed = True
                self._event.set()
                return
            now = loop.time()
            for message in messages:
                delivery = _Delivery(message, now)
                self._credit -= 1
                self._buffer.append(delivery)
                if not self._auto_ack:
                    self._hold(delivery, now)
            if messages:
                self._event.set()

    async def drain(self) -> None:
        self._credit = 0
        await self._stop_pump()
        await self._give_back()

    # -- receiving --------------------------------------------------------------------------------

    async def receive(self) -> Incoming | None:
        if not self._open:
            raise QueueStateError("the receiver is not open", queue=self._queue)
        while not self._buffer:
            if self._closed:
                return None
            self._event.clear()
            await self._event.wait()
        delivery = self._buffer.popleft()
        if not self._buffer and self._credit > 0:
            self._pump_wake.set()  # nothing left to hand out: pull what the credit allows
        incoming = to_incoming(delivery.message, delivery)
        delivery.incoming = incoming
        return incoming

    # -- locks ----------------------------------------------------------------------------------

    def _hold(self, delivery: _Delivery, now: float) -> None:
        delivery.locked_until(delivery.message.locked_until_utc, now)
        self._held[id(delivery)] = delivery
        if self._renewer is None:
            self._renewer = asyncio.get_running_loop().create_task(
                self._run_renewer(), name=f"amqp1q-servicebus-locks-{self._queue}"
            )
        self._renew_wake.set()

    def _release_hold(self, delivery: _Delivery) -> None:
        self._held.pop(id(delivery), None)

    async def _run_renewer(self) -> None:
        loop = asyncio.get_running_loop()
        limit = self._adapter.max_lock_renewal
        while True:
            now = loop.time()
            next_at = math.inf
            for delivery in list(self._held.values()):
                if delivery.renewing:
                    continue
                if now - delivery.received_at >= limit:
                    # Past the renewal budget: the lock runs out, the broker takes it back.
                    if now >= delivery.deadline:
                        self._lose(delivery, "its lock ran out after the maximum renewal time")
                        continue
                    next_at = min(next_at, delivery.deadline)
                    continue
                if delivery.renew_at <= now:
                    delivery.renewing = True
                    task = loop.create_task(self._renew(delivery))
                    self._background.add(task)
                    task.add_done_callback(self._background.discard)
                else:
                    next_at = min(next_at, delivery.renew_at)
            self._renew_wake.clear()
            timeout = None if next_at == math.inf else max(0.0, next_at - loop.time())
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._renew_wake.wait(), timeout)

    async def _renew(self, delivery: _Delivery) -> None:
        sdk = self._sdk
        loop = asyncio.get_running_loop()
        try:
            async with self._renewals:
                if delivery.settled or sdk is None or id(delivery) not in self._held:
                    return
                until = await sdk.renew_message_lock(delivery.message)
        except (
            sb_errors.MessageLockLostError,
            sb_errors.MessageNotFoundError,
            sb_errors.MessageAlreadySettled,
        ) as exc:
            if not delivery.settled:
                self._lose(delivery, f"Service Bus refused to renew its lock: {_describe(exc)}")
        except Exception as exc:
            now = loop.time()
            if delivery.settled:
                return
            if now >= delivery.deadline:
                self._lose(delivery, f"its lock could not be renewed in time: {_describe(exc)}")
            else:  # a transient failure: try again soon, while the lock lasts
                delivery.renew_at = now + min(1.0, (delivery.deadline - now) / 4)
        else:
            if not delivery.settled:
                delivery.locked_until(until, loop.time())
        finally:
            delivery.renewing = False
            self._renew_wake.set()

    def _lose(self, delivery: _Delivery, why: str) -> None:
        self._release_hold(delivery)
        if delivery.settled or delivery.lost is not None:
            return
        job_id = delivery.message.message_id
        delivery.lost = LockLost(
            f"the job's lock was lost ({why}); Service Bus redelivers it",
            queue=self._queue,
            job_id=str(job_id) if job_id is not None else None,
        )
        log.warning("%s", delivery.lost, extra={"queue": self._queue, "job_id": job_id})
        if delivery in self._buffer:  # never handed out: drop it, and ask for another
            self._buffer.remove(delivery)
            self._credit += 1
            if not self._closed and self._open:
                self._start_pump()
        for scope in list(delivery.scopes):
            scope.cancel()

    # -- settlement -----------------------------------------------------------------------------

    def settle(self, incoming: Incoming, settlement: Settlement) -> Awaitable[None] | None:
        delivery: _Delivery = incoming.token
        if delivery.settled:
            raise AlreadySettled(
                "the job was already settled", queue=self._queue, job_id=incoming.id
            )
        if self._closed or self._sdk is None:
            raise DeliveryStale(
                "the consumer closed before the job was settled; Service Bus redelivers it",
                queue=self._queue,
                job_id=incoming.id,
            )
        delivery.settled = True
        self._release_hold(delivery)
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
        if self._adapter.is_dead_letter_queue:
            # No pushes to a dead-letter queue: abandon (the broker counts an attempt).
            return self._apply(incoming, sdk.abandon_message(message))
        attempt = incoming.attempt + 1 if outcome is Outcome.RETRY else incoming.attempt
        return self._resend_then_complete(incoming, message, attempt, settlement.delay)

    async def _apply(self, incoming: Incoming, call: Coroutine[Any, Any, None]) -> None:
        try:
            await call
        except Exception as exc:
            raise _settle_error(exc, queue=self._queue, job_id=incoming.id) from None

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
        if exc is not None:
            log.warning("a settlement failed: %s", exc, extra={"queue": self._queue})

    async def _wait_background(self) -> None:
        pending = [task for task in self._background if not task.done()]
        if pending:
            await asyncio.wait(pending, timeout=_CLOSE_TIMEOUT)

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
            self._release_hold(delivery)
        work = [self._give_back_one(sdk, delivery) for delivery in buffered]
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(_gather_quietly(work, self._queue), _CLOSE_TIMEOUT)

    async def _give_back_one(self, sdk: ServiceBusReceiver, delivery: _Delivery) -> None:
        if delivery.lost is not None:
            return
        incoming = to_incoming(delivery.message, delivery)
        if self._adapter.is_dead_letter_queue:
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
