"""A held message's lock: when it runs out, when to renew it, and :func:`lock_scope`.

A :class:`_Delivery` is a received message while amqp1q holds it (the ``Incoming.token``): its
lock deadline, when to renew it (at half its span), whether it was settled or lost, and the
cancel scopes of code running under :func:`lock_scope`. The renewing itself (a background task
per consumer) is :class:`~amqp1q.adapters.servicebus._receiving._Receiver`'s.
"""

from __future__ import annotations

import contextlib
import datetime
import math
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Any

import anyio

from ..._adapter import Incoming
from ..._errors import LockLost
from ._sdk import ServiceBusReceivedMessage

__all__ = ["lock_scope"]


class _Delivery:
    """A received message while amqp1q holds it: the facade's ``Incoming.token``."""

    __slots__ = (
        "deadline",
        "incoming",
        "lost",
        "message",
        "received_at",
        "renew_at",
        "renewing",
        "scopes",
        "settled",
    )

    def __init__(self, message: ServiceBusReceivedMessage, now: float) -> None:
        self.message = message
        self.received_at = now
        self.deadline = math.inf
        self.renew_at = math.inf
        self.renewing = False
        self.settled = False
        self.lost: LockLost | None = None
        self.scopes: set[anyio.CancelScope] = set()
        self.incoming: Incoming | None = None

    def guard(self) -> AbstractAsyncContextManager[None]:
        """For ``job.process()``: cancel the handler and raise LockLost if the lock is lost."""
        return lock_scope(self.incoming)

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


@contextlib.asynccontextmanager
async def lock_scope(job: Any) -> AsyncIterator[None]:
    """Run the block while the job's Service Bus lock holds; cancel it when the lock is lost.

    ::

        async with job.process():          # job.process() does this by itself
            await handle(job)

    If renewing the lock fails (or the job outlives ``max_lock_renewal``), the block is
    cancelled and :class:`~amqp1q.LockLost` raised in its place; the broker redelivers the job.
    For jobs from other backends this does nothing.
    """
    incoming = getattr(job, "_incoming", job)
    delivery = getattr(incoming, "token", None)
    if not isinstance(delivery, _Delivery):
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
