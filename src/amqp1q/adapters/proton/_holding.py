"""Jobs a consumer holds until a time: the delay of a broker that has none.

Where the broker has no delayed delivery (``DelayStyle.HELD``), a consumer keeps two kinds of
job back, each as the *unsettled* delivery it arrived as:

- a job pushed with ``delay=``: it carries ``x-amqp1q-not-before`` and is handed out once that
  time has come;
- a job retried with a delay: it is retried (``modified``, or re-published with its attempt
  counted, then accepted) once the delay has passed.

Either way the broker still has the job until then: a consumer process that dies leaves the
delivery unsettled, and a broker that keeps unsettled deliveries gives it to the next consumer
(early, rather than never). A held job does not count against the consumer's prefetch, as a
broker's own scheduled messages would not; it costs the consumer its bytes in memory.

:class:`HeldJobs` is the clock: a heap of due times and one timer for the earliest.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from typing import Any

import attrs

from ..._adapter import Incoming
from ._deliveries import Delivery

__all__ = ["Held", "HeldJobs"]


@attrs.define(slots=True, eq=False)
class Held:
    """One held delivery. ``retry`` is set for a delayed retry, unset for a not-before job."""

    delivery: Delivery
    payload: bytes
    incoming: Incoming
    retry: bool
    not_before_ms: int | None = None


class HeldJobs:
    """Held deliveries by due time (``loop.time()``); ``on_due`` hears each once it is due."""

    def __init__(self, on_due: Callable[[Held], None]) -> None:
        self._on_due = on_due
        self._heap: list[tuple[float, int, Held]] = []
        self._order = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._armed_for: float | None = None

    def __len__(self) -> int:
        return len(self._heap)

    def hold(self, held: Held, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time() + max(seconds, 0.0)
        heapq.heappush(self._heap, (due, next(self._order), held))
        self._arm(loop)

    def take_all(self) -> list[Held]:
        """Stop the clock and return every held delivery, earliest first."""
        self._disarm()
        held = [entry for _, _, entry in sorted(self._heap, key=_by_time)]
        self._heap.clear()
        return held

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        if not self._heap:
            self._disarm()
            return
        due = self._heap[0][0]
        if self._armed_for is not None and self._armed_for <= due:
            return
        self._disarm()
        self._armed_for = due
        self._timer = loop.call_at(due, self._fire)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        self._armed_for = None

    def _fire(self) -> None:
        self._timer = None
        self._armed_for = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, held = heapq.heappop(heap)
            self._on_due(held)
        self._arm(loop)


def _by_time(entry: tuple[float, int, Any]) -> tuple[float, int]:
    return entry[0], entry[1]
