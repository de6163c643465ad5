"""Held messages' locks: when each runs out, renewing them, and :func:`lock_scope`.

A :class:`Delivery` is a received message while amqp1q holds it (the ``Incoming.token``): its
lock deadline, when to renew it (at half its span), whether it was settled or lost, and the
cancel scopes of code running under :func:`lock_scope`. A consumer's :class:`LockKeeper` (one
background task) renews the locks of the deliveries it holds, for at most ``max_renewal``
seconds each, and reports a lock it cannot keep to its receiver.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import AbstractAsyncContextManager
from typing import Any, Final

import anyio

from ..._adapter import HandedOut, Incoming
from ..._errors import LockLost
from ._errors import describe
from ._sdk import CLOSE_TIMEOUT, ServiceBusReceivedMessage, sb_errors

__all__ = ["MAX_CONCURRENT_RENEWALS", "Delivery", "LockKeeper", "lock_scope"]


class Delivery:
    """A received message while amqp1q holds it: the facade's ``Incoming.token``."""

    __slots__ = (
        "deadline",
        "generation",
        "incoming",
        "lost",
        "message",
        "received_at",
        "renew_at",
        "renewing",
        "scopes",
        "settled",
    )

    def __init__(self, message: ServiceBusReceivedMessage, now: float, generation: int = 0) -> None:
        self.message = message
        #: The receiver's generation it came from: one re-dialled since cannot settle it.
        self.generation = generation
        self.received_at = now
        self.deadline = math.inf
        self.renew_at = math.inf
        self.renewing = False
        self.settled = False
        self.lost: LockLost | None = None
        self.scopes: set[anyio.CancelScope] = set()
        self.incoming: Incoming | None = None

    def guard(self) -> AbstractAsyncContextManager[None]:
        """``Incoming.guard``, for ``job.process()``: cancel the handler and raise LockLost if
        the lock is lost."""
        assert self.incoming is not None, "handed out before guarded"
        return lock_scope(self.incoming)

    def lose(self, description: str, queue: str) -> LockLost:
        """Its lock is gone: settling it raises this LockLost (``description``), and code under
        :func:`lock_scope` is cancelled."""
        job_id = self.message.message_id
        self.lost = LockLost(
            description, queue=queue, job_id=str(job_id) if job_id is not None else None
        )
        for scope in list(self.scopes):
            scope.cancel()
        return self.lost

    def locked_until(self, until: datetime.datetime | None, now: float) -> None:
        """Note the lock's end (broker time) and when to renew it: at half its span."""
        if until is None:
            self.deadline = self.renew_at = math.inf
            return
        if until.tzinfo is None:
            until = until.replace(tzinfo=datetime.timezone.utc)
        span = (until - datetime.datetime.now(datetime.timezone.utc)).total_seconds()
        span = max(span, 0.0)
        self.deadline = now + span
        self.renew_at = now + span / 2


#: Lock renewals in flight at once per consumer.
MAX_CONCURRENT_RENEWALS: Final = 32


class LockKeeper:
    """Renews the locks of one consumer's held deliveries at half their span.

    ``renew(delivery)`` asks Service Bus for a new lock end; ``lose(delivery, why)`` is told of
    a lock that cannot be kept (refused, or past ``max_renewal``); ``spawn`` runs a renewal in
    the background (the receiver waits for them on close).
    """

    def __init__(
        self,
        name: str,
        max_renewal: float,
        *,
        renew: Callable[[Delivery], Awaitable[datetime.datetime | None]],
        lose: Callable[[Delivery, str], None],
        spawn: Callable[[Coroutine[Any, Any, None]], None],
    ) -> None:
        self._name = name
        self._max_renewal = max_renewal
        self._renew_lock = renew
        self._lose = lose
        self._spawn = spawn
        #: Locked deliveries (buffered or in hand), by id().
        self.held: dict[int, Delivery] = {}
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._renewals = asyncio.Semaphore(MAX_CONCURRENT_RENEWALS)

    def hold(self, delivery: Delivery, now: float) -> None:
        delivery.locked_until(delivery.message.locked_until_utc, now)
        self.held[id(delivery)] = delivery
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=self._name)
        self._wake.set()

    def release(self, delivery: Delivery) -> None:
        self.held.pop(id(delivery), None)

    def keep_only(self, generation: int) -> None:
        """Stop renewing deliveries of older receivers (their links are gone)."""
        self.held = {key: d for key, d in self.held.items() if d.generation == generation}

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(task, CLOSE_TIMEOUT)
        self.held.clear()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            next_at = math.inf
            for delivery in list(self.held.values()):
                if delivery.renewing:
                    continue
                if now - delivery.received_at >= self._max_renewal:
                    # Past the renewal budget: the lock runs out, the broker takes it back.
                    if now >= delivery.deadline:
                        self.release(delivery)
                        self._lose(delivery, "its lock ran out after the maximum renewal time")
                        continue
                    next_at = min(next_at, delivery.deadline)
                    continue
                if delivery.renew_at <= now:
                    delivery.renewing = True
                    self._spawn(self._renew(delivery))
                else:
                    next_at = min(next_at, delivery.renew_at)
            self._wake.clear()
            timeout = None if next_at == math.inf else max(0.0, next_at - loop.time())
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def _renew(self, delivery: Delivery) -> None:
        loop = asyncio.get_running_loop()
        try:
            async with self._renewals:
                if delivery.settled or id(delivery) not in self.held:
                    return
                until = await self._renew_lock(delivery)
        except (
            sb_errors.MessageLockLostError,
            sb_errors.MessageNotFoundError,
            sb_errors.MessageAlreadySettled,
        ) as exc:
            if not delivery.settled:
                self.release(delivery)
                self._lose(delivery, f"Service Bus refused to renew its lock: {describe(exc)}")
        except Exception as exc:
            now = loop.time()
            if delivery.settled:
                return
            if now >= delivery.deadline:
                self.release(delivery)
                self._lose(delivery, f"its lock could not be renewed in time: {describe(exc)}")
            else:  # a transient failure: try again soon, while the lock lasts
                delivery.renew_at = now + min(1.0, (delivery.deadline - now) / 4)
        else:
            if not delivery.settled:
                delivery.locked_until(until, loop.time())
        finally:
            delivery.renewing = False
            self._wake.set()


@contextlib.asynccontextmanager
async def lock_scope(job: HandedOut | Incoming) -> AsyncIterator[None]:
    """Run the block while the job's Service Bus lock holds; cancel it when the lock is lost.

    ::

        async with job.process():          # job.process() does this by itself
            await handle(job)

    If renewing the lock fails (or the job outlives ``max_lock_renewal``), the block is
    cancelled and :class:`~amqp1q.LockLost` raised in its place; the broker redelivers the job.
    For jobs from other backends this does nothing.
    """
    incoming = job if isinstance(job, Incoming) else job.incoming
    delivery = incoming.token
    if not isinstance(delivery, Delivery):
        yield
        return
    if delivery.lost is not None:
        raise delivery.lost
    with anyio.CancelScope() as scope:
        delivery.scopes.add(scope)
        try:
            yield
        finally:
            delivery.scopes.discard(scope)
    if scope.cancelled_caught and delivery.lost is not None:
        raise delivery.lost
