"""Cleanup that cancellation cannot interrupt, but a timeout bounds.

``anyio.CancelScope(shield=True)`` keeps out anyio's own cancellation but not a plain
``task.cancel()`` — which is what asyncio code, uvicorn and FastAPI use. :func:`shielded` runs the
cleanup in a task of its own and waits for it, absorbing cancellation until the cleanup is done or
its timeout passes; then the cancellation goes on (re-raised), so the caller still stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator, Coroutine
from typing import Any, TypeVar

import anyio

__all__ = ["CleanupTimeout", "deadline", "prepare", "shielded"]

T = TypeVar("T")
log = logging.getLogger("amqp1q")


if sys.version_info >= (3, 11):
    deadline = asyncio.timeout
else:  # pragma: no cover - Python 3.10

    @contextlib.asynccontextmanager
    async def deadline(seconds: float | None) -> AsyncIterator[None]:
        """``asyncio.timeout`` for Python 3.10: raise ``TimeoutError`` after ``seconds``."""
        with anyio.fail_after(seconds):
            yield


def prepare() -> None:
    """Load anyio's backend for the running loop now (an import of tens of milliseconds),
    not in the middle of the first shielded cleanup."""
    anyio.get_cancelled_exc_class()  # resolves (imports) the backend of the running loop


class CleanupTimeout(TimeoutError):
    """A shielded cleanup did not finish in time and was abandoned."""


async def shielded(coro: Coroutine[Any, Any, T], timeout: float, what: str = "cleanup") -> T:
    """Run ``coro`` to completion even if the caller is cancelled, for at most ``timeout`` s.

    Returns its result or raises its exception. If the caller was cancelled meanwhile, raises
    ``CancelledError`` after the cleanup finished. If the timeout passes first, the cleanup is
    cancelled and :class:`CleanupTimeout` is raised (or ``CancelledError``, if the caller was).
    """
    loop = asyncio.get_running_loop()
    task = loop.create_task(coro)
    cancelled = False
    deadline = loop.time() + timeout
    with anyio.CancelScope(shield=True):
        while not task.done():
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                await asyncio.wait((task,), timeout=remaining)
            except asyncio.CancelledError:
                cancelled = True
        if not task.done():
            log.warning("%s did not finish within %.1f s; abandoned", what, timeout)
            task.cancel()
            give_up = loop.time() + 1.0
            while not task.done() and loop.time() < give_up:
                try:
                    await asyncio.wait((task,), timeout=give_up - loop.time())
                except asyncio.CancelledError:  # noqa: PERF203 - absorbed until cleanup ends
                    cancelled = True
            if cancelled:
                raise asyncio.CancelledError
            raise CleanupTimeout(f"{what} did not finish within {timeout:.1f} s")
    if cancelled:
        if not task.cancelled() and task.exception() is not None:
            log.debug(
                "%s failed while the caller was being cancelled", what, exc_info=task.exception()
            )
        raise asyncio.CancelledError
    return task.result()
