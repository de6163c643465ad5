"""Topics and subscriptions: the embedded broker's (through the Proton adapter and the
azure-servicebus SDK, both ways) and RabbitMQ's exchange -> queue fan-out."""

from __future__ import annotations

import asyncio
import inspect
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

import amqp1q
from amqp1q import Job, JobQueue, ReceivedJob, RetryPolicy, UnsupportedFeature
from amqp1q.adapters.proton.rabbitmq_setup import RabbitMQManagement
from amqp1q.testing import Broker

from ..conftest import RABBITMQ_URL
from ..docs.snippets import Snippet, compile_snippet, delegated_to

pytestmark = pytest.mark.anyio

JOBS = 20


async def _take(queue: JobQueue, count: int, *, ack: bool = True) -> list[ReceivedJob]:
    got: list[ReceivedJob] = []
    async with queue.consume(prefetch=count) as consumer:
        while len(got) < count:
            job = await consumer.receive(timeout=10)
            assert job is not None, f"only {len(got)} of {count} jobs"
            got.append(job)
            if ack:
                await job.ack()
    return got


async def _fan_out(client: amqp1q.Client, topic: str, subscriptions: list[str]) -> None:
    """Every subscription gets every job pushed to the topic; pushing to a subscription and
    consuming the topic are refused."""
    subs = [client.subscription(topic, name) for name in subscriptions]
    async with subs[0].consume(), subs[1].consume():  # attached before the push
        events = client.topic(topic)
        jobs = [Job("event", i) for i in range(JOBS)]
        await events.push_many(jobs)
    for sub in subs:
        got = await _take(sub, JOBS)
        assert sorted(job.payload for job in got) == list(range(JOBS))
        assert {job.id for job in got} == {job.id for job in jobs}
    with pytest.raises(UnsupportedFeature, match="pushed to the topic"):
        await subs[0].push(Job("wrong way"))
    with pytest.raises(UnsupportedFeature, match="through its subscriptions"):
        client.topic(topic).consume()


async def _dead_letter_of_a_subscription(client: amqp1q.Client, topic: str, name: str) -> None:
    sub = client.subscription(topic, name, retry=RetryPolicy(max_attempts=1))
    async with sub.consume() as consumer:
        await client.topic(topic).push(Job("poison", "x"))
        job = await consumer.receive(timeout=10)
        assert job is not None
        async with job.process():
            raise ValueError("cannot read it")
    async with sub.dead_letter_queue() as dlq:
        [dead] = await _take(dlq, 1)
        assert dead.name == "poison"
        assert dead.dead_letter_reason == "max attempts exceeded"


# -- the embedded broker, through the Proton adapter ----------------------------------------------


async def test_every_subscription_gets_every_job_on_the_embedded_broker() -> None:
    async with Broker() as broker, amqp1q.connect(broker.url) as client:
        await _fan_out(client, "events", ["audit", "billing"])
        await _dead_letter_of_a_subscription(client, "events", "audit")
        assert broker.connection_count == 1
        assert len(broker.queue("events/Subscriptions/audit/$deadletterqueue")) == 0


async def test_a_strict_broker_refuses_undeclared_subscriptions() -> None:
    async with Broker(strict=True, topics={"events": ["audit"]}) as broker:
        async with amqp1q.connect(broker.url) as client:
            await client.topic("events").push(Job("e"))
            assert len(broker.queue("events/Subscriptions/audit")) == 1
            with pytest.raises(amqp1q.QueueNotFound):
                async with client.subscription("events", "other").consume():
                    pass  # pragma: no cover


# -- the Service Bus emulation, with the azure-servicebus SDK ----------------------------------

servicebus = pytest.importorskip("azure.servicebus")
servicebus_aio = pytest.importorskip("azure.servicebus.aio")


def _sdk(broker: Broker) -> Any:
    return servicebus_aio.ServiceBusClient.from_connection_string(
        broker.servicebus_connection_string(), retry_total=0
    )


async def test_the_sdk_sends_to_a_topic_and_amqp1q_consumes_two_subscriptions() -> None:
    async with Broker(servicebus=True, topics={"orders": ["audit", "billing"]}) as broker:
        async with _sdk(broker) as sdk, sdk.get_topic_sender("orders") as sender:
            await sender.send_messages(
                [
                    servicebus.ServiceBusMessage(f"order {i}", message_id=f"m{i}", subject="order")
                    for i in range(JOBS)
                ]
            )
        async with amqp1q.connect(broker.servicebus_connection_string()) as client:
            for name in ("audit", "billing"):
                got = await _take(client.subscription("orders", name), JOBS)
                assert sorted(job.id for job in got) == sorted(f"m{i}" for i in range(JOBS))
                assert {job.name for job in got} == {"order"}
            await _dead_letter_of_a_subscription(client, "orders", "billing")


async def test_amqp1q_pushes_to_a_topic_and_the_sdk_receives_from_a_subscription() -> None:
    async with Broker(servicebus=True, topics={"orders": ["audit", "billing"]}) as broker:
        async with amqp1q.connect(broker.servicebus_connection_string()) as client:
            jobs = [Job("order", {"n": i}, headers={"tenant": "a"}) for i in range(JOBS)]
            await client.topic("orders").push_many(jobs)
            assert len(broker.queue("orders/Subscriptions/billing")) == JOBS
        async with (
            _sdk(broker) as sdk,
            sdk.get_subscription_receiver("orders", "audit") as receiver,
        ):
            got: list[Any] = []
            deadline = time.monotonic() + 10
            while len(got) < JOBS and time.monotonic() < deadline:
                got += await receiver.receive_messages(max_message_count=JOBS, max_wait_time=1)
            for message in got:
                await receiver.complete_message(message)
        assert sorted(m.message_id for m in got) == sorted(job.id for job in jobs)
        assert {m.subject for m in got} == {"order"}
        assert {m.application_properties[b"tenant"] for m in got} == {b"a"}
        assert len(broker.queue("orders/Subscriptions/audit")) == 0


async def test_a_job_routed_with_to_through_the_service_bus_adapter() -> None:
    async with Broker(servicebus=True) as broker:
        async with amqp1q.connect(broker.servicebus_connection_string()) as client:
            receipt = await client.queue("orders").push(Job("invoice", 7, to="billing"))
            assert receipt.queue == "billing"
            [job] = await _take(client.queue("billing"), 1)
            assert job.payload == 7
            assert len(broker.queue("orders")) == 0


# -- RabbitMQ: a topic exchange and a bound queue per subscription ---------------------------------


@pytest.fixture
def rabbitmq_topic(rabbitmq: RabbitMQManagement) -> Iterator[str]:
    topic = f"amqp1q-topic-{uuid.uuid4().hex[:8]}"
    rabbitmq.setup_topic(topic, ["audit", "billing"])
    yield topic
    for name in ("audit", "billing"):
        rabbitmq.delete_queue(f"{topic}.{name}")
        rabbitmq.delete_queue(f"{topic}.{name}.dlq")
    rabbitmq.delete_exchange(topic)


async def test_every_bound_queue_gets_every_job_on_rabbitmq(rabbitmq_topic: str) -> None:
    async with amqp1q.connect(RABBITMQ_URL) as client:
        await _fan_out(client, rabbitmq_topic, ["audit", "billing"])
        await _dead_letter_of_a_subscription(client, rabbitmq_topic, "audit")
        assert client.topic(rabbitmq_topic).address == f"/exchange/{rabbitmq_topic}"


async def test_a_routing_key_picks_the_bound_queues_on_rabbitmq(
    rabbitmq: RabbitMQManagement,
) -> None:
    topic = f"amqp1q-topic-{uuid.uuid4().hex[:8]}"
    rabbitmq.setup_topic(topic, ["eu"], binding_key="orders.eu.#")
    rabbitmq.setup_topic(topic, ["us"], binding_key="orders.us.#")
    try:
        async with amqp1q.connect(RABBITMQ_URL) as client:
            await client.topic(topic, routing_key="orders.eu.paid").push(Job("paid", "eu"))
            await client.topic(topic, routing_key="orders.us.paid").push(Job("paid", "us"))
            for name in ("eu", "us"):
                async with client.subscription(topic, name).consume() as consumer:
                    job = await consumer.receive(timeout=10)
                    assert job is not None
                    assert job.payload == name
                    await job.ack()
                    assert await consumer.receive(timeout=0.5) is None  # only its own
    finally:
        for name in ("eu", "us"):
            rabbitmq.delete_queue(f"{topic}.{name}")
            rabbitmq.delete_queue(f"{topic}.{name}.dlq")
        rabbitmq.delete_exchange(topic)


# -- the page, on the brokers it names ------------------------------------------------------------

DOC = Path(__file__).resolve().parents[2] / "docs" / "topics.md"
DOC_SERVICEBUS = (
    "Endpoint=sb://127.0.0.1:5673;SharedAccessKeyName=RootManageSharedAccessKey;"
    "SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true"
)


async def test_the_docs_run_on_their_brokers(rabbitmq: RabbitMQManagement) -> None:
    # docs/topics.md's blocks, in order, in one namespace: the Service Bus one on the emulation,
    # the RabbitMQ one on RabbitMQ (a topic exchange of its own), the testing one as it is.
    sb, rabbit, testing = delegated_to(DOC, "test_the_docs_run_on_their_brokers")
    handled: list[object] = []

    async def handle(payload: object) -> None:
        handled.append(payload)

    namespace: dict[str, Any] = {"handle": handle}
    async with Broker(servicebus=True) as broker:
        assert DOC_SERVICEBUS in sb.code
        await _run(
            sb, namespace, sb.code.replace(DOC_SERVICEBUS, broker.servicebus_connection_string())
        )
    assert handled == [{"order": 42}, {"order": 42}]
    topic = f"amqp1q-doc-{uuid.uuid4().hex[:8]}"
    rabbitmq.setup_topic(topic, ["audit"])
    try:
        assert RABBITMQ_URL in rabbit.code
        await _run(rabbit, namespace, rabbit.code.replace('"orders"', f'"{topic}"'))
    finally:
        rabbitmq.delete_queue(f"{topic}.audit")
        rabbitmq.delete_queue(f"{topic}.audit.dlq")
        rabbitmq.delete_exchange(topic)
    await _run(testing, namespace, testing.code)


async def _run(snippet: Snippet, namespace: dict[str, Any], code: str) -> None:
    result = eval(compile_snippet(attrs.evolve(snippet, code=code)), namespace)  # the page's code
    if inspect.iscoroutine(result):
        await asyncio.wait_for(result, 30)
