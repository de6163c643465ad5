"""The embedded broker: limits, faults and bad input, through the Proton adapter and raw sockets."""

from __future__ import annotations

import asyncio
import struct

import pytest

from amqp1q import (
    AuthenticationFailed,
    ConnectionLost,
    Job,
    JobQueue,
    JobTooLarge,
    PushTimeout,
    QueueNotFound,
)
from amqp1q._factory import AdapterOptions
from amqp1q._urls import parse_url
from amqp1q.adapters.proton import ProtonAdapter
from amqp1q.adapters.proton._types import Described, ULong, encode
from amqp1q.testing import Broker

pytestmark = pytest.mark.anyio

SASL_HEADER = b"AMQP\x03\x01\x00\x00"
AMQP_HEADER = b"AMQP\x00\x01\x00\x00"


async def _raw(broker: Broker, data: bytes, *, read_for: float = 5.0) -> bytes:
    """Send ``data`` on a fresh socket; return all the broker said until it closed the socket."""
    reader, writer = await asyncio.open_connection(broker.host, broker.port)
    writer.write(data)
    await writer.drain()
    try:
        # The broker must close the socket itself: reading to EOF would hang otherwise.
        return await asyncio.wait_for(reader.read(), read_for)
    finally:
        writer.close()


def _sasl_anonymous() -> bytes:
    init = encode(Described(ULong(0x41), [_sym("ANONYMOUS"), b""]))
    return SASL_HEADER + struct.pack(">IBBH", 8 + len(init), 2, 1, 0) + init


def _sym(text: str) -> object:
    from amqp1q.adapters.proton._types import Symbol

    return Symbol(text)


async def _still_serves(broker: Broker) -> None:
    async with JobQueue.from_url(broker.url, queue="alive") as queue:
        await queue.push(Job("ping", b"1"))
        async with queue.consume() as consumer:
            job = await asyncio.wait_for(consumer.receive(), 5)
            assert job.name == "ping"
            await job.ack()


async def test_a_job_over_max_message_size_is_job_too_large() -> None:
    async with Broker(max_message_size=4096) as broker:
        async with JobQueue.from_url(broker.url, queue="jobs") as queue:
            small = await queue.push(Job("ok", b"x" * 1000))
            assert small.job_id
            big = Job("big", b"x" * 5000)
            with pytest.raises(JobTooLarge) as caught:
                await queue.push(big)
        assert caught.value.job_id == big.id
        assert "4096" in str(caught.value)
        assert len(broker.queue("jobs")) == 1


async def test_strict_mode_refuses_undeclared_queues_with_not_found() -> None:
    async with Broker(strict=True, queues=["known"]) as broker:
        async with JobQueue.from_url(broker.url, queue="unknown") as queue:
            with pytest.raises(QueueNotFound) as caught:
                await queue.push(Job("x", b""))
            assert caught.value.condition == "amqp:not-found"
            assert "unknown" in (caught.value.description or "")
        await _still_serves_queue(broker, "known")


async def _still_serves_queue(broker: Broker, name: str) -> None:
    async with JobQueue.from_url(broker.url, queue=name) as queue:
        await queue.push(Job("ping", b"1"))
        assert len(broker.queue(name)) == 1


async def test_wrong_password_is_refused_and_others_keep_working() -> None:
    async with Broker(users={"app": "s3cret"}, anonymous=False) as broker:
        bad = JobQueue.from_url(f"amqp://app:wrong@127.0.0.1:{broker.port}", queue="q")
        with pytest.raises(AuthenticationFailed):
            await bad.open()
        async with JobQueue.from_url(broker.url_for("app"), queue="q") as good:
            await good.push(Job("ok", b""))
        assert len(broker.queue("q")) == 1


async def test_garbage_bytes_close_only_that_connection() -> None:
    async with Broker() as broker:
        said = await _raw(broker, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert said.startswith(b"AMQP")  # the header it speaks, then it closes
        await _still_serves(broker)


async def test_a_wrong_protocol_header_gets_the_sasl_header_and_a_close() -> None:
    async with Broker() as broker:
        said = await _raw(broker, b"AMQP\x00\x00\x09\x01")  # AMQP 0-9-1
        assert said[:8] == SASL_HEADER
        await _still_serves(broker)


async def test_a_frame_over_max_frame_size_is_a_framing_error() -> None:
    async with Broker(max_frame_size=4096) as broker:
        huge = struct.pack(">IBBH", 100_000, 2, 0, 0) + b"\x00" * 200
        said = await _raw(broker, _sasl_anonymous() + AMQP_HEADER + huge)
        assert b"amqp:connection:framing-error" in said or b"framing-error" in said
        await _still_serves(broker)


async def test_dropped_connections_leave_jobs_to_be_redelivered() -> None:
    async with Broker() as broker:
        async with JobQueue.from_url(broker.url, queue="q") as queue:
            await queue.push(Job("held", b""))
        queue = JobQueue.from_url(broker.url, queue="q")
        await queue.open()
        consumer = queue.consume()
        await consumer.open()
        job = await asyncio.wait_for(consumer.receive(), 5)
        assert job.attempt == 1
        assert broker.drop_connections() == 1
        await queue.close()
        async with JobQueue.from_url(broker.url, queue="q") as again:
            async with again.consume() as second:
                back = await asyncio.wait_for(second.receive(), 5)
                assert back.id == job.id
                assert back.attempt == 2
                await back.ack()


async def test_refused_attaches_then_recovery() -> None:
    async with Broker() as broker:
        broker.refuse_attaches(1)
        async with JobQueue.from_url(broker.url, queue="q") as queue:
            with pytest.raises(ConnectionLost) as caught:
                await queue.push(Job("x", b""))
            assert caught.value.condition == "amqp:resource-limit-exceeded"
            await queue.push(Job("y", b""))
        assert len(broker.queue("q")) == 1


async def test_restart_keeps_queue_contents() -> None:
    async with Broker() as broker:
        async with JobQueue.from_url(broker.url, queue="q") as queue:
            await queue.push_many([Job("n", i) for i in range(3)])
        port = broker.port
        await broker.restart()
        assert broker.port == port
        async with JobQueue.from_url(broker.url, queue="q") as queue:
            async with queue.consume(prefetch=3) as consumer:
                got = [await asyncio.wait_for(consumer.receive(), 5) for _ in range(3)]
                assert [j.payload for j in got] == [0, 1, 2]
                for job in got:
                    await job.ack()


async def test_a_stalled_broker_gives_push_timeout_and_close_does_not_hang() -> None:
    async with Broker() as broker:
        queue = JobQueue.from_url(broker.url, queue="q", close_timeout=1)
        await queue.open()
        await queue.push(Job("before", b""))
        broker.stall()
        started = asyncio.get_running_loop().time()
        with pytest.raises(PushTimeout):
            await queue.push(Job("during", b""), timeout=1)
        await queue.close()
        assert asyncio.get_running_loop().time() - started < 5


async def _adapter_with_receivers(
    broker: Broker, receivers: int, *, close_timeout: float
) -> ProtonAdapter:
    adapter = ProtonAdapter(
        parse_url(broker.url), AdapterOptions(), "q", close_timeout=close_timeout
    )
    await asyncio.wait_for(adapter.open(), 5)
    for _ in range(receivers):
        await asyncio.wait_for(adapter.receiver(auto_ack=False).open(), 5)
    return adapter


async def test_detaches_never_answered_cost_one_close_bound_not_one_per_consumer() -> None:
    bound, consumers = 0.5, 8
    async with Broker() as broker:
        adapter = await _adapter_with_receivers(broker, consumers, close_timeout=bound)
        broker.stall()  # from here on the broker answers nothing: no detach, no close
        loop = asyncio.get_running_loop()
        started = loop.time()
        await asyncio.wait_for(adapter.close(), 30)
        elapsed = loop.time() - started
    # One bound for the detaches together, one for the connection's close (then the socket is
    # aborted). One detach after another would take consumers * bound = 4 s before the close.
    assert 2 * bound * 0.9 <= elapsed < 2 * bound + 1.5


async def test_a_close_cut_short_aborts_the_socket_and_stays_cancelled() -> None:
    async with Broker() as broker:
        adapter = await _adapter_with_receivers(broker, 3, close_timeout=30)
        connection = adapter.connection
        broker.stall()
        with pytest.raises(asyncio.TimeoutError):  # the caller's bound, not the adapter's
            await asyncio.wait_for(adapter.close(), 0.3)
        await asyncio.sleep(0.1)  # the loop reports the aborted socket
        assert not connection.is_open


async def test_heartbeats_keep_an_idle_connection_open() -> None:
    # The broker drops a connection silent for 0.5 s; the client's ticks send empty frames.
    async with Broker(idle_timeout=0.5) as broker:
        async with JobQueue.from_url(broker.url, queue="idle") as queue:
            await queue.push(Job("first", b""))
            await asyncio.sleep(2.0)
            assert broker.connection_count == 1
            await queue.push(Job("after-idle", b""))
        assert len(broker.queue("idle")) == 2
