"""``amqp1q.connect()`` on the memory backend: the client's lifecycle, its queues, topics and
subscriptions, ``Job(to=...)``, and what each broker profile names a topic and a subscription
(no network)."""

from __future__ import annotations

import uuid

import pytest

import amqp1q
from amqp1q import (
    InvalidJob,
    InvalidSetting,
    InvalidURL,
    Job,
    QueueStateError,
    UnsupportedFeature,
)
from amqp1q.adapters.memory import MemoryBroker
from amqp1q.adapters.proton._brokers import profile_named

pytestmark = pytest.mark.anyio


def _url() -> str:
    return f"memory://client-{uuid.uuid4().hex[:8]}/"


async def test_a_client_makes_queues_only_while_open() -> None:
    client = amqp1q.connect(_url())
    assert client.health() == "unopened"
    with pytest.raises(QueueStateError, match=r"async with amqp1q\.connect"):
        client.queue("jobs")
    async with client:
        assert client.health() == "connected"
        assert client.connections == 0  # memory: no connection at all
        queue = client.queue("jobs", prefetch=3)
        assert queue.is_open
        assert queue.prefetch == 3
        await queue.push(Job("a"))
    assert client.health() == "closed"
    assert not queue.is_open
    with pytest.raises(QueueStateError, match="closed"):
        client.queue("jobs")
    with pytest.raises(QueueStateError):
        await client.open()


async def test_closing_a_queue_leaves_the_client_and_its_other_queues() -> None:
    async with amqp1q.connect(_url()) as client:
        first, second = client.queue("first"), client.queue("second")
        async with first:  # open already: the block only closes it at the end
            await first.push(Job("x"))
        assert not first.is_open
        assert second.is_open
        await second.push(Job("y"))
        async with second.consume() as consumer:
            job = await consumer.receive(timeout=1)
            assert job is not None
            await job.ack()


async def test_a_topic_copies_each_job_to_every_subscription() -> None:
    async with amqp1q.connect(_url()) as client:
        audit = client.subscription("events", "audit")
        billing = client.subscription("events", "billing")
        await client.topic("events").push_many([Job("e", i) for i in range(3)])
        for sub in (audit, billing):
            assert sub.name == f"events/Subscriptions/{sub.name.rsplit('/', 1)[1]}"
            async with sub.consume() as consumer:
                got = []
                for _ in range(3):
                    job = await consumer.receive(timeout=1)
                    assert job is not None
                    got.append(job.payload)
                    await job.ack()
            assert sorted(got) == [0, 1, 2]
        with pytest.raises(UnsupportedFeature, match="pushed to the topic 'events'"):
            await audit.push(Job("no"))
        with pytest.raises(UnsupportedFeature, match="through its subscriptions"):
            client.topic("events").consume()
        with pytest.raises(UnsupportedFeature, match="no dead-letter queue"):
            client.topic("events").dead_letter_queue()


async def test_a_subscription_has_its_own_dead_letter_queue() -> None:
    async with amqp1q.connect(_url()) as client:
        audit = client.subscription("events", "audit")
        await client.topic("events").push(Job("bad"))
        async with audit.consume() as consumer:
            job = await consumer.receive(timeout=1)
            assert job is not None
            await job.reject("unreadable")
        async with audit.dead_letter_queue() as dlq, dlq.consume() as dead:
            job = await dead.receive(timeout=1)
            assert job is not None
            assert job.dead_letter_reason == "unreadable"
            await job.ack()


async def test_a_job_with_to_goes_to_that_queue() -> None:
    url = _url()
    async with amqp1q.connect(url) as client:
        receipt = await client.queue("orders").push(Job("invoice", 1, to="billing"))
        assert receipt.queue == "billing"
        namespace = MemoryBroker.namespace(url.removeprefix("memory://").rstrip("/"))
        assert (namespace.depth("orders"), namespace.depth("billing")) == (0, 1)
        await client.queue("orders").push(Job("fan", to="events"))  # a topic: every subscription
        namespace.topic("events", "a")
        await client.queue("orders").push(Job("fan", to="events"))
        assert namespace.depth("events/Subscriptions/a") == 1


def test_a_job_checks_its_destination() -> None:
    assert Job("x", to="billing").to == "billing"
    assert "to='billing'" in repr(Job("x", to="billing"))
    for bad in ("", 3, "\ud800"):
        with pytest.raises(InvalidJob, match="to"):
            Job("x", to=bad)  # type: ignore[arg-type]


async def test_bad_settings_are_refused_before_any_io() -> None:
    with pytest.raises(InvalidURL):
        amqp1q.connect("nats://x")
    with pytest.raises(UnsupportedFeature, match="network settings"):
        amqp1q.connect("memory://", vhost="prod")
    with pytest.raises(InvalidSetting, match="reconnect"):
        amqp1q.connect("amqp://127.0.0.1", reconnect="yes")  # type: ignore[arg-type]
    with pytest.raises(InvalidSetting, match="tls= needs an amqps"):
        amqp1q.connect("amqp://127.0.0.1", tls=True)
    async with amqp1q.connect(_url()) as client:
        with pytest.raises(InvalidSetting, match="name"):
            client.queue("")
        with pytest.raises(InvalidSetting, match="topic"):
            client.subscription("", "audit")
        with pytest.raises(UnsupportedFeature, match="network settings"):
            client.queue("q", exchange="x")


@pytest.mark.parametrize(
    ("broker", "topic", "subscription"),
    [
        ("rabbitmq3", "/exchange/events", "/amq/queue/events.audit"),
        ("rabbitmq4", "/exchanges/events", "/queues/events.audit"),
        ("servicebus", "events", "events/Subscriptions/audit"),
        ("amqp1q", "events", "events/Subscriptions/audit"),
        ("artemis", "events", "events::audit"),
    ],
)
def test_each_broker_names_topics_and_subscriptions(
    broker: str, topic: str, subscription: str
) -> None:
    profile = profile_named(broker)
    assert profile.topic_address("events", None) == topic
    queue = profile.subscription_queue("events", "audit")
    assert profile.queue_address(queue) == subscription


def test_brokers_without_subscriptions_say_so() -> None:
    for name in ("qpid", "generic"):
        with pytest.raises(UnsupportedFeature, match=r"client\.queue"):
            profile_named(name).subscription_queue("events", "audit")
        with pytest.raises(UnsupportedFeature, match="routing keys"):
            profile_named(name).topic_address("events", "key")
    assert profile_named("rabbitmq3").topic_address("events", "k.1") == "/exchange/events/k.1"
