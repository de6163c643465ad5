"""The dashboard's samples: each queue's ``depth()`` every ``interval`` seconds, kept for
``window`` seconds, and the rates drawn from them (see the package docstring)."""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import time
from typing import Final

import attrs

from .._inspection import QueueDepth
from .._queue import JobQueue

__all__ = ["Sample", "Sampler"]

log = logging.getLogger("amqp1q.dashboard")
DEFAULT_WINDOW: Final = 300.0


@attrs.frozen
class Sample:
    at: float
    depth: QueueDepth | None
    error: str | None = None


class Sampler:
    """Samples ``queues`` (open :class:`JobQueue` objects) until stopped."""

    def __init__(
        self, queues: list[JobQueue], *, interval: float = 2.0, window: float = DEFAULT_WINDOW
    ) -> None:
        self.queues = {queue.name: queue for queue in queues}
        self.interval = interval
        self.window = window
        size = max(2, int(window / interval) + 1)
        self.samples: dict[str, collections.deque[Sample]] = {
            name: collections.deque(maxlen=size) for name in self.queues
        }
        self._task: asyncio.Task[None] | None = None

    async def sample_once(self) -> None:
        for name, queue in self.queues.items():
            try:
                depth: QueueDepth | None = await queue.depth()
                error = None
            except Exception as exc:  # shown on the page, and tried again next time
                depth, error = None, f"{type(exc).__name__}: {exc}"
            self.samples[name].append(Sample(time.monotonic(), depth, error))

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _run(self) -> None:
        while True:
            await self.sample_once()
            await asyncio.sleep(self.interval)

    def latest(self, name: str) -> Sample | None:
        samples = self.samples.get(name)
        return samples[-1] if samples else None

    def rates(self, name: str, field: str) -> list[float] | None:
        """Per-second rates of a running total between consecutive samples (None: no totals)."""
        points = [(s.at, getattr(s.depth, field)) for s in self.samples[name] if s.depth]
        if not points or points[-1][1] is None:
            return None
        out = []
        for (t0, v0), (t1, v1) in itertools.pairwise(points):
            if v0 is None or v1 is None or t1 <= t0:
                continue
            out.append(max(0.0, (v1 - v0) / (t1 - t0)))
        return out

    def readies(self, name: str) -> list[float]:
        return [float(s.depth.ready or 0) for s in self.samples[name] if s.depth]
