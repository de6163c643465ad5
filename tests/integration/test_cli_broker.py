"""The CLI's network half: the demo on the embedded broker, and ``amqp1q broker`` (with and
without ``--servicebus``)."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator

import pytest

from amqp1q import AuthenticationFailed, ConnectFailed, Job, JobQueue, QueueNotFound
from amqp1q.adapters.proton.rabbitmq_setup import RabbitMQManagement
from amqp1q.cli import main

from ..cli import run_cli, start_cli
from ..docs.snippets import ROOT


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


@pytest.fixture
async def servicebus_cli() -> AsyncIterator[tuple[str, str]]:
    """``amqp1q broker --servicebus --strict --queue jobs``: its first lines of output, and
    the connection string it printed."""
    process = await start_cli(
        "broker",
        "--port",
        "0",
        "--servicebus",
        "--strict",
        "--queue",
        "jobs",
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        lines = [(await asyncio.wait_for(process.stdout.readline(), 20)).decode() for _ in range(3)]
        found = re.search(r"connection string: (Endpoint=\S+)", lines[1])
        assert found is not None, lines
        yield "".join(lines), found.group(1)
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 10)


@pytest.mark.anyio
async def test_amqp1q_broker_servicebus_prints_the_connection_string_and_serves_it(
    servicebus_cli: tuple[str, str],
) -> None:
    output, connection_string = servicebus_cli
    assert "listening on amqp://127.0.0.1:" in output
    assert "UseDevelopmentEmulator=true" in connection_string
    assert "entities: jobs" in output
    async with JobQueue.from_url(connection_string, queue="jobs") as queue:
        await queue.push(Job("through-the-emulation", {"n": 1}))
        async with queue.consume() as consumer:
            job = await consumer.receive(timeout=10)
            assert job is not None
            assert (job.name, job.payload) == ("through-the-emulation", {"n": 1})
            await job.ack()
    with pytest.raises(QueueNotFound):  # --strict: only --queue entities exist
        async with JobQueue.from_url(connection_string, queue="undeclared"):
            pass


@pytest.mark.anyio
async def test_the_docs_servicebus_command_prints_what_the_docs_show() -> None:
    # docs/testing.md shows `amqp1q broker --servicebus --queue jobs` and its output (its python
    # block, with the connection string, is run by tests/docs against the harness's broker).
    page = (ROOT / "docs" / "testing.md").read_text(encoding="utf-8")
    [command] = [c for c in re.findall(r"```sh\n(.*?)```", page, re.S) if "--servicebus" in c]
    [shown] = re.findall(r"```text\n(.*?)```", page, re.S)
    argv = command.split()
    assert argv[:2] == ["amqp1q", "broker"]
    process = await start_cli(*argv[1:], "--port", "0", stdout=asyncio.subprocess.PIPE)
    try:
        assert process.stdout is not None
        lines = [(await asyncio.wait_for(process.stdout.readline(), 20)).decode() for _ in range(3)]
        port = lines[0].split("127.0.0.1:")[1].split()[0]
        assert "".join(lines) == shown.replace("127.0.0.1:5673", f"127.0.0.1:{port}")
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 10)


@pytest.mark.anyio
async def test_amqp1q_broker_servicebus_with_a_key_checks_tokens_and_never_prints_the_key() -> None:
    process = await start_cli(
        "broker",
        "--port",
        "0",
        "--servicebus",
        "--user",
        "app:s3cret-key",
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        lines = [(await asyncio.wait_for(process.stdout.readline(), 20)).decode() for _ in range(2)]
        assert "s3cret-key" not in "".join(lines)
        assert "SharedAccessKeyName=app;SharedAccessKey=***" in lines[1]
        assert "*** is the key given for app" in lines[1]
        port = int(lines[0].split("127.0.0.1:")[1].split()[0])
        base = f"Endpoint=sb://127.0.0.1:{port};SharedAccessKeyName=app;UseDevelopmentEmulator=true"
        async with JobQueue.from_url(base + ";SharedAccessKey=s3cret-key;EntityPath=q") as queue:
            await queue.push(Job("signed", b""))
        with pytest.raises(AuthenticationFailed):
            async with JobQueue.from_url(base + ";SharedAccessKey=wrong;EntityPath=q"):
                pass
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 10)


@pytest.mark.anyio
async def test_a_service_bus_client_of_a_plain_cli_broker_is_told_to_use_servicebus() -> None:
    process = await start_cli("broker", "--port", "0", stdout=asyncio.subprocess.PIPE)
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 20)).decode()
        port = int(line.split("127.0.0.1:")[1].split()[0])
        connection_string = (
            f"Endpoint=sb://127.0.0.1:{port};SharedAccessKeyName=k;SharedAccessKey=v;"
            "UseDevelopmentEmulator=true;EntityPath=jobs"
        )
        started = time.monotonic()
        with pytest.raises(ConnectFailed) as caught:
            async with JobQueue.from_url(connection_string):
                pass
        assert time.monotonic() - started < 5  # told at once, not left to the connect timeout
        assert "start it with `amqp1q broker --servicebus`" in str(caught.value)
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


def test_setup_rabbitmq_single_active_consumer(rabbitmq: RabbitMQManagement) -> None:
    name = f"amqp1q-cli-sac-{uuid.uuid4().hex[:8]}"
    try:
        argv = ["setup-rabbitmq", "--queue", name, "--single-active-consumer"]
        assert main(argv) == 0
        info = rabbitmq.queue_info(name)
        assert info is not None
        assert info["arguments"] == {"x-max-priority": 10, "x-single-active-consumer": True}
    finally:
        rabbitmq.delete_queue(name)
        rabbitmq.delete_queue(f"{name}.dlq")
