"""The start/stop lifecycle the broker and the fault proxy share: ``Listener`` and ``Server``.

:meth:`Listener.start` returns once the socket listens (anyio's ``tg.start()`` shape: the caller
goes on knowing the port); :meth:`Listener.stop` closes the listener and aborts every
connection it accepted, then waits for them to be gone, bounded by ``stop_timeout`` so that
nothing hangs on close. Each connection enters with :meth:`Listener.add` and leaves with
:meth:`Listener.discard` (from ``connection_lost``, or when its handler ends). A
:class:`Server` on a listener is an async context manager: ``async with`` starts and stops it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, Final, Generic, Protocol, TypeVar

__all__ = ["Abortable", "Listener", "Server"]

#: Seconds :meth:`Listener.stop` waits for connections to end and for the socket to close.
STOP_TIMEOUT: Final = 5.0


class Abortable(Protocol):
    """What a listener needs of a connection: a way to end it at once (a TCP reset)."""

    def abort(self) -> None: ...


C = TypeVar("C", bound=Abortable)
S = TypeVar("S", bound="Server[Any]")


class Listener(Generic[C]):
    """A TCP listener on ``host:port`` (port 0 picks a free one, kept across restarts) and the
    connections it accepted."""

    def __init__(self, host: str, port: int, *, stop_timeout: float = STOP_TIMEOUT) -> None:
        self.host = host
        self.port = port
        self.stop_timeout = stop_timeout
        self.connections: set[C] = set()
        self._server: asyncio.Server | None = None
        self._gone: asyncio.Event | None = None

    @property
    def listening(self) -> bool:
        return self._server is not None

    async def start(self, serve: Callable[[str, int], Awaitable[asyncio.Server]]) -> None:
        """Listen with ``serve(host, port)`` (``loop.create_server`` or ``asyncio.start_server``
        with the caller's handler); returns once listening. Listening already: nothing to do."""
        if self._server is not None:
            return
        self._server = await serve(self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening, abort every connection, and wait (bounded) until they are gone."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        self.abort_all()
        if self.connections:
            self._gone = gone = asyncio.Event()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(gone.wait(), self.stop_timeout)
            self._gone = None
        if server is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(server.wait_closed(), self.stop_timeout)

    def add(self, connection: C) -> None:
        self.connections.add(connection)

    def discard(self, connection: C) -> None:
        self.connections.discard(connection)
        if not self.connections and self._gone is not None:
            self._gone.set()

    def abort_all(self) -> int:
        """Abort every current connection at once (no close frames); returns how many."""
        connections = list(self.connections)
        for connection in connections:
            connection.abort()
        return len(connections)


class Server(Generic[C]):
    """What serves on a :class:`Listener`: :meth:`start` and :meth:`stop` are its own; ``async
    with`` runs them, and its address is the listener's."""

    listener: Listener[C]

    async def start(self: S) -> S:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    async def __aenter__(self: S) -> S:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def host(self) -> str:
        return self.listener.host

    @property
    def port(self) -> int:
        """The port listened on (the one picked, after :meth:`start` with ``port=0``)."""
        return self.listener.port
