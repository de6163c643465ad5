"""One loop timer for many waits that share a duration: :class:`SharedDeadline`.

``asyncio.timeout`` costs a timer handle per wait, pushed onto (and, cancelled, left in) the
loop's heap: with a thousand pushes under way, the heap's comparisons alone cost several µs a
push. Waits that share one duration end in the order they began, so they can share one clock:
each takes a place in a queue; a single timer, set for the oldest wait still under way, cancels
the tasks whose time has passed, and :meth:`SharedDeadline.leave` turns that cancellation into
``TimeoutError`` exactly as ``asyncio.timeout`` does (a cancellation from anywhere else stays a
cancellation). Python 3.10 has no ``Task.uncancel``: there each wait uses ``deadline()``.
"""

from __future__ import annotations

import asyncio
import sys
from collections import deque

__all__ = ["SUPPORTED", "SharedDeadline", "Wait"]

#: ``Task.uncancel`` (3.11) tells our cancellation from another: needed to share a timer.
SUPPORTED = sys.version_info >= (3, 11)

if sys.version_info >= (3, 11):

    def _cancelling(task: asyncio.Task[object]) -> int:
        return task.cancelling()

    def _uncancel(task: asyncio.Task[object]) -> int:
        return task.uncancel()

else:  # pragma: no cover - Python 3.10 never shares a deadline (SUPPORTED is False)

    def _cancelling(task: asyncio.Task[object]) -> int:
        return 0

    def _uncancel(task: asyncio.Task[object]) -> int:
        return 0


class Wait:
    """One wait's place in the queue."""

    __slots__ = ("cancelling", "done", "expired", "task", "when")

    def __init__(self, task: asyncio.Task[object], when: float, cancelling: int) -> None:
        self.task = task
        self.when = when
        self.cancelling = cancelling
        self.done = False
        self.expired = False


class SharedDeadline:
    """Bounds waits of ``seconds`` each (see the module docstring)."""

    __slots__ = ("_handle", "_loop", "_waits", "seconds")

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._waits: deque[Wait] = deque()
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def enter(self) -> Wait:
        """Start bounding the current task's wait; pair with :meth:`leave` in a ``finally``."""
        # (asyncio.get_running_loop() costs a getpid: the last wait's loop is asked first)
        loop = self._loop
        task = asyncio.current_task(loop) if loop is not None else None
        if loop is None or task is None:
            running = asyncio.get_running_loop()
            task = asyncio.current_task(running)
            assert task is not None, "a shared deadline bounds a task"
            if running is not loop:  # first use, or a new loop: the old one's waits are over
                self._waits.clear()
                self._handle = None
            loop = self._loop = running
        wait = Wait(task, loop.time() + self.seconds, _cancelling(task))
        self._waits.append(wait)
        if self._handle is None:
            self._handle = loop.call_at(wait.when, self._expire)
        return wait

    def leave(self, wait: Wait, error: BaseException | None) -> bool:
        """End ``wait``; True when ``error`` is the cancellation its deadline caused (the
        caller raises its ``TimeoutError`` instead)."""
        wait.done = True
        waits = self._waits
        while waits and waits[0].done:  # waits mostly end in order: the queue stays short
            waits.popleft()
        if wait.expired:  # as asyncio.timeout: our cancel is taken back, whatever happened
            return _uncancel(wait.task) <= wait.cancelling and isinstance(
                error, asyncio.CancelledError
            )
        return False

    def _expire(self) -> None:
        self._handle = None
        loop = self._loop
        assert loop is not None
        now = loop.time()
        waits = self._waits
        while waits:
            wait = waits[0]
            if not wait.done:
                if wait.when > now:
                    self._handle = loop.call_at(wait.when, self._expire)
                    return
                wait.expired = True
                wait.task.cancel()
            waits.popleft()
