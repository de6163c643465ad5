"""amqp1q through its public API: push N jobs, then consume them, at-least-once.

Two ways to push (--pattern):

- ``push_many``: --batch jobs per ``JobQueue.push_many`` call, one call after another;
- ``push``: one ``await queue.push(job)`` per job, each in a task of its own, --in-flight of them
  at once -- what a web app does, one push per request with many requests under way. A
  semaphore bounds the tasks (--spawn ``bounded``: the producer takes a permit before it
  starts a task, so at most --in-flight tasks exist; ``gather``: all N tasks are made at once
  and each waits for a permit, as ``asyncio.gather`` over N requests would). Before pushing,
  the same pattern is timed around a coroutine that only yields once (``asyncio.sleep(0)``)
  instead of pushing: its CPU per job (``pattern_cpu_us_per_job``) is the caller's own cost,
  the same for any asyncio client, to be told apart from amqp1q's.

Prints one JSON line: {"client", "n", "push_per_s", "consume_per_s", "push_cpu_us_per_job",
"consume_cpu_us_per_job"} (and "pattern_cpu_us_per_job" for ``push``); CPU is this process's
user+sys time for the phase, divided by N. Between the phases it prints ``#consume`` (the
driver reads the broker's CPU time there).

    python benchmarks/clients/amqp1q_bench.py --url amqp://guest:guest@127.0.0.1:5672 \
        --queue bench-q --n 20000 --prefetch 100 --size 1024 [--pattern push --in-flight 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Awaitable, Callable

from amqp1q import Job, JobQueue

PHASE_MARK = "#consume"  # benchmarks/common.py's


async def concurrently(
    n: int, in_flight: int, spawn: str, work: Callable[[int], Awaitable[object]]
) -> None:
    """``work(i)`` for i in range(n), each in a task of its own, ``in_flight`` at a time."""
    room = asyncio.Semaphore(in_flight)
    errors: list[BaseException] = []
    if spawn == "gather":

        async def bounded(i: int) -> None:
            async with room:
                await work(i)

        await asyncio.gather(*(bounded(i) for i in range(n)))
        return

    async def one(i: int) -> None:
        try:
            await work(i)
        finally:
            room.release()

    tasks: set[asyncio.Task[None]] = set()

    def done(task: asyncio.Task[None]) -> None:
        tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            errors.append(task.exception())  # type: ignore[arg-type]

    for i in range(n):
        await room.acquire()
        task = asyncio.create_task(one(i))
        tasks.add(task)
        task.add_done_callback(done)
    if tasks:
        await asyncio.wait(tasks)
    if errors:
        raise errors[0]


async def pattern_alone(n: int, in_flight: int, spawn: str) -> float:
    """CPU seconds of the push pattern around a coroutine that yields once and does nothing."""

    async def nothing(_: int) -> None:
        await asyncio.sleep(0)

    cpu0 = time.process_time()
    await concurrently(n, in_flight, spawn, nothing)
    return time.process_time() - cpu0


async def run(args: argparse.Namespace) -> dict[str, object]:
    n, batch = args.n, args.batch
    payload = b"x" * args.size
    result: dict[str, object] = {"client": "amqp1q", "n": n, "pattern": args.pattern}
    if args.pattern == "push":
        result["in_flight"] = args.in_flight
        result["spawn"] = args.spawn
        pattern_cpu = await pattern_alone(n, args.in_flight, args.spawn)
        result["pattern_cpu_us_per_job"] = round(pattern_cpu / n * 1e6, 2)
    queue = JobQueue.from_url(args.url, queue=args.queue, prefetch=args.prefetch)
    async with queue:
        cpu0, wall0 = time.process_time(), time.perf_counter()
        if args.pattern == "push":

            async def push(_: int) -> None:
                await queue.push(Job("bench", payload))

            await concurrently(n, args.in_flight, args.spawn, push)
        else:
            for first in range(0, n, batch):
                await queue.push_many([Job("bench", payload) for _ in range(min(batch, n - first))])
        push_wall, push_cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        print(PHASE_MARK, flush=True)

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
    result.update(
        push_per_s=round(n / push_wall, 1),
        consume_per_s=round(n / consume_wall, 1),
        push_cpu_us_per_job=round(push_cpu / n * 1e6, 2),
        consume_cpu_us_per_job=round(consume_cpu / n * 1e6, 2),
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default="amqp://guest:guest@127.0.0.1:5672")
    parser.add_argument("--queue", required=True)
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--prefetch", type=int, default=100)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--pattern", choices=["push_many", "push"], default="push_many")
    parser.add_argument("--batch", type=int, default=1000, help="jobs per push_many call")
    parser.add_argument("--in-flight", type=int, default=1000, help="push() calls at once")
    parser.add_argument("--spawn", choices=["bounded", "gather"], default="bounded")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args))))


if __name__ == "__main__":
    main()
