"""The Proton adapter against RabbitMQ 3.x: bad input fails fast and typed; the loop stays free."""

from __future__ import annotations

import asyncio
import socket
import time
import urllib.parse

import pytest

from amqp1q import (
    AuthenticationFailed,
    ConnectFailed,
    Job,
    JobQueue,
    QueueNotFound,
    TLSError,
)

from ..conftest import RABBITMQ_URL

pytestmark = [pytest.mark.anyio, pytest.mark.rabbitmq]


def _with_password(url: str, password: str) -> str:
    parts = urllib.parse.urlsplit(url)
    netloc = f"{parts.username}:{password}@{parts.hostname}:{parts.port}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_wrong_password_is_authentication_failed(rabbitmq_queue: str) -> None:
    url = _with_password(RABBITMQ_URL, "not-the-password")
    queue = JobQueue.from_url(url, queue=rabbitmq_queue)
    with pytest.raises(AuthenticationFailed) as caught:
        await queue.open()
    assert "not-the-password" not in str(caught.value)
    assert "not-the-password" not in repr(caught.value)
    assert caught.value.queue == rabbitmq_queue


async def test_nothing_listening_names_host_and_port_within_the_connect_timeout() -> None:
    port = _free_port()
    queue = JobQueue.from_url(
        f"amqp://guest:secret-pw@127.0.0.1:{port}", queue="q", connect_timeout=3
    )
    started = time.monotonic()
    with pytest.raises(ConnectFailed) as caught:
        await queue.open()
    assert time.monotonic() - started < 3.5
    assert f"127.0.0.1:{port}" in str(caught.value)
    assert "secret-pw" not in str(caught.value)


async def test_a_silent_listener_times_out_within_the_connect_timeout() -> None:
    # A socket that accepts and never answers: the connect timeout, not a hang -- and the
    # client's socket closed then, not left for the garbage collector.
    accepted: list[asyncio.StreamWriter] = []
    readers: list[asyncio.StreamReader] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)
        readers.append(reader)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        queue = JobQueue.from_url(f"amqp://127.0.0.1:{port}", queue="q", connect_timeout=1)
        started = time.monotonic()
        with pytest.raises(ConnectFailed) as caught:
            await queue.open()
        assert time.monotonic() - started < 2.5
        assert f"127.0.0.1:{port}" in str(caught.value)
        (reader,) = readers
        await asyncio.wait_for(reader.read(), 1)  # the protocol header, then end of stream
        assert reader.at_eof()
    finally:
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_consuming_a_missing_queue_is_queue_not_found(rabbitmq_queue: str) -> None:
    missing = rabbitmq_queue + "-missing"
    async with JobQueue.from_url(RABBITMQ_URL, queue=missing) as queue:
        with pytest.raises(QueueNotFound) as caught:
            async with queue.consume() as consumer:
                await consumer.receive()
    err = caught.value
    assert err.queue == missing
    assert err.condition == "amqp:not-found"
    assert err.description is not None
    assert missing in err.description


async def test_pushing_to_a_missing_queue_is_queue_not_found(rabbitmq_queue: str) -> None:
    # RabbitMQ 3.x would accept, then drop, a message for a missing queue: amqp1q probes first.
    missing = rabbitmq_queue + "-missing"
    async with JobQueue.from_url(RABBITMQ_URL, queue=missing) as queue:
        job = Job("lost?", b"no")
        with pytest.raises(QueueNotFound) as caught:
            await queue.push(job)
    assert caught.value.job_id == job.id
    assert caught.value.condition == "amqp:not-found"


async def test_tls_to_a_plaintext_port_is_tls_error() -> None:
    parts = urllib.parse.urlsplit(RABBITMQ_URL)
    url = f"amqps://guest:secret-pw@{parts.hostname}:{parts.port}"
    queue = JobQueue.from_url(url, queue="q", connect_timeout=5)
    with pytest.raises(TLSError) as caught:
        await queue.open()
    assert "plaintext" in str(caught.value)
    assert "secret-pw" not in str(caught.value)


async def test_event_loop_lag_stays_low_while_consuming_at_full_speed(
    rabbitmq_queue: str,
) -> None:
    """p99 of the loop's lateness, sampled every 1 ms, while 5,000 jobs are consumed."""
    n = 5000
    async with JobQueue.from_url(RABBITMQ_URL, queue=rabbitmq_queue, prefetch=100) as queue:
        body = b"x" * 1024
        for _ in range(0, n, 500):
            await queue.push_many([Job("lag", body) for _ in range(500)])
        lags: list[float] = []
        done = asyncio.Event()

        async def sample() -> None:
            loop = asyncio.get_running_loop()
            while not done.is_set():
                before = loop.time()
                await asyncio.sleep(0.001)
                lags.append(loop.time() - before - 0.001)

        sampler = asyncio.create_task(sample())
        got = 0
        async with queue.consume() as consumer:
            async for job in consumer:
                await job.ack()
                got += 1
                if got == n:
                    break
        done.set()
        await sampler
    assert got == n
    lags.sort()
    p99 = lags[int(len(lags) * 0.99)]
    assert len(lags) > 50, "the sampler hardly ran: the loop was blocked"
    assert p99 < 0.010, f"event-loop lag p99 {p99 * 1000:.1f} ms over {len(lags)} samples"


async def test_rabbitmq_never_sends_past_the_credit(rabbitmq_queue: str) -> None:
    """RabbitMQ 3.x takes each flow frame as a fresh grant; amqp1q tops credit up only once it
    is used up, so the broker never over-delivers (it did, by thousands, before)."""
    n = 3000
    async with JobQueue.from_url(RABBITMQ_URL, queue=rabbitmq_queue, prefetch=50) as queue:
        for _ in range(0, n, 1000):
            await queue.push_many([Job("credit", b"x" * 256) for _ in range(1000)])
        most_buffered = 0
        got = 0
        async with queue.consume() as consumer:
            receiver = consumer._receiver  # white box: the link's own counters
            async for job in consumer:
                most_buffered = max(most_buffered, len(receiver._buffer))
                await job.ack()
                got += 1
                if got == n:
                    break
            assert receiver._over == 0
            assert receiver._received <= receiver._told
    assert got == n
    assert most_buffered <= 50


async def test_every_consumer_close_gets_its_detach_answered(rabbitmq_queue: str) -> None:
    """RabbitMQ 3.10 answered neither detach nor end, in about one close in five, when the
    two went out back to back: each such close sat out its 5 s bound. The session now ends
    after the detach is answered; 20 consume-and-close rounds each close promptly."""
    async with JobQueue.from_url(RABBITMQ_URL, queue=rabbitmq_queue, prefetch=100) as queue:
        for _ in range(20):
            await queue.push_many([Job("j", b"x" * 1024) for _ in range(200)])
            got = 0
            async with queue.consume() as consumer:
                async for job in consumer:
                    await job.ack()
                    got += 1
                    if got == 200:
                        closing = time.perf_counter()
                        break
            took = time.perf_counter() - closing
            assert took < 2.0, f"closing a consumer waited {took:.1f} s for its detach"
        assert queue.stats().acked == 20 * 200
