"""How amqp1q's work is shaped on the wire: socket writes, reads and loop turns per job.

One process pushes --n jobs (concurrent ``push()`` with --in-flight tasks, or ``push_many``),
then consumes them, against one broker (a fresh queue from benchmarks/brokers.py), and prints,
per job and for each phase: the client's CPU µs, socket writes and reads, bytes each way, and
event-loop iterations -- counted by wrapping the Proton adapter's driver (its ``Pump``) and the
loop's ``_run_once``. Jobs per write says how well pushes made together share a write; against
the Qpid C++ broker it cannot pass 10 (the broker grants a sender 10 credits at a time).

    python benchmarks/probe.py --broker qpid-cpp
    python benchmarks/probe.py --broker rabbitmq --pattern push_many --n 50000

Only for looking: the counting itself costs CPU, so the CPU column is a little above
benchmarks/run.py's. amqp1q's driver is imported by name (amqp1q.adapters.proton._driver).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))  # this checkout first
sys.path.insert(0, str(Path(__file__).resolve().parent / "clients"))

import brokers
from amqp1q_bench import concurrently

from amqp1q import Job, JobQueue
from amqp1q.adapters.proton import _driver

COUNTS: collections.Counter[str] = collections.Counter()


def count_io() -> None:
    """Wrap the driver's reads and writes and the loop's iterations with counters."""
    pump = _driver.Pump
    received, transport_of = pump.data_received, pump.connection_made

    def data_received(self: Any, data: bytes) -> None:
        COUNTS["reads"] += 1
        COUNTS["bytes in"] += len(data)
        received(self, data)

    def connection_made(self: Any, transport: Any) -> None:
        write = transport.write

        def counted(data: bytes) -> None:
            COUNTS["writes"] += 1
            COUNTS["bytes out"] += len(data)
            write(data)

        transport.write = counted
        transport_of(self, transport)

    pump.data_received = data_received  # type: ignore[method-assign]
    pump.connection_made = connection_made  # type: ignore[method-assign]
    loop_class = asyncio.get_event_loop_policy().new_event_loop().__class__
    run_once = loop_class._run_once  # type: ignore[attr-defined]

    def counted_run_once(self: Any) -> None:
        COUNTS["loop turns"] += 1
        run_once(self)

    loop_class._run_once = counted_run_once  # type: ignore[attr-defined]


def report(phase: str, n: int, cpu: float, wall: float) -> None:
    per = {k: v / n for k, v in COUNTS.items()}
    jobs_per_write = n / COUNTS["writes"] if COUNTS["writes"] else float("inf")
    jobs_per_read = n / COUNTS["reads"] if COUNTS["reads"] else float("inf")
    print(
        f"| {phase} | {n / wall:,.0f} | {cpu / n * 1e6:.1f} | {jobs_per_write:.1f} "
        f"| {jobs_per_read:.1f} | {per.get('bytes out', 0):,.0f} | {per.get('bytes in', 0):,.0f} "
        f"| {per.get('loop turns', 0):.3f} |"
    )


async def run(args: argparse.Namespace, target: brokers.Target) -> None:
    payload = b"x" * args.size
    queue = JobQueue.from_url(target.url, queue=target.queue, prefetch=args.prefetch)
    async with queue:
        await queue.push_many([Job("warm-up", payload) for _ in range(100)])
        COUNTS.clear()
        cpu0, wall0 = time.process_time(), time.perf_counter()
        if args.pattern == "push":

            async def push(_: int) -> None:
                await queue.push(Job("bench", payload))

            await concurrently(args.n, args.in_flight, "bounded", push)
        else:
            for first in range(0, args.n, 1000):
                count = min(1000, args.n - first)
                await queue.push_many([Job("bench", payload) for _ in range(count)])
        report(args.pattern, args.n, time.process_time() - cpu0, time.perf_counter() - wall0)
        total = args.n + 100
        COUNTS.clear()
        cpu0, wall0 = time.process_time(), time.perf_counter()
        got = 0
        async with queue.consume() as consumer:
            async for job in consumer:
                await job.ack()
                got += 1
                if got == total:
                    break
            report("consume", total, time.process_time() - cpu0, time.perf_counter() - wall0)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--broker", choices=brokers.BROKERS, default="qpid-cpp")
    parser.add_argument("--pattern", choices=["push", "push_many"], default="push")
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--in-flight", type=int, default=1000)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--prefetch", type=int, default=100)
    parser.add_argument("--url", default="amqp://guest:guest@127.0.0.1:5672", help="RabbitMQ")
    parser.add_argument("--management", default="http://guest:guest@127.0.0.1:15672")
    parser.add_argument("--vhost", default="/")
    parser.add_argument(
        "--qpid-dir", default=str(Path(__file__).resolve().parent.parent / ".brokers" / "qpid")
    )
    parser.add_argument("--python", default=sys.executable)
    args = parser.parse_args()
    broker = brokers.make(args.broker, args)
    try:
        broker.start()
    except brokers.BrokerUnavailable as e:
        print(f"probe.py: {e}", file=sys.stderr)
        return 2
    count_io()
    print(f"{args.broker}, n = {args.n:,}, {args.size}-byte jobs, prefetch {args.prefetch}\n")
    print(
        "| phase | jobs/s | CPU µs/job | jobs/write | jobs/read | bytes out/job "
        "| bytes in/job | loop turns/job |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    try:
        with broker.target(f"amqp1q-probe-{args.pattern}-{time.monotonic_ns()}") as target:
            asyncio.run(run(args, target))
    finally:
        broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
