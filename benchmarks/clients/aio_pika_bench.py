"""Reference client: aio-pika over AMQP 0.9.1 doing the amqp1q benchmark's work.

Push N persistent messages (1 KiB body by default) to a durable queue through the default
exchange with publisher confirms on (aio-pika's channel default), --batch publishes in flight at a
time (asyncio.gather), each awaited until the broker confirms it; then consume N with
prefetch_count=--prefetch and ack each message explicitly. One connection serves both phases.

Prints one JSON line: {"client", "n", "push_per_s", "consume_per_s", "push_cpu_us_per_job",
"consume_cpu_us_per_job"}; CPU is this process's user+sys time for the phase, divided by N.
Between the phases it prints ``#consume`` (the driver reads the broker's CPU time there).

    python benchmarks/clients/aio_pika_bench.py --url amqp://guest:guest@127.0.0.1:5672 \
        --queue bench-q --n 20000 --prefetch 100 --size 1024
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from urllib.parse import urlsplit, urlunsplit

import aio_pika


async def run(url: str, queue_name: str, n: int, prefetch: int, size: int, batch: int) -> dict:
    payload = b"x" * size
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        await channel.set_qos(prefetch_count=prefetch)
        queue = await channel.declare_queue(queue_name, durable=True)
        exchange = channel.default_exchange

        cpu0, wall0 = time.process_time(), time.perf_counter()
        for first in range(0, n, batch):
            await asyncio.gather(
                *(
                    exchange.publish(
                        aio_pika.Message(
                            payload,
                            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                            type="bench",
                        ),
                        routing_key=queue_name,
                    )
                    for _ in range(min(batch, n - first))
                )
            )
        push_wall, push_cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        print("#consume", flush=True)  # benchmarks/common.py's PHASE_MARK

        cpu0, wall0 = time.process_time(), time.perf_counter()
        got = 0
        async with queue.iterator() as messages:
            async for message in messages:
                await message.ack()
                got += 1
                if got == n:
                    break
        consume_wall, consume_cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return {
        "client": "aio-pika",
        "n": n,
        "push_per_s": round(n / push_wall, 1),
        "consume_per_s": round(n / consume_wall, 1),
        "push_cpu_us_per_job": round(push_cpu / n * 1e6, 2),
        "consume_cpu_us_per_job": round(consume_cpu / n * 1e6, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="amqp://guest:guest@127.0.0.1:5672")
    parser.add_argument("--host", help="overrides the URL's host")
    parser.add_argument("--port", type=int, help="overrides the URL's port")
    parser.add_argument("--queue", required=True)
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--prefetch", type=int, default=100)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=1000, help="publishes in flight at once")
    args = parser.parse_args()

    url = urlsplit(args.url)
    if args.host or args.port:
        creds = f"{url.username}:{url.password}@" if url.username else ""
        netloc = f"{creds}{args.host or url.hostname}:{args.port or url.port or 5672}"
        url = url._replace(netloc=netloc)
    result = asyncio.run(
        run(urlunsplit(url), args.queue, args.n, args.prefetch, args.size, args.batch)
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
