"""The Proton adapter's connection, kept up: :class:`Supervisor`.

The adapter dials the first connection itself (``open`` fails at once if it cannot). Once it is
up the supervisor watches it; when it is lost, the adapter's senders fail over (``on_lost``),
and the queue's :class:`~amqp1q.ReconnectPolicy` re-dials it with exponential backoff and full
jitter until a new one opens and every consumer re-attaches (``reattach``) -- or gives up
(``on_give_up``: consumers then raise the error). Refused credentials are never re-dialled: that
only flaps. The state (``connected``, ``reconnecting``, ``failed``, ``closed``) is what
``JobQueue.health()`` reports; each change is announced to the state listeners.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Final

from ..._adapter import StateListeners
from ..._errors import Amqp1qError, AuthenticationFailed, ConnectionLost, QueueStateError
from ..._policy import ReconnectPolicy
from ._client import ClientConnection

__all__ = ["Supervisor"]

log = logging.getLogger("amqp1q.proton")

#: Link or connection conditions that say "not your fault": the outcome of what was in flight is
#: unknown, and it is sent again once the link is back.
_FORCED: Final = frozenset(
    {None, "amqp:connection:forced", "amqp:link:detach-forced", "amqp:internal-error"}
)


class Supervisor:
    """One connection: the live one, its state, and the re-dialling (for every queue on it)."""

    def __init__(
        self,
        *,
        queue: str | None,
        display: str,
        policy: ReconnectPolicy | None,
        connect_timeout: float,
        dial: Callable[[], ClientConnection],
        on_lost: Callable[[Amqp1qError], None],
        reattach: Callable[[], Awaitable[None]],
        on_give_up: Callable[[Amqp1qError], None],
    ) -> None:
        self.queue = queue
        self._display = display
        self._policy = policy
        self._connect_timeout = connect_timeout
        self._dial = dial
        self._on_lost = on_lost
        self._reattach = reattach
        self._on_give_up = on_give_up
        self._connection: ClientConnection | None = None
        self._connected = asyncio.Event()
        self._closing = False
        self._gave_up: Amqp1qError | None = None
        self._reconnecting: asyncio.Task[None] | None = None
        self._listeners = StateListeners(log)

    # -- facts ----------------------------------------------------------------------------------

    @property
    def current(self) -> ClientConnection | None:
        """The connection dialled last (it may have failed), or None before the first."""
        return self._connection

    @property
    def connection(self) -> ClientConnection:
        """The live connection; raises if there is none (not open, or it failed)."""
        connection = self._connection
        if connection is None:
            raise QueueStateError("the queue is not open", queue=self.queue)
        if connection.failure is not None:
            raise connection.failure
        return connection

    @property
    def state(self) -> str:
        """``connected``, ``reconnecting``, ``failed`` or ``closed``."""
        if self._closing:
            return "closed"
        if self._gave_up is not None:
            return "failed"
        return "connected" if self._connected.is_set() else "reconnecting"

    def on_state_change(self, listener: Callable[[str], None]) -> None:
        self._listeners.add(listener)

    def may_resend(self, error: ConnectionLost) -> bool:
        """Whether a push that failed with ``error`` may go again once the connection is back:
        for a connection that dropped, or a link the broker closed without blaming the message
        (RabbitMQ detaches links first when it stops); not for a refused attach or a link
        closed over what was sent -- and only as the policy allows, while it has not given up."""
        connection = self._connection
        dropped = not self._connected.is_set() or (
            connection is not None and connection.failure is not None
        )
        if error.condition in _FORCED or error.connection_dropped:
            dropped = True  # (that connection may be back already: the error is what says so)
        policy = self._policy
        return (
            dropped
            and policy is not None
            and policy.resend_pushes
            and self._gave_up is None
            and not self._closing
        )

    # -- lifecycle ------------------------------------------------------------------------------

    def dialled(self, connection: ClientConnection) -> None:
        """The adapter dialled ``connection`` (not open yet: closing closes it all the same)."""
        self._connection = connection

    def opened(self) -> None:
        """The connection the adapter dialled is open: watch it from now on."""
        assert self._connection is not None
        self._connection.on_lost(self._lost)
        self._connected.set()

    async def wait_connected(self) -> ClientConnection:
        """The live connection, once there is one (raise if the supervisor gave up)."""
        while True:
            await self._connected.wait()
            if self._gave_up is not None:
                raise self._gave_up
            if self._closing:
                raise QueueStateError("the queue is closed", queue=self.queue)
            connection = self._connection
            if connection is not None and connection.failure is None:
                return connection
            self._connected.clear()

    async def stop(self) -> ClientConnection | None:
        """Stop re-dialling (the adapter is closing); the connection to close, if any (the
        re-dial may have made a new one). Waiters wake, and find the queue closed."""
        self._closing = True
        self._connected.set()
        task = self._reconnecting
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait((task,))  # a cancellation of close itself still propagates
            if not task.cancelled() and task.exception() is not None:
                log.debug("the reconnect task failed", exc_info=task.exception())
        return self._connection

    def halt(self) -> ClientConnection | None:
        """:meth:`stop` without waiting (a close cut short): the reconnect task is cancelled,
        not awaited; the connection to abort, if any."""
        self._closing = True
        self._connected.set()
        task = self._reconnecting
        if task is not None and not task.done():
            task.cancel()
        return self._connection

    # -- losing it, and getting it back ---------------------------------------------------------

    def _lost(self, error: Amqp1qError) -> None:
        if isinstance(error, ConnectionLost):
            error.connection_dropped = True
        self._connected.clear()
        self._on_lost(error)
        policy = self._policy
        if self._closing or policy is None or isinstance(error, AuthenticationFailed):
            # Refused credentials (or virtual host) are not passing: re-dialling only flaps.
            self._give_up(error)
            return
        log.warning(
            "lost the connection to %s (%s); reconnecting",
            self._display,
            error,
            extra={"queue": self.queue},
        )
        self._reconnecting = asyncio.get_running_loop().create_task(self._reconnect(policy))
        self._announce()

    def _announce(self) -> None:
        self._listeners.announce(self.state)

    async def _reconnect(self, policy: ReconnectPolicy) -> None:
        attempt = 0
        while not self._closing:
            attempt += 1
            if policy.max_attempts is not None and attempt > policy.max_attempts:
                self._give_up(
                    ConnectionLost(
                        f"could not reconnect to {self._display} in {policy.max_attempts} attempts",
                        queue=self.queue,
                    )
                )
                return
            await asyncio.sleep(policy.backoff(attempt))
            connection = self._dial()
            try:
                await asyncio.wait_for(connection.open(), self._connect_timeout)
            except (Amqp1qError, asyncio.TimeoutError) as exc:
                connection.abort()
                log.info("reconnect attempt %d to %s failed: %s", attempt, self._display, exc)
                continue
            self._connection = connection
            connection.on_lost(self._lost)
            try:
                await self._reattach()
            except Amqp1qError as exc:
                log.warning("re-attaching consumers after reconnect failed: %s", exc)
                connection.abort()
                continue
            if connection.failure is not None:
                continue
            self._connected.set()
            self._announce()
            log.warning(
                "reconnected to %s after %d attempt(s)",
                self._display,
                attempt,
                extra={"queue": self.queue},
            )
            return

    def _give_up(self, error: Amqp1qError) -> None:
        self._gave_up = error
        self._connected.set()  # wake waiters: they find the failure
        self._on_give_up(error)
        self._announce()
