"""A queue's lifecycle: opened once, closed within a bounded time, never reopened.

:class:`LifecycleMixin` gives :class:`~amqp1q.JobQueue` ``open()``, ``close()`` and
``async with``; :class:`QueueState` is the state they move through (UNOPENED, OPEN, CLOSING,
CLOSED), and ``_check_open()`` is what every operation asks first. Closing closes the queue's
consumers, waits (bounded) for pushes under way, then closes the adapter; it is shielded from
cancellation and never hangs. :func:`opened_by_client` marks a queue a
:class:`~amqp1q.Client` made on its live connection as open already.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from types import TracebackType
from typing import TYPE_CHECKING

from . import _calls
from ._errors import ConnectFailed, QueueStateError
from ._settings import check_seconds
from ._shield import CleanupTimeout, deadline, prepare, shielded

if TYPE_CHECKING:
    from ._queue import JobQueue

__all__ = ["LifecycleMixin", "QueueState", "opened_by_client"]

log = logging.getLogger("amqp1q.queue")


class QueueState(enum.Enum):
    UNOPENED = "unopened"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


class LifecycleMixin:
    """``JobQueue``'s opening and closing (see the module docstring)."""

    async def open(self: JobQueue) -> None:  # type: ignore[misc]
        """Connect. Raises a connection error (typed, redacted) if the broker cannot be reached."""
        if self._state is not QueueState.UNOPENED:
            raise QueueStateError(
                f"the queue is {self._state.value}; a JobQueue is opened once", queue=self.name
            )
        prepare()
        try:
            async with deadline(self.connect_timeout):
                await self._adapter.open()
        except TimeoutError:
            await self._abort_open()
            raise ConnectFailed(
                f"could not connect to {self.url} within {self.connect_timeout:g} s",
                queue=self.name,
            ) from None
        except BaseException:
            await self._abort_open()
            raise
        self._state = QueueState.OPEN
        log.debug("opened %s", self.url, extra={"queue": self.name})

    async def _abort_open(self: JobQueue) -> None:  # type: ignore[misc]
        try:
            await shielded(self._adapter.close(), self.close_timeout, "aborting a failed open")
        except (Exception, CleanupTimeout):
            log.debug("cleanup after a failed open failed", exc_info=True)

    async def __aenter__(self: JobQueue) -> JobQueue:  # type: ignore[misc]
        if not (self._client_made and self._state is QueueState.OPEN):
            await self.open()
        return self

    async def __aexit__(  # type: ignore[misc]
        self: JobQueue,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self: JobQueue, grace: float | None = None) -> None:  # type: ignore[misc]
        """Close consumers and the connection, within a bounded time. Never hangs.

        Consumers stop taking jobs at once and release those buffered; jobs being processed get
        ``grace`` seconds (default ``close_timeout``) to be settled, then go back to the broker.
        Pushes under way get the same grace to learn their outcome.
        """
        if self._state is QueueState.UNOPENED:
            self._state = QueueState.CLOSED
            self._closed.set()
            return
        if self._state is not QueueState.OPEN:
            await self._closed.wait()
            return
        self._state = QueueState.CLOSING
        grace = (
            self.close_timeout if grace is None else check_seconds("grace", grace, allow_zero=True)
        )
        try:
            await shielded(
                self._close(grace), grace + 2 * self.close_timeout, f"closing {self.name!r}"
            )
        except CleanupTimeout:
            log.warning("closing %s took too long; abandoned", self.url, extra={"queue": self.name})
        finally:
            self._state = QueueState.CLOSED
            self._closed.set()
            log.debug("closed %s", self.url, extra={"queue": self.name})

    async def _close(self: JobQueue, grace: float) -> None:  # type: ignore[misc]
        consumers = list(self._consumers)
        if consumers:
            await asyncio.gather(*(c.close(grace) for c in consumers), return_exceptions=True)
        await self._pusher.wait_idle(grace)
        try:
            await asyncio.wait_for(self._adapter.close(), self.close_timeout)
        except asyncio.TimeoutError:
            log.warning(
                "the adapter for %s did not close in time", self.url, extra={"queue": self.name}
            )
        await _calls.reap()  # the reply link's reader, if the connection closed with the queue

    def _check_open(self: JobQueue) -> None:  # type: ignore[misc]
        if self._state is not QueueState.OPEN:
            hint = " (use `async with queue:` first)" if self._state is QueueState.UNOPENED else ""
            raise QueueStateError(f"the queue is {self._state.value}{hint}", queue=self.name)


def opened_by_client(queue: JobQueue) -> None:
    """``queue``'s adapter is open already: a :class:`~amqp1q.Client` made it on its live
    connection, so ``async with queue:`` does not open it again."""
    queue._client_made = True
    queue._state = QueueState.OPEN
