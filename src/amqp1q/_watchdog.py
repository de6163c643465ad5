"""The stall watchdog: a warning when something blocks the event loop, naming the jobs in hand.

A handler that does blocking work inside ``async def`` (``time.sleep``, ``requests.get``, a long
computation) stops the whole event loop: every other job, heartbeats, lock renewals, the web
app's requests. No timeout can catch it (a timeout needs the loop), and the job is acked as if
all went well. The watchdog makes it visible::

    WARNING amqp1q.worker: the event loop was blocked for about 2.0 s (stall warning: 0.5 s),
    with job 3f2a… ('resize_image') in hand; blocking work inside `async def` stalls every job:
    make the handler a plain `def` (it then runs in a thread) or await non-blocking calls

How it costs nothing on the hot path: a timer re-arms itself every ``interval`` (a fifth of the
threshold, at most 0.1 s) and measures how late it runs; the loop cannot run a timer while it is
blocked, so lateness is the stall. Jobs are named from :class:`JobsInHand`, which the worker
updates as each job starts and ends (a set add and discard, and a bounded deque append): the
culprit is in hand when the timer runs, or ended since its last tick (in the very step that
blocked, so it is named first).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from ._received import ReceivedJob

__all__ = ["DEFAULT_STALL_WARNING", "JobsInHand", "StallWatchdog"]

log = logging.getLogger("amqp1q.worker")

#: Seconds the loop may be blocked before the watchdog warns (the worker's default).
DEFAULT_STALL_WARNING: Final = 0.5
#: Timer period: a fifth of the threshold, at most this (and at least 10 ms).
_MAX_INTERVAL: Final = 0.1
#: Jobs named in one warning, at most.
_NAMED: Final = 5


class JobsInHand:
    """The jobs being processed now, and the last few that ended, by watchdog tick."""

    __slots__ = ("_ended", "_jobs", "tick")

    def __init__(self) -> None:
        self._jobs: set[ReceivedJob] = set()
        self._ended: deque[tuple[int, ReceivedJob]] = deque(maxlen=16)
        #: Counted up by the watchdog on each tick: what ended when.
        self.tick = 0

    def started(self, job: ReceivedJob) -> None:
        self._jobs.add(job)

    def ended(self, job: ReceivedJob) -> None:
        self._jobs.discard(job)
        self._ended.append((self.tick, job))

    def since(self, tick: int) -> list[ReceivedJob]:
        """The jobs that ended since ``tick`` (the latest first), then those in hand now."""
        late = [job for ended, job in reversed(self._ended) if ended >= tick]
        return [*late, *self._jobs]

    def __len__(self) -> int:
        return len(self._jobs)


class StallWatchdog:
    """Warns on ``amqp1q.worker`` when the running loop is blocked ``threshold`` s or more.

    ``start()`` and ``stop()`` from the loop it watches (or ``with watchdog:``).
    """

    def __init__(self, threshold: float, jobs: JobsInHand | None = None) -> None:
        self.threshold = threshold
        self.interval = min(max(threshold / 5, 0.01), _MAX_INTERVAL)
        self.jobs = jobs
        #: Stalls seen so far (for tests and health checks).
        self.stalls = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._arm(self._loop.time())

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def __enter__(self) -> StallWatchdog:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _arm(self, now: float) -> None:
        assert self._loop is not None
        self._due = now + self.interval
        self._handle = self._loop.call_at(self._due, self._tick)

    def _tick(self) -> None:
        assert self._loop is not None
        now = self._loop.time()
        late = now - self._due
        jobs = self.jobs
        # Lateness undercounts the stall by up to one interval: allow for it both ways.
        if late >= self.threshold - self.interval:
            self.stalls += 1
            self._warn(late + self.interval / 2, jobs.since(jobs.tick) if jobs is not None else [])
        if jobs is not None:
            jobs.tick += 1
        self._arm(now)

    def _warn(self, seconds: float, jobs: list[ReceivedJob]) -> None:
        names = [f"job {job.id} ({job.name!r})" for job in jobs[:_NAMED]]
        if len(jobs) > _NAMED:
            names.append(f"{len(jobs) - _NAMED} more")
        if names:
            held = f"with {', '.join(names)} in hand"
            advice = (
                "blocking work inside `async def` stalls every job: make the handler a plain "
                "`def` (it then runs in a thread) or await non-blocking calls"
            )
        else:
            held = "with no job in hand"
            advice = "something other than a handler blocked it"
        log.warning(
            "the event loop was blocked for about %.1f s (stall warning: %g s), %s; %s",
            seconds,
            self.threshold,
            held,
            advice,
            extra={
                "stall_seconds": round(seconds, 3),
                "job_ids": [job.id for job in jobs],
                "job_names": [job.name for job in jobs],
            },
        )
