"""Benchmark driver: amqp1q side by side with reference clients on the same RabbitMQ.

Every client is its own process (benchmarks/clients/) that pushes N jobs into an empty durable
queue, each one confirmed by the broker, then consumes and acknowledges N from it, and prints one
JSON line with its throughput and its own CPU time per job for each phase. The driver declares a
fresh durable queue for every run through RabbitMQ's management HTTP API, deletes it afterwards,
repeats the whole set of clients --rounds times (interleaved, so drift hits every client alike),
and prints the median of each metric as a markdown table with amqp1q's ratio to each other client.
Then, unless --no-extras, amqp1q's tracing overhead, consumer memory with jobs waiting, and
push-to-handler latency at a steady rate, each in its own section (benchmarks/extras.py).

    python benchmarks/run.py                                 # all clients, 3 rounds
    python benchmarks/run.py --clients proton-reactor,rhea --rounds 1 --n 5000
    python benchmarks/run.py --markdown benchmarks/results/latest.md --json results.json

Needs: RabbitMQ with the rabbitmq_amqp1_0 and rabbitmq_management plugins
(scripts/brokers/rabbitmq.sh), the packages in benchmarks/requirements.txt for the current
Python, amqp1q importable (or run from a checkout: src/ is put on PYTHONPATH), and node/npm for
rhea (``npm ci`` runs in benchmarks/clients when node_modules is missing). A client that fails
is reported as failed; the others still run.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import common
import extras
from common import CLIENTS_DIR, METRICS, Outcome

CLIENTS = ["amqp1q", "proton-reactor", "aio-pika", "rhea", "amqp1q@embedded"]
#: Clients that run against amqp1q's embedded broker (started by this driver), not RabbitMQ.
EMBEDDED = {"amqp1q@embedded"}
SCRIPTS = {
    "amqp1q": "amqp1q_bench.py",
    "amqp1q@embedded": "amqp1q_bench.py",
    "proton-reactor": "proton_reactor.py",
    "aio-pika": "aio_pika_bench.py",
    "rhea": "rhea_bench.js",
}
DESCRIPTIONS = {
    "amqp1q": "amqp1q public API (JobQueue.push_many / consume / job.ack), AMQP 1.0",
    "proton-reactor": "python-qpid-proton reactor (MessagingHandler), AMQP 1.0",
    "aio-pika": "aio-pika, publisher confirms, AMQP 0.9.1",
    "rhea": "rhea (Node.js), AMQP 1.0",
    "amqp1q@embedded": "amqp1q as above, against amqp1q's embedded broker "
    "(`amqp1q broker`, its own process) instead of RabbitMQ",
}
PY_DISTS = ("amqp1q", "python-qpid-proton", "aio-pika")


class Management:
    """The few RabbitMQ management HTTP API calls the driver needs (urllib only)."""

    def __init__(self, url: str, vhost: str) -> None:
        parts = urlsplit(url)
        user, password = parts.username or "guest", parts.password or "guest"
        self.base = f"{parts.scheme}://{parts.hostname}:{parts.port or 15672}{parts.path}".rstrip(
            "/"
        )
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        self.headers = {"Authorization": f"Basic {token}", "Content-Type": "application/json"}
        self.vhost = quote(vhost, safe="")

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.base + path, data=data, method=method, headers=self.headers
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            raw = response.read()
        return json.loads(raw) if raw else None

    def overview(self) -> dict[str, Any]:
        return self.call("GET", "/api/overview")  # type: ignore[no-any-return]

    def declare_queue(self, name: str) -> None:
        self.delete_queue(name)
        body = {"durable": True, "auto_delete": False, "arguments": {}}
        self.call("PUT", f"/api/queues/{self.vhost}/{quote(name, safe='')}", body)

    def delete_queue(self, name: str) -> None:
        try:
            self.call("DELETE", f"/api/queues/{self.vhost}/{quote(name, safe='')}")
        except urllib.error.HTTPError as e:
            if e.code != 404:
                raise


def ensure_node_modules(npm: str) -> None:
    if (CLIENTS_DIR / "node_modules" / "rhea").is_dir():
        return
    print("run.py: npm ci in benchmarks/clients", file=sys.stderr)
    subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=CLIENTS_DIR, check=True, timeout=300)


def command(client: str, args: argparse.Namespace, queue: str) -> list[str]:
    script = str(CLIENTS_DIR / SCRIPTS[client])
    launcher = [args.node] if client == "rhea" else [args.python]
    return [
        *launcher,
        script,
        "--url",
        args.embedded_url if client in EMBEDDED else args.url,
        "--queue",
        queue,
        "--n",
        str(args.n),
        "--prefetch",
        str(args.prefetch),
        "--size",
        str(args.size),
    ]


def run_client(
    client: str, args: argparse.Namespace, mgmt: Management, round_no: int
) -> dict[str, Any]:
    """One run of one client against a fresh queue; returns its JSON or raises RuntimeError."""
    queue = f"amqp1q-bench-{client}-{os.getpid()}-{round_no}"
    # Measure this checkout even when amqp1q isn't installed.
    env = common.child_env() if client.startswith("amqp1q") else None
    if client not in EMBEDDED:
        mgmt.declare_queue(queue)
    try:
        argv = command(client, args, queue)
        result, took = common.run_client(argv, n=args.n, timeout=args.timeout, env=env)
    except OSError as e:
        raise RuntimeError(f"could not start: {e}") from e
    finally:
        try:
            if client not in EMBEDDED:
                mgmt.delete_queue(queue)
        except (OSError, urllib.error.URLError) as e:
            print(f"run.py: could not delete queue {queue}: {e}", file=sys.stderr)
    result["round"] = round_no
    result["wall_s"] = round(took, 2)
    return result


def versions(args: argparse.Namespace, clients: list[str]) -> dict[str, str]:
    found = common.dist_versions(args.python, PY_DISTS)
    if "rhea" in clients:
        try:
            pkg = json.loads((CLIENTS_DIR / "node_modules" / "rhea" / "package.json").read_text())
            found["rhea"] = pkg["version"]
            node = subprocess.run([args.node, "--version"], capture_output=True, text=True)
            found["node"] = node.stdout.strip()
        except (OSError, ValueError, KeyError):
            pass
    return found


def render(
    outcomes: list[Outcome], meta: dict[str, Any], args: argparse.Namespace
) -> tuple[str, str]:
    """The header (with machine details) and the two markdown tables."""
    lib = meta["versions"]
    header = [
        f"# amqp1q benchmark — {meta['date']}",
        "",
        f"- machine: {meta['nproc']} CPUs ({meta['cpu']}), {meta['platform']}",
        f"- Python {meta['python']}"
        + "".join(f", {k} {lib[k]}" for k in PY_DISTS if k in lib)
        + (f"; Node {lib['node']}, rhea {lib['rhea']}" if "rhea" in lib and "node" in lib else ""),
        f"- broker: RabbitMQ {meta['rabbitmq']} (Erlang {meta['erlang']}) at {meta['url_host']}",
        f"- n = {args.n} jobs, {args.size}-byte bodies, prefetch {args.prefetch}, "
        f"at-least-once (every push confirmed by the broker, every job acked), durable queue",
        f"- median of {args.rounds} round(s), clients interleaved within each round; "
        "CPU = the client process's user+sys time per job",
        "",
    ]
    rows = [*common.table_head("client"), *(common.outcome_row(o) for o in outcomes)]
    base = next((o for o in outcomes if o.client == "amqp1q"), None)
    others = [o for o in outcomes if o.client != "amqp1q" and o.client not in EMBEDDED]
    if base is not None and not base.runs and others:
        rows += ["", "No ratios: amqp1q produced no result."]
    elif base is not None and others:
        rows += [
            "",
            "amqp1q relative to each client: throughput ratio = amqp1q ÷ other "
            "(above 1 means amqp1q is faster); CPU ratio = amqp1q ÷ other "
            "(below 1 means amqp1q uses less CPU per job).",
            "",
            "| amqp1q vs | push/s ratio | consume/s ratio | push CPU ratio | consume CPU ratio |",
            "|---|---:|---:|---:|---:|",
        ]
        rows += [f"| {o.client} | " + " | ".join(common.ratios(base, o)) + " |" for o in others]
    rows += ["", "Clients:", ""]
    rows += [f"- {o.client}: {DESCRIPTIONS[o.client]}" for o in outcomes]
    return "\n".join(header), "\n".join(rows) + "\n"


def run_rounds(
    args: argparse.Namespace,
    clients: list[str],
    skip: set[str],
    outcomes: dict[str, Outcome],
    mgmt: Management,
) -> None:
    for round_no in range(1, args.rounds + 1):
        for client in clients:
            if client in skip:
                continue
            label = f"round {round_no}/{args.rounds} {client:<15}"
            try:
                result = run_client(client, args, mgmt, round_no)
            except (RuntimeError, OSError, urllib.error.URLError) as e:
                outcomes[client].errors.append(str(e))
                print(f"run.py: {label} FAILED: {e}", file=sys.stderr)
                continue
            outcomes[client].runs.append(result)
            print(f"run.py: {label} {common.progress(result)}", file=sys.stderr)


def start_embedded_broker(
    args: argparse.Namespace, outcomes: dict[str, Outcome]
) -> subprocess.Popen[str] | None:
    """``amqp1q broker --port 0`` in its own process (so it has a core, as RabbitMQ has)."""
    process, line = common.start_broker([args.python, "-m", "amqp1q", "broker", "--port", "0"])
    if "listening on " not in line:
        process.terminate()
        for client in EMBEDDED & set(outcomes):
            outcomes[client].errors.append(f"the embedded broker did not start: {line!r}")
        return None
    args.embedded_url = line.split("listening on ", 1)[1].split()[0]
    return process


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--clients",
        default=",".join(CLIENTS),
        help=f"comma-separated, run in this order (default {','.join(CLIENTS)})",
    )
    parser.add_argument("--rounds", type=int, default=3, help="median over this many (3)")
    parser.add_argument("--n", type=int, default=20_000, help="jobs per phase (20000)")
    parser.add_argument("--size", type=int, default=1024, help="body bytes (1024)")
    parser.add_argument("--prefetch", type=int, default=100, help="consumer credit (100)")
    parser.add_argument("--url", default="amqp://guest:guest@127.0.0.1:5672", help="broker")
    parser.add_argument("--management", default="http://guest:guest@127.0.0.1:15672")
    parser.add_argument("--vhost", default="/")
    parser.add_argument("--timeout", type=float, default=300, help="seconds per client run")
    parser.add_argument("--python", default=sys.executable, help="runs the Python clients")
    parser.add_argument("--node", default="node", help="runs the rhea client")
    parser.add_argument("--npm", default="npm")
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    parser.add_argument("--json", type=Path, help="write every run's raw result to this file")
    extras.add_arguments(parser)
    args = parser.parse_args()

    clients = [c.strip() for c in args.clients.split(",") if c.strip()]
    unknown = [c for c in clients if c not in SCRIPTS]
    if unknown or not clients:
        parser.error(f"unknown client(s) {unknown}; choose from {', '.join(CLIENTS)}")
    if args.rounds < 1 or args.n < 1:
        parser.error("--rounds and --n must be at least 1")

    mgmt = Management(args.management, args.vhost)
    try:
        overview = mgmt.overview()
    except (OSError, urllib.error.URLError) as e:
        print(f"run.py: RabbitMQ management API unreachable at {mgmt.base}: {e}", file=sys.stderr)
        print("run.py: start it with scripts/brokers/rabbitmq.sh", file=sys.stderr)
        return 2

    outcomes = {c: Outcome(c) for c in clients}
    if "rhea" in clients:
        if shutil.which(args.node) is None:
            outcomes["rhea"].errors.append(f"{args.node} not found")
        else:
            try:
                ensure_node_modules(args.npm)
            except (OSError, subprocess.SubprocessError) as e:
                outcomes["rhea"].errors.append(f"npm ci failed: {e}")
    skip = {c for c, o in outcomes.items() if o.errors}
    broker = start_embedded_broker(args, outcomes) if EMBEDDED & set(clients) else None
    skip |= {c for c, o in outcomes.items() if o.errors}
    try:
        run_rounds(args, clients, skip, outcomes, mgmt)
    finally:
        if broker is not None:
            broker.terminate()
            broker.wait(timeout=10)
    more = extras.run(args, mgmt) if args.extras else None

    meta = {
        **common.machine(),
        "rabbitmq": overview.get("rabbitmq_version", "?"),
        "erlang": overview.get("erlang_version", "?"),
        "url_host": urlsplit(args.url).hostname,
        "versions": versions(args, clients),
    }
    header, tables = render(list(outcomes.values()), meta, args)
    if more is not None:
        tables += extras.render(more, args)
    print(f"{header}\n{tables}", end="")
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(f"{header}\n{tables}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        raw = {
            "meta": meta,
            "settings": {k: vars(args)[k] for k in ("n", "size", "prefetch", "rounds", "url")},
            "clients": {
                o.client: {
                    "median": {m: o.median(m) for m in METRICS},
                    "runs": o.runs,
                    "errors": o.errors,
                }
                for o in outcomes.values()
            },
            "extras": more.to_json() if more is not None else None,
        }
        args.json.write_text(json.dumps(raw, indent=2) + "\n")
    ok = all(o.runs for o in outcomes.values()) and (more is None or not more.errors)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
