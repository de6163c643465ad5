"""benchmarks/run.py's report: the markdown of the runs of clients on brokers (``import report``).

- the header: machine, versions, brokers, settings;
- throughput: client patterns as rows, brokers as columns, push/s and consume/s with the
  client's CPU µs per job beside each;
- the caller's share of a concurrent push(): the same tasks around a no-op coroutine;
- amqp1q's ratios to each other client (and push() to push_many), broker by broker;
- the broker's CPU per job (where its process is on this machine);
- issue 17's targets, met or missed, from this run's medians.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from brokers import TITLES
from common import Outcome, fmt

if TYPE_CHECKING:
    from run import Client

#: Reported by some runs only (besides METRICS).
EXTRA_METRICS = [
    "pattern_cpu_us_per_job",
    "broker_push_cpu_us_per_job",
    "broker_consume_cpu_us_per_job",
]
#: amqp1q's patterns, and the clients each is compared with.
AMQP1Q = ["amqp1q", "amqp1q-push"]
OTHERS = ["proton-reactor", "rhea", "aio-pika"]

Outcomes = dict[tuple[str, str], Outcome]


def median(outcomes: Outcomes, client: str, broker: str, metric: str) -> float | None:
    outcome = outcomes.get((client, broker))
    return None if outcome is None else outcome.median(metric)


def quotient(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def times(x: float | None) -> str:
    return "" if x is None else f"{x:.2f}x"


def verdict(met: bool | None) -> str:
    return "n/a" if met is None else ("**met**" if met else "**missed**")


# -- header -------------------------------------------------------------------------------------


def header(meta: dict[str, Any], args: argparse.Namespace) -> list[str]:
    lib = meta["versions"]
    lines = [
        f"# amqp1q benchmark — {meta['date']}",
        "",
        f"- machine: {meta['nproc']} CPUs ({meta['cpu']}), {meta['platform']}",
        f"- Python {meta['python']}"
        + "".join(
            f", {k} {lib[k]}" for k in ("amqp1q", "python-qpid-proton", "aio-pika") if k in lib
        )
        + (f"; Node {lib['node']}, rhea {lib['rhea']}" if "rhea" in lib and "node" in lib else ""),
    ]
    lines += [f"- broker: {facts}" for facts in meta["brokers"].values()]
    lines += [
        f"- broker {key}: **unavailable** ({why})" for key, why in meta["unavailable"].items()
    ]
    lines += [
        f"- n = {args.n} jobs, {args.size}-byte bodies, prefetch {args.prefetch}, "
        "at-least-once (every push confirmed by the broker, every job acked), a fresh queue "
        "per run (durable on RabbitMQ)",
        f"- concurrent push(): {args.in_flight} `push()` calls in flight, one task each "
        f"({spawn_words(args.spawn)})",
        f"- median of {args.rounds} round(s), every client and broker in each round; CPU = the "
        "client process's user+sys time per job",
        "",
    ]
    return lines


def spawn_words(spawn: str) -> str:
    if spawn == "gather":
        return "all N tasks made at once by asyncio.gather, each waiting on a semaphore"
    return "a semaphore permit taken before each task is made: at most that many tasks"


# -- tables -------------------------------------------------------------------------------------


def cell(outcome: Outcome | None, rate: str, cpu: str) -> str:
    """``12,180 (23.2 µs)``; blank where the client does not run there; why where it failed."""
    if outcome is None:
        return ""
    if not outcome.runs:
        why = (outcome.errors[-1] if outcome.errors else "no result").replace("|", "/")
        return "skipped" if why.startswith("skipped") else "**failed**"
    text = f"{fmt(outcome.median(rate), ',.0f')} ({fmt(outcome.median(cpu), '.1f')} µs)"
    if outcome.errors:
        text += f" [{len(outcome.runs)}/{len(outcome.runs) + len(outcome.errors)} ok]"
    return text


def broker_head(first: str, broker_keys: list[str], push: str, consume: str) -> list[str]:
    """A table's header and alignment lines: ``first``, then a push and a consume column for
    each broker."""
    head = [first]
    for key in broker_keys:
        head += [f"{TITLES[key]} {push}", f"{TITLES[key]} {consume}"]
    return ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]


def throughput(outcomes: Outcomes, clients: Sequence[Client], broker_keys: list[str]) -> list[str]:
    lines = [
        "## Throughput",
        "",
        "Jobs per second, and in brackets the client's own CPU time per job.",
        "",
        *broker_head("client", broker_keys, "push/s", "consume/s"),
    ]
    for client in clients:
        cells = [client.label]
        for key in broker_keys:
            outcome = outcomes.get((client.key, key))
            cells += [
                cell(outcome, "push_per_s", "push_cpu_us_per_job"),
                cell(outcome, "consume_per_s", "consume_cpu_us_per_job"),
            ]
        lines.append("| " + " | ".join(cells) + " |")
    failures = [
        f"- {client}@{broker}: {error}"
        for (client, broker), outcome in outcomes.items()
        for error in dict.fromkeys(outcome.errors)  # (each reason once)
    ]
    if failures:
        lines += ["", "Runs that failed or were skipped:", "", *failures]
    return [*lines, ""]


def pattern_share(outcomes: Outcomes, broker_keys: list[str]) -> list[str]:
    """Concurrent push(): the caller's tasks alone, and what is left for amqp1q."""
    rows = []
    for key in broker_keys:
        alone = median(outcomes, "amqp1q-push", key, "pattern_cpu_us_per_job")
        total = median(outcomes, "amqp1q-push", key, "push_cpu_us_per_job")
        many = median(outcomes, "amqp1q", key, "push_cpu_us_per_job")
        if total is None:
            continue
        own = None if alone is None else total - alone
        rows.append(
            f"| {TITLES[key]} | {fmt(total, '.1f')} | {fmt(alone, '.1f')} | {fmt(own, '.1f')} "
            f"| {fmt(many, '.1f')} |"
        )
    if not rows:
        return []
    return [
        "## Concurrent push(): the caller's share",
        "",
        "The CPU per job of a concurrent `push()` run includes the caller's own tasks and "
        "semaphore, which any asyncio client would pay. Each run first times the same tasks "
        "around a coroutine that only yields once (`await asyncio.sleep(0)`) instead of "
        "pushing; amqp1q's share is the difference (it builds the `Job` too, as `push_many`'s "
        "figure does).",
        "",
        "| broker | push() CPU µs/job | the pattern alone | amqp1q's share "
        "| push_many CPU µs/job |",
        "|---|---:|---:|---:|---:|",
        *rows,
        "",
    ]


def ratios(outcomes: Outcomes, broker_keys: list[str]) -> list[str]:
    lines = [
        "## Ratios",
        "",
        "Throughput of amqp1q (each pattern) ÷ the other client's, on the same broker: above 1, "
        "amqp1q is faster.",
        "",
        *broker_head("amqp1q ÷ other", broker_keys, "push", "consume"),
    ]
    pairs = [("amqp1q-push", "amqp1q")] + [(a, b) for a in AMQP1Q for b in OTHERS]
    names = {"amqp1q": "push_many", "amqp1q-push": "push()"}
    for a, b in pairs:
        cells = [
            times(quotient(median(outcomes, a, key, metric), median(outcomes, b, key, metric)))
            for key in broker_keys
            for metric in ("push_per_s", "consume_per_s")
        ]
        if any(cells):
            lines.append(f"| {names[a]} ÷ {names.get(b, b)} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def broker_cpu(outcomes: Outcomes, clients: Sequence[Client], broker_keys: list[str]) -> list[str]:
    rows = []
    for client in clients:
        cells = [
            fmt(median(outcomes, client.key, key, metric), ".1f").replace("-", "")
            for key in broker_keys
            for metric in ("broker_push_cpu_us_per_job", "broker_consume_cpu_us_per_job")
        ]
        if any(cells):
            rows.append(f"| {client.label} | " + " | ".join(cells) + " |")
    if not rows:
        return []
    return [
        "## The broker's CPU per job",
        "",
        "The broker process's user+sys CPU µs per job during each phase, read from /proc when "
        "the client starts, when it prints that its pushes are done, and when it ends (so the "
        "push column includes connecting, the consume column closing). RabbitMQ's figure counts "
        "whatever else it serves at the time.",
        "",
        *broker_head("client", broker_keys, "push", "consume"),
        *rows,
        "",
    ]


# -- targets ------------------------------------------------------------------------------------

PUSH, CONSUME = "push_per_s", "consume_per_s"
#: Issue 17's targets that the runs of the clients measure (extras.py has the others): the
#: throughput of ``client`` ÷ that of ``other`` on ``broker``, at least ``goal``.
RATIO_TARGETS = [
    # (client, other, broker, metric, goal)
    ("amqp1q-push", "amqp1q", "rabbitmq", PUSH, 0.9),
    ("amqp1q-push", "amqp1q", "qpid-cpp", PUSH, 0.9),
    ("amqp1q-push", "proton-reactor", "rabbitmq", PUSH, 1.5),
    ("amqp1q", "rhea", "qpid-cpp", PUSH, 1.0),
    ("amqp1q-push", "rhea", "qpid-cpp", PUSH, 1.0),
    ("amqp1q", "proton-reactor", "qpid-cpp", PUSH, 2.0),
    ("amqp1q-push", "proton-reactor", "qpid-cpp", PUSH, 2.0),
    ("amqp1q", "rhea", "qpid-cpp", CONSUME, 1.0),
]
TARGET_NAMES = {
    "amqp1q": "push_many",
    "amqp1q-push": "concurrent push()",
    "proton-reactor": "the reactor",
    "rhea": "rhea",
}
#: And one bound: amqp1q's consume CPU per job on the Qpid C++ broker, at most this (µs).
CONSUME_CPU_TARGET = 20.0


def targets(outcomes: Outcomes, more: list[tuple[str, str, str]]) -> list[str]:
    """Issue 17's targets: those of this run's table, then ``more`` (target, measured,
    verdict) rows from the extras."""
    rows = []
    for client, other, broker, metric, goal in RATIO_TARGETS:
        phase = "push" if metric == PUSH else "consume"
        mine = TARGET_NAMES[client] if phase == "push" else "amqp1q"
        what = f"{TITLES[broker]} {phase}: {mine} ≥ {goal:.1f}x {TARGET_NAMES[other]}"
        r = quotient(
            median(outcomes, client, broker, metric), median(outcomes, other, broker, metric)
        )
        shown = "not measured" if r is None else f"{r:.2f}x"
        rows.append(f"| {what} | {shown} | {verdict(None if r is None else r >= goal)} |")
    cpu = median(outcomes, "amqp1q", "qpid-cpp", "consume_cpu_us_per_job")
    rows.append(
        f"| Qpid C++: consume client CPU ≤ {CONSUME_CPU_TARGET:g} µs per job "
        f"| {'not measured' if cpu is None else f'{cpu:.1f} µs'} "
        f"| {verdict(None if cpu is None else cpu <= CONSUME_CPU_TARGET)} |"
    )
    rows += [f"| {name} | {shown} | {mark} |" for name, shown, mark in more]
    return [
        "## Against the targets (issue 17)",
        "",
        "| target | measured (this run) | |",
        "|---|---|---|",
        *rows,
        "",
    ]


# -- the whole ----------------------------------------------------------------------------------


def render(
    outcomes: Outcomes,
    clients: Sequence[Client],
    broker_keys: list[str],
    meta: dict[str, Any],
    args: argparse.Namespace,
) -> str:
    described = [
        f"- {c.label}: "
        + c.description.format(in_flight=args.in_flight, spawn=spawn_words(args.spawn))
        for c in clients
    ]
    lines = [
        *header(meta, args),
        *throughput(outcomes, clients, broker_keys),
        *pattern_share(outcomes, broker_keys),
        *ratios(outcomes, broker_keys),
        *broker_cpu(outcomes, clients, broker_keys),
        "Clients:",
        "",
        *described,
        "",
    ]
    return "\n".join(lines) + "\n"
