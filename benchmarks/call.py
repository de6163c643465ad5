"""Request and reply: ``queue.call()`` against the same round trip done by hand (issue 20).

    python benchmarks/call.py [--broker embedded|rabbitmq] [--calls 5000] [--callers 100]
                              [--rounds 3]

Each round runs both setups, in a fresh process each (the order alternates), against the same
broker; ``--callers`` tasks call at once until ``--calls`` round trips are done, each a small
JSON job answered with its payload:

- ``call``: ``await queue.call(Job(...))``, answered by ``run_worker`` (a Registry handler that
  returns the payload); the reply comes back on the client's reply link (a dynamic node on the
  embedded broker, a reply queue on RabbitMQ 3.x);
- ``reply``: ``queue.call()`` too, answered by a plain consumer loop (a task per request that
  does ``await job.reply(job.payload)`` then ``ack``): the call path without the worker's
  dispatcher;
- ``hand``: two queues, by hand: the caller pushes to ``requests`` and waits on a future its
  reader resolves; the responder consumes ``requests``, pushes the answer to ``replies`` with
  the request's id in a header, then acks (a task per request, as the worker runs handlers).

Worker and callers share one process, in every setup. Printed: the
medians of the rounds as a markdown table -- round trips per second, p50 and p99 latency -- and
call / hand.
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


async def _calls(
    url: str, queue: str, calls: int, callers: int, reply_queue: str | None
) -> list[float]:
    """``callers`` tasks calling until ``calls`` round trips are done; each one's latency."""
    from amqp1q import Job, JobQueue

    latencies: list[float] = []
    async with JobQueue.from_url(url, queue=queue, reply_queue=reply_queue) as caller:
        left = iter(range(calls))

        async def one_caller() -> None:
            for i in left:
                started = time.perf_counter()
                answer = await caller.call(Job("echo", {"n": i}), timeout=60)
                latencies.append(time.perf_counter() - started)
                assert answer == {"n": i}

        await asyncio.gather(*(one_caller() for _ in range(callers)))
    return latencies


async def _call_mode(
    url: str, names: list[str], calls: int, callers: int, reply_queue: str | None
) -> list[float]:
    from amqp1q import JobQueue, Registry
    from amqp1q.worker import run_worker

    requests = names[0]
    registry = Registry()

    @registry.handler("echo")
    async def echo(job: Any) -> Any:
        return job.payload

    served = JobQueue.from_url(url, queue=requests, prefetch=callers)
    await served.open()
    stop = asyncio.Event()
    worker = asyncio.create_task(run_worker(registry, served, stop=stop, concurrency=callers))
    latencies = await _calls(url, requests, calls, callers, reply_queue)
    stop.set()
    await worker
    return latencies


async def _reply_mode(
    url: str, names: list[str], calls: int, callers: int, reply_queue: str | None
) -> list[float]:
    from amqp1q import JobQueue

    served = JobQueue.from_url(url, queue=names[0], prefetch=callers)
    await served.open()

    async def answer(job: Any) -> None:
        await job.reply(job.payload)
        await job.ack()

    async def responder() -> None:
        answering: set[asyncio.Task[None]] = set()
        async with served.consume() as consumer:
            async for job in consumer:
                task = asyncio.create_task(answer(job))
                answering.add(task)
                task.add_done_callback(answering.discard)

    serving = asyncio.create_task(responder())
    latencies = await _calls(url, names[0], calls, callers, reply_queue)
    serving.cancel()
    await asyncio.gather(serving, return_exceptions=True)
    await served.close()
    return latencies


async def _hand_mode(
    url: str, names: list[str], calls: int, callers: int, reply_queue: str | None
) -> list[float]:
    from amqp1q import Job, JobQueue

    requests_name, replies_name = names
    requests = JobQueue.from_url(url, queue=requests_name, prefetch=callers)
    replies = JobQueue.from_url(url, queue=replies_name, prefetch=callers)
    server_in = JobQueue.from_url(url, queue=requests_name, prefetch=callers)
    server_out = JobQueue.from_url(url, queue=replies_name)
    for queue in (requests, replies, server_in, server_out):
        await queue.open()
    waiting: dict[str, asyncio.Future[Any]] = {}

    async def answer(job: Any) -> None:
        await server_out.push(Job("answer", job.payload, headers={"for": job.id}))
        await job.ack()

    async def responder() -> None:  # a task per request, as the worker runs them
        answering: set[asyncio.Task[None]] = set()
        async with server_in.consume() as consumer:
            async for job in consumer:
                task = asyncio.create_task(answer(job))
                answering.add(task)
                task.add_done_callback(answering.discard)

    async def reader() -> None:
        async with replies.consume() as consumer:
            async for job in consumer:
                future = waiting.pop(job.headers["for"], None)
                if future is not None:
                    future.set_result(job.payload)
                await job.ack()

    tasks = [asyncio.create_task(responder()), asyncio.create_task(reader())]
    latencies: list[float] = []
    left = iter(range(calls))

    async def one_caller() -> None:
        loop = asyncio.get_running_loop()
        for i in left:
            started = time.perf_counter()
            job = Job("echo", {"n": i})
            future = waiting[job.id] = loop.create_future()
            await requests.push(job)
            answer = await asyncio.wait_for(future, 60)
            latencies.append(time.perf_counter() - started)
            assert answer == {"n": i}

    await asyncio.gather(*(one_caller() for _ in range(callers)))
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for queue in (requests, replies, server_in, server_out):
        await queue.close()
    return latencies


def _child(args: argparse.Namespace) -> None:
    run = {"call": _call_mode, "reply": _reply_mode, "hand": _hand_mode}[args.mode]
    names = args.queues.split(",")
    reply_queue = names[1] if args.broker == "rabbitmq" else None  # RabbitMQ 3.x: no dynamic
    started = time.perf_counter()
    latencies = asyncio.run(run(args.url, names, args.calls, args.callers, reply_queue))
    elapsed = time.perf_counter() - started
    latencies.sort()
    print(
        json.dumps(
            {
                "per_s": len(latencies) / elapsed,
                "p50_ms": 1000 * latencies[len(latencies) // 2],
                "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)],
            }
        )
    )


def _queues(args: argparse.Namespace) -> tuple[list[str], Any]:
    tag = uuid.uuid4().hex[:8]
    names = [f"bench-call-{tag}", f"bench-call-{tag}.replies"]
    if args.broker != "rabbitmq":
        return names, None
    from amqp1q.adapters.proton.rabbitmq_setup import RabbitMQManagement

    management = RabbitMQManagement(args.management)
    management.declare_queue(names[0])
    management.setup_reply_queue(names[1])
    return names, management


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    common.broker_arguments(parser, default="embedded")
    parser.add_argument("--calls", type=int, default=5000, help="round trips per run (5000)")
    parser.add_argument("--callers", type=int, default=100, help="concurrent callers (100)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--queues", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:
        _child(args)
        return
    broker, url = common.broker_url(args)
    extra = ["--calls", str(args.calls), "--callers", str(args.callers), "--broker", args.broker]

    def run(mode: str) -> dict[str, float]:
        names, management = _queues(args)
        return common.run_mode(__file__, mode, url, names, management, extra)

    try:
        results = common.alternate(["call", "reply", "hand"], args.rounds, run)
    finally:
        if broker is not None:
            broker.terminate()
            broker.wait(timeout=10)
    _report(args, results)


def _report(args: argparse.Namespace, results: dict[str, list[dict[str, float]]]) -> None:
    def med(mode: str, metric: str) -> float:
        return statistics.median(r[metric] for r in results[mode])

    machine = common.machine()
    print(
        f"\n{args.calls} round trips, {args.callers} concurrent callers, on {args.broker}, "
        f"{args.rounds} rounds"
    )
    print(f"({machine['cpu']}, {machine['nproc']} CPUs)\n")
    print("| setup | round trips/s | p50 ms | p99 ms |")
    print("|---|---:|---:|---:|")
    labels = (
        ("call", "queue.call(), run_worker answers"),
        ("reply", "queue.call(), a consumer loop answers"),
        ("hand", "by hand, two queues"),
    )
    for mode, label in labels:
        print(
            f"| {label} | {med(mode, 'per_s'):,.0f} | {med(mode, 'p50_ms'):.1f} "
            f"| {med(mode, 'p99_ms'):.1f} |"
        )
    for mode in ("call", "reply"):
        print(
            f"| {mode} / hand | {med(mode, 'per_s') / med('hand', 'per_s'):.2f}x "
            f"| {med(mode, 'p50_ms') / med('hand', 'p50_ms'):.2f}x "
            f"| {med(mode, 'p99_ms') / med('hand', 'p99_ms'):.2f}x |"
        )


if __name__ == "__main__":
    main()
