"""Benchmark: amqp1q's Azure Service Bus adapter against the raw azure-servicebus asyncio client.

Both do the same work on amqp1q's embedded broker in Service Bus mode (``Broker(servicebus=True)``,
started by this driver in its own process so it has a core to itself): push N 1 KiB messages,
1,000 per call, each batch confirmed by the broker, then receive N in PEEK_LOCK with a credit
window of 100 and complete every one. Each client is its own process and prints one JSON line
(benchmarks/clients/amqp1q_bench.py with the connection string as --url, and
benchmarks/clients/servicebus_sdk_bench.py). Every run gets a fresh queue; the two clients
alternate within each round (and swap who goes first from round to round), and the table shows
the median of each metric over --rounds, with amqp1q's ratio to the SDK.

    python benchmarks/servicebus.py                        # 3 rounds of 5,000 jobs
    python benchmarks/servicebus.py --rounds 5 --n 10000 --markdown results.md

Needs azure-servicebus and python-qpid-proton for --python (the project's venv has both);
amqp1q is taken from this checkout's src/. A run of 5,000 jobs takes about 10 s per client.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import common
from brokers import process_cpu
from common import CLIENTS_DIR, Outcome

AMQP1Q, SDK = "amqp1q", "azure-servicebus"
CLIENTS = [AMQP1Q, SDK]
DISTS = ("azure-servicebus", "uamqp", "python-qpid-proton")

#: Runs the embedded broker in Service Bus mode on a free port; prints the connection string.
BROKER_SCRIPT = """
import asyncio
from amqp1q.testing import Broker

async def main():
    async with Broker(servicebus=True, port=0) as broker:
        print(broker.servicebus_connection_string(), flush=True)
        await asyncio.Event().wait()

asyncio.run(main())
"""


def start_broker(python: str) -> tuple[subprocess.Popen[str], str]:
    """The embedded broker in Service Bus mode, in its own process, and its connection string."""
    process, line = common.start_broker([python, "-c", BROKER_SCRIPT])
    line = line.strip()
    if not line.startswith("Endpoint=sb://"):
        process.terminate()
        raise RuntimeError(f"the embedded broker did not start: {line!r}")
    return process, line


def command(client: str, args: argparse.Namespace, conn: str, queue: str) -> list[str]:
    rest = ["--queue", queue, "--n", str(args.n), "--prefetch", str(args.prefetch)]
    rest += ["--size", str(args.size)]
    if client == AMQP1Q:
        return [args.python, str(CLIENTS_DIR / "amqp1q_bench.py"), "--url", conn, *rest]
    return [args.python, str(CLIENTS_DIR / "servicebus_sdk_bench.py"), "--conn", conn, *rest]


def run_client(
    client: str, args: argparse.Namespace, broker: subprocess.Popen[str], conn: str, round_no: int
) -> dict[str, Any]:
    """One run of one client against a fresh queue; returns its JSON or raises RuntimeError."""
    queue = f"sb-bench-{client}-{os.getpid()}-{round_no}"
    broker_cpu0 = process_cpu(broker.pid)
    argv = command(client, args, conn, queue)
    result, took = common.run_client(argv, n=args.n, timeout=args.timeout, env=common.child_env())
    broker_cpu1 = process_cpu(broker.pid)
    result.update(client=client, round=round_no, wall_s=round(took, 2))
    if broker_cpu0 is not None and broker_cpu1 is not None:
        # Both phases together: the broker's CPU for one message in and out.
        result["broker_cpu_us_per_job"] = round((broker_cpu1 - broker_cpu0) / args.n * 1e6, 1)
    return result


def render(outcomes: dict[str, Outcome], args: argparse.Namespace, meta: dict[str, Any]) -> str:
    lib = meta["versions"]
    lines = [
        f"- {meta['date']}; machine: {meta['nproc']} CPUs ({meta['cpu']}), {meta['platform']}; "
        f"Python {meta['python']}" + "".join(f", {k} {v}" for k, v in lib.items()),
        f"- n = {args.n} jobs, {args.size}-byte bodies, 1,000 per push call, prefetch "
        f"{args.prefetch}, PEEK_LOCK and complete; median of {args.rounds} round(s), the two "
        "clients alternating; CPU = the client process's user+sys time per job; broker CPU = "
        "the embedded broker's, per job pushed and consumed",
        "",
        *common.table_head("client", ["broker CPU µs/job"]),
        *(common.outcome_row(outcomes[client], ["broker_cpu_us_per_job"]) for client in CLIENTS),
    ]
    a, s = outcomes[AMQP1Q], outcomes[SDK]
    broker = common.ratio(a.median("broker_cpu_us_per_job"), s.median("broker_cpu_us_per_job"))
    lines.append(
        "| **amqp1q ÷ SDK** | "
        + " | ".join(f"**{r}**" for r in common.ratios(a, s))
        + f" | {broker} |"
    )
    lines += [
        "",
        "Throughput ratio above 1: amqp1q is faster; CPU ratio below 1: amqp1q uses less.",
        "",
        "Every run (push/s, consume/s):",
        "",
        "| round | " + " | ".join(CLIENTS) + " |",
        "|---:|" + "---:|" * len(CLIENTS),
    ]
    for round_no in range(1, args.rounds + 1):
        cells = []
        for client in CLIENTS:
            run = next((r for r in outcomes[client].runs if r["round"] == round_no), None)
            cells.append(
                "-" if run is None else f"{run['push_per_s']:,.0f} / {run['consume_per_s']:,.0f}"
            )
        lines.append(f"| {round_no} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3, help="median over this many (3)")
    parser.add_argument("--n", type=int, default=5_000, help="jobs per phase (5000)")
    parser.add_argument("--size", type=int, default=1024, help="body bytes (1024)")
    parser.add_argument("--prefetch", type=int, default=100, help="consumer credit (100)")
    parser.add_argument("--timeout", type=float, default=300, help="seconds per client run")
    parser.add_argument("--python", default=sys.executable, help="runs the broker and clients")
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    parser.add_argument("--json", type=Path, help="write every run's raw result to this file")
    args = parser.parse_args()
    if args.rounds < 1 or args.n < 1:
        parser.error("--rounds and --n must be at least 1")

    try:
        broker, conn = start_broker(args.python)
    except (RuntimeError, OSError) as e:
        print(f"servicebus.py: {e}", file=sys.stderr)
        return 2
    outcomes = {client: Outcome(client) for client in CLIENTS}
    try:
        for round_no in range(1, args.rounds + 1):
            order = CLIENTS if round_no % 2 else CLIENTS[::-1]
            for client in order:
                label = f"round {round_no}/{args.rounds} {client:<16}"
                try:
                    result = run_client(client, args, broker, conn, round_no)
                except (RuntimeError, OSError) as e:
                    outcomes[client].errors.append(str(e))
                    print(f"servicebus.py: {label} FAILED: {e}", file=sys.stderr)
                    continue
                outcomes[client].runs.append(result)
                print(
                    f"servicebus.py: {label} {common.progress(result, 7, 6)}   "
                    f"broker {result.get('broker_cpu_us_per_job', float('nan')):6.1f} µs/job",
                    file=sys.stderr,
                )
    finally:
        broker.terminate()
        broker.wait(timeout=10)

    meta = {**common.machine(), "versions": common.dist_versions(args.python, DISTS)}
    table = render(outcomes, args, meta)
    print(table)
    if args.markdown:
        args.markdown.write_text(table)
    if args.json:
        runs = [run for o in outcomes.values() for run in o.runs]
        args.json.write_text(json.dumps({"meta": meta, "runs": runs}, indent=2) + "\n")
    return 0 if all(o.runs for o in outcomes.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
