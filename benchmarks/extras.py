"""The benchmark run's extra measurements of amqp1q (issue 8), driven from run.py.

Each runs benchmarks/clients/amqp1q_extras.py in its own process against a fresh durable queue
(declared and deleted through run.py's Management helper):

- tracing overhead: push N and consume N (through ``job.process()``) with tracing off, then on
  (the OpenTelemetry SDK with a BatchSpanProcessor and a span-dropping exporter, ALWAYS_ON), in
  separate processes, every round (which goes first alternates); the ratio of the medians;
- consumer memory: --memory-jobs jobs pushed by one process, then in a fresh process a consumer
  (prefetch as the run's) whose handler takes one job and sleeps; its RSS growth over
  --memory-seconds, while the driver watches the broker's count of jobs the consumer holds
  (``messages_unacknowledged``); once per run;
- latency: a producer pushing one job per call at --latency-rate, and a consumer on its own
  connection in the same process; push-to-handler latency percentiles, every round.
"""

from __future__ import annotations

import argparse
import functools
import os
import subprocess
import sys
import time
import urllib.error
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import common
from common import fmt, median

if TYPE_CHECKING:
    from run import Management

SCRIPT = common.CLIENTS_DIR / "amqp1q_extras.py"

TRACING_TARGET = 0.7  # tracing on ÷ off, at least
BATCH = 1000  # jobs per push_many call in the tracing runs (the client script's default)
MEMORY_TARGET_MB = 10.0  # growth, below
LATENCY_TARGETS_MS = {"p50_ms": 2.0, "p99_ms": 10.0}  # below
TRACING_METRICS = common.METRICS  # the tracing runs report what every client run does
LATENCY_METRICS = [
    "achieved_per_s",
    "jobs",
    "p50_ms",
    "p90_ms",
    "p99_ms",
    "max_ms",
    "confirm_p50_ms",
    "pacing_late_p99_ms",
]


@dataclass
class Extras:
    tracing: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: {"off": [], "on": []})
    memory: dict[str, Any] | None = None
    latency: list[dict[str, Any]] = field(default_factory=list)
    errors: dict[str, list[str]] = field(default_factory=dict)
    sdk_version: str | None = None

    def failed(self, what: str, error: str) -> None:
        self.errors.setdefault(what, []).append(error)
        print(f"run.py: extras {what} FAILED: {error}", file=sys.stderr)

    def to_json(self) -> dict[str, Any]:
        return {
            "tracing": {
                setting: {
                    "median": {m: median(runs, m) for m in TRACING_METRICS},
                    "runs": runs,
                }
                for setting, runs in self.tracing.items()
            },
            "memory": self.memory,
            "latency": {
                "median": {m: median(self.latency, m) for m in LATENCY_METRICS},
                "runs": self.latency,
            },
            "errors": self.errors,
            "opentelemetry_sdk": self.sdk_version,
        }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("extras (tracing overhead, consumer memory, latency)")
    group.add_argument(
        "--extras",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run the extra measurements after the clients (default: on)",
    )
    group.add_argument("--memory-jobs", type=int, default=100_000, help="jobs waiting (100000)")
    group.add_argument("--memory-seconds", type=float, default=10.0, help="RSS sampled for (10)")
    group.add_argument("--latency-rate", type=float, default=1000.0, help="jobs/s (1000)")
    group.add_argument("--latency-seconds", type=float, default=10.0, help="pushing for (10)")
    group.add_argument("--latency-warmup", type=float, default=1.0, help="not counted (1)")


def run_script(
    args: argparse.Namespace,
    argv: list[str],
    *,
    expect: str,
    while_running: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Run amqp1q_extras.py with ``argv``; its JSON line, or RuntimeError. ``while_running`` is
    called about once a second until the process ends."""
    env = common.child_env()  # measure this checkout even when amqp1q isn't installed
    try:
        proc = subprocess.Popen(
            [args.python, str(SCRIPT), *argv, "--url", args.url, "--size", str(args.size)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=common.REPO,
        )
    except OSError as e:
        raise RuntimeError(f"could not start: {e}") from e
    deadline = time.monotonic() + args.timeout
    try:
        while while_running is not None and proc.poll() is None:
            if time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(proc.args, args.timeout)
            while_running()
            time.sleep(1.0)
        stdout, stderr = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired as e:
        proc.kill()
        proc.communicate()
        raise RuntimeError(f"timed out after {args.timeout:g} s") from e
    result, line = common.last_json_line(proc.returncode, stdout, stderr)
    if result.get("measurement") != expect:
        raise RuntimeError(f"expected a {expect} result, got {line[:200]!r}")
    return result


def on_fresh_queue(
    mgmt: Management, queue: str, work: Callable[[], dict[str, Any]]
) -> dict[str, Any]:
    mgmt.declare_queue(queue)
    try:
        return work()
    finally:
        try:
            mgmt.delete_queue(queue)
        except (OSError, urllib.error.URLError) as e:
            print(f"run.py: could not delete queue {queue}: {e}", file=sys.stderr)


def run_tracing(args: argparse.Namespace, mgmt: Management, round_no: int, out: Extras) -> None:
    order = ["off", "on"] if round_no % 2 else ["on", "off"]
    for setting in order:
        queue = f"amqp1q-bench-tracing-{setting}-{os.getpid()}-{round_no}"
        argv = ["tracing", "--tracing", setting, "--queue", queue, "--n", str(args.n)]
        argv += ["--batch", str(BATCH)]
        argv += ["--prefetch", str(args.prefetch)]
        try:
            work = functools.partial(run_script, args, argv, expect="tracing")
            result = on_fresh_queue(mgmt, queue, work)
        except (RuntimeError, OSError, urllib.error.URLError) as e:
            out.failed(f"tracing {setting}", str(e))
            continue
        result["round"] = round_no
        out.tracing[setting].append(result)
        label = f"round {round_no}/{args.rounds} tracing {setting:<4}"
        print(f"run.py: {label}  {common.progress(result)}", file=sys.stderr)


def run_latency(args: argparse.Namespace, mgmt: Management, round_no: int, out: Extras) -> None:
    queue = f"amqp1q-bench-latency-{os.getpid()}-{round_no}"
    argv = ["latency", "--queue", queue, "--prefetch", str(args.prefetch)]
    argv += ["--rate", f"{args.latency_rate:g}", "--seconds", f"{args.latency_seconds:g}"]
    argv += ["--warmup", f"{args.latency_warmup:g}"]
    try:
        result = on_fresh_queue(mgmt, queue, lambda: run_script(args, argv, expect="latency"))
    except (RuntimeError, OSError, urllib.error.URLError) as e:
        out.failed("latency", str(e))
        return
    result["round"] = round_no
    out.latency.append(result)
    print(
        f"run.py: round {round_no}/{args.rounds} latency        "
        f"{result['achieved_per_s']:,.0f}/s  p50 {result['p50_ms']} ms  "
        f"p99 {result['p99_ms']} ms  max {result['max_ms']} ms",
        file=sys.stderr,
    )


def run_memory(args: argparse.Namespace, mgmt: Management, out: Extras) -> None:
    queue = f"amqp1q-bench-memory-{os.getpid()}"
    path = f"/api/queues/{mgmt.vhost}/{quote(queue, safe='')}"
    held: list[int] = []  # the broker's messages_unacknowledged, as its stats refresh
    ready: list[int] = []

    def watch() -> None:
        try:
            info = mgmt.call("GET", path)
        except (OSError, urllib.error.URLError):
            return
        if isinstance(info.get("messages_unacknowledged"), int):
            held.append(info["messages_unacknowledged"])
            ready.append(info.get("messages_ready", 0))

    def work() -> dict[str, Any]:
        fill = ["fill", "--queue", queue, "--n", str(args.memory_jobs)]
        filled = run_script(args, fill, expect="fill")
        print(
            f"run.py: memory: {filled['n']:,} jobs pushed ({filled['push_per_s']:,.0f}/s)",
            file=sys.stderr,
        )
        hold = ["memory", "--queue", queue, "--prefetch", str(args.prefetch)]
        hold += ["--seconds", f"{args.memory_seconds:g}"]
        result = run_script(args, hold, expect="memory", while_running=watch)
        result["jobs_waiting"] = filled["n"]
        return result

    try:
        result = on_fresh_queue(mgmt, queue, work)
    except (RuntimeError, OSError, urllib.error.URLError) as e:
        out.failed("memory", str(e))
        return
    # The management stats lag (5 s by default); the first reading may predate the consumer.
    result["broker_unacked_max"] = max(held) if held else None
    result["broker_ready_min"] = min(ready) if ready else None
    out.memory = result
    print(
        f"run.py: memory: RSS {result['baseline_rss_mb']:.1f} MB -> peak "
        f"{result['peak_rss_mb']:.1f} MB (+{result['growth_mb']:.2f} MB); consumer held "
        f"{result['broker_unacked_max']} (broker), {result['max_in_flight']} in hand",
        file=sys.stderr,
    )


def run(args: argparse.Namespace, mgmt: Management) -> Extras:
    """Tracing and latency every round, then memory once."""
    sdk = common.dist_versions(args.python, ["opentelemetry-sdk"]).get("opentelemetry-sdk")
    out = Extras(sdk_version=sdk)
    for round_no in range(1, args.rounds + 1):
        run_tracing(args, mgmt, round_no, out)
        run_latency(args, mgmt, round_no, out)
    run_memory(args, mgmt, out)
    return out


# -- markdown ----------------------------------------------------------------------------------


def verdict(met: bool | None) -> str:
    return "n/a" if met is None else ("**met**" if met else "**missed**")


def render_tracing(out: Extras, args: argparse.Namespace) -> list[str]:
    off, on = out.tracing["off"], out.tracing["on"]
    lines = [
        "## Tracing overhead",
        "",
        f"amqp1q pushing {args.n:,} jobs (push_many, 1,000 a call) and consuming them through "
        "`job.process()`, as above, in one process with no OpenTelemetry SDK and in another with "
        f"the SDK{f' {out.sdk_version}' if out.sdk_version else ''} installed (TracerProvider, "
        "sampler ALWAYS_ON, BatchSpanProcessor, an exporter that drops the spans): one `send` "
        "span per push_many call and one `process` span per job. Median of "
        f"{args.rounds} round(s); target: tracing on ÷ off at least {TRACING_TARGET}x.",
        "",
    ]
    if not off or not on:
        errors = out.errors.get("tracing on", []) + out.errors.get("tracing off", [])
        return [*lines, f"**failed**: {(errors or ['no result'])[-1].replace('|', '/')}", ""]
    lines += common.table_head("tracing")
    for name, runs in (("off", off), ("on", on)):
        cells = common.metric_cells(functools.partial(median, runs))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    ratios = []
    for metric in ("push_per_s", "consume_per_s"):
        a, b = median(on, metric), median(off, metric)
        ratios.append(None if a is None or not b else a / b)
    cells = [f"{r:.2f}x {verdict(r >= TRACING_TARGET)}" if r is not None else "n/a" for r in ratios]
    lines.append(f"| **on ÷ off** | {cells[0]} | {cells[1]} | | |")
    exported = sum(r["push_spans"] + r["consume_spans"] for r in on)
    # One send span per push_many call of BATCH jobs, one process span per job.
    expected = sum(-(-r["n"] // BATCH) + r["n"] for r in on)
    lost = expected - exported
    note = f"{lost:,} dropped by the BatchSpanProcessor's queue" if lost else "none lost"
    lines += ["", f"Spans exported with tracing on: {exported:,} of {expected:,} ({note}).", ""]
    return lines


def render_memory(out: Extras, args: argparse.Namespace) -> list[str]:
    m = out.memory
    waiting = m["jobs_waiting"] if m else args.memory_jobs
    lines = [
        f"## Consumer memory with {waiting:,} jobs waiting",
        "",
        f"{waiting:,} jobs of {args.size} bytes pushed by one process; then, in a fresh one, a "
        f"consumer with prefetch {args.prefetch} whose handler takes one job and sleeps. "
        f"Growth = the process's peak RSS over {args.memory_seconds:g} s (sampled every 0.5 s) "
        "minus its RSS with the queue open, before the consumer opened. Target: growth below "
        f"{MEMORY_TARGET_MB:g} MB.",
        "",
    ]
    if m is None:
        errors = out.errors.get("memory", ["no result"])
        return [*lines, f"**failed**: {errors[-1].replace('|', '/')}", ""]
    unacked = m.get("broker_unacked_max")
    bound = (
        "n/a"
        if unacked is None
        else f"{unacked} (≤ {args.prefetch}: {verdict(unacked <= args.prefetch)})"
    )
    lines += [
        "| baseline RSS MB | peak RSS MB | growth MB | jobs held (broker's unacked count) "
        "| jobs in the handler |",
        "|---:|---:|---:|---:|---:|",
        f"| {m['baseline_rss_mb']:.1f} | {m['peak_rss_mb']:.1f} "
        f"| {m['growth_mb']:.2f} {verdict(m['growth_mb'] < MEMORY_TARGET_MB)} | {bound} "
        f"| {m['max_in_flight']} |",
        "",
    ]
    return lines


def render_latency(out: Extras, args: argparse.Namespace) -> list[str]:
    runs = out.latency
    lines = [
        f"## Latency at {args.latency_rate:,.0f} jobs/s",
        "",
        f"One process: a producer pushing one {args.size}-byte job per `push()` call, paced to "
        f"absolute deadlines at {args.latency_rate:,.0f}/s for {args.latency_seconds:g} s, and a "
        f"consumer (prefetch {args.prefetch}, acking each job) on its own connection. Latency = "
        "handler entry minus the moment `push()` was called (`perf_counter`), the first "
        f"{args.latency_warmup:g} s not counted; push confirm = `push()` call to its return; "
        "producer late = how far past its deadline the producer got to a push (the event loop "
        "busy, or the process not scheduled). "
        f"Median of {args.rounds} round(s); targets: p50 below "
        f"{LATENCY_TARGETS_MS['p50_ms']:g} ms, p99 below {LATENCY_TARGETS_MS['p99_ms']:g} ms.",
        "",
    ]
    if not runs:
        errors = out.errors.get("latency", ["no result"])
        return [*lines, f"**failed**: {errors[-1].replace('|', '/')}", ""]
    p50, p99 = median(runs, "p50_ms"), median(runs, "p99_ms")
    p50_met = None if p50 is None else p50 < LATENCY_TARGETS_MS["p50_ms"]
    p99_met = None if p99 is None else p99 < LATENCY_TARGETS_MS["p99_ms"]
    lines += [
        "| achieved jobs/s | jobs measured | p50 ms | p90 ms | p99 ms | max ms "
        "| push confirm p50 ms | producer late p99 ms |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {fmt(median(runs, 'achieved_per_s'), ',.0f')} "
        f"| {fmt(median(runs, 'jobs'), ',.0f')} "
        f"| {fmt(p50, '.2f')} {verdict(p50_met)} "
        f"| {fmt(median(runs, 'p90_ms'), '.2f')} "
        f"| {fmt(p99, '.2f')} {verdict(p99_met)} "
        f"| {fmt(median(runs, 'max_ms'), '.2f')} "
        f"| {fmt(median(runs, 'confirm_p50_ms'), '.2f')} "
        f"| {fmt(median(runs, 'pacing_late_p99_ms'), '.2f')} |",
        "",
    ]
    return lines


def render(out: Extras, args: argparse.Namespace) -> str:
    lines = ["", *render_tracing(out, args), *render_memory(out, args), *render_latency(out, args)]
    return "\n".join(lines)
