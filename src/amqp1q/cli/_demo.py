"""``amqp1q demo`` and ``amqp1q bench``: the push-then-consume run (:mod:`._bench`) as commands.

Both take one set of arguments for where and what to run (``--url``, ``--jobs``, ``--size``,
``--prefetch``, declared once: :func:`_plan_arguments`); ``bench`` adds its own. ``demo`` runs
on the embedded broker in this process and prints a line per phase; ``bench`` runs it in a
process of its own (its CPU is not counted) and prints a table. Both ack every job they
consume, so a queue given by ``--url`` must be empty: they look first, and stop at any job that
is not their own.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import AsyncIterator
from typing import Any

import attrs

from .. import JobQueue
from ._args import positive
from ._bench import BenchAborted, Phase, Plan, done_line, results_table, run
from ._broker import BrokerDidNotStart, broker_process
from ._display import StatusLine, Style

__all__ = ["add_bench_parser", "add_demo_parser", "plan_of"]

#: What the commands run when not told otherwise.
DEFAULT: Plan = Plan(jobs=10_000)


def add_demo_parser(commands: Any) -> None:
    """``amqp1q demo``'s arguments (``commands``: the subparsers of the ``amqp1q`` parser)."""
    demo = commands.add_parser("demo", help="push and consume jobs, printing throughput")
    _plan_arguments(
        demo,
        url="queue URL (default: the embedded AMQP 1.0 broker, in-process, over TCP)",
        jobs="how many jobs",
    )
    demo.set_defaults(run=_demo)


def add_bench_parser(commands: Any) -> None:
    """``amqp1q bench``'s arguments: demo's, and the rounds and the producers and consumers."""
    bench = commands.add_parser(
        "bench",
        help="push then consume jobs with a progress bar; print a table of rates and CPU",
        description="Push --jobs jobs, then consume and ack them, --rounds times: a progress "
        "bar on stderr, a table on stdout. A quick check of one setup; benchmarks/run.py "
        "compares amqp1q with other clients.",
    )
    _plan_arguments(
        bench,
        url="an empty queue's URL (default: the embedded broker, in a process of its own)",
        jobs="jobs per round",
        rounds="push-then-consume rounds",
        batch="jobs per push_many",
        producers="concurrent pushers",
        consumers="concurrent consumers",
    )
    bench.set_defaults(run=_bench)


def _plan_arguments(parser: argparse.ArgumentParser, *, url: str, jobs: str, **more: str) -> None:
    """``--url`` (no default: the embedded broker), then ``--jobs``, ``--size``, ``--prefetch``
    and a ``--NAME`` for each of ``more`` (:class:`Plan` fields, each with its help): whole
    numbers >= 1, defaulting to :data:`DEFAULT`'s."""
    parser.add_argument("--url", default=None, help=url)
    helps = {"jobs": jobs, "size": "payload bytes", "prefetch": "consumer prefetch", **more}
    for name, text in helps.items():
        default = getattr(DEFAULT, name)
        parser.add_argument(f"--{name}", type=positive, default=default, help=f"{text} ({default})")


def plan_of(args: argparse.Namespace) -> Plan:
    """The :class:`Plan` the arguments give (a field with no argument: :data:`DEFAULT`'s)."""
    given = vars(args)
    fields = attrs.fields(Plan)
    return attrs.evolve(DEFAULT, **{f.name: given[f.name] for f in fields if f.name in given})


async def _demo(args: argparse.Namespace) -> int:
    """Push and consume on the embedded broker in this process: a line per phase on stdout."""
    return await _command("demo", args, queue="jobs", own_process=False)


async def _bench(args: argparse.Namespace) -> int:
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
        from ..testing import Broker

        async with Broker() as embedded:
            where = f" (the embedded broker on {embedded.host}:{embedded.port}, Proton adapter)"
            yield f"{embedded.url}/{queue}", where
