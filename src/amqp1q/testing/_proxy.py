"""``FaultProxy``: a TCP proxy in the running event loop that injects network faults.

Put it between a client and a broker to see what the client does when the network misbehaves::

    async with Broker() as broker, FaultProxy(broker.host, broker.port) as proxy:
        queue = JobQueue.from_url(proxy.url_for("amqp"), queue="jobs")
        ...
        proxy.cut()          # abort every connection, both sides, at once (TCP RST)
        proxy.stall()        # forward nothing either way until resume()
        proxy.slow(0.2)      # hold each chunk 0.2 s before passing it on
        proxy.cut_after(100) # cut everything once 100 more bytes have passed
        proxy.refuse()       # accept new connections and abort them at once

The proxy knows nothing of AMQP: it moves bytes, so ``amqps://`` passes through it as well (the
client still verifies the broker's certificate, for the broker's host name). With ``ssl=`` (a
server ``ssl.SSLContext``) it terminates TLS itself and forwards plain bytes: a TLS listener in
front of a plaintext one (an ``amqps://`` or ``https://`` port for a broker that has none).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl as _ssl
from typing import Final

from ._server import Listener, Server

__all__ = ["FaultProxy"]

log = logging.getLogger("amqp1q.testing")

_CHUNK: Final = 64 * 1024


class FaultProxy(Server["_Pipe"]):
    """A TCP proxy on ``host`` (127.0.0.1; port 0 picks a free one) to ``target_host:target_port``.

    Faults apply to every connection, current and future, until undone (:meth:`resume`,
    ``slow(0)``, ``refuse(False)``, or :meth:`heal` for all of them). Counters:
    :attr:`accepted` (connections taken, refused ones too), :attr:`refused`, :attr:`active`,
    :attr:`cuts` (connections aborted by :meth:`cut` or :meth:`cut_after`),
    :attr:`bytes_to_target` and :attr:`bytes_to_client`. With ``ssl`` (a server context) the
    proxy's own listener speaks TLS, and forwards what it decrypts.
    """

    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl: _ssl.SSLContext | None = None,
    ) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.listener: Listener[_Pipe] = Listener(host, port)
        self.accepted = 0
        self.refused = 0
        self.cuts = 0
        self.bytes_to_target = 0
        self.bytes_to_client = 0
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._delay = 0.0
        self._cut_at: int | None = None
        self._refusing = False
        self._ssl = ssl

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> FaultProxy:
        """Listen (on a free port with ``port=0``); returns once listening."""
        if not self.listener.listening:
            await self.listener.start(
                lambda host, port: asyncio.start_server(self._accept, host, port, ssl=self._ssl)
            )
            log.debug(
                "fault proxy %s:%d -> %s:%d",
                self.host,
                self.port,
                self.target_host,
                self.target_port,
            )
        return self

    async def stop(self) -> None:
        """Stop listening and abort every connection."""
        await self.listener.stop()

    @property
    def url(self) -> str:
        """``amqp://HOST:PORT``: the proxy's address as a URL."""
        return self.url_for("amqp")

    def url_for(self, scheme: str = "amqp", *, userinfo: str | None = None, path: str = "") -> str:
        """``SCHEME://[USERINFO@]HOST:PORT[/PATH]`` pointing at the proxy."""
        login = f"{userinfo}@" if userinfo else ""
        tail = f"/{path.lstrip('/')}" if path else ""
        return f"{scheme}://{login}{self.host}:{self.port}{tail}"

    @property
    def active(self) -> int:
        """Connections open through the proxy now."""
        return len(self.listener.connections)

    # -- faults ---------------------------------------------------------------------------------

    def cut(self) -> int:
        """Abort every current connection on both sides (no FIN: a reset); returns how many."""
        cut = self.listener.abort_all()
        self.cuts += cut
        if cut:
            log.debug("fault proxy cut %d connection(s)", cut)
        return cut

    def stall(self) -> None:
        """Forward nothing either way (connections stay open) until :meth:`resume`."""
        self._flowing.clear()

    def resume(self) -> None:
        """Forward again what a stall held back, and what follows."""
        self._flowing.set()

    @property
    def stalled(self) -> bool:
        return not self._flowing.is_set()

    def slow(self, delay: float) -> None:
        """Hold each chunk ``delay`` seconds before passing it on (0: no delay)."""
        if delay < 0:
            raise ValueError(f"delay must be >= 0, got {delay!r}")
        self._delay = delay

    def cut_after(self, nbytes: int | None) -> None:
        """Pass ``nbytes`` more bytes (both directions together), then :meth:`cut` everything.

        One shot; ``None`` disarms it.
        """
        if nbytes is not None and nbytes < 0:
            raise ValueError(f"nbytes must be >= 0, got {nbytes!r}")
        self._cut_at = None if nbytes is None else self.bytes_forwarded + nbytes

    def refuse(self, on: bool = True) -> None:
        """Abort new connections as soon as they are accepted (a broker that is down)."""
        self._refusing = on

    def heal(self) -> None:
        """Undo every fault: resume, no delay, no pending cut, accept connections."""
        self.resume()
        self._delay = 0.0
        self._cut_at = None
        self._refusing = False

    @property
    def bytes_forwarded(self) -> int:
        return self.bytes_to_target + self.bytes_to_client

    # -- internals ------------------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self._refusing or not self.listener.listening:
            writer.transport.abort()
            self.refused += 1
            return
        pipe = _Pipe(self, writer)
        self.listener.add(pipe)
        try:
            await pipe.run(reader)
        finally:
            self.listener.discard(pipe)


class _Pipe:
    """One client connection and its connection to the target, copied both ways."""

    def __init__(self, proxy: FaultProxy, client: asyncio.StreamWriter) -> None:
        self.proxy = proxy
        self.client = client
        self.target: asyncio.StreamWriter | None = None
        self.aborted = False
        self.tasks: list[asyncio.Task[None]] = []

    def abort(self) -> None:
        """Reset both sockets at once and stop copying (a stalled copy too)."""
        self.aborted = True
        self.client.transport.abort()
        if self.target is not None:
            self.target.transport.abort()
        for task in self.tasks:
            task.cancel()

    async def run(self, client_reader: asyncio.StreamReader) -> None:
        proxy = self.proxy
        try:
            target_reader, target = await asyncio.open_connection(
                proxy.target_host, proxy.target_port
            )
        except OSError as exc:
            log.debug("fault proxy cannot reach its target: %s", exc)
            self.abort()
            return
        self.target = target
        if self.aborted:  # cut while it was connecting
            self.abort()
            return
        self.tasks = [
            asyncio.create_task(self._copy(client_reader, target, to_target=True)),
            asyncio.create_task(self._copy(target_reader, self.client, to_target=False)),
        ]
        try:
            # Either side ending ends the connection: AMQP has no use for half-closed sockets.
            await asyncio.wait(self.tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in self.tasks:
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
            # A graceful close flushes what was written (a close frame, say) before the FIN.
            for writer in (self.client, target):
                if not writer.transport.is_closing():
                    writer.close()

    async def _copy(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, to_target: bool
    ) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            await self._forward(reader, writer, to_target=to_target)

    async def _forward(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, to_target: bool
    ) -> None:
        """Copy ``reader`` to ``writer`` until end of stream, applying the faults on the way."""
        proxy = self.proxy
        while True:
            data = await reader.read(_CHUNK)
            if not data:
                return
            await proxy._flowing.wait()
            if proxy._delay:
                await asyncio.sleep(proxy._delay)
                await proxy._flowing.wait()  # stalled while it waited
            if self.aborted:
                return
            cut = False
            if proxy._cut_at is not None:
                room = proxy._cut_at - proxy.bytes_forwarded
                if room <= len(data):
                    data = data[: max(room, 0)]
                    cut = True
            if data:
                writer.write(data)
                if to_target:
                    proxy.bytes_to_target += len(data)
                else:
                    proxy.bytes_to_client += len(data)
            if cut:
                proxy._cut_at = None
                await asyncio.sleep(0)  # let the last bytes reach the socket before the reset
                proxy.cut()
                return
            await writer.drain()
