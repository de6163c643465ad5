"""The CLI's network half: the demo on the embedded broker, and ``amqp1q broker``."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from amqp1q import Job, JobQueue
from amqp1q.adapters.proton.rabbitmq_setup import RabbitMQManagement
from amqp1q.cli import main

from ..cli import run_cli, start_cli


def test_demo_runs_on_the_embedded_broker_by_default() -> None:
    result = run_cli("demo", "--jobs", "2000")
    assert result.returncode == 0, result.stderr
    assert "the embedded broker on 127.0.0.1:" in result.stdout
    assert "pushed 2,000 jobs" in result.stdout
    assert "consumed 2,000 jobs" in result.stdout


@pytest.mark.anyio
async def test_amqp1q_broker_serves_clients_and_checks_users() -> None:
    process = await start_cli(
        "broker", "--port", "0", "--user", "app:pw", stdout=asyncio.subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 20)).decode()
        assert "listening on amqp://127.0.0.1:" in line
        port = int(line.split("127.0.0.1:")[1].split()[0])
        url = f"amqp://app:pw@127.0.0.1:{port}"
        async with JobQueue.from_url(url, queue="cli") as queue:
            await queue.push(Job("from-cli-test", b"x"))
            async with queue.consume() as consumer:
                job = await asyncio.wait_for(consumer.receive(), 5)
                assert job.name == "from-cli-test"
                await job.ack()
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 10)


def test_setup_rabbitmq_declares_queue_dlq_and_delays(rabbitmq: RabbitMQManagement) -> None:
    name = f"amqp1q-cli-{uuid.uuid4().hex[:8]}"
    try:
        assert main(["setup-rabbitmq", "--queue", name, "--max-priority", "5"]) == 0
        info = rabbitmq.queue_info(name)
        assert info is not None
        assert info["arguments"] == {"x-max-priority": 5}
        assert rabbitmq.queue_info(f"{name}.dlq") is not None
        assert rabbitmq.queue_info("amqp1q.delay.10") is not None
    finally:
        rabbitmq.delete_queue(name)
        rabbitmq.delete_queue(f"{name}.dlq")
