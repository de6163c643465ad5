"""The benchmark run's extra measurements of amqp1q (issues 8 and 17), driven from run.py.

Each runs benchmarks/clients/amqp1q_extras.py in its own process against a fresh queue (a
:class:`brokers.Target`: tracing and latency on --extras-broker, RabbitMQ by default; memory on
RabbitMQ, whose management API counts the jobs a consumer holds):

- tracing overhead: push N and consume N (through ``job.process()``) with tracing off, on (the
  OpenTelemetry SDK with its default sampler, ``ParentBased(ALWAYS_ON)``, a BatchSpanProcessor
  and a span-dropping exporter) and ratio-sampled (``ParentBased(TraceIdRatioBased(0.1))``), in
  separate processes, every round (the order rotates), for each push pattern of
  --tracing-patterns (``push_many``: one ``send`` span per call of 1,000; ``push``: concurrent
  ``push()`` calls, one span per job, each job its own trace); the ratio of the medians;
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
from typing import Any
from urllib.parse import quote

import common
from brokers import TITLES, Broker, RabbitMQ, Target
from common import fmt, median

SCRIPT = common.CLIENTS_DIR / "amqp1q_extras.py"

#: Tracing on ÷ off, at least, for each setting (issue 8: always-on; issue 17: both).
TRACING_TARGETS = {"on": 0.7, "ratio": 0.9}
TRACING_SETTINGS = ["off", "on", "ratio"]
TRACING_NAMES = {
    "off": "off (no SDK)",
    "on": "always-on",
    "ratio": "ParentBased(TraceIdRatioBased(0.1))",
}
TRACING_PATTERNS = {"push_many": "push_many", "push": "concurrent push()"}
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
    #: (pattern, setting) -> runs
    tracing: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)
    memory: dict[str, Any] | None = None
    latency: list[dict[str, Any]] = field(default_factory=list)
    errors: dict[str, list[str]] = field(default_factory=dict)
    sdk_version: str | None = None
    broker: str = ""

    def failed(self, what: str, error: str) -> None:
        self.errors.setdefault(what, []).append(error)
        print(f"run.py: extras {what} FAILED: {error}", file=sys.stderr)

    def to_json(self) -> dict[str, Any]:
        return {
            "broker": self.broker,
            "tracing": {
                f"{pattern}/{setting}": {
                    "median": {m: median(runs, m) for m in TRACING_METRICS},
                    "runs": runs,
                }
                for (pattern, setting), runs in self.tracing.items()
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
    group.add_argument(
        "--extras-broker",
        default="rabbitmq",
        help="the broker of the tracing and latency runs (rabbitmq; memory is always RabbitMQ)",
    )
    group.add_argument(
        "--tracing-patterns",
        default="push_many,push",
        help="push patterns of the tracing runs: push_many, push or both (default both)",
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
    url: str,
    expect: str,
    while_running: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Run amqp1q_extras.py with ``argv``; its JSON line, or RuntimeError. ``while_running`` is
    called about once a second until the process ends."""
    env = common.child_env()  # measure this checkout even when amqp1q isn't installed
    try:
        proc = subprocess.Popen(
            [args.python, str(SCRIPT), *argv, "--url", url, "--size", str(args.size)],
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
    broker: Broker, queue: str, work: Callable[[Target], dict[str, Any]]
) -> dict[str, Any]:
    with broker.target(queue) as target:
        return work(target)


def run_tracing(
    args: argparse.Namespace, broker: Broker, round_no: int, patterns: list[str], out: Extras
) -> None:
    shift = (round_no - 1) % len(TRACING_SETTINGS)
    order = TRACING_SETTINGS[shift:] + TRACING_SETTINGS[:shift]
    for pattern in patterns:
        for setting in order:
            what = f"tracing {pattern} {setting}"
            queue = f"amqp1q-bench-tracing-{pattern}-{setting}-{os.getpid()}-{round_no}"
            argv = ["tracing", "--tracing", setting, "--pattern", pattern, "--queue", queue]
            argv += ["--n", str(args.n), "--batch", str(BATCH), "--prefetch", str(args.prefetch)]
            argv += ["--in-flight", str(args.in_flight)]

            def work(target: Target, argv: list[str] = argv) -> dict[str, Any]:
                return run_script(args, argv, url=target.url, expect="tracing")

            try:
                result = on_fresh_queue(broker, queue, work)
            except (RuntimeError, OSError, urllib.error.URLError) as e:
                out.failed(what, str(e))
                continue
            result["round"] = round_no
            out.tracing.setdefault((pattern, setting), []).append(result)
            label = f"round {round_no}/{args.rounds} tracing {pattern:<9} {setting:<5}"
            print(f"run.py: {label} {common.progress(result)}", file=sys.stderr)


def run_latency(args: argparse.Namespace, broker: Broker, round_no: int, out: Extras) -> None:
    queue = f"amqp1q-bench-latency-{os.getpid()}-{round_no}"
    argv = ["latency", "--queue", queue, "--prefetch", str(args.prefetch)]
    argv += ["--rate", f"{args.latency_rate:g}", "--seconds", f"{args.latency_seconds:g}"]
    argv += ["--warmup", f"{args.latency_warmup:g}"]
    try:
        result = on_fresh_queue(
            broker, queue, lambda t: run_script(args, argv, url=t.url, expect="latency")
        )
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


def run_memory(args: argparse.Namespace, rabbitmq: RabbitMQ, out: Extras) -> None:
    mgmt = rabbitmq.mgmt
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

    def work(target: Target) -> dict[str, Any]:
        fill = ["fill", "--queue", queue, "--n", str(args.memory_jobs)]
        filled = run_script(args, fill, url=target.url, expect="fill")
        print(
            f"run.py: memory: {filled['n']:,} jobs pushed ({filled['push_per_s']:,.0f}/s)",
            file=sys.stderr,
        )
        hold = ["memory", "--queue", queue, "--prefetch", str(args.prefetch)]
        hold += ["--seconds", f"{args.memory_seconds:g}"]
        result = run_script(args, hold, url=target.url, expect="memory", while_running=watch)
        result["jobs_waiting"] = filled["n"]
        return result

    try:
        result = on_fresh_queue(rabbitmq, queue, work)
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


def run(args: argparse.Namespace, ready: dict[str, Broker]) -> Extras:
    """Tracing and latency every round, on --extras-broker, then memory once, on RabbitMQ."""
    sdk = common.dist_versions(args.python, ["opentelemetry-sdk"]).get("opentelemetry-sdk")
    out = Extras(sdk_version=sdk, broker=TITLES.get(args.extras_broker, args.extras_broker))
    patterns = [p.strip() for p in args.tracing_patterns.split(",") if p.strip()]
    unknown = [p for p in patterns if p not in TRACING_PATTERNS]
    if unknown:
        out.failed("tracing", f"unknown push pattern(s) {unknown}")
        patterns = [p for p in patterns if p in TRACING_PATTERNS]
    broker = ready.get(args.extras_broker)
    if broker is None:
        out.failed("tracing", f"the broker {args.extras_broker} is unavailable")
        out.failed("latency", f"the broker {args.extras_broker} is unavailable")
    else:
        for round_no in range(1, args.rounds + 1):
            if patterns:
                run_tracing(args, broker, round_no, patterns, out)
            run_latency(args, broker, round_no, out)
    rabbitmq = ready.get("rabbitmq")
    if isinstance(rabbitmq, RabbitMQ):
        run_memory(args, rabbitmq, out)
    else:
        out.failed("memory", "RabbitMQ is unavailable (its management API counts what is held)")
    return out


# -- markdown ----------------------------------------------------------------------------------


def verdict(met: bool | None) -> str:
    return "n/a" if met is None else ("**met**" if met else "**missed**")


def tracing_ratio(out: Extras, pattern: str, setting: str, metric: str) -> float | None:
    a = median(out.tracing.get((pattern, setting), []), metric)
    b = median(out.tracing.get((pattern, "off"), []), metric)
    return None if a is None or not b else a / b


def expected_spans(run: dict[str, Any]) -> int:
    """Spans an always-on run records: a ``send`` span per push call, a ``process`` per job."""
    n = int(run["n"])
    sends = n if run.get("pattern") == "push" else -(-n // BATCH)
    return sends + n


def spans_note(setting: str, runs: list[dict[str, Any]]) -> str:
    if setting == "off" or not runs:
        return ""
    exported = sum(r["push_spans"] + r["consume_spans"] for r in runs)
    if setting == "on":
        lost = sum(expected_spans(r) for r in runs) - exported
        return f"{exported:,} ({lost:,} lost)" if lost else f"{exported:,} (none lost)"
    jobs = sum(int(r["n"]) for r in runs)
    recorded = sum(r["consume_spans"] for r in runs)
    return f"{exported:,}; {recorded / jobs:.1%} of jobs' process spans"


def render_tracing(out: Extras, args: argparse.Namespace) -> list[str]:
    sdk = f" {out.sdk_version}" if out.sdk_version else ""
    lines = [
        "## Tracing overhead",
        "",
        f"amqp1q pushing {args.n:,} jobs and consuming them through `job.process()`, on "
        f"{out.broker}, in one process with no OpenTelemetry SDK, in another with the SDK{sdk} "
        "and its default sampler (`ParentBased(ALWAYS_ON)`: every span recorded), and in a "
        "third with `ParentBased(TraceIdRatioBased(0.1))`; each with a BatchSpanProcessor and "
        "an exporter that drops the spans. A `process` span per job, parented on the job's "
        "creation context (so a sampled-out push means an unrecorded process span); a `send` "
        "span per `push_many` call of 1,000 jobs (so the ratio sampler records whole batches or "
        f"none), or per job with concurrent `push()` ({args.in_flight} in flight; each job its "
        f"own trace, as for requests in a web app). Median of {args.rounds} round(s); targets: "
        f"always-on ÷ off at least {TRACING_TARGETS['on']}x, ratio-sampled ÷ off at least "
        f"{TRACING_TARGETS['ratio']}x.",
        "",
        "| push pattern | tracing | push/s | consume/s | push CPU µs/job | consume CPU µs/job "
        "| push ÷ off | consume ÷ off | spans exported |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    if not out.tracing:
        errors = [e for what, es in out.errors.items() if what.startswith("tracing") for e in es]
        return [*lines, f"**failed**: {(errors or ['no result'])[-1].replace('|', '/')}", ""]
    for pattern, pattern_name in TRACING_PATTERNS.items():
        for setting in TRACING_SETTINGS:
            runs = out.tracing.get((pattern, setting))
            if runs is None:
                if any(pattern in what for what in out.errors):
                    lines.append(f"| {pattern_name} | {TRACING_NAMES[setting]} | **failed** |")
                continue
            cells = common.metric_cells(functools.partial(median, runs))
            shares = ["", ""]
            if setting in TRACING_TARGETS:
                for i, metric in enumerate(("push_per_s", "consume_per_s")):
                    r = tracing_ratio(out, pattern, setting, metric)
                    shares[i] = (
                        "n/a" if r is None else f"{r:.2f}x {verdict(r >= TRACING_TARGETS[setting])}"
                    )
            lines.append(
                f"| {pattern_name} | {TRACING_NAMES[setting]} | "
                + " | ".join([*cells, *shares, spans_note(setting, runs)])
                + " |"
            )
    return [*lines, ""]


def target_rows(out: Extras) -> list[tuple[str, str, str]]:
    """Issue 17's targets these measurements decide: (target, measured, verdict) rows."""
    rows = []
    for setting, goal in TRACING_TARGETS.items():
        for pattern, pattern_name in TRACING_PATTERNS.items():
            if (pattern, setting) not in out.tracing:
                continue
            push = tracing_ratio(out, pattern, setting, "push_per_s")
            consume = tracing_ratio(out, pattern, setting, "consume_per_s")
            measured = f"{fmt(push, '.2f')}x push / {fmt(consume, '.2f')}x consume"
            met = None if push is None or consume is None else min(push, consume) >= goal
            rows.append(
                (
                    f"tracing {TRACING_NAMES[setting]} ≥ {goal}x off ({pattern_name})",
                    measured,
                    verdict(met),
                )
            )
    if out.latency:
        p50, p99 = median(out.latency, "p50_ms"), median(out.latency, "p99_ms")
        ok = None
        if p50 is not None and p99 is not None:
            ok = p50 < LATENCY_TARGETS_MS["p50_ms"] and p99 < LATENCY_TARGETS_MS["p99_ms"]
        rows.append(
            (
                f"latency at {median(out.latency, 'rate') or 0:,.0f} jobs/s: p50 < 2 ms, "
                "p99 < 10 ms (issue 8)",
                f"{fmt(p50, '.2f')} / {fmt(p99, '.2f')} ms",
                verdict(ok),
            )
        )
    if out.memory is not None:
        growth = out.memory["growth_mb"]
        rows.append(
            (
                f"consumer memory growth < {MEMORY_TARGET_MB:g} MB with "
                f"{out.memory['jobs_waiting']:,} waiting (issue 8)",
                f"{growth:.2f} MB",
                verdict(growth < MEMORY_TARGET_MB),
            )
        )
    return rows


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
        f"One process, on {out.broker}: a producer pushing one {args.size}-byte job per `push()` "
        "call, paced to "
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
