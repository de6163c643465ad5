"""Re-dialling under faults: a fresh SDK sender or receiver in place of one whose handler died.

azure-servicebus retries an operation a few times on its own, but a receiver or sender used by
several tasks at once does not survive a dropped connection reliably: one operation's failure
shuts the handler down under the others (``'NoneType' object has no attribute
'create_receiver_link'``, ``KeyError: b'QUEUE/$management'``), and then every call on it fails.
So when an operation fails, the adapter throws the SDK object away and builds a new one through
:meth:`Supervisor.redial`, with the queue's :class:`~amqp1q.ReconnectPolicy` backoff, until it
opens, or the policy gives up (:class:`~amqp1q.ConnectionLost`), or the broker says the queue or
the credentials are gone (that error, at once).

The supervisor also holds the adapter's connection state for ``queue.health()`` and
``queue.on_state_change()``: ``connected``, ``reconnecting`` while any re-dial runs,
``failed`` once one gave up.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from ..._adapter import StateListeners
from ..._errors import (
    Amqp1qError,
    AuthenticationFailed,
    ConnectFailed,
    ConnectionLost,
    PushTimeout,
    QueueNotFound,
)
from ..._policy import ReconnectPolicy
from ._errors import describe, open_error
from ._sdk import close_quietly, no_reopen, open_once, sb_errors, track_sockets

__all__ = ["DEFAULT_CONNECT_TIMEOUT", "Supervisor", "is_transient", "open_fresh"]

log = logging.getLogger("amqp1q.servicebus")

#: How long one re-dial attempt (opening a fresh sender or receiver) may take.
DEFAULT_CONNECT_TIMEOUT = 10.0

T = TypeVar("T")


async def open_fresh(
    handler: T, *, queue: str, display: str, keep: tuple[type[Exception], ...] = ()
) -> T:
    """Open a fresh SDK sender or receiver for amqp1q: in one attempt, its sockets noted, kept
    from reopening itself later (see :mod:`._sdk`); if it fails, closed and the error mapped
    (the SDK's exceptions in ``keep`` are raised as they are)."""
    track_sockets(handler)
    try:
        await open_once(handler)
    except BaseException as exc:
        await close_quietly(handler)
        if isinstance(exc, sb_errors.ServiceBusError) and not isinstance(exc, keep):
            raise open_error(exc, queue=queue, display=display) from None
        raise
    no_reopen(handler)
    return handler


def is_transient(error: Amqp1qError) -> bool:
    """A failure whose cause may be gone on a fresh connection (a push's outcome then unknown)."""
    return isinstance(error, (ConnectFailed, ConnectionLost, PushTimeout))


class Supervisor:
    """One adapter's re-dials and connection state."""

    def __init__(
        self,
        policy: ReconnectPolicy | None,
        *,
        queue: str,
        display: str,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    ) -> None:
        self.policy = policy
        self.queue = queue
        self.display = display
        self.connect_timeout = connect_timeout
        #: Fresh SDK objects opened in place of failed ones.
        self.reconnects = 0
        #: Whether a sender or receiver ever opened: before that, a failure is not re-dialled
        #: (the first connect fails fast, as ReconnectPolicy says).
        self.connected_once = False
        self.listeners = StateListeners(log)
        self._redialling = 0
        self._failed: Amqp1qError | None = None
        self._closed = False

    @property
    def state(self) -> str:
        if self._closed:
            return "closed"
        if self._failed is not None:
            return "failed"
        return "reconnecting" if self._redialling else "connected"

    def close(self) -> None:
        self._closed = True

    async def redial(self, what: str, make: Callable[[], Awaitable[T]], cause: BaseException) -> T:
        """``make()`` again, with the policy's backoff, until it succeeds; raise the typed error
        that ends the trying. ``make`` opens a fresh SDK object, raises an
        :class:`~amqp1q.Amqp1qError` if it cannot (closing what it half opened), and is
        cancelled if it outlives the connect timeout."""
        policy = self.policy
        if policy is None:
            raise ConnectionLost(
                f"lost the connection to {self.display} ({what}) and reconnect is off",
                queue=self.queue,
                description=describe(cause),
            )
        log.warning(
            "%s of %s failed (%s); reconnecting",
            what,
            self.display,
            describe(cause),
            extra={"queue": self.queue},
        )
        self._redialling += 1
        if self._redialling == 1:
            self._announce()
        try:
            return await self._redial(policy, what, make)
        finally:
            self._redialling -= 1
            if self._redialling == 0:
                self._announce()

    async def _redial(
        self, policy: ReconnectPolicy, what: str, make: Callable[[], Awaitable[T]]
    ) -> T:
        attempt = 0
        while True:
            attempt += 1
            if policy.max_attempts is not None and attempt > policy.max_attempts:
                raise self._give_up(
                    ConnectionLost(
                        f"could not reconnect {what} to {self.display} "
                        f"in {policy.max_attempts} attempts",
                        queue=self.queue,
                    )
                )
            await asyncio.sleep(policy.backoff(attempt))
            try:
                made = await asyncio.wait_for(make(), self.connect_timeout)
            except (AuthenticationFailed, QueueNotFound) as exc:
                raise self._give_up(exc) from None
            except (Amqp1qError, asyncio.TimeoutError) as exc:
                log.info("reconnect attempt %d of %s failed: %s", attempt, what, exc or "timeout")
                continue
            self.reconnects += 1
            log.warning(
                "reconnected %s to %s after %d attempt(s)",
                what,
                self.display,
                attempt,
                extra={"queue": self.queue},
            )
            return made

    def _give_up(self, error: Amqp1qError) -> Amqp1qError:
        self._failed = error
        return error

    def _announce(self) -> None:
        self.listeners.announce(self.state)
