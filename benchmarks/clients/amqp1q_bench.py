"""amqp1q through its public API: push N jobs, then consume them, at-least-once.

Prints one JSON line: {"client", "n", "push_per_s", "consume_per_s", "push_cpu_us_per_job",
"consume_cpu_us_per_job"}; CPU is this process's user+sys time for the phase, divided by N.

    python benchmarks/clients/amqp1q_bench.py --url amqp://guest:guest@127.0.0.1:5672 \
        --queue bench-q --n 20000 --prefetch 100 --size 1024
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from amqp1q import Job, JobQueue


async def run(
    url: str, queue_name: str, n: int, prefetch: int, size: int, batch: int
) -> dict[str, object]:
    payload = b"x" * size
    queue = JobQueue.from_url(url, queue=queue_name, prefetch=prefetch)
    async with queue:
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for first in range(0, n, batch):
            await queue.push_many([Job("bench", payload) for _ in range(min(batch, n - first))])
        push_wall, push_cpu = time.perf_counter() - wall0, time.process_time() - cpu0

        cpu0, wall0 = time.process_time(), time.perf_counter()
        got = 0
        consume_wall = consume_cpu = 0.0
        async with queue.consume() as consumer:
            async for job in consumer:
                await job.ack()
                got += 1
                if got == n:
                    # Timed to the last ack, as every other client is, not to the close (the
                    # azure-servicebus SDK's receiver takes up to 1 s to close: its keep-alive).
                    consume_wall = time.perf_counter() - wall0
                    consume_cpu = time.process_time() - cpu0
                    break
        if got < n:
            raise SystemExit(f"the consumer ended after {got} of {n} jobs")
    return {
        "client": "amqp1q",
        "n": n,
        "push_per_s": round(n / push_wall, 1),
        "consume_per_s": round(n / consume_wall, 1),
        "push_cpu_us_per_job": round(push_cpu / n * 1e6, 2),
        "consume_cpu_us_per_job": round(consume_cpu / n * 1e6, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="amqp://guest:guest@127.0.0.1:5672")
    parser.add_argument("--queue", required=True)
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--prefetch", type=int, default=100)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=1000, help="jobs per push_many call")
    args = parser.parse_args()
    result = asyncio.run(run(args.url, args.queue, args.n, args.prefetch, args.size, args.batch))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
