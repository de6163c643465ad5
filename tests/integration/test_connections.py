"""One connection, many queues (``amqp1q.connect``), counted from the broker's side: the
embedded broker's own count, and RabbitMQ's management API."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

import amqp1q
from amqp1q import DeliveryStale, Job, JobQueue, UnsupportedFeature
from amqp1q.adapters.proton.rabbitmq_setup import RabbitMQManagement
from amqp1q.testing import Broker, FaultProxy

from ..conftest import RABBITMQ_URL

pytestmark = pytest.mark.anyio

QUEUES = 10
PER_QUEUE = 40


@pytest.fixture
def ten_rabbitmq_queues(rabbitmq: RabbitMQManagement) -> Iterator[list[str]]:
    names = [f"amqp1q-conn-{uuid.uuid4().hex[:8]}-{i}" for i in range(QUEUES)]
    for name in names:
        rabbitmq.setup_job_queue(name)
    yield names
    for name in names:
        rabbitmq.delete_queue(name)
        rabbitmq.delete_queue(f"{name}.dlq")


def _own_connections_to(port: int) -> set[int]:
    """The local ports of this process's established TCP connections to ``port`` (Linux)."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    ports = set()
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as lines:
            for line in list(lines)[1:]:
                fields = line.split()
                local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
                if inode in inodes and state == "01" and int(remote.rsplit(":", 1)[1], 16) == port:
                    ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports


async def _until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not true within {timeout:g} s")


async def _drain(queue: JobQueue, got: set[str], expected: int) -> None:
    """Consume until ``got`` holds ``expected`` job ids (a settlement cut off by a dropped
    connection is redelivered: counted once)."""
    async with queue.consume() as consumer:
        while len(got) < expected:
            job = await consumer.receive()
            if job is None:
                return
            with contextlib.suppress(DeliveryStale):
                await job.ack()
            got.add(job.id)


async def _through_a_cut(
    url: str, names: list[str], cut: Callable[[], object], held: Callable[[], int]
) -> None:
    """10 queues on one client, pushed to and consumed at once; the connection is cut half
    way; every job arrives (at least once), none is lost."""
    async with amqp1q.connect(url) as client:
        queues = [client.queue(name, prefetch=10) for name in names]
        pushed: dict[str, set[str]] = {name: set() for name in names}
        got: dict[str, set[str]] = {name: set() for name in names}
        consumers = [asyncio.ensure_future(_drain(q, got[q.name], PER_QUEUE)) for q in queues]
        for batch in range(4):
            if batch == 2:
                assert cut(), "nothing was cut"
            jobs = {name: [Job("cut", i) for i in range(PER_QUEUE // 4)] for name in names}
            await asyncio.gather(*(q.push_many(jobs[q.name]) for q in queues))
            for name, sent in jobs.items():
                pushed[name].update(job.id for job in sent)
        await asyncio.wait_for(asyncio.gather(*consumers), 60)
        assert got == pushed
        assert client.health() == "connected"
        assert held() == 1  # all ten re-attached on one new connection


# -- the embedded broker --------------------------------------------------------------------------


async def test_ten_queues_hold_one_connection_on_the_embedded_broker() -> None:
    async with Broker() as broker, amqp1q.connect(broker.url) as client:
        queues = [client.queue(f"q{i}", prefetch=5) for i in range(QUEUES)]
        await asyncio.gather(*(q.push(Job("one", q.name)) for q in queues))
        async with contextlib.AsyncExitStack() as stack:
            consumers = [await stack.enter_async_context(q.consume()) for q in queues]
            for queue, consumer in zip(queues, consumers, strict=True):
                job = await consumer.receive(timeout=5)
                assert job is not None
                assert job.payload == queue.name
                await job.ack()
            assert broker.connection_count == 1
            assert client.connections == 1
    assert broker.connection_count == 0


async def test_closing_one_queue_leaves_the_others_consuming() -> None:
    async with Broker() as broker, amqp1q.connect(broker.url) as client:
        queues = [client.queue(f"q{i}") for i in range(3)]
        got: dict[str, set[str]] = {q.name: set() for q in queues}
        tasks = {q.name: asyncio.ensure_future(_drain(q, got[q.name], 2)) for q in queues}
        await asyncio.gather(*(q.push(Job("first")) for q in queues))
        await _until(lambda: all(len(ids) == 1 for ids in got.values()))
        await queues[0].close()
        await tasks["q0"]
        assert queues[0].health() == "closed"
        await asyncio.gather(*(q.push(Job("second")) for q in queues[1:]))
        await asyncio.wait_for(asyncio.gather(tasks["q1"], tasks["q2"]), 10)
        assert [len(got[f"q{i}"]) for i in range(3)] == [1, 2, 2]
        assert broker.connection_count == 1
        assert client.health() == "connected"
        assert len(broker.queue("q0")) == 0


async def test_a_cut_reattaches_all_ten_queues_and_loses_nothing() -> None:
    async with Broker() as broker:
        names = [f"q{i}" for i in range(QUEUES)]
        await _through_a_cut(
            broker.url, names, broker.drop_connections, lambda: broker.connection_count
        )
        assert broker.connection_count == 0
        assert all(len(broker.queue(name)) == 0 for name in names)


async def test_the_dead_letter_queue_shares_the_connection() -> None:
    async with Broker() as broker, amqp1q.connect(broker.url) as client:
        queue = client.queue("jobs")
        await queue.push(Job("bad"))
        async with queue.consume() as consumer:
            job = await consumer.receive(timeout=5)
            assert job is not None
            await job.reject("bad input")
        async with queue.dead_letter_queue() as dlq, dlq.consume() as dead:
            job = await dead.receive(timeout=5)
            assert job is not None
            assert job.dead_letter_reason == "bad input"
            await job.ack()
            assert broker.connection_count == 1
        assert queue.health() == "connected"


async def test_from_url_and_its_dead_letter_queue_close_their_connection_together() -> None:
    async with Broker() as broker:
        queue = JobQueue.from_url(broker.url, queue="solo")
        async with queue:
            dlq = queue.dead_letter_queue()
            async with dlq:
                assert broker.connection_count == 1
            assert broker.connection_count == 1  # the queue still holds it
        await _until(lambda: broker.connection_count == 0, 5)
        # A dead-letter queue opened after its queue closed dials again, and closes it.
        async with queue.dead_letter_queue():
            assert broker.connection_count == 1
        await _until(lambda: broker.connection_count == 0, 5)


async def test_a_job_names_its_own_queue_through_the_anonymous_relay() -> None:
    async with Broker() as broker, amqp1q.connect(broker.url) as client:
        orders = client.queue("orders")
        receipt = await orders.push(Job("invoice", {"n": 1}, to="billing"))
        assert receipt.queue == "billing"
        assert len(broker.queue("orders")) == 0
        async with client.queue("billing").consume() as consumer:
            job = await consumer.receive(timeout=5)
            assert job is not None
            assert (job.name, job.payload) == ("invoice", {"n": 1})
            await job.ack()


async def test_a_client_that_cannot_connect_says_so() -> None:
    with pytest.raises(amqp1q.ConnectFailed):
        async with amqp1q.connect("amqp://127.0.0.1:1", reconnect=False) as client:
            client.queue("never")  # pragma: no cover


# -- RabbitMQ -------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _consuming(queues: list[JobQueue]) -> AsyncIterator[None]:
    """Each queue with a consumer that has taken one job (so each has its session)."""
    async with contextlib.AsyncExitStack() as stack:
        for queue in queues:
            consumer = await stack.enter_async_context(queue.consume())
            job = await consumer.receive(timeout=10)
            assert job is not None
            await job.ack()
        yield


async def test_ten_queues_hold_one_connection_on_rabbitmq(
    rabbitmq: RabbitMQManagement, ten_rabbitmq_queues: list[str]
) -> None:
    before = _own_connections_to(5672)
    async with amqp1q.connect(RABBITMQ_URL) as client:
        queues = [client.queue(name) for name in ten_rabbitmq_queues]
        await asyncio.gather(*(q.push(Job("one")) for q in queues))
        async with _consuming(queues):
            ours = _own_connections_to(5672) - before
            assert len(ours) == 1, f"this client holds {len(ours)} connections to RabbitMQ"
            port = next(iter(ours))
            assert queues[0].adapter.connection.local_port == port  # type: ignore[attr-defined]

            def sessions() -> list[dict[str, object]]:
                return [c for c in rabbitmq.connections() if c.get("peer_port") == port]

            # RabbitMQ 3.x lists an AMQP 1.0 connection once per session (its stats lag a few
            # seconds): ten consumers' sessions and the senders', all on the one connection.
            await _until(lambda: len(sessions()) >= QUEUES + 1, 30)
            assert {c["name"] for c in sessions()} == {f"127.0.0.1:{port} -> 127.0.0.1:5672"}


async def test_a_cut_reattaches_all_ten_queues_on_rabbitmq(ten_rabbitmq_queues: list[str]) -> None:
    async with FaultProxy("127.0.0.1", 5672) as proxy:
        url = proxy.url_for("amqp", userinfo="guest:guest")
        await _through_a_cut(url, ten_rabbitmq_queues, proxy.cut, lambda: proxy.active)
        assert proxy.cuts == 1


async def test_rabbitmq_3_has_no_anonymous_relay(rabbitmq_queue: str) -> None:
    async with amqp1q.connect(RABBITMQ_URL) as client:
        queue = client.queue(rabbitmq_queue)
        with pytest.raises(UnsupportedFeature, match="ANONYMOUS-RELAY"):
            await queue.push(Job("routed", to=rabbitmq_queue))
        await queue.push(Job("plain"))  # the queue itself is fine
