"""The run ``amqp1q bench`` and ``amqp1q demo`` make: push N jobs, consume them all, time both.

:func:`run` pushes ``jobs`` jobs in ``push_many`` calls of ``batch`` from ``producers`` tasks,
then consumes and acks them with ``consumers`` consumers, for ``rounds`` rounds, timing each
phase by the wall clock, by this process's CPU time (``time.process_time``: user + sys) and, for
pushes, per call. A status line shows the progress; :func:`results_table` and :func:`done_line`
report the result. The commands themselves are :mod:`._demo`. This is a quick check of one
setup; the side-by-side comparison with other clients is ``benchmarks/run.py``.

The run acks every job it consumes, so a queue it is given must be empty: it looks first
(``check_empty``, releasing what it finds), and stops at any job that is not its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from typing import Any

import attrs

from .. import Job, JobQueue
from ._display import StatusLine, plain_progress, progress_line, table, ticking

__all__ = [
    "BenchAborted",
    "Phase",
    "Plan",
    "done_line",
    "results_table",
    "run",
]


class BenchAborted(Exception):
    """The run cannot go on: the queue was not empty, or gave back a job not of this run."""


@attrs.frozen
class Plan:
    """What to run: ``jobs`` jobs of ``size`` bytes each way, ``rounds`` times."""

    jobs: int
    size: int = 1024
    prefetch: int = 100
    rounds: int = 1
    batch: int = 500
    producers: int = 1
    consumers: int = 1


@attrs.frozen
class Phase:
    """One timed phase: ``push`` or ``consume``, of round ``round`` (0: the median of rounds)."""

    name: str
    round: int
    jobs: int
    seconds: float
    cpu_seconds: float
    calls: tuple[float, ...] = ()  # push: seconds per push_many call, call to last acceptance

    @property
    def rate(self) -> float:
        return self.jobs / self.seconds if self.seconds > 0 else 0.0

    @property
    def cpu_us_per_job(self) -> float:
        return self.cpu_seconds / self.jobs * 1e6 if self.jobs else 0.0

    def call_percentile(self, percent: float) -> float | None:
        """Seconds within which ``percent`` % of the push calls ended (nearest rank)."""
        if not self.calls:
            return None
        ordered = sorted(self.calls)
        return ordered[max(math.ceil(len(ordered) * percent / 100), 1) - 1]


# -- the run -------------------------------------------------------------------------------------


async def run(
    queue: JobQueue,
    plan: Plan,
    *,
    status: StatusLine | None = None,
    check_empty: bool = False,
    on_phase: Callable[[Phase], None] | None = None,
    summaries: bool = True,
) -> list[Phase]:
    """Push and consume ``plan.jobs`` jobs ``plan.rounds`` times on an open ``queue``.

    ``summaries``: when ``status`` is not live, end each phase with a done line on it (off
    when the caller reports each phase itself, so the result is not written twice).
    """
    prefix = f"bench-{uuid.uuid4().hex[:12]}-"
    if check_empty:
        await _check_empty(queue)
    phases = []
    for round_ in range(1, plan.rounds + 1):
        timer = _Timer(round_, status, summaries)
        for phase in (
            await _push(queue, plan, f"{prefix}{round_}-", timer),
            await _consume(queue, plan, prefix, timer),
        ):
            phases.append(phase)
            if on_phase is not None:
                on_phase(phase)
    return phases


@attrs.frozen
class _Timer:
    """Times one phase of round ``round`` while its workers run, showing progress on ``status``."""

    round: int
    status: StatusLine | None
    summary: bool

    async def phase(
        self,
        name: str,
        plan: Plan,
        workers: Sequence[Coroutine[Any, Any, None]],
        done: Callable[[], int],
        stop: asyncio.Event,
        calls: Sequence[float] = (),
    ) -> Phase:
        """Run ``workers`` until ``stop`` is set: ``done()`` jobs of ``plan.jobs`` so far."""
        label = name + (f" {self.round}/{plan.rounds}" if plan.rounds > 1 else "")
        cpu, wall = time.process_time(), time.perf_counter()
        async with _progress(self.status, label, plan.jobs, done, self.summary):
            await _until(stop, workers)
        seconds, cpu = time.perf_counter() - wall, time.process_time() - cpu
        return Phase(name, self.round, plan.jobs, seconds, cpu, tuple(calls))


async def _push(queue: JobQueue, plan: Plan, prefix: str, timer: _Timer) -> Phase:
    n, payload = plan.jobs, b"x" * plan.size
    taken = pushed = 0
    calls: list[float] = []
    stop = asyncio.Event()

    async def produce() -> None:
        nonlocal taken, pushed
        while taken < n:
            first, count = taken, min(plan.batch, n - taken)
            taken += count
            jobs = [Job("bench", payload, id=f"{prefix}{i}") for i in range(first, first + count)]
            started = time.perf_counter()
            await queue.push_many(jobs)
            calls.append(time.perf_counter() - started)
            pushed += count
            if pushed == n:
                stop.set()

    workers = [produce() for _ in range(plan.producers)]
    return await timer.phase("push", plan, workers, lambda: pushed, stop, calls)


async def _consume(queue: JobQueue, plan: Plan, prefix: str, timer: _Timer) -> Phase:
    n = plan.jobs
    acked = 0
    stop = asyncio.Event()

    async def drain() -> None:
        nonlocal acked
        async with queue.consume(prefetch=plan.prefetch) as consumer:
            while True:
                job = await consumer.receive()
                if job is None:
                    raise BenchAborted(f"the queue closed after {acked:,} of {n:,} jobs")
                if not job.id.startswith(prefix):
                    await job.release()
                    raise BenchAborted(
                        f"{queue.url} holds a job that is not this run's ({job.id!r}, released "
                        "again); give bench an empty queue"
                    )
                await job.ack()
                acked += 1
                if acked == n:
                    stop.set()

    workers = [drain() for _ in range(plan.consumers)]
    return await timer.phase("consume", plan, workers, lambda: acked, stop)


async def _check_empty(queue: JobQueue, wait: float = 0.5) -> None:
    async with queue.consume(prefetch=1) as consumer:
        job = await consumer.receive(timeout=wait)
        if job is not None:
            await job.release()
            raise BenchAborted(
                f"{queue.url} is not empty (it gave job {job.id!r}, released again); "
                "bench and demo ack every job they consume, so give them an empty queue"
            )


async def _until(stop: asyncio.Event, workers: Sequence[Coroutine[Any, Any, None]]) -> None:
    """Run ``workers`` until ``stop`` is set, then cancel those still running.

    The first worker to fail cancels the rest, and its exception is raised as it is.
    """
    loop = asyncio.get_running_loop()
    tasks = {loop.create_task(worker) for worker in workers}
    stopped = loop.create_task(stop.wait())
    try:
        while not stopped.done():
            done, _ = await asyncio.wait({*tasks, stopped}, return_when=asyncio.FIRST_COMPLETED)
            for task in done - {stopped}:
                tasks.discard(task)
                error = task.exception()
                if error is not None:
                    raise error
    finally:
        for task in (*tasks, stopped):
            task.cancel()
        await asyncio.gather(*tasks, stopped, return_exceptions=True)


@contextlib.asynccontextmanager
async def _progress(
    status: StatusLine | None,
    label: str,
    total: int,
    done: Callable[[], int],
    summary: bool = True,
) -> AsyncIterator[None]:
    if status is None:
        yield
        return
    started = time.perf_counter()

    def tick() -> None:
        elapsed = time.perf_counter() - started
        if status.live:
            status.show(progress_line(label, done(), total, elapsed, status.style))
        else:
            status.show(plain_progress(label, done(), total, elapsed))

    try:
        async with ticking(tick, status.every):
            yield
    finally:
        seconds = time.perf_counter() - started
        shown = summary and not status.live
        status.finish(done_line(f"{label}:", done(), seconds) if shown else None)


# -- the report ----------------------------------------------------------------------------------


def done_line(what: str, jobs: int, seconds: float) -> str:
    """``pushed 10,000 jobs in 1.12 s (8,929 jobs/s)``."""
    rate = jobs / seconds if seconds > 0 else 0.0
    return f"{what} {jobs:,} jobs in {seconds:.2f} s ({rate:,.0f} jobs/s)"


def results_table(phases: Sequence[Phase], *, unicode: bool = True) -> str:
    """The bench's table: a row per phase and round, and the medians when there are rounds."""
    rounds = max((phase.round for phase in phases), default=1)
    rows = list(phases)
    if rounds > 1:
        rows += [_median(phases, name) for name in ("push", "consume")]
    mu = "µ" if unicode else "u"
    header = ["phase", "jobs", "s", "jobs/s", f"CPU {mu}s/job", "call p50 ms", "call p99 ms"]
    return table(header, [_row(phase, rounds) for phase in rows], right=[False] + [True] * 6)


def _row(phase: Phase, rounds: int) -> list[str]:
    name = phase.name if rounds == 1 else f"{phase.name} {phase.round or 'median'}"
    p50, p99 = phase.call_percentile(50), phase.call_percentile(99)
    return [
        name,
        f"{phase.jobs:,}",
        f"{phase.seconds:.2f}",
        f"{phase.rate:,.0f}",
        f"{phase.cpu_us_per_job:.1f}",
        "-" if p50 is None else f"{p50 * 1e3:.1f}",
        "-" if p99 is None else f"{p99 * 1e3:.1f}",
    ]


def _median(phases: Sequence[Phase], name: str) -> Phase:
    picked = [phase for phase in phases if phase.name == name]
    return Phase(
        name,
        0,
        picked[0].jobs,
        statistics.median(phase.seconds for phase in picked),
        statistics.median(phase.cpu_seconds for phase in picked),
        tuple(call for phase in picked for call in phase.calls),
    )
