"""Ten queues on one connection against ten connections: push and consume rates (issue 15).

    python benchmarks/connections.py [--broker rabbitmq|embedded] [--jobs 2000] [--rounds 3]

Each round runs both setups, in a fresh process each (the order alternates), against the same
broker: ``shared``, one ``amqp1q.connect()`` client with ten ``client.queue()``; ``separate``,
ten ``JobQueue.from_url()`` queues, a connection each. Each pushes ``--jobs`` 1 KiB jobs to every
queue at once (``push_many``, all ten concurrently), then consumes them all at once (ten
consumers, prefetch 100, ``ack`` each). Rates are total jobs per second over the ten queues;
the medians of the rounds, and shared / separate, are printed as a markdown table. The target
(issue 15) is shared >= 0.9 x separate.

RabbitMQ (scripts/brokers/rabbitmq.sh) gets ten fresh queues per run, declared through its
management API and deleted after; the embedded broker runs in a process of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import common  # noqa: E402 - benchmarks/ as a script directory

QUEUES = 10
BODY = b"x" * 1024


async def _run(mode: str, url: str, names: list[str], jobs: int) -> dict[str, float]:
    import amqp1q
    from amqp1q import Job, JobQueue

    client = None
    if mode == "shared":
        client = amqp1q.connect(url)
        await client.open()
        queues = [client.queue(name, prefetch=100) for name in names]
    else:
        queues = [JobQueue.from_url(url, queue=name, prefetch=100) for name in names]
        for queue in queues:
            await queue.open()

    async def consume(queue: JobQueue) -> None:
        async with queue.consume() as consumer:
            for _ in range(jobs):
                job = await consumer.receive()
                assert job is not None
                await job.ack()

    started = time.perf_counter()
    await asyncio.gather(*(q.push_many([Job("bench", BODY) for _ in range(jobs)]) for q in queues))
    pushed = time.perf_counter()
    await asyncio.gather(*(consume(q) for q in queues))
    consumed = time.perf_counter()
    if client is not None:
        await client.close()
    else:
        for queue in queues:
            await queue.close()
    total = jobs * len(queues)
    return {"push_per_s": total / (pushed - started), "consume_per_s": total / (consumed - pushed)}


def _child(args: argparse.Namespace) -> None:
    result = asyncio.run(_run(args.mode, args.url, args.queues.split(","), args.jobs))
    print(json.dumps(result))


def _queues(args: argparse.Namespace) -> tuple[list[str], Any]:
    names = [f"bench-conn-{uuid.uuid4().hex[:8]}-{i}" for i in range(QUEUES)]
    if args.broker != "rabbitmq":
        return names, None
    from amqp1q.adapters.proton.rabbitmq_setup import RabbitMQManagement

    management = RabbitMQManagement(args.management)
    for name in names:
        management.declare_queue(name)
    return names, management


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    common.broker_arguments(parser, default="rabbitmq")
    parser.add_argument("--jobs", type=int, default=2000, help="jobs per queue (2000)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--queues", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:
        _child(args)
        return
    broker, url = common.broker_url(args)
    extra = ["--jobs", str(args.jobs)]

    def run(mode: str) -> dict[str, float]:
        names, management = _queues(args)
        return common.run_mode(__file__, mode, url, names, management, extra)

    try:
        results = common.alternate(["shared", "separate"], args.rounds, run)
    finally:
        if broker is not None:
            broker.terminate()
            broker.wait(timeout=10)
    _report(args, results)


def _report(args: argparse.Namespace, results: dict[str, list[dict[str, float]]]) -> None:
    def med(mode: str, metric: str) -> float:
        return statistics.median(r[metric] for r in results[mode])

    machine = common.machine()
    print(f"\n{QUEUES} queues x {args.jobs} jobs of 1 KiB on {args.broker}, {args.rounds} rounds")
    print(f"({machine['cpu']}, {machine['nproc']} CPUs; load average {_load()})\n")
    print("| setup | push/s | consume/s |")
    print("|---|---:|---:|")
    for mode in ("shared", "separate"):
        print(f"| {mode} | {med(mode, 'push_per_s'):,.0f} | {med(mode, 'consume_per_s'):,.0f} |")
    push = med("shared", "push_per_s") / med("separate", "push_per_s")
    consume = med("shared", "consume_per_s") / med("separate", "consume_per_s")
    print(f"| shared / separate | {push:.2f}x | {consume:.2f}x |")


def _load() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


if __name__ == "__main__":
    main()
