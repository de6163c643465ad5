"""``amqp1q bench`` and ``amqp1q demo``: push N jobs, consume them all, and say how fast.

One loop serves both commands. :func:`run` pushes ``jobs`` jobs in ``push_many`` calls of
``batch`` from ``producers`` tasks, then consumes and acks them with ``consumers`` consumers, for
``rounds`` rounds, timing each phase by the wall clock, by this process's CPU time
(``time.process_time``: user + sys) and, for pushes, per call. A status line on stderr shows the
progress; ``demo`` prints a line per phase, ``bench`` a table. This is a quick check of one setup;
the side-by-side comparison with other clients is ``benchmarks/run.py``.

Both commands ack every job they consume, so a queue given by ``--url`` must be empty: they look
first (and release what they find), and stop at any job that is not their own.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from typing import Any

import attrs

from ._broker_child import BrokerDidNotStart, broker_process
from ._display import StatusLine, Style, plain_progress, progress_line, table, ticking
from ._job import Job
from ._queue import JobQueue

__all__ = [
    "BenchAborted",
    "Phase",
    "Plan",
    "bench",
    "demo",
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
        suffix = f" {round_}/{plan.rounds}" if plan.rounds > 1 else ""
        for phase in (
            await _push(
                queue, plan, round_, f"{prefix}{round_}-", status, "push" + suffix, summaries
            ),
            await _consume(queue, plan, round_, prefix, status, "consume" + suffix, summaries),
        ):
            phases.append(phase)
            if on_phase is not None:
                on_phase(phase)
    return phases


async def _push(
    queue: JobQueue,
    plan: Plan,
    round_: int,
    prefix: str,
    status: StatusLine | None,
    label: str,
    summary: bool,
) -> Phase:
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

    cpu, wall = time.process_time(), time.perf_counter()
    async with _progress(status, label, n, lambda: pushed, summary):
        await _until(stop, [produce() for _ in range(plan.producers)])
    seconds, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return Phase("push", round_, n, seconds, cpu, tuple(calls))


async def _consume(
    queue: JobQueue,
    plan: Plan,
    round_: int,
    prefix: str,
    status: StatusLine | None,
    label: str,
    summary: bool,
) -> Phase:
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

    cpu, wall = time.process_time(), time.perf_counter()
    async with _progress(status, label, n, lambda: acked, summary):
        await _until(stop, [drain() for _ in range(plan.consumers)])
    seconds, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return Phase("consume", round_, n, seconds, cpu)


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


# -- the commands --------------------------------------------------------------------------------


def plan_of(args: argparse.Namespace) -> Plan:
    return Plan(
        jobs=args.jobs,
        size=args.size,
        prefetch=args.prefetch,
        rounds=getattr(args, "rounds", 1),
        batch=getattr(args, "batch", 500),
        producers=getattr(args, "producers", 1),
        consumers=getattr(args, "consumers", 1),
    )


async def demo(args: argparse.Namespace) -> int:
    """Push and consume on the embedded broker in this process: a line per phase on stdout."""
    return await _command("demo", args, queue="jobs", own_process=False)


async def bench(args: argparse.Namespace) -> int:
    """Push and consume on the embedded broker in a process of its own: a table on stdout."""
    return await _command("bench", args, queue="bench", own_process=True)


async def _command(name: str, args: argparse.Namespace, *, queue: str, own_process: bool) -> int:
    plan, out = plan_of(args), sys.stdout
    phases: list[Phase] = []

    def report(phase: Phase) -> None:
        phases.append(phase)
        if name == "demo":
            word = {"push": "pushed", "consume": "consumed"}[phase.name]
            print(done_line(f"{word:>8}", phase.jobs, phase.seconds), file=out)

    try:
        async with (
            _target(args.url, queue, own_process=own_process) as (url, where),
            JobQueue.from_url(url, prefetch=plan.prefetch) as jobs,
        ):
            what = f"{plan.jobs:,} jobs of {plan.size:,} bytes through {jobs.url}{where}"
            print(f"amqp1q {name}: {what}", file=out, flush=True)
            if name == "bench":
                print(
                    f"push_many calls of {plan.batch:,} jobs from "
                    f"{_many(plan.producers, 'producer')}; {_many(plan.consumers, 'consumer')} "
                    f"with prefetch {plan.prefetch:,}; {_many(plan.rounds, 'round')}",
                    file=out,
                    flush=True,
                )
            status = StatusLine(sys.stderr)
            await run(
                jobs,
                plan,
                status=status,
                check_empty=bool(args.url),
                on_phase=report,
                summaries=name == "bench",  # demo's result lines go to stdout, once
            )
    except (BenchAborted, BrokerDidNotStart) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if name == "bench":
        unicode = Style.detect(out).unicode
        broker = " (the embedded broker's own process is not counted)" if not args.url else ""
        print(
            f"\n{results_table(phases, unicode=unicode)}\n\n"
            f"CPU {'µ' if unicode else 'u'}s/job: this process's user+sys CPU time per job"
            f"{broker}.\ncall p50/p99: one push_many call of {plan.batch:,} jobs, from the call "
            "until the broker accepted the last of them.",
            file=out,
        )
    return 0


def _many(count: int, thing: str) -> str:
    return f"{count:,} {thing}{'' if count == 1 else 's'}"


@contextlib.asynccontextmanager
async def _target(
    url: str | None, queue: str, *, own_process: bool
) -> AsyncIterator[tuple[str, str]]:
    """``(queue URL, where it is)``: ``url``, else the embedded broker, here or in a process."""
    if url:
        yield url, ""
    elif own_process:
        async with broker_process() as broker:
            where = broker.split("://", 1)[1]
            yield f"{broker}/{queue}", f" (the embedded broker on {where}, in its own process)"
    else:
        from .testing import Broker

        async with Broker() as embedded:
            where = f" (the embedded broker on {embedded.host}:{embedded.port}, Proton adapter)"
            yield f"{embedded.url}/{queue}", where
