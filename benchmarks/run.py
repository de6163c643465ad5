"""Benchmark driver: amqp1q side by side with reference clients, on several brokers.

Every client is its own process (benchmarks/clients/) that pushes N jobs into an empty queue,
each one confirmed by the broker, then consumes and acknowledges N from it, and prints one JSON
line with its throughput and its own CPU time per job for each phase. Each client runs against
each broker it can talk to (aio-pika speaks AMQP 0.9.1: RabbitMQ only), on a queue no other run
used (brokers.py says how each broker makes one fresh). The whole set is repeated --rounds
times, interleaved (every broker and client in each round, the clients' order rotated from round
to round, so drift hits them alike), and the driver prints the median of each metric as markdown:
brokers as columns, client patterns as rows, amqp1q's ratios to each other client, the
broker's own CPU per job, and the targets of issue 17. Then, unless --no-extras, amqp1q's
tracing overhead (always-on and ratio-sampled), consumer memory with jobs waiting, and
push-to-handler latency at a steady rate, each in its own section (benchmarks/extras.py).

Clients (--clients):
  amqp1q          amqp1q, JobQueue.push_many (1,000 a call), consume, job.ack
  amqp1q-push     amqp1q, one `await queue.push(job)` per job, --in-flight tasks at once (a web
                  app's pattern); also times the same tasks around a no-op coroutine, the
                  caller's own share of the CPU
  proton-reactor  python-qpid-proton's reactor (MessagingHandler)
  rhea            rhea (Node.js)
  aio-pika        aio-pika, publisher confirms, AMQP 0.9.1 (RabbitMQ only)
Brokers (--brokers):
  rabbitmq        the RabbitMQ at --url (scripts/brokers/rabbitmq.sh), queues made through its
                  management API
  qpid-cpp        Qpid Proton's C++ example broker (scripts/brokers/qpid.sh builds it into
                  --qpid-dir), a fresh process for every run
  embedded        amqp1q's own broker (`amqp1q broker`), its own process

    python benchmarks/run.py                                       # everything, 3 rounds
    python benchmarks/run.py --brokers qpid-cpp --clients amqp1q,amqp1q-push,rhea --rounds 1
    python benchmarks/run.py --n 2000 --rounds 1 --no-extras       # a smoke run
    python benchmarks/run.py --markdown benchmarks/results/latest.md --json results.json

Needs: the brokers asked for (RabbitMQ with the rabbitmq_amqp1_0 and rabbitmq_management
plugins; the Qpid C++ broker built), the packages in benchmarks/requirements.txt for the current
Python, amqp1q importable (or run from a checkout: src/ is put on PYTHONPATH), and node/npm for
rhea (``npm ci`` runs in benchmarks/clients when node_modules is missing). A client or broker
that fails is reported as failed; the others still run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import brokers
import common
import extras
import report
from brokers import Broker, BrokerUnavailable, process_cpu
from common import CLIENTS_DIR, METRICS, Outcome


@dataclass(frozen=True)
class Client:
    key: str
    script: str
    label: str  # the table's row heading
    description: str
    args: tuple[str, ...] = ()
    amqp091: bool = False  # AMQP 0.9.1 only: runs on brokers that speak it


CLIENTS = {
    c.key: c
    for c in (
        Client(
            "amqp1q",
            "amqp1q_bench.py",
            "amqp1q, `push_many`",
            "amqp1q public API: JobQueue.push_many (1,000 jobs a call), consume, job.ack; AMQP 1.0",
            ("--pattern", "push_many"),
        ),
        Client(
            "amqp1q-push",
            "amqp1q_bench.py",
            "amqp1q, concurrent `push()`",
            "amqp1q public API: one `await queue.push(job)` per job, each in its own task, "
            "{in_flight} at once behind a semaphore ({spawn}); consume and ack as above",
            ("--pattern", "push"),
        ),
        Client(
            "proton-reactor",
            "proton_reactor.py",
            "proton reactor",
            "python-qpid-proton's reactor (MessagingHandler, Container), AMQP 1.0",
        ),
        Client("rhea", "rhea_bench.js", "rhea (Node)", "rhea (Node.js), AMQP 1.0"),
        Client(
            "aio-pika",
            "aio_pika_bench.py",
            "aio-pika",
            "aio-pika, publisher confirms, 1,000 publishes in flight; AMQP 0.9.1 (RabbitMQ only)",
            amqp091=True,
        ),
    )
}
PY_DISTS = ("amqp1q", "python-qpid-proton", "aio-pika")


def ensure_node_modules(npm: str) -> None:
    if (CLIENTS_DIR / "node_modules" / "rhea").is_dir():
        return
    print("run.py: npm ci in benchmarks/clients", file=sys.stderr)
    subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=CLIENTS_DIR, check=True, timeout=300)


def command(client: Client, args: argparse.Namespace, target: brokers.Target) -> list[str]:
    launcher = [args.node] if client.key == "rhea" else [args.python]
    argv = [*launcher, str(CLIENTS_DIR / client.script), "--url", target.url]
    argv += ["--queue", target.queue, "--n", str(args.n), "--prefetch", str(args.prefetch)]
    argv += ["--size", str(args.size), *client.args]
    if client.key in ("proton-reactor", "rhea"):
        argv += ["--address", target.address]
    if client.key == "amqp1q-push":
        argv += ["--in-flight", str(args.in_flight), "--spawn", args.spawn]
    return argv


def run_client(
    client: Client, broker: Broker, args: argparse.Namespace, round_no: int
) -> dict[str, Any]:
    """One run of one client against a fresh queue; returns its JSON or raises RuntimeError."""
    queue = f"amqp1q-bench-{client.key}-{broker.key}-{os.getpid()}-{round_no}"
    # Measure this checkout even when amqp1q isn't installed.
    env = common.child_env() if client.key.startswith("amqp1q") else None
    with broker.target(queue) as target:
        cpu = [process_cpu(target.pid)]
        try:
            result, took = common.run_client(
                command(client, args, target),
                n=args.n,
                timeout=args.timeout,
                env=env,
                on_mark=lambda: cpu.append(process_cpu(target.pid)),
            )
        except OSError as e:
            raise RuntimeError(f"could not start: {e}") from e
        cpu.append(process_cpu(target.pid))
    if len(cpu) == 3 and all(x is not None for x in cpu):
        start, mark, end = (float(x or 0) for x in cpu)
        result["broker_push_cpu_us_per_job"] = round((mark - start) / args.n * 1e6, 1)
        result["broker_consume_cpu_us_per_job"] = round((end - mark) / args.n * 1e6, 1)
    result.update(client=client.key, broker=broker.key, round=round_no, wall_s=round(took, 2))
    return result


def run_rounds(
    args: argparse.Namespace,
    clients: list[Client],
    ready: dict[str, Broker],
    outcomes: dict[tuple[str, str], Outcome],
) -> None:
    for round_no in range(1, args.rounds + 1):
        shift = (round_no - 1) % len(clients)
        order = clients[shift:] + clients[:shift]
        for broker in ready.values():
            for client in order:
                outcome = outcomes.get((client.key, broker.key))
                if outcome is None or any(e.startswith("skipped") for e in outcome.errors):
                    continue  # aio-pika on an AMQP 1.0 broker; rhea without node
                label = f"round {round_no}/{args.rounds} {broker.key:<9} {client.key:<15}"
                try:
                    result = run_client(client, broker, args, round_no)
                except (RuntimeError, OSError) as e:
                    outcome.errors.append(str(e))
                    print(f"run.py: {label} FAILED: {e}", file=sys.stderr)
                    continue
                outcome.runs.append(result)
                extra = ""
                if "pattern_cpu_us_per_job" in result:
                    extra = f"   (pattern alone {result['pattern_cpu_us_per_job']:.1f} µs/job)"
                print(f"run.py: {label} {common.progress(result)}{extra}", file=sys.stderr)


def versions(args: argparse.Namespace, clients: list[Client]) -> dict[str, str]:
    found = common.dist_versions(args.python, PY_DISTS)
    if any(c.key == "rhea" for c in clients):
        try:
            pkg = json.loads((CLIENTS_DIR / "node_modules" / "rhea" / "package.json").read_text())
            found["rhea"] = pkg["version"]
            node = subprocess.run([args.node, "--version"], capture_output=True, text=True)
            found["node"] = node.stdout.strip()
        except (OSError, ValueError, KeyError):
            pass
    return found


def parse_list(
    parser: argparse.ArgumentParser, text: str, known: list[str], what: str
) -> list[str]:
    chosen = [item.strip() for item in text.split(",") if item.strip()]
    unknown = [item for item in chosen if item not in known]
    if unknown or not chosen:
        parser.error(f"unknown {what}(s) {unknown}; choose from {', '.join(known)}")
    return chosen


def start_brokers(
    wanted: list[str], args: argparse.Namespace
) -> tuple[dict[str, Broker], dict[str, str]]:
    """The brokers that started, and why each other one did not."""
    ready: dict[str, Broker] = {}
    failed: dict[str, str] = {}
    for key in wanted:
        broker = brokers.make(key, args)
        try:
            broker.start()
        except (BrokerUnavailable, OSError) as e:
            failed[key] = str(e)
            print(f"run.py: broker {key} unavailable: {e}", file=sys.stderr)
            continue
        ready[key] = broker
    return ready, failed


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--clients",
        default=",".join(CLIENTS),
        help=f"comma-separated, run in this order (default {','.join(CLIENTS)})",
    )
    parser.add_argument(
        "--brokers",
        default=",".join(brokers.BROKERS),
        help=f"comma-separated, the table's columns (default {','.join(brokers.BROKERS)})",
    )
    parser.add_argument("--rounds", type=int, default=3, help="median over this many (3)")
    parser.add_argument("--n", type=int, default=20_000, help="jobs per phase (20000)")
    parser.add_argument("--size", type=int, default=1024, help="body bytes (1024)")
    parser.add_argument("--prefetch", type=int, default=100, help="consumer credit (100)")
    parser.add_argument(
        "--in-flight", type=int, default=1000, help="amqp1q-push: push() calls at once (1000)"
    )
    parser.add_argument(
        "--spawn",
        choices=["bounded", "gather"],
        default="bounded",
        help="amqp1q-push: a permit before each task is made (bounded: at most --in-flight "
        "tasks), or all N tasks at once, each waiting for a permit (gather)",
    )
    parser.add_argument("--url", default="amqp://guest:guest@127.0.0.1:5672", help="RabbitMQ")
    parser.add_argument("--management", default="http://guest:guest@127.0.0.1:15672")
    parser.add_argument("--vhost", default="/")
    parser.add_argument(
        "--qpid-dir",
        default=os.environ.get("AMQP1Q_QPID_DIR", str(common.REPO / ".brokers" / "qpid")),
        help="where scripts/brokers/qpid.sh built broker-cpp (.brokers/qpid)",
    )
    parser.add_argument("--timeout", type=float, default=300, help="seconds per client run")
    parser.add_argument("--python", default=sys.executable, help="runs the Python clients")
    parser.add_argument("--node", default="node", help="runs the rhea client")
    parser.add_argument("--npm", default="npm")
    parser.add_argument("--markdown", type=Path, help="also write the report to this file")
    parser.add_argument("--json", type=Path, help="write every run's raw result to this file")
    extras.add_arguments(parser)
    args = parser.parse_args()

    clients = [CLIENTS[k] for k in parse_list(parser, args.clients, list(CLIENTS), "client")]
    wanted = parse_list(parser, args.brokers, brokers.BROKERS, "broker")
    if args.rounds < 1 or args.n < 1 or args.in_flight < 1:
        parser.error("--rounds, --n and --in-flight must be at least 1")
    if args.extras and args.extras_broker not in brokers.BROKERS:
        parser.error(f"--extras-broker must be one of {', '.join(brokers.BROKERS)}")

    # The extras need their broker (and RabbitMQ, for the memory measurement's unacked count).
    needed = list(wanted)
    if args.extras:
        needed += [key for key in (args.extras_broker, "rabbitmq") if key not in needed]
    ready, unavailable = start_brokers(needed, args)
    try:
        outcomes: dict[tuple[str, str], Outcome] = {}
        for broker_key in wanted:
            for client in clients:
                if client.amqp091 and broker_key in ready and not ready[broker_key].amqp091:
                    continue  # not a failure: the client cannot speak to it
                outcome = outcomes[(client.key, broker_key)] = Outcome(client.key)
                if broker_key in unavailable:
                    outcome.errors.append(f"skipped: {unavailable[broker_key]}")
        if any(c.key == "rhea" for c in clients):
            why = None
            if shutil.which(args.node) is None:
                why = f"skipped: {args.node} not found"
            else:
                try:
                    ensure_node_modules(args.npm)
                except (OSError, subprocess.SubprocessError) as e:
                    why = f"skipped: npm ci failed: {e}"
            if why is not None:
                for (key, _), outcome in outcomes.items():
                    if key == "rhea":
                        outcome.errors.append(why)
        measured = {key: broker for key, broker in ready.items() if key in wanted}
        run_rounds(args, clients, measured, outcomes)
        more = extras.run(args, ready) if args.extras else None
    finally:
        for broker in ready.values():
            broker.stop()

    meta = {
        **common.machine(),
        "brokers": {key: broker.facts() for key, broker in ready.items() if key in wanted},
        "unavailable": unavailable,
        "versions": versions(args, clients),
    }
    text = report.render(outcomes, clients, wanted, meta, args)
    if more is not None:
        text += extras.render(more, args)
    text += "\n" + "\n".join(report.targets(outcomes, extras.target_rows(more) if more else []))
    print(text, end="")
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        raw = {
            "meta": meta,
            "settings": {
                k: vars(args)[k]
                for k in ("n", "size", "prefetch", "rounds", "in_flight", "spawn", "url")
            },
            "runs": {
                f"{client}@{broker}": {
                    "median": {m: o.median(m) for m in [*METRICS, *report.EXTRA_METRICS]},
                    "runs": o.runs,
                    "errors": o.errors,
                }
                for (client, broker), o in outcomes.items()
            },
            "extras": more.to_json() if more is not None else None,
        }
        args.json.write_text(json.dumps(raw, indent=2) + "\n")
    ok = all(o.runs for o in outcomes.values()) and (more is None or not more.errors)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
