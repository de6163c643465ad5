"""``FaultProxy``: first as a plain TCP proxy to a local sink/echo server, then between a
``JobQueue`` and the embedded broker, where a cut, a stall or a slow link must end in a receipt
or a typed amqp1q error within a bounded time -- never a hang."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

import pytest

from amqp1q import (
    Amqp1qError,
    ConnectionLost,
    Job,
    JobQueue,
    PushError,
    PushTimeout,
)
from amqp1q.adapters.proton._codec import decode_message
from amqp1q.testing import Broker, FaultProxy

pytestmark = pytest.mark.anyio

T = TypeVar("T")

#: Without reconnection a lost connection is final, so its error reaches the caller at once.
#: (Reconnection, where it exists, is tested on its own; these tests must not depend on it.)
NO_RECONNECT: dict[str, Any] = (
    {"reconnect": False} if "reconnect" in inspect.signature(JobQueue.from_url).parameters else {}
)


async def within(seconds: float, awaitable: Awaitable[T]) -> T:
    """Await, failing the test (not hanging it) past ``seconds``.

    (Not ``wait_for``: a ``PushTimeout`` is a ``TimeoutError`` too, and must pass through.)
    """
    task = asyncio.ensure_future(awaitable)
    done, _ = await asyncio.wait({task}, timeout=seconds)
    if not done:
        task.cancel()
        await asyncio.wait({task}, timeout=1)
        pytest.fail(f"still waiting after {seconds} s: a hang")
    return task.result()


class Sink:
    """A TCP server that keeps what it receives and, with ``echo``, sends it back."""

    def __init__(self, *, echo: bool) -> None:
        self.echo = echo
        self.received = bytearray()
        self.connections = 0
        self.ended = asyncio.Event()
        self.server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while data := await reader.read(65536):
                self.received += data
                if self.echo:
                    writer.write(data)
                    await writer.drain()
        except ConnectionError:
            pass
        finally:
            self.ended.set()
            writer.close()

    @property
    def port(self) -> int:
        assert self.server is not None
        port: int = self.server.sockets[0].getsockname()[1]
        return port


@pytest.fixture
async def echo() -> AsyncIterator[Sink]:
    sink = Sink(echo=True)
    sink.server = await asyncio.start_server(sink._serve, "127.0.0.1", 0)
    async with sink.server:
        yield sink


@pytest.fixture
async def sink() -> AsyncIterator[Sink]:
    sink = Sink(echo=False)
    sink.server = await asyncio.start_server(sink._serve, "127.0.0.1", 0)
    async with sink.server:
        yield sink


async def _connect(proxy: FaultProxy) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(proxy.host, proxy.port)


async def _read_exactly(reader: asyncio.StreamReader, n: int, seconds: float = 5.0) -> bytes:
    return await within(seconds, reader.readexactly(n))


# -- the proxy on its own ------------------------------------------------------------------------


async def test_bytes_pass_both_ways_and_are_counted(echo: Sink) -> None:
    async with FaultProxy("127.0.0.1", echo.port) as proxy:
        assert proxy.url_for("amqps") == f"amqps://127.0.0.1:{proxy.port}"
        assert (
            proxy.url_for(userinfo="u:p", path="jobs") == f"amqp://u:p@127.0.0.1:{proxy.port}/jobs"
        )
        reader, writer = await _connect(proxy)
        writer.write(b"hello proxy")
        assert await _read_exactly(reader, 11) == b"hello proxy"
        assert (proxy.accepted, proxy.active, proxy.cuts) == (1, 1, 0)
        assert (proxy.bytes_to_target, proxy.bytes_to_client) == (11, 11)
        writer.close()
        await within(5, echo.ended.wait())
    assert proxy.active == 0


async def test_a_stall_holds_bytes_until_resume(echo: Sink) -> None:
    async with FaultProxy("127.0.0.1", echo.port) as proxy:
        reader, writer = await _connect(proxy)
        writer.write(b"a")
        assert await _read_exactly(reader, 1) == b"a"
        proxy.stall()
        assert proxy.stalled
        writer.write(b"held")
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(reader.read(1), 0.3)
        assert bytes(echo.received) == b"a"  # held at the proxy, not lost in the echo server
        proxy.resume()
        assert await _read_exactly(reader, 4) == b"held"
        writer.close()


async def test_slow_holds_each_chunk(echo: Sink) -> None:
    async with FaultProxy("127.0.0.1", echo.port) as proxy:
        proxy.slow(0.3)
        reader, writer = await _connect(proxy)
        started = time.monotonic()
        writer.write(b"ping")
        assert await _read_exactly(reader, 4) == b"ping"
        assert time.monotonic() - started >= 0.6  # 0.3 s each way
        proxy.slow(0)
        started = time.monotonic()
        writer.write(b"pong")
        assert await _read_exactly(reader, 4) == b"pong"
        assert time.monotonic() - started < 0.3
        writer.close()
        with pytest.raises(ValueError, match="delay"):
            proxy.slow(-1)


async def test_cut_resets_both_sides(echo: Sink) -> None:
    async with FaultProxy("127.0.0.1", echo.port) as proxy:
        reader, writer = await _connect(proxy)
        writer.write(b"x")
        await _read_exactly(reader, 1)
        assert proxy.cut() == 1
        # The client sees a reset (or at least the end of the stream), never a silent socket.
        try:
            rest = await within(5, reader.read())
        except ConnectionResetError:
            rest = b""
        assert rest == b""
        await within(5, echo.ended.wait())  # the server side was aborted too
        assert (proxy.cuts, proxy.active) == (1, 0)
        writer.close()
        # New connections are served as before.
        reader, writer = await _connect(proxy)
        writer.write(b"again")
        assert await _read_exactly(reader, 5) == b"again"
        assert proxy.accepted == 2
        writer.close()


async def test_cut_during_a_stall_does_not_wait_for_resume(echo: Sink) -> None:
    async with FaultProxy("127.0.0.1", echo.port) as proxy:
        reader, writer = await _connect(proxy)
        writer.write(b"x")
        await _read_exactly(reader, 1)
        proxy.stall()
        writer.write(b"held")
        await asyncio.sleep(0.1)
        assert proxy.cut() == 1
        with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
            await within(5, reader.readexactly(4))
        await within(5, echo.ended.wait())
        assert proxy.active == 0
        writer.close()


async def test_cut_after_passes_exactly_that_many_bytes(sink: Sink) -> None:
    async with FaultProxy("127.0.0.1", sink.port) as proxy:
        _, writer = await _connect(proxy)
        writer.write(b"0123456789")
        for _ in range(500):
            if len(sink.received) == 10:
                break
            await asyncio.sleep(0.01)
        proxy.cut_after(25)
        writer.write(bytes(range(100)))
        await within(5, sink.ended.wait())
        assert bytes(sink.received) == b"0123456789" + bytes(range(25))
        assert proxy.bytes_to_target == 35
        assert proxy.cuts == 1
        writer.close()


async def test_refuse_aborts_new_connections_until_healed(echo: Sink) -> None:
    async with FaultProxy("127.0.0.1", echo.port) as proxy:
        proxy.refuse()
        reader, writer = await _connect(proxy)
        try:
            assert await within(5, reader.read()) == b""
        except ConnectionResetError:
            pass
        writer.close()
        assert echo.connections == 0  # the target was never dialled
        assert (proxy.accepted, proxy.refused, proxy.cuts) == (1, 1, 0)
        proxy.heal()
        reader, writer = await _connect(proxy)
        writer.write(b"ok")
        assert await _read_exactly(reader, 2) == b"ok"
        writer.close()


async def test_an_unreachable_target_closes_the_client() -> None:
    placeholder = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = placeholder.sockets[0].getsockname()[1]
    placeholder.close()
    await placeholder.wait_closed()
    async with FaultProxy("127.0.0.1", port) as proxy:
        reader, writer = await _connect(proxy)
        try:
            assert await within(5, reader.read()) == b""
        except ConnectionResetError:
            pass
        writer.close()


async def test_stop_while_stalled_is_prompt(echo: Sink) -> None:
    proxy = await FaultProxy("127.0.0.1", echo.port).start()
    reader, writer = await _connect(proxy)
    writer.write(b"x")
    await _read_exactly(reader, 1)
    proxy.stall()
    writer.write(b"held")
    started = time.monotonic()
    await within(5, proxy.stop())
    assert time.monotonic() - started < 1
    assert proxy.active == 0
    writer.close()


# -- a JobQueue through the proxy ----------------------------------------------------------------


@pytest.fixture
async def broker() -> AsyncIterator[Broker]:
    async with Broker() as broker:
        yield broker


@pytest.fixture
async def proxy(broker: Broker) -> AsyncIterator[FaultProxy]:
    async with FaultProxy(broker.host, broker.port) as proxy:
        yield proxy


def _queue(proxy: FaultProxy, **options: Any) -> JobQueue:
    options.setdefault("close_timeout", 1.0)
    return JobQueue.from_url(proxy.url, queue="jobs", connect_timeout=5, **options)


async def test_a_job_queue_works_through_the_proxy(broker: Broker, proxy: FaultProxy) -> None:
    async with _queue(proxy) as queue:
        receipt = await within(5, queue.push(Job("via-proxy", b"payload")))
        async with queue.consume() as consumer:
            job = await within(5, consumer.receive())
            assert (job.name, job.body, job.id) == ("via-proxy", b"payload", receipt.job_id)
            await job.ack()
    assert proxy.accepted == 1
    assert proxy.bytes_to_target > len(b"payload")
    assert proxy.bytes_to_client > 0
    assert len(broker.queue("jobs")) == 0


async def test_a_cut_fails_a_push_in_flight_with_connection_lost(proxy: FaultProxy) -> None:
    async with _queue(proxy, push_timeout=30, **NO_RECONNECT) as queue:
        await within(5, queue.push(Job("warm-up", b"")))
        proxy.stall()  # the transfer waits at the proxy: its outcome cannot come
        push = asyncio.ensure_future(queue.push(Job("in-flight", b"x")))
        await asyncio.sleep(0.2)
        assert not push.done()
        started = time.monotonic()
        proxy.cut()
        with pytest.raises(ConnectionLost):
            await within(5, push)
        assert time.monotonic() - started < 2  # at once, not after the 30 s push timeout
        with pytest.raises(ConnectionLost):
            await within(5, queue.push(Job("after", b"")))
        started = time.monotonic()
    assert time.monotonic() - started < 3


async def test_a_cut_ends_a_waiting_consumer(proxy: FaultProxy) -> None:
    async with _queue(proxy, **NO_RECONNECT) as queue, queue.consume() as consumer:
        receive = asyncio.ensure_future(consumer.receive())
        await asyncio.sleep(0.2)
        proxy.cut()
        # A lost connection ends the consumer: receive() gives None or raises ConnectionLost.
        try:
            assert await within(5, receive) is None
        except ConnectionLost:
            pass
        try:
            seen = [job async for job in consumer]
        except ConnectionLost:
            seen = []
        assert seen == []


async def test_a_cut_with_default_settings_never_hangs(proxy: FaultProxy) -> None:
    """Reconnecting or not, a push after a cut to a broker that stays away ends in time."""
    async with _queue(proxy, push_timeout=1.0) as queue:
        await within(5, queue.push(Job("warm-up", b"")))
        proxy.refuse()
        proxy.cut()
        started = time.monotonic()
        with pytest.raises(Amqp1qError) as caught:
            await within(5, queue.push(Job("after-cut", b"")))
        assert isinstance(caught.value, (ConnectionLost, PushTimeout))
        assert time.monotonic() - started < 3
        started = time.monotonic()
    assert time.monotonic() - started < 4


async def test_a_stall_gives_push_timeout_and_resume_recovers(
    broker: Broker, proxy: FaultProxy
) -> None:
    async with _queue(proxy) as queue:
        await within(5, queue.push(Job("warm-up", b"")))
        proxy.stall()
        started = time.monotonic()
        with pytest.raises(PushTimeout) as caught:
            await within(5, queue.push(Job("stalled", b"x"), timeout=0.5))
        assert 0.4 < time.monotonic() - started < 2
        assert isinstance(caught.value, PushError)
        assert caught.value.job_id is not None
        proxy.resume()
        await within(5, queue.push(Job("after-stall", b"y")))
        # The transfer the stall held back went on afterwards: "may or may not have been queued".
        stored = broker.queue("jobs").messages()
        names = {decode_message(message.payload).subject for message in stored}
        assert {"warm-up", "after-stall"} <= names


async def test_close_while_stalled_is_bounded(proxy: FaultProxy) -> None:
    queue = _queue(proxy, close_timeout=0.5)
    await within(5, queue.open())
    async with queue.consume() as consumer:
        await within(5, queue.push(Job("one", b"")))
        job = await within(5, consumer.receive())
        assert job is not None
        proxy.stall()
        started = time.monotonic()
        await within(10, queue.close(grace=0.5))  # the job is unsettled: grace, then give up
    # grace + 2 * close_timeout is the documented bound.
    assert time.monotonic() - started < 0.5 + 2 * 0.5 + 1
    assert not queue.is_open


async def test_a_slow_link_still_delivers(proxy: FaultProxy) -> None:
    proxy.slow(0.05)
    async with _queue(proxy) as queue:
        started = time.monotonic()
        await within(10, queue.push(Job("slowly", b"z" * 1000)))
        assert time.monotonic() - started >= 0.1  # the transfer one way, its outcome the other
        async with queue.consume() as consumer:
            job = await within(10, consumer.receive())
            assert job.body == b"z" * 1000
            await job.ack()


async def test_a_cut_in_the_middle_of_a_large_transfer(proxy: FaultProxy) -> None:
    async with _queue(proxy, **NO_RECONNECT) as queue:
        await within(5, queue.push(Job("warm-up", b"")))
        proxy.cut_after(10_000)
        with pytest.raises(ConnectionLost):
            await within(5, queue.push(Job("large", b"L" * 200_000)))
        assert proxy.cuts == 1
