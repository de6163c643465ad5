"""The only I/O of the Proton adapter: one socket and one :class:`Engine`, on the event loop.

:class:`Pump` is an :class:`asyncio.Protocol`. Bytes read are fed to the engine at once, inside
the event loop's own callback (no reader task, no thread); whatever the engine has to say is
written at the end of that callback, or — when application calls (a send, a settlement, credit)
leave output — in one coalesced write scheduled with ``call_soon``, so a burst of pushes in one
loop iteration costs one ``write``. Heartbeats and the idle timeout run on a loop timer that
calls :meth:`Engine.tick`. TLS is Python's ``ssl`` through the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable

from ._engine import Engine

__all__ = ["Pump", "open_pump"]

log = logging.getLogger("amqp1q.proton")

#: Bytes fed to the engine at a time, and how long one read may keep the loop (seconds).
_SLICE = 8 * 1024
_READ_BUDGET = 0.001


class Pump(asyncio.Protocol):
    """Moves bytes between a socket and an engine; closes the socket once the engine is done."""

    def __init__(self, engine: Engine, on_lost: Callable[[BaseException | None], None]) -> None:
        self.engine = engine
        self._on_lost = on_lost
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._receiving = False
        self._flush_scheduled = False
        self._write_paused = False
        self._tick_handle: asyncio.TimerHandle | None = None
        self._backlog: list[bytes] = []
        self.lost = False
        self.done = asyncio.Event()
        engine.wakeup = self._schedule_flush
        engine.write_now = self._write_now

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self.flush()

    def data_received(self, data: bytes) -> None:
        if self._backlog:  # still working through an earlier read: keep the order
            self._backlog.append(data)
            return
        self._feed(data)

    def _feed(self, data: bytes) -> None:
        """Feed the engine a slice at a time; past the time budget, pause reading and finish
        in a later loop iteration, so one big read never blocks the loop for long."""
        view = memoryview(data)
        engine = self.engine
        deadline = self._loop.time() + _READ_BUDGET
        self._receiving = True
        try:
            while view:
                engine.receive_data(view[:_SLICE])
                view = view[_SLICE:]
                if view and self._loop.time() > deadline:
                    self._backlog.append(bytes(view))
                    if self._transport is not None:
                        self._transport.pause_reading()
                    self._loop.call_soon(self._feed_backlog)
                    break
        finally:
            self._receiving = False
        self.flush()

    def _feed_backlog(self) -> None:
        if not self._backlog:
            return
        data = b"".join(self._backlog)
        self._backlog.clear()
        self._feed(data)
        if not self._backlog and self._transport is not None and not self.lost:
            self._transport.resume_reading()

    def _feed_all(self) -> None:
        """Before end of stream: whatever is still in the backlog, at once."""
        if self._backlog:
            data = b"".join(self._backlog)
            self._backlog.clear()
            self._receiving = True
            try:
                self.engine.receive_data(data)
            finally:
                self._receiving = False

    def eof_received(self) -> bool:
        self._feed_all()
        self.engine.receive_eof()
        self.flush()
        return False

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost = True
        self._transport = None
        if self._tick_handle is not None:
            self._tick_handle.cancel()
            self._tick_handle = None
        if not self.engine.finished:
            self._feed_all()
            self.engine.receive_eof()
            self.engine.close_output()
            self.engine.process()
        self.done.set()
        self._on_lost(exc)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self.flush()

    # -- output ---------------------------------------------------------------------------------

    def _schedule_flush(self) -> None:
        if self._receiving or self._flush_scheduled:
            return
        self._flush_scheduled = True
        self._loop.call_soon(self._scheduled_flush)

    def _write_now(self) -> None:
        if self._receiving:  # (mid-feed: the engine is dispatching; written when it is done)
            self.engine.touch()
            return
        self.flush()

    def _scheduled_flush(self) -> None:
        self._flush_scheduled = False
        self.flush()

    def flush(self) -> None:
        """Write what the engine has to say; close the socket once it will say nothing more."""
        transport = self._transport
        if transport is None or self._write_paused:
            return
        engine = self.engine
        data = engine.data_to_send()
        if data:
            transport.write(data)
        if engine.finished:
            transport.close()

    # -- timers ---------------------------------------------------------------------------------

    def start_ticking(self) -> None:
        """Run heartbeats and the idle-timeout check, once the connection is open."""
        self._tick()

    def _tick(self) -> None:
        self._tick_handle = None
        if self.lost:
            return
        now = self._loop.time()
        deadline = self.engine.tick(now)
        self.flush()
        if deadline > 0 and not self.lost:
            self._tick_handle = self._loop.call_at(max(deadline, now + 0.001), self._tick)

    # -- shutdown -------------------------------------------------------------------------------

    async def close(self, timeout: float) -> None:
        """Close the connection gracefully, or abort the socket when ``timeout`` passes."""
        if self.lost:
            return
        self.engine.close()
        self.flush()
        try:
            await asyncio.wait_for(self.done.wait(), timeout)
        except asyncio.TimeoutError:
            log.debug("the close handshake did not finish within %.1f s; aborting", timeout)
            self.abort()

    @property
    def local_port(self) -> int | None:
        """This end's TCP port, while connected."""
        transport = self._transport
        address = transport.get_extra_info("sockname") if transport is not None else None
        return int(address[1]) if isinstance(address, tuple) and len(address) > 1 else None

    def abort(self) -> None:
        transport = self._transport
        if transport is not None:
            transport.abort()


async def open_pump(
    engine: Engine,
    host: str,
    port: int,
    *,
    ssl_context: ssl.SSLContext | None,
    server_hostname: str | None,
    on_lost: Callable[[BaseException | None], None],
) -> Pump:
    """Connect a socket (and TLS) to ``host:port`` and start pumping ``engine``'s bytes.

    Raises ``OSError`` (refused, unreachable, DNS) or ``ssl.SSLError`` as the loop does; the
    caller maps them to amqp1q's errors and bounds the call with its connect timeout.
    """
    loop = asyncio.get_running_loop()
    _, pump = await loop.create_connection(
        lambda: Pump(engine, on_lost),
        host,
        port,
        ssl=ssl_context,
        server_hostname=server_hostname if ssl_context is not None else None,
    )
    return pump
