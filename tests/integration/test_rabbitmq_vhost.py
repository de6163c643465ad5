"""RabbitMQ 3.x virtual hosts, on the real broker: ``setup-rabbitmq --vhost`` and the consumer
meet in a vhost the test creates (and deletes); a missing queue names the command to declare it."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest

from amqp1q import AuthenticationFailed, Job, JobQueue, QueueNotFound
from amqp1q.adapters.proton.rabbitmq_setup import RabbitMQManagement

from ..cli import run_cli_async
from ..conftest import RABBITMQ_MANAGEMENT_URL, RABBITMQ_URL

pytestmark = [pytest.mark.anyio, pytest.mark.rabbitmq]

USER = "guest"  # the user of RABBITMQ_URL


@pytest.fixture
def vhost(rabbitmq: RabbitMQManagement) -> Iterator[RabbitMQManagement]:
    """A fresh virtual host the test user may use, deleted (with its queues) afterwards."""
    name = f"amqp1q-vh-{uuid.uuid4().hex[:10]}"
    management = RabbitMQManagement(RABBITMQ_MANAGEMENT_URL, vhost=name)
    management.declare_vhost()
    try:
        management.grant(USER)
        yield management
    finally:
        management.delete_vhost()


async def test_setup_rabbitmq_and_the_consumer_meet_in_a_virtual_host(
    vhost: RabbitMQManagement, rabbitmq: RabbitMQManagement
) -> None:
    """Issue 13: the Open frame always named the URL's host, so setup-rabbitmq --vhost declared
    queues no client could reach."""
    queue = f"vq-{uuid.uuid4().hex[:8]}"
    code, out, err = await run_cli_async(
        "setup-rabbitmq",
        "--queue",
        queue,
        "--vhost",
        vhost.vhost,
        "--management-url",
        RABBITMQ_MANAGEMENT_URL,
    )
    assert code == 0, err
    assert f"declared {queue}" in out
    assert rabbitmq.queue_info(queue) is None  # in the vhost, not in /

    async with JobQueue.from_url(f"{RABBITMQ_URL}/{queue}?vhost={vhost.vhost}") as by_url:
        assert by_url.url.endswith(f"/{queue}?vhost={vhost.vhost}")
        await by_url.push(Job("in-vhost", {"n": 1}, priority=5))
    info = vhost.queue_info(queue)
    assert info is not None
    assert info["arguments"] == {"x-max-priority": 10}  # the queue setup-rabbitmq declared
    async with (
        JobQueue.from_url(RABBITMQ_URL, queue=queue, vhost=vhost.vhost) as by_keyword,
        by_keyword.consume() as consumer,
    ):
        job = await consumer.receive(timeout=10)
        assert job is not None
        assert (job.name, job.payload) == ("in-vhost", {"n": 1})
        await job.reject("to the dlq in the vhost")
    async with (
        JobQueue.from_url(RABBITMQ_URL, queue=queue, vhost=vhost.vhost) as again,
        again.dead_letter_queue() as dlq,
        dlq.consume() as dead,
    ):
        letter = await dead.receive(timeout=10)
        assert letter is not None
        assert letter.dead_letter_reason == "to the dlq in the vhost"
        await letter.ack()


async def test_a_queue_missing_from_the_vhost_names_the_setup_command(
    vhost: RabbitMQManagement,
) -> None:
    queue = f"vq-missing-{uuid.uuid4().hex[:8]}"
    async with JobQueue.from_url(RABBITMQ_URL, queue=queue, vhost=vhost.vhost) as jobs:
        with pytest.raises(QueueNotFound) as pushing:
            await jobs.push(Job("x", None))
        with pytest.raises(QueueNotFound) as consuming:
            async with jobs.consume() as consumer:
                await consumer.receive(timeout=5)
    command = f"declare it with: amqp1q setup-rabbitmq --queue {queue} --vhost {vhost.vhost})"
    for caught in (pushing, consuming):
        assert command in str(caught.value)
        assert f"in vhost '{vhost.vhost}'" in (caught.value.description or "")


async def test_a_missing_queue_in_the_default_vhost_names_the_command_without_vhost(
    rabbitmq: RabbitMQManagement,
) -> None:
    """Issue 19: QueueNotFound on RabbitMQ gave no hint that `amqp1q setup-rabbitmq` exists."""
    queue = f"amqp1q-missing-{uuid.uuid4().hex[:8]}"
    async with JobQueue.from_url(RABBITMQ_URL, queue=queue) as jobs:
        with pytest.raises(QueueNotFound) as caught:
            await jobs.push(Job("x", None))
    assert str(caught.value).startswith(
        f"the broker has no node at '/amq/queue/{queue}' "
        f"(declare it with: amqp1q setup-rabbitmq --queue {queue})"
    )


async def test_an_unknown_vhost_fails_at_once_and_does_not_flap(
    rabbitmq: RabbitMQManagement,
) -> None:
    """RabbitMQ accepts the Open and then closes the connection as the first session begins
    (unauthorized-access): that is refused access, not a connection to re-dial."""
    name = f"amqp1q-no-such-vhost-{uuid.uuid4().hex[:8]}"
    started = time.monotonic()
    async with JobQueue.from_url(RABBITMQ_URL, queue="q", vhost=name) as jobs:
        with pytest.raises(AuthenticationFailed) as caught:
            await jobs.push(Job("x", None))
        assert jobs.health() == "failed"
    async with JobQueue.from_url(RABBITMQ_URL, queue="q", vhost=name) as jobs:
        with pytest.raises(AuthenticationFailed):
            async with jobs.consume() as consumer:
                await consumer.receive(timeout=5)
    assert time.monotonic() - started < 5
    assert f"refused access to 'vhost:{name}'" in str(caught.value)
    assert "does the virtual host exist" in str(caught.value)
    assert caught.value.condition == "amqp:unauthorized-access"


async def test_setup_rabbitmq_names_a_missing_vhost(rabbitmq: RabbitMQManagement) -> None:
    name = f"amqp1q-no-such-vhost-{uuid.uuid4().hex[:8]}"
    code, _, err = await run_cli_async(
        "setup-rabbitmq",
        "--queue",
        "q",
        "--vhost",
        name,
        "--management-url",
        RABBITMQ_MANAGEMENT_URL,
    )
    assert code == 1
    assert f"RabbitMQ has no virtual host '{name}': create it first" in err
