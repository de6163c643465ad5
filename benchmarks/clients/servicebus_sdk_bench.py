"""The raw azure-servicebus asyncio client doing what amqp1q_bench.py does through amqp1q.

Push N messages of --size bytes, --batch at a time (as amqp1q_bench.py calls push_many), each
set through ``create_message_batch`` / ``send_messages`` in as many batches as the size limit
needs, each send awaited in turn: what amqp1q's Service Bus adapter does, then
receive N in PEEK_LOCK with the SDK's ``prefetch_count`` set to --prefetch and complete each
one. Completions run concurrently, as amqp1q's do: each ``complete_message`` is its own task,
at most --in-flight at once, while the loop goes on receiving.

Prints one JSON line: {"client", "n", "push_per_s", "consume_per_s", "push_cpu_us_per_job",
"consume_cpu_us_per_job"}; CPU is this process's user+sys time for the phase, divided by N.

    python benchmarks/clients/servicebus_sdk_bench.py --conn "Endpoint=sb://...;..." \
        --queue bench-q --n 5000 --prefetch 100 --size 1024

``--socket-timeout`` is the SDK's own ``socket_timeout`` for the sender and receiver (its
default is 0.2 s; amqp1q's adapter sets 0.02 s, and so does this client by default so that the
two compare like for like; pass 0 to keep the SDK's default).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from typing import Any

from azure.servicebus import ServiceBusMessage, ServiceBusMessageBatch, ServiceBusReceiveMode
from azure.servicebus.aio import ServiceBusClient, ServiceBusSender
from azure.servicebus.exceptions import MessageSizeExceededError


def fits(batch: ServiceBusMessageBatch, message: ServiceBusMessage) -> bool:
    try:
        batch.add_message(message)
    except MessageSizeExceededError:
        return False
    return True


async def send_batched(sender: ServiceBusSender, messages: list[ServiceBusMessage]) -> None:
    """Send in as few ``send_messages`` calls as the batch size limit allows, one after the
    other (1,000 1 KiB messages exceed the 1 MiB limit: two calls, as amqp1q makes)."""
    batch = await sender.create_message_batch()
    for message in messages:
        if not fits(batch, message):
            await sender.send_messages(batch)
            batch = await sender.create_message_batch()
            batch.add_message(message)
    if len(batch):
        await sender.send_messages(batch)


async def run(args: argparse.Namespace) -> dict[str, object]:
    payload = b"x" * args.size
    n = args.n
    options: dict[str, Any] = {}
    if args.socket_timeout > 0:
        options["socket_timeout"] = args.socket_timeout
    async with ServiceBusClient.from_connection_string(args.conn) as client:
        sender = client.get_queue_sender(args.queue, **options)
        async with sender:
            cpu0, wall0 = time.process_time(), time.perf_counter()
            for first in range(0, n, args.batch):
                # A message id and a subject on each, as amqp1q sends (the job's id and name).
                messages = [
                    ServiceBusMessage(payload, message_id=str(uuid.uuid4()), subject="bench")
                    for _ in range(min(args.batch, n - first))
                ]
                await send_batched(sender, messages)
            push_wall, push_cpu = time.perf_counter() - wall0, time.process_time() - cpu0

        receiver = client.get_queue_receiver(
            args.queue,
            receive_mode=ServiceBusReceiveMode.PEEK_LOCK,
            prefetch_count=args.prefetch,
            **options,
        )
        async with receiver:
            cpu0, wall0 = time.process_time(), time.perf_counter()
            got = 0
            pending: set[asyncio.Task[None]] = set()
            while got < n:
                messages = await receiver.receive_messages(
                    max_message_count=min(args.prefetch, n - got), max_wait_time=5
                )
                if not messages:
                    raise RuntimeError(f"the queue ran dry after {got} of {n} messages")
                for message in messages:
                    if len(pending) >= args.in_flight:
                        _, pending = await asyncio.wait(
                            pending, return_when=asyncio.FIRST_COMPLETED
                        )
                    task = asyncio.create_task(receiver.complete_message(message))
                    pending.add(task)
                    task.add_done_callback(pending.discard)
                    got += 1
            if pending:
                done, _ = await asyncio.wait(pending)
                for task in done:
                    task.result()  # a failed completion fails the run
            consume_wall, consume_cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return {
        "client": "azure-servicebus",
        "n": n,
        "push_per_s": round(n / push_wall, 1),
        "consume_per_s": round(n / consume_wall, 1),
        "push_cpu_us_per_job": round(push_cpu / n * 1e6, 2),
        "consume_cpu_us_per_job": round(consume_cpu / n * 1e6, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--conn", required=True, help="Service Bus connection string")
    parser.add_argument("--queue", required=True)
    parser.add_argument("--n", type=int, default=5_000)
    parser.add_argument("--prefetch", type=int, default=100)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=1000, help="messages per send_messages")
    parser.add_argument(
        "--in-flight", type=int, default=256, help="completions in flight at once (amqp1q: 256)"
    )
    parser.add_argument("--socket-timeout", type=float, default=0.02)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args))))


if __name__ == "__main__":
    main()
