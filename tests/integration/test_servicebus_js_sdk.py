"""The embedded broker's Service Bus emulation, driven by @azure/service-bus (the JavaScript
SDK, from Node) in both directions with amqp1q's Service Bus adapter.

The SDK runs as ``tests/interop/node/servicebus.js`` (installed by scripts/peers/node.sh), one
command per process, printing one JSON line. Its retries are off, so a failure shows at once.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from amqp1q import Job, JobQueue, ReceivedJob
from amqp1q.testing import Broker

from ..conftest import unavailable

pytest.importorskip("azure.servicebus")

pytestmark = [pytest.mark.anyio, pytest.mark.node]

NODE_DIR = Path(__file__).resolve().parent.parent / "interop" / "node"


@pytest.fixture
async def broker() -> AsyncIterator[Broker]:
    async with Broker(servicebus=True) as broker:
        yield broker


def _queue() -> str:
    return f"js-{uuid.uuid4().hex[:8]}"


async def js(
    broker: Broker, command: str, queue: str, args: dict[str, Any], *, ok: bool = True
) -> dict[str, Any]:
    """Run one servicebus.js command against ``broker``; its JSON answer."""
    node = shutil.which("node")
    if node is None or not (NODE_DIR / "node_modules" / "@azure" / "service-bus").is_dir():
        unavailable("node and @azure/service-bus are needed (run scripts/peers/node.sh)")
    env = {**os.environ, "AMQP1Q_SB": broker.servicebus_connection_string()}
    process = await asyncio.create_subprocess_exec(
        node,
        str(NODE_DIR / "servicebus.js"),
        command,
        "-",  # the connection string comes from AMQP1Q_SB
        queue,
        json.dumps(args),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(process.communicate(), 45)
    lines = out.decode().strip().splitlines()
    assert lines, f"servicebus.js {command} printed nothing: {err.decode()[-2000:]}"
    answer: dict[str, Any] = json.loads(lines[-1])
    if ok:
        assert process.returncode == 0, f"servicebus.js {command}: {answer} {err.decode()[-2000:]}"
    return answer


async def _jobs(queue: JobQueue, count: int, wait: float = 10.0) -> list[ReceivedJob]:
    """``count`` jobs from ``queue``, each acked, or fail after ``wait`` idle seconds."""
    got: list[ReceivedJob] = []
    async with queue.consume(prefetch=50) as consumer:
        while len(got) < count:
            job = await consumer.receive(timeout=wait)
            assert job is not None, f"stalled after {len(got)} of {count} jobs"
            await job.ack()
            got.append(job)
    return got


async def test_js_batches_arrive_whole_as_jobs(broker: Broker) -> None:
    queue = _queue()
    messages = [
        {
            "body": {"n": n, "text": "x" * 40},
            "subject": "js.job",
            "contentType": "application/json",
            "messageId": f"js-{n}",
            "applicationProperties": {"tenant": "a", "n": str(n)},
        }
        for n in range(500)
    ]
    answer = await js(broker, "send", queue, {"messages": messages, "maxSizeInBytes": 8 * 1024})
    assert answer["sent"] == 500
    assert answer["batches"] > 1  # several createMessageBatch batches, each unpacked
    assert len(broker.queue(queue)) == 500

    async with JobQueue.from_url(broker.servicebus_connection_string(queue)) as jobs_queue:
        jobs = await _jobs(jobs_queue, 500)
    assert sorted(job.id for job in jobs) == sorted(f"js-{n}" for n in range(500))
    for job in jobs:
        n = int(job.id.removeprefix("js-"))
        assert job.name == "js.job"
        assert job.payload == {"n": n, "text": "x" * 40}
        assert job.headers["tenant"] == "a"
        assert job.headers["n"] == str(n)
        assert job.attempt == 1
        assert job.decode_error is None
    assert len(broker.queue(queue)) == 0


async def test_an_empty_js_batch_is_refused_at_once_and_nothing_is_stored(
    broker: Broker,
) -> None:
    queue = _queue()
    started = time.monotonic()
    answer = await js(broker, "send-empty-batch", queue, {}, ok=False)
    assert "no data in it" in answer["error"]["message"]
    assert time.monotonic() - started < 15  # refused, not left to the SDK's operation timeout
    assert len(broker.queue(queue)) == 0


async def test_jobs_pushed_by_amqp1q_are_settled_by_the_js_receiver(broker: Broker) -> None:
    queue = _queue()
    url = broker.servicebus_connection_string(queue)
    async with JobQueue.from_url(url) as jobs_queue:
        pushed = [Job("py.job", {"n": n}, headers={"from": "python"}) for n in range(4)]
        await jobs_queue.push_many(pushed)  # one Python SDK batch

        settle = ["complete", "abandon", "deadletter", "renew"]
        answer = await js(broker, "receive", queue, {"count": 4, "settle": settle})
        received = {m["messageId"]: m for m in answer["messages"]}
        assert sorted(received) == sorted(job.id for job in pushed)
        for job, how in zip(pushed, settle, strict=True):
            message = received[job.id]
            assert message["settled"] == how
            assert message["subject"] == "py.job"
            assert message["body"] == job.payload
            assert message["applicationProperties"]["from"] == "python"
            assert message["deliveryCount"] == 0
            assert message["lockedUntilUtc"] > message["enqueuedTimeUtc"]
        renewed = received[pushed[3].id]
        assert renewed["renewedUntil"] > renewed["lockedUntilBeforeRenew"]
        assert renewed["lockedUntilAfterRenew"] == renewed["renewedUntil"]

        # The abandoned job comes back to amqp1q with its attempt counted.
        [again] = await _jobs(jobs_queue, 1)
        assert (again.id, again.attempt, again.payload) == (pushed[1].id, 2, {"n": 1})

        # The dead-lettered one is in the dead-letter sub-queue, with the JS SDK's reason.
        async with jobs_queue.dead_letter_queue() as dead_letters:
            [dead] = await _jobs(dead_letters, 1)
        assert (dead.id, dead.payload) == (pushed[2].id, {"n": 2})
        assert dead.dead_letter_reason == "js-reason"
        assert dead.dead_letter_description == "js-description"
    assert len(broker.queue(queue)) == 0
    assert len(broker.queue(queue + "/$deadletterqueue")) == 0


async def test_a_job_rejected_by_amqp1q_is_read_by_js_from_the_dead_letter_subqueue(
    broker: Broker,
) -> None:
    queue = _queue()
    async with JobQueue.from_url(broker.servicebus_connection_string(queue)) as jobs_queue:
        await jobs_queue.push(Job("py.poison", {"bad": True}))
        async with jobs_queue.consume() as consumer:
            job = await consumer.receive(timeout=10)
            assert job is not None
            await job.reject("bad-input", "field x is missing")
    answer = await js(broker, "receive", queue + "/$deadletterqueue", {"count": 1})
    [dead] = answer["messages"]
    assert (dead["messageId"], dead["subject"], dead["body"]) == (job.id, "py.poison", job.payload)
    assert dead["deadLetterReason"] == "bad-input"
    assert dead["deadLetterErrorDescription"] == "field x is missing"


async def test_js_schedules_two_and_cancels_one_amqp1q_gets_one_no_earlier(
    broker: Broker,
) -> None:
    queue = _queue()
    messages = [
        {
            "body": {"which": which},
            "subject": "js.later",
            "contentType": "application/json",
            "messageId": f"later-{which}",
        }
        for which in ("kept", "cancelled")
    ]
    answer = await js(
        broker, "schedule", queue, {"messages": messages, "delayMs": 1500, "cancel": [1]}
    )
    numbers = answer["sequenceNumbers"]
    assert len(set(numbers)) == 2
    assert answer["cancelled"] == [numbers[1]]
    assert len(broker.queue(queue)) == 1  # the cancelled one is gone before it was due
    async with JobQueue.from_url(broker.servicebus_connection_string(queue)) as jobs_queue:
        async with jobs_queue.consume() as consumer:
            job = await consumer.receive(timeout=10)
            assert job is not None
            arrived = time.time() * 1000
            await job.ack()
            assert (job.id, job.payload) == ("later-kept", {"which": "kept"})
            assert arrived >= answer["scheduledFor"] - 50  # not before it was due
            assert await consumer.receive(timeout=1.0) is None


async def test_a_single_js_message_and_raw_bytes_arrive_intact(broker: Broker) -> None:
    queue = _queue()
    raw = bytes(range(256))
    message = {
        "body": {"$base64": base64.b64encode(raw).decode()},
        "subject": "js.raw",
        "messageId": "raw-1",
    }
    await js(broker, "send-one", queue, {"message": message})
    async with JobQueue.from_url(broker.servicebus_connection_string(queue)) as jobs_queue:
        [job] = await _jobs(jobs_queue, 1)
    assert (job.id, job.name, job.payload) == ("raw-1", "js.raw", raw)


async def test_a_plain_broker_tells_the_js_sdk_at_once_to_start_it_with_servicebus() -> None:
    async with Broker() as plain:  # no emulation
        started = time.monotonic()
        answer = await js(plain, "send-one", "jobs", {"message": {"body": "lost?"}}, ok=False)
        assert time.monotonic() - started < 10  # node's start included
        assert "start it with `amqp1q broker --servicebus`" in answer["error"]["message"]
        assert plain.store.queues == {}
