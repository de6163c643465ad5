"""amqp1q measurements beyond throughput: tracing overhead, consumer memory, latency.

One subcommand per measurement; each prints one JSON line ({"measurement": ..., ...}).
benchmarks/run.py runs them (benchmarks/extras.py), each against a fresh durable queue.

    # push N and consume N (each job through job.process()), with or without the OTel SDK
    python amqp1q_extras.py tracing --queue q --n 20000 --tracing off
    python amqp1q_extras.py tracing --queue q --n 20000 --tracing on
    python amqp1q_extras.py tracing --queue q --n 20000 --tracing ratio --pattern push

    # fill a queue, then in a fresh process hold a consumer on it while its handler sleeps
    python amqp1q_extras.py fill --queue q --n 100000
    python amqp1q_extras.py memory --queue q --seconds 10

    # a producer at a steady rate, one push per job, and a consumer on its own connection
    python amqp1q_extras.py latency --queue q --rate 1000 --seconds 10 --warmup 1

``tracing on`` installs the OpenTelemetry SDK: a TracerProvider with the SDK's default sampler
(``ParentBased(ALWAYS_ON)``: every span recorded) and a BatchSpanProcessor feeding an exporter
that only counts spans, so what is measured is amqp1q's tracing and the SDK's span handling, not
an exporter's I/O. ``tracing ratio`` does the same with ``ParentBased(TraceIdRatioBased(
--ratio))``: a tenth of the traces recorded by default, the rest non-recording spans; a consumer
span follows its job's creation context, so with ``push_many`` a whole batch is recorded or not
(the fraction recorded is reported). The global provider can be set once per process, hence one
process per setting. ``--pattern push`` pushes with concurrent ``push()`` calls (one task and
one ``send`` span per job, --in-flight at once) instead of ``push_many``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import os
import resource
import statistics
import time
from collections.abc import Sequence
from typing import Any

from amqp1q_bench import concurrently  # (this script's directory is on sys.path)

from amqp1q import Job, JobQueue

PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
MB = 1024 * 1024


# -- tracing ------------------------------------------------------------------------------------


def install_sdk(setting: str, ratio: float) -> Any:
    """The OTel SDK as the global tracer provider; returns the counting exporter."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased, TraceIdRatioBased

    class CountingExporter(SpanExporter):
        """Drops every span; counts them, to show none were lost on the way."""

        def __init__(self) -> None:
            self.spans = 0

        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            self.spans += len(spans)
            return SpanExportResult.SUCCESS

        def shutdown(self) -> None:
            pass

    exporter = CountingExporter()
    root = ALWAYS_ON if setting == "on" else TraceIdRatioBased(ratio)
    provider = TracerProvider(sampler=ParentBased(root))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return exporter


def flush_spans() -> None:
    from opentelemetry import trace

    flush = getattr(trace.get_tracer_provider(), "force_flush", None)
    if flush is not None:
        flush()


async def tracing(args: argparse.Namespace) -> dict[str, Any]:
    exporter = install_sdk(args.tracing, args.ratio) if args.tracing != "off" else None
    n, payload = args.n, b"x" * args.size
    queue = JobQueue.from_url(args.url, queue=args.queue, prefetch=args.prefetch)
    async with queue:
        cpu0, wall0 = time.process_time(), time.perf_counter()
        if args.pattern == "push":

            async def push(_: int) -> None:
                await queue.push(Job("bench", payload))

            await concurrently(n, args.in_flight, "bounded", push)
        else:
            for first in range(0, n, args.batch):
                count = min(args.batch, n - first)
                await queue.push_many([Job("bench", payload) for _ in range(count)])
        if exporter is not None:
            flush_spans()  # the processor's export work counts towards the phase
        push_wall, push_cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        push_spans = exporter.spans if exporter is not None else 0

        cpu0, wall0 = time.process_time(), time.perf_counter()
        got = 0
        async with queue.consume() as consumer:
            async for job in consumer:
                async with job.process():  # the consumer span is opened here
                    pass
                got += 1
                if got == n:
                    break
        if exporter is not None:
            flush_spans()
        consume_wall, consume_cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return {
        "measurement": "tracing",
        "tracing": args.tracing,
        "pattern": args.pattern,
        "n": n,
        "push_per_s": round(n / push_wall, 1),
        "consume_per_s": round(n / consume_wall, 1),
        "push_cpu_us_per_job": round(push_cpu / n * 1e6, 2),
        "consume_cpu_us_per_job": round(consume_cpu / n * 1e6, 2),
        "push_spans": push_spans,
        "consume_spans": exporter.spans - push_spans if exporter is not None else 0,
    }


# -- memory -------------------------------------------------------------------------------------


async def fill(args: argparse.Namespace) -> dict[str, Any]:
    payload = b"x" * args.size
    queue = JobQueue.from_url(args.url, queue=args.queue)
    started = time.perf_counter()
    async with queue:
        for first in range(0, args.n, args.batch):
            count = min(args.batch, args.n - first)
            await queue.push_many([Job("bench", payload) for _ in range(count)])
        pushed = queue.stats().pushed
    took = time.perf_counter() - started
    return {"measurement": "fill", "n": pushed, "push_per_s": round(pushed / took, 1)}


def rss_bytes() -> int:
    """Resident set size now (Linux); elsewhere the peak so far."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * PAGE
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


async def memory(args: argparse.Namespace) -> dict[str, Any]:
    """Baseline RSS with the queue open, then a consumer whose handler takes one job and sleeps;
    RSS every --interval s for --seconds while the rest of the jobs wait in the queue."""
    queue = JobQueue.from_url(args.url, queue=args.queue, prefetch=args.prefetch)
    async with queue:
        await asyncio.sleep(0.2)  # let the connection settle
        gc.collect()
        baseline = rss_bytes()
        samples: list[float] = []
        holding = asyncio.Event()

        async def handler() -> None:
            async with queue.consume() as consumer:
                async for job in consumer:
                    async with job.process():  # released when cancelled at the end
                        holding.set()
                        await asyncio.sleep(3600)  # hold it: no settlement, no credit used

        task = asyncio.create_task(handler())
        try:
            await asyncio.wait_for(holding.wait(), timeout=30)
            max_in_flight = 0
            deadline = time.monotonic() + args.seconds
            while True:
                samples.append(round((rss_bytes() - baseline) / MB, 3))
                max_in_flight = max(max_in_flight, queue.stats().in_flight)
                if time.monotonic() >= deadline:
                    break
                await asyncio.sleep(args.interval)
            stats = queue.stats()
        finally:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
    peak = max(samples)
    return {
        "measurement": "memory",
        "prefetch": args.prefetch,
        "seconds": args.seconds,
        "baseline_rss_mb": round(baseline / MB, 2),
        "peak_rss_mb": round(baseline / MB + peak, 2),
        "growth_mb": round(peak, 2),
        "growth_samples_mb": samples,
        "consumed": stats.consumed,
        "max_in_flight": max_in_flight,
    }


# -- latency ------------------------------------------------------------------------------------


def percentile(ordered: list[float], p: float) -> float:
    """Nearest-rank percentile of an ordered, non-empty list."""
    rank = max(1, min(len(ordered), math.ceil(p / 100 * len(ordered))))
    return ordered[rank - 1]


async def latency(args: argparse.Namespace) -> dict[str, Any]:
    """Push one job per call at --rate, paced to absolute deadlines; the send time
    (perf_counter_ns, taken just before push()) rides in the body; a consumer on its own
    connection records handler entry minus that."""
    total = round(args.rate * args.seconds)
    filler = b"x" * max(0, args.size - 20)
    producer = JobQueue.from_url(args.url, queue=args.queue)
    receiver = JobQueue.from_url(args.url, queue=args.queue, prefetch=args.prefetch)
    delays: list[float] = []  # ms, measured jobs only
    confirms: list[float] = []  # ms, push() call to its return, measured jobs only
    failures = 0
    received = 0
    all_received = asyncio.Event()

    async with producer, receiver:
        warm_until = 0  # perf_counter_ns before which a job is warm-up

        async def consume() -> None:
            nonlocal received
            async with receiver.consume() as consumer:
                async for job in consumer:
                    now = time.perf_counter_ns()
                    sent = int(job.body[:20])
                    if sent >= warm_until:
                        delays.append((now - sent) / 1e6)
                    await job.ack()
                    received += 1
                    if received == total:
                        all_received.set()
                        return

        async def push_one() -> None:
            nonlocal failures
            sent = time.perf_counter_ns()
            try:
                await producer.push(Job("latency", b"%020d" % sent + filler))
            except Exception:
                failures += 1
                raise
            if sent >= warm_until:
                confirms.append((time.perf_counter_ns() - sent) / 1e6)

        consumer_task = asyncio.create_task(consume())
        await asyncio.sleep(0.5)  # the consumer attaches and grants its credit
        pushes: set[asyncio.Task[None]] = set()
        start = time.perf_counter()
        warm_until = time.perf_counter_ns() + round(args.warmup * 1e9)
        interval = 1 / args.rate
        lateness: list[float] = []
        for i in range(total):
            due = start + i * interval
            wait = due - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            lateness.append(time.perf_counter() - due)
            task = asyncio.create_task(push_one())
            pushes.add(task)
            task.add_done_callback(pushes.discard)
        sent_wall = time.perf_counter() - start
        if pushes:
            await asyncio.gather(*pushes, return_exceptions=True)
        try:
            await asyncio.wait_for(all_received.wait(), timeout=30)
        finally:
            consumer_task.cancel()
            try:
                await consumer_task
            except asyncio.CancelledError:
                pass

    delays.sort()
    confirms.sort()
    lateness.sort()

    def ms(values: list[float], p: float) -> float | None:
        return round(percentile(values, p), 3) if values else None

    return {
        "measurement": "latency",
        "rate": args.rate,
        "achieved_per_s": round(total / sent_wall, 1),
        "jobs": len(delays),
        "warmup_s": args.warmup,
        "p50_ms": ms(delays, 50),
        "p90_ms": ms(delays, 90),
        "p99_ms": ms(delays, 99),
        "max_ms": round(delays[-1], 3) if delays else None,
        "mean_ms": round(statistics.fmean(delays), 3) if delays else None,
        "confirm_p50_ms": ms(confirms, 50),
        "confirm_p99_ms": ms(confirms, 99),
        "pacing_late_p99_ms": round(percentile(lateness, 99) * 1e3, 3) if lateness else None,
        "push_failures": failures,
        "received": received,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default="amqp://guest:guest@127.0.0.1:5672")
    common.add_argument("--queue", required=True)
    common.add_argument("--size", type=int, default=1024, help="body bytes (1024)")
    common.add_argument("--prefetch", type=int, default=100, help="consumer credit (100)")
    common.add_argument("--batch", type=int, default=1000, help="jobs per push_many call")
    sub = parser.add_subparsers(dest="measurement", required=True)
    p = sub.add_parser("tracing", parents=[common], help="push/consume with or without the SDK")
    p.add_argument("--n", type=int, default=20_000)
    p.add_argument("--tracing", choices=["off", "on", "ratio"], required=True)
    p.add_argument("--ratio", type=float, default=0.1, help="TraceIdRatioBased's, for ratio")
    p.add_argument("--pattern", choices=["push_many", "push"], default="push_many")
    p.add_argument("--in-flight", type=int, default=1000, help="push() calls at once")
    p = sub.add_parser("fill", parents=[common], help="push --n jobs and exit")
    p.add_argument("--n", type=int, default=100_000)
    p = sub.add_parser("memory", parents=[common], help="RSS while a consumer's handler sleeps")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--interval", type=float, default=0.5)
    p = sub.add_parser("latency", parents=[common], help="push-to-handler latency at a rate")
    p.add_argument("--rate", type=float, default=1000.0, help="jobs per second (1000)")
    p.add_argument("--seconds", type=float, default=10.0, help="how long to push (10)")
    p.add_argument("--warmup", type=float, default=1.0, help="first seconds not counted (1)")
    args = parser.parse_args()
    run = {"tracing": tracing, "fill": fill, "memory": memory, "latency": latency}
    result = asyncio.run(run[args.measurement](args))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
