"""``amqp1q worker --processes N`` with a CPU-bound handler: jobs per second by N (issue 15).

    python benchmarks/processes.py [--broker rabbitmq|embedded] [--jobs 3000] [--cpu-ms 2]
                                   [--processes 1,2] [--rounds 3]

Each round pushes ``--jobs`` jobs to a fresh queue, then runs ``amqp1q worker --processes N``
on it; the handler spends ``--cpu-ms`` of CPU on each job (a busy loop on
``time.process_time``) and notes when it finished. The rate is jobs over the time from the first
job finished to the last (so process start-up is not counted); the worker is then stopped with
SIGTERM. The medians by N, and each N against one process, are printed as a markdown table. The
target (issue 15) is >= 1.5x for 2 processes on a 2-core machine; the load average is printed
with the numbers, since a loaded machine cannot show it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import common  # noqa: E402 - benchmarks/ as a script directory

HANDLER = """
import os, time
from amqp1q import Registry

registry = Registry()
CPU = float(os.environ["BENCH_CPU_SECONDS"])
DONE = open(f"done-{os.getpid()}.txt", "a", buffering=1)

@registry.handler("burn")
async def burn(job):
    started = time.process_time()
    while time.process_time() - started < CPU:
        pass
    DONE.write(f"{time.time()}\\n")
"""


async def _push(url: str, queue: str, jobs: int) -> None:
    from amqp1q import Job, JobQueue

    async with JobQueue.from_url(url, queue=queue) as target:
        for start in range(0, jobs, 1000):
            await target.push_many([Job("burn", i) for i in range(start, min(jobs, start + 1000))])


def _stamps(project: Path) -> list[float]:
    stamps = []
    for path in project.glob("done-*.txt"):
        stamps += [float(line) for line in path.read_text().splitlines() if line.strip()]
    return sorted(stamps)


def _one(args: argparse.Namespace, url: str, processes: int) -> tuple[float, list[int]]:
    queue = f"bench-proc-{uuid.uuid4().hex[:8]}"
    management = None
    if args.broker == "rabbitmq":
        from amqp1q.adapters.proton.rabbitmq_setup import RabbitMQManagement

        management = RabbitMQManagement(args.management)
        management.declare_queue(queue)
    try:
        asyncio.run(_push(url, queue, args.jobs))
        with tempfile.TemporaryDirectory() as tmp:
            project = Path(tmp)
            (project / "bench_handler.py").write_text(HANDLER)
            env = {**common.child_env(), "BENCH_CPU_SECONDS": str(args.cpu_ms / 1000)}
            env.pop("AMQP1Q_URL", None)
            argv = [sys.executable, "-m", "amqp1q", "worker", "bench_handler:registry"]
            argv += ["--url", url, "--queue", queue, "--processes", str(processes)]
            argv += ["--concurrency", "8", "--stall-warning", "0"]
            worker = subprocess.Popen(argv, cwd=project, env=env, stderr=subprocess.DEVNULL)
            try:
                deadline = time.monotonic() + 600
                while len(_stamps(project)) < args.jobs:
                    if time.monotonic() > deadline or worker.poll() is not None:
                        raise RuntimeError(f"the worker did {len(_stamps(project))} jobs")
                    time.sleep(0.2)
            finally:
                worker.send_signal(signal.SIGTERM)
                worker.wait(timeout=120)
            stamps = _stamps(project)
            shares = [len(p.read_text().splitlines()) for p in project.glob("done-*.txt")]
    finally:
        if management is not None:
            management.delete_queue(queue)
    return (len(stamps) - 1) / (stamps[-1] - stamps[0]), sorted(shares, reverse=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    common.broker_arguments(parser, default="rabbitmq")
    parser.add_argument("--jobs", type=int, default=3000)
    parser.add_argument("--cpu-ms", type=float, default=2.0, help="CPU per job (2 ms)")
    parser.add_argument("--processes", default="1,2", help="the pool sizes to run (1,2)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    sizes = [int(n) for n in args.processes.split(",")]
    broker, url = common.broker_url(args)
    rates: dict[int, list[float]] = {n: [] for n in sizes}
    try:
        for round_no in range(args.rounds):
            for n in sizes if round_no % 2 == 0 else list(reversed(sizes)):
                rate, shares = _one(args, url, n)
                rates[n].append(rate)
                note = f"round {round_no + 1}: {n} process(es) {rate:,.0f} jobs/s"
                print(f"{note} (jobs by process: {shares})", file=sys.stderr)
    finally:
        if broker is not None:
            broker.terminate()
            broker.wait(timeout=10)
    machine = common.machine()
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3]) if os.name == "posix" else "?"
    what = f"{args.jobs} jobs, {args.cpu_ms:g} ms CPU each, on {args.broker}"
    print(f"\n{what}, {args.rounds} rounds")
    print(f"({machine['cpu']}, {machine['nproc']} CPUs; load average {load} at the end)\n")
    print("| processes | jobs/s | vs 1 process |")
    print("|---:|---:|---:|")
    base = statistics.median(rates[sizes[0]])
    for n in sizes:
        rate = statistics.median(rates[n])
        print(f"| {n} | {rate:,.0f} | {rate / base:.2f}x |")


if __name__ == "__main__":
    main()
