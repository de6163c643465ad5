"""RabbitMQ stopped and started under a running producer and consumer (issue: nothing lost).

`rabbitmqctl stop_app` / `start_app` in the middle of a 10,000-job run: every job whose push
returned is consumed at least once, duplicates stay within the in-flight window, consumption
resumes within 2 s of the broker coming back, and no task is left pending."""

from __future__ import annotations

import asyncio
import shutil
import time

import pytest

from amqp1q import Amqp1qError, Job, JobQueue, ReconnectPolicy

from ..conftest import RABBITMQ_URL, unavailable

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.rabbitmq,
    pytest.mark.slow,
    pytest.mark.serial,  # stops RabbitMQ under every other test: run alone (scripts/test.sh)
    pytest.mark.timeout(180),
]

N = 10_000
WINDOW = 1000  # the Proton adapter's in-flight window per sender


async def _rabbitmqctl(*args: str) -> None:
    ctl = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
    process = await asyncio.create_subprocess_exec(
        ctl, *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    _, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, f"rabbitmqctl {' '.join(args)}: {err.decode()}"


async def _amqp_ready(timeout: float = 60) -> None:
    """Until port 5672 answers the AMQP 1.0 SASL header again."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", 5672)
            writer.write(b"AMQP\x03\x01\x00\x00")
            reply = await asyncio.wait_for(reader.read(8), 2)
            writer.close()
            if reply.startswith(b"AMQP\x03"):
                return
        except (OSError, asyncio.TimeoutError):
            pass
        await asyncio.sleep(0.1)
    raise AssertionError("RabbitMQ did not come back")


async def test_stop_app_and_start_app_mid_run_lose_nothing(rabbitmq_queue: str) -> None:
    if shutil.which("rabbitmqctl") is None and not shutil.which("/usr/sbin/rabbitmqctl"):
        unavailable("rabbitmqctl is needed to restart RabbitMQ")
    policy = ReconnectPolicy(initial_delay=0.05, max_delay=0.3)
    pushed: set[str] = set()
    consumed: list[str] = []
    consumed_at: list[float] = []
    push_errors = 0
    kinds: set[str] = set()
    before = asyncio.all_tasks()
    two_thousand = asyncio.Event()

    async with JobQueue.from_url(
        RABBITMQ_URL, queue=rabbitmq_queue, prefetch=100, reconnect=policy, push_timeout=60
    ) as queue:

        async def produce() -> None:
            nonlocal push_errors
            for first in range(0, N, 100):
                jobs = [Job("restart", {"i": i}) for i in range(first, first + 100)]
                results = await queue.push_many(jobs, return_exceptions=True)
                for job, result in zip(jobs, results, strict=True):
                    if isinstance(result, Amqp1qError):
                        push_errors += 1
                        kinds.add(repr(result)[:200])
                    else:
                        pushed.add(job.id)

        async def consume() -> None:
            async with queue.consume() as consumer:
                async for job in consumer:
                    consumed.append(job.id)
                    consumed_at.append(time.monotonic())
                    if len(consumed) == 2000:
                        two_thousand.set()
                    try:
                        await job.ack()
                    except Amqp1qError:
                        pass  # its link died: the broker redelivers it
                    if pushed and set(consumed) >= pushed and producer.done():
                        return

        producer = asyncio.create_task(produce())
        consumer = asyncio.create_task(consume())
        await asyncio.wait_for(two_thousand.wait(), 60)
        await _rabbitmqctl("stop_app")
        await asyncio.sleep(1.0)
        await _rabbitmqctl("start_app")
        await _amqp_ready()
        back = time.monotonic()
        await asyncio.wait_for(producer, 120)
        await asyncio.wait_for(consumer, 120)

    resumed = min(t for t in consumed_at if t >= back) - back
    missing = pushed - set(consumed)
    duplicates = len(consumed) - len(set(consumed))
    print(f"pushed {len(pushed)} (errors {push_errors}), consumed {len(consumed)}, "
          f"duplicates {duplicates}, resumed after {resumed:.2f} s {kinds}")  # fmt: skip
    assert not missing, f"{len(missing)} pushed jobs never consumed"
    assert duplicates <= WINDOW
    assert resumed < 2.0
    await asyncio.sleep(0)
    leftover = [t for t in asyncio.all_tasks() - before if t is not asyncio.current_task()]
    assert not [t for t in leftover if not t.done()], leftover
