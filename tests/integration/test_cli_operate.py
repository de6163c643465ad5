"""``amqp1q stats``, ``peek``, ``replay`` and ``purge`` (and ``push`` and ``consume``, which take
the same ``--url``/``--queue``) as a user runs them, against the embedded broker in both modes
(plain, and the Service Bus emulation through the Service Bus adapter) and RabbitMQ: the counts
match what was pushed and failed, peek prints JSON lines with the dead-letter reason and binary
payloads as base64, and peeking takes nothing."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest

from amqp1q import Job, JobQueue
from amqp1q.testing import Broker

from ..cli import run_cli_async
from ..conftest import RABBITMQ_MANAGEMENT_URL, RABBITMQ_URL, unavailable

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]


def lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


async def cli(*argv: str) -> list[dict[str, Any]]:
    code, out, err = await run_cli_async(*argv)
    assert code == 0, err
    return lines(out)


async def exercise(url: str, queue: str, *, exact: bool = True) -> None:
    args = ("--url", url, "--queue", queue)
    async with JobQueue.from_url(url, queue=queue) as jobs:
        await jobs.push_many([Job("text", {"n": 1}), Job("bin", b"\x00\x01\xfe")])
        await jobs.push(Job("poison", {"n": 3}))
        async with jobs.consume(prefetch=1) as consumer:
            for _ in range(2):  # the first two back in order; the third dead-lettered
                job = await consumer.receive(timeout=10)
                assert job is not None
                await job.release()
        async with jobs.consume(prefetch=10) as consumer:
            held = [await consumer.receive(timeout=10) for _ in range(3)]
            for job in held:
                assert job is not None
                if job.name == "poison":
                    await job.reject("bad input", "n must be even")
                else:
                    await job.release()
    # (three readers at once, as three users may: each command pays its own connection set-up)
    (stats,), peeked, (letter,) = await asyncio.gather(
        cli("stats", *args), cli("peek", *args, "-n", "5"), cli("peek", *args, "--dead-letter")
    )
    assert stats["dead_letter_queue"].startswith(queue)
    if exact:
        assert (stats["ready"], stats["dead_lettered"]) == (2, 1)
    assert {p["name"]: p["payload"] for p in peeked} == {
        "text": {"json": {"n": 1}},
        "bin": {"base64": "AAH+"},
    }
    assert (letter["name"], letter["dead_letter_reason"]) == ("poison", "bad input")
    assert letter["dead_letter_description"] == "n must be even"
    assert await cli("peek", *args, "-n", "5") == peeked  # peeking took nothing
    assert await cli("replay", *args, "--reason", "other") == [{"queue": queue, "replayed": 0}]
    assert await cli("replay", *args) == [{"queue": queue, "replayed": 1}]
    async with JobQueue.from_url(url, queue=queue) as jobs, jobs.consume(prefetch=10) as consumer:
        got = [await consumer.receive(timeout=10) for _ in range(3)]
        assert sorted(j.name for j in got if j) == ["bin", "poison", "text"]
        for job in got:
            assert job is not None
            assert job.attempt <= 2
            await (job.reject("again") if job.name == "poison" else job.ack())
    (purged,) = await cli("purge", *args, "--dead-letter")
    assert purged["queue"] == queue
    if exact:
        assert purged["purged"] == 1
    assert await cli("peek", *args, "--dead-letter") == []


async def test_operate_the_embedded_broker() -> None:
    async with Broker() as broker:
        await exercise(broker.url, "emails")


async def test_push_and_consume_take_the_same_url_and_queue() -> None:
    async with Broker() as broker:
        args = ("--url", broker.url, "--queue", "invoices")
        code, out, err = await run_cli_async("push", *args, "--name", "bill", "--payload", "7")
        assert code == 0, err
        (pushed,) = out.split()
        (stats,) = await cli("stats", *args)
        assert (stats["queue"], stats["ready"]) == ("invoices", 1)
        (job,) = await cli("consume", *args, "--count", "1", "--quiet")
        assert (job["id"], job["name"], job["payload"]) == (pushed, "bill", 7)
        (stats,) = await cli("stats", *args)
        assert stats["ready"] == 0
        assert (await cli("stats", "--url", broker.url, "--queue", "emails"))[0]["ready"] == 0


@pytest.mark.slow
async def test_operate_the_servicebus_emulation() -> None:
    async with Broker(servicebus=True) as broker:
        await exercise(broker.servicebus_connection_string(), "emails")


@pytest.mark.rabbitmq
async def test_operate_rabbitmq() -> None:
    from amqp1q import ConnectFailed
    from amqp1q.adapters.proton.rabbitmq_setup import RabbitMQManagement

    management = RabbitMQManagement(RABBITMQ_MANAGEMENT_URL)
    queue = f"amqp1q-test-cli-{uuid.uuid4().hex[:10]}"
    try:
        management.setup_job_queue(queue)
    except ConnectFailed as exc:
        unavailable(f"RabbitMQ is not reachable: {exc}")
    try:
        await exercise(RABBITMQ_URL, queue, exact=False)
    finally:
        management.delete_queue(queue)
        management.delete_queue(f"{queue}.dlq")


def test_purge_needs_dead_letter() -> None:
    from amqp1q.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["purge", "--url", "memory://x"])
    assert exit_.value.code == 2
