"""Sync handlers: a plain ``def`` handler runs in a worker thread, never on the event loop.

A worker (and :class:`~amqp1q.integrations.web.JobService`) accepts ``def`` handlers as well
as ``async def`` ones. A sync handler runs through :func:`anyio.to_thread.run_sync`, so its
blocking work (a ``requests`` call, an SMTP client, a CPU-bound step) leaves the event loop
free: heartbeats, lock renewals and the other jobs go on. It may call back into the loop with
``anyio.from_thread.run(job.retry, 60)``.

Threads are bounded by the worker's own :class:`anyio.CapacityLimiter` of ``concurrency``
tokens (not anyio's process-wide default of 40, which would cap a larger worker silently).
A token is held for as long as the thread really runs, so the threads never outnumber the
worker's ``concurrency``.

A thread cannot be cancelled. What that means:

- **Cancelled** (the drain's grace ran out, a second signal, a lost Service Bus lock): the job
  is released (never lost) as for an async handler, but the handler runs on in its thread to
  its end, unseen; a warning names the job, for it may run again elsewhere meanwhile. A
  handler cancelled before its thread started never starts. The process cannot exit before
  such a thread returns.
- **Past ``job_timeout``**: a warning names the job; the handler cannot be stopped, so it runs
  to its end, keeping its slot, and its job is settled by how it ends (acked on return, retried
  on an exception). For a hard limit, give the blocking call its own timeout.

A plain function that returns an awaitable (``lambda job: send(job.payload)`` with an async
``send``) has it awaited on the loop.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeGuard

import anyio
import anyio.to_thread

if TYPE_CHECKING:
    from ._received import ReceivedJob

__all__ = ["ThreadedHandlers", "is_async_handler"]

log = logging.getLogger("amqp1q.worker")


def is_async_handler(func: object) -> TypeGuard[Callable[..., Awaitable[None]]]:
    """True for a coroutine function (or a callable object whose ``__call__`` is one)."""
    if inspect.iscoroutinefunction(func):
        return True
    call = getattr(func, "__call__", None)  # noqa: B004 - the method, not callable()
    return call is not None and inspect.iscoroutinefunction(call)


class _Call:
    """The handler's call as its thread runs it: skipped if abandoned before it started."""

    __slots__ = ("abandoned", "handler", "job", "lock", "started")

    def __init__(self, handler: Callable[[ReceivedJob], Any], job: ReceivedJob) -> None:
        self.handler = handler
        self.job = job
        self.lock = threading.Lock()
        self.started = False
        self.abandoned = False

    def __call__(self) -> Any:
        with self.lock:
            if self.abandoned:
                return None
            self.started = True
        return self.handler(self.job)

    def abandon(self) -> bool:
        """Give up on the call; True if its thread has started (and so runs on)."""
        with self.lock:
            self.abandoned = True
            return self.started


class ThreadedHandlers:
    """Runs one worker's sync handlers in threads, at most ``threads`` at once."""

    def __init__(self, threads: int) -> None:
        self._limiter = anyio.CapacityLimiter(threads)
        self._known: dict[object, bool] = {}
        #: Threads whose job was given up on (cancelled) but which still run.
        self._abandoned: set[asyncio.Task[Any]] = set()

    def is_async(self, func: object) -> TypeGuard[Callable[..., Awaitable[None]]]:
        """:func:`is_async_handler`, remembered per handler: a dict lookup per job."""
        try:
            known = self._known.get(func)
        except TypeError:  # an unhashable callable object
            return is_async_handler(func)
        if known is None:
            known = self._known[func] = is_async_handler(func)
        return known

    @property
    def abandoned(self) -> int:
        """How many abandoned handlers are still running in their threads."""
        return len(self._abandoned)

    async def run(
        self, handler: Callable[[ReceivedJob], Any], job: ReceivedJob, timeout: float | None
    ) -> Any:
        """The handler's return value (awaited, if it returned an awaitable)."""
        call = _Call(handler, job)
        # A task of its own, never cancelled: it holds its limiter token until the thread ends.
        thread = asyncio.ensure_future(anyio.to_thread.run_sync(call, limiter=self._limiter))
        overran = None
        if timeout is not None:
            overran = asyncio.get_running_loop().call_later(timeout, _overran, job, timeout)
        try:
            result = await asyncio.shield(thread)
        except asyncio.CancelledError:
            if call.abandon():
                self._abandoned.add(thread)
                thread.add_done_callback(self._ended_late(job))
                log.warning(
                    "the sync handler for job %s (%r) was cancelled but cannot be stopped: its "
                    "job is released and may run again elsewhere while its thread runs on",
                    job.id,
                    job.name,
                    extra={"queue": job.queue, "job_id": job.id},
                )
            else:
                thread.add_done_callback(_retrieve)
            raise
        finally:
            if overran is not None:
                overran.cancel()
        if inspect.isawaitable(result):
            return await result
        return result

    def _ended_late(self, job: ReceivedJob) -> Callable[[asyncio.Task[Any]], None]:
        def ended(thread: asyncio.Task[Any]) -> None:
            self._abandoned.discard(thread)
            failure = None if thread.cancelled() else thread.exception()
            result = None if thread.cancelled() or failure else thread.result()
            if inspect.iscoroutine(result):
                result.close()  # its job is gone: nothing will await it
            log.info(
                "the cancelled sync handler for job %s (%r) has ended%s",
                job.id,
                job.name,
                f": {failure!r}" if failure is not None else "",
                extra={"queue": job.queue, "job_id": job.id},
            )

        return ended


def _overran(job: ReceivedJob, timeout: float) -> None:
    log.warning(
        "the sync handler for job %s (%r) has run past its %g s job timeout; a thread cannot "
        "be stopped, so it runs on and its job is settled when it returns",
        job.id,
        job.name,
        timeout,
        extra={"queue": job.queue, "job_id": job.id},
    )


def _retrieve(thread: asyncio.Task[Any]) -> None:
    if not thread.cancelled():
        thread.exception()
