"""``Broker``: an AMQP 1.0 broker in the running event loop, for tests and the demo.

Each connection is a :class:`_Connection` (an :class:`asyncio.Protocol`): the broker's own SASL
layer first (:mod:`._sasl`), then a server-mode :class:`~amqp1q.adapters.proton._engine.Engine`
driven by the Proton adapter's :class:`~amqp1q.adapters.proton._driver.Pump` — the same
sans-IO engine and I/O as the client, in the other role.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl as _ssl
import urllib.parse
from collections.abc import Iterable, Mapping
from typing import Any, Final

import proton

from .._version import __version__
from ..adapters.proton._driver import Pump
from ..adapters.proton._engine import Engine
from ..adapters.proton._links import Condition, Link, ReceiverLink, SenderLink
from ._links import Incoming, Outgoing, now_ms
from ._sasl import SaslServer
from ._store import DEAD_LETTER_SUFFIX, BrokerQueue, Store

__all__ = ["Broker"]

log = logging.getLogger("amqp1q.testing")

PRODUCT: Final = "amqp1q-broker"
DEFAULT_MAX_FRAME_SIZE: Final = 256 * 1024
DEFAULT_LOCK_DURATION: Final = 30.0


class Broker:
    """An in-process AMQP 1.0 broker on 127.0.0.1.

    ::

        async with Broker() as broker:           # port 0: a free port
            queue = JobQueue.from_url(broker.url, queue="jobs")

    With no ``users`` it takes SASL ANONYMOUS and any PLAIN login (a test peer); ``users``
    (name -> password) makes it check PLAIN logins (ANONYMOUS stays allowed unless
    ``anonymous=False``); ``strict`` answers ``amqp:not-found`` for queues not declared with
    :meth:`declare` (or ``queues=``); ``max_message_size`` is announced on every link that takes
    messages and enforced; ``max_frame_size`` bounds incoming frames; ``ssl`` (a server
    :class:`ssl.SSLContext`) serves ``amqps://``, with SASL EXTERNAL for clients whose
    certificate it verified (``ssl.verify_mode = CERT_REQUIRED`` or ``CERT_OPTIONAL``);
    ``servicebus=True`` emulates Service Bus for azure-servicebus and @azure/service-bus
    clients (see :meth:`servicebus_connection_string`), with a 256 KB ``max_message_size``
    unless given one.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        users: Mapping[str, str] | None = None,
        anonymous: bool = True,
        strict: bool = False,
        queues: Iterable[str] = (),
        max_message_size: int = 0,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        lock_duration: float = DEFAULT_LOCK_DURATION,
        idle_timeout: float | None = None,
        servicebus: bool = False,
        ssl: _ssl.SSLContext | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.users = dict(users or {})
        self.anonymous = anonymous
        self.max_message_size = max_message_size
        self.max_frame_size = max_frame_size
        self.lock_duration_ms = int(lock_duration * 1000)
        self.idle_timeout = idle_timeout
        self.ssl = ssl
        self.default_delay_ms = 0
        self.store = Store(strict=strict, on_schedule=self._schedule)
        for name in queues:
            self.store.declare(name)
        self.locks = _Locks()
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._refuse_attaches = 0
        self.stats_received = 0
        self.stats_delivered = 0
        # Service Bus emulation hooks (see amqp1q.testing._servicebus); None: plain broker.
        self.servicebus: Any = None
        self._no_servicebus: Any = None
        if servicebus:
            self.enable_servicebus()

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> Broker:
        if self._server is not None:
            return self
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self), self.host, self.port, ssl=self.ssl
        )
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("amqp1q broker listening on %s:%d", self.host, self.port)
        return self

    async def stop(self) -> None:
        """Stop listening and drop every connection (queue contents are kept)."""
        server = self._server
        self._server = None
        if server is not None:
            server.close()
        self.drop_connections()
        if server is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(server.wait_closed(), 5)
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self.locks.clear()

    async def restart(self) -> None:
        """Stop and start again on the same port, keeping every queue's messages."""
        await self.stop()
        await self.start()

    async def __aenter__(self) -> Broker:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        """``amqp://HOST:PORT`` (``amqps://`` with ``ssl=``), for :meth:`JobQueue.from_url`."""
        return f"{'amqps' if self.ssl else 'amqp'}://{self.host}:{self.port}"

    def url_for(self, user: str) -> str:
        """``amqp://USER:PASSWORD@HOST:PORT`` for one of ``users``."""
        password = urllib.parse.quote(self.users[user], safe="")
        return f"amqp://{urllib.parse.quote(user, safe='')}:{password}@{self.host}:{self.port}"

    def servicebus_connection_string(
        self, queue: str | None = None, *, key_name: str = "RootManageSharedAccessKey"
    ) -> str:
        """A Service Bus connection string for this broker (``UseDevelopmentEmulator=true``)."""
        key = self.users.get(key_name, "amqp1q-test-key")
        text = (
            f"Endpoint=sb://{self.host}:{self.port};SharedAccessKeyName={key_name};"
            f"SharedAccessKey={key};UseDevelopmentEmulator=true"
        )
        return text + (f";EntityPath={queue}" if queue else "")

    def enable_servicebus(self) -> None:
        """Emulate Service Bus for azure-servicebus clients ($cbs, $management; see
        :mod:`amqp1q.testing._servicebus`), with :meth:`servicebus_connection_string`. Links
        that take messages announce ``max_message_size`` (by default Service Bus Standard's
        256 KB)."""
        from ._servicebus import SERVICEBUS_MAX_MESSAGE_SIZE, ServiceBusEmulation

        if self.servicebus is None:
            self.servicebus = ServiceBusEmulation(self)
            self.max_message_size = self.max_message_size or SERVICEBUS_MAX_MESSAGE_SIZE

    # -- queues ---------------------------------------------------------------------------------

    def declare(self, name: str) -> BrokerQueue:
        return self.store.declare(name)

    def queue(self, name: str) -> BrokerQueue:
        """The queue ``name`` (created if need be), to inspect in tests."""
        queue = self.store.queue(name, create=True)
        assert queue is not None
        return queue

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    # -- faults ---------------------------------------------------------------------------------

    def drop_connections(self) -> int:
        """Abort every connection at once (no close frames); returns how many."""
        connections = list(self._connections)
        for connection in connections:
            connection.abort()
        return len(connections)

    def refuse_attaches(self, count: int) -> None:
        """Refuse the next ``count`` link attaches with ``amqp:resource-limit-exceeded``."""
        self._refuse_attaches = count

    def stall(self) -> None:
        """Stop reading from and writing to every current connection (a hung peer)."""
        for connection in self._connections:
            connection.stall()

    # -- internals ------------------------------------------------------------------------------

    def _schedule(self, queue: BrokerQueue) -> None:
        due = queue.next_due()
        timer = self._timers.pop(queue.name, None)
        if timer is not None:
            timer.cancel()
        if due is None:
            return
        loop = asyncio.get_running_loop()
        delay = max(0.0, (due - now_ms()) / 1000)
        self._timers[queue.name] = loop.call_later(delay, self._fire, queue)

    def _fire(self, queue: BrokerQueue) -> None:
        self._timers.pop(queue.name, None)
        queue.promote_due(now_ms())
        self._schedule(queue)

    def _take_refusal(self) -> bool:
        if self._refuse_attaches > 0:
            self._refuse_attaches -= 1
            return True
        return False

    def _authenticate(self, user: str, password: str) -> bool:
        if not self.users:
            return True  # a test peer takes any PLAIN login
        if self.servicebus is not None and user not in self.users:
            return True  # not a key name: a client that authorizes by $cbs token instead
        # A SAS key name and its key over PLAIN (as AMQP clients reach Service Bus); the
        # emulation lets such a connection attach without a $cbs token.
        return self.users.get(user) == password


class _Locks:
    """Peek-lock timers: a delivery not settled before its lock ends goes back to its queue."""

    def __init__(self) -> None:
        self._timers: dict[bytes, tuple[asyncio.TimerHandle, Outgoing]] = {}

    def track(self, outgoing: Outgoing, tag: bytes, _: Any) -> None:
        loop = asyncio.get_running_loop()
        duration = outgoing.broker.lock_duration_ms / 1000
        handle = loop.call_later(duration, self._expire, tag)
        self._timers[tag] = (handle, outgoing)

    def renew(self, tag: bytes) -> int | None:
        """Extend the lock; returns the new locked-until (ms) or None if it has gone."""
        entry = self._timers.get(tag)
        if entry is None:
            return None
        handle, outgoing = entry
        handle.cancel()
        self.track(outgoing, tag, None)
        return now_ms() + outgoing.broker.lock_duration_ms

    def forget(self, tag: bytes) -> None:
        entry = self._timers.pop(tag, None)
        if entry is not None:
            entry[0].cancel()

    def owner(self, tag: bytes) -> Outgoing | None:
        entry = self._timers.get(tag)
        return entry[1] if entry is not None else None

    def _expire(self, tag: bytes) -> None:
        entry = self._timers.pop(tag, None)
        if entry is not None:
            entry[1].lock_expired(tag)

    def clear(self) -> None:
        for handle, _ in self._timers.values():
            handle.cancel()
        self._timers.clear()


class _Connection(asyncio.Protocol):
    """One client connection: SASL, then an engine in server mode."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.sasl = SaslServer(
            anonymous=broker.anonymous,
            authenticate=broker._authenticate,
        )
        self.engine: Engine | None = None
        self.pump: Pump | None = None
        self.transport: asyncio.Transport | None = None
        self.links: dict[Link, Incoming | Outgoing | Any] = {}
        self.user: str | None = None
        self.stalled = False

    # -- asyncio.Protocol -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.broker._connections.add(self)
        subject = _certificate_subject(transport.get_extra_info("peercert"))
        if subject is not None:
            self.sasl = SaslServer(
                anonymous=self.broker.anonymous,
                authenticate=self.broker._authenticate,
                external_user=subject,
            )

    def data_received(self, data: bytes) -> None:
        if self.stalled:
            return
        pump = self.pump
        if pump is not None:
            pump.data_received(data)
            return
        sasl = self.sasl
        sasl.receive_data(data)
        out = sasl.data_to_send()
        transport = self.transport
        assert transport is not None
        if out:
            transport.write(out)
        if not sasl.done:
            return
        if not sasl.succeeded:
            log.info("SASL refused: %s", sasl.failure)
            transport.close()
            return
        self.user = sasl.user
        self._start_engine(sasl.leftover)

    def eof_received(self) -> bool | None:
        if self.pump is not None:
            return self.pump.eof_received()
        return False

    def connection_lost(self, exc: BaseException | None) -> None:
        self.broker._connections.discard(self)
        if self.pump is not None:
            self.pump.connection_lost(exc)
        self._links_gone()

    def pause_writing(self) -> None:
        if self.pump is not None:
            self.pump.pause_writing()

    def resume_writing(self) -> None:
        if self.pump is not None:
            self.pump.resume_writing()

    # -- the AMQP layer -------------------------------------------------------------------------

    def _start_engine(self, leftover: bytes) -> None:
        broker = self.broker
        engine = Engine(
            self,
            server=True,
            sasl=False,
            container_id=PRODUCT,
            idle_timeout=broker.idle_timeout,
            max_frame_size=broker.max_frame_size,
            properties={"product": PRODUCT, "version": __version__},
        )
        self.engine = engine
        pump = Pump(engine, self._lost)
        self.pump = pump
        assert self.transport is not None
        pump.connection_made(self.transport)
        if leftover:
            pump.data_received(leftover)

    def _lost(self, exc: BaseException | None) -> None:
        self._links_gone()

    def _links_gone(self) -> None:
        links, self.links = self.links, {}
        for role in links.values():
            closed = getattr(role, "closed", None)
            if closed is not None:
                closed()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def stall(self) -> None:
        self.stalled = True
        if self.transport is not None:
            self.transport.pause_reading()
        if self.pump is not None:
            self.pump.pause_writing()

    # -- EngineHandler --------------------------------------------------------------------------

    def on_remote_open(self, engine: Engine) -> None:
        engine.open()
        if self.pump is not None:  # not from inside the engine's own event dispatch
            asyncio.get_running_loop().call_soon(self.pump.start_ticking)

    def on_remote_close(self, engine: Engine, condition: Condition | None) -> None:
        self._links_gone()

    def on_transport_error(self, engine: Engine, condition: Condition | None) -> None:
        log.info("connection error: %s", condition)

    def on_link_remote_open(self, engine: Engine, link: Link) -> None:
        broker = self.broker
        wrapper = link.wrapper
        if broker._take_refusal():
            _refuse(link, Condition("amqp:resource-limit-exceeded", "refused by fault injection"))
            return
        is_sender = isinstance(link, SenderLink)  # our sender: the client receives
        address = link.remote_source_address if is_sender else link.remote_target_address
        from ._servicebus import stand_in  # a $cbs link on a plain broker: told why not

        emulation = broker.servicebus or stand_in(broker, address)
        if emulation is not None and emulation.attach(self, link, address):
            return
        name = _queue_name(address)
        queue = broker.store.queue(name) if name else None
        if queue is None:
            _refuse(
                link,
                Condition(
                    "amqp:not-found",
                    f"no queue {name!r} on this broker (strict mode)"
                    if name
                    else "an address is required",
                ),
            )
            return
        if is_sender:
            assert isinstance(link, SenderLink)
            wrapper.source.address = address or ""
            presettled = link.remote_snd_settle_mode == 1
            if presettled:
                wrapper.snd_settle_mode = 1
            lock_tokens = broker.servicebus is not None or link.remote_rcv_settle_mode == 1
            if link.remote_rcv_settle_mode == 1:
                wrapper.rcv_settle_mode = 1
            link.open()
            role: Incoming | Outgoing = Outgoing(
                broker, link, queue, presettled=presettled, lock_tokens=lock_tokens
            )
        else:
            assert isinstance(link, ReceiverLink)
            wrapper.target.address = address or ""
            if broker.max_message_size:
                link.set_max_message_size(broker.max_message_size)
            link.open()
            role = Incoming(broker, link, queue)
        self.links[link] = role
        link.on_remote_close = self._link_closed

    def _link_closed(self, link: Link, condition: Condition | None) -> None:
        role = self.links.pop(link, None)
        closed = getattr(role, "closed", None)
        if closed is not None:
            closed()


def _certificate_subject(cert: Any) -> str | None:
    """The common name of a verified client certificate (``None`` without one)."""
    if not cert:
        return None
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return "unnamed"


def _refuse(link: Link, condition: Condition) -> None:
    """Attach with a null terminus, then detach with the reason (the spec's way to refuse)."""
    wrapper = link.wrapper
    terminus = wrapper.source if isinstance(link, SenderLink) else wrapper.target
    terminus.type = proton.Terminus.UNSPECIFIED
    link.open()
    link.close(condition)


def _queue_name(address: str | None) -> str | None:
    """The queue an address names: ``jobs``, ``/jobs``, ``amqps://host:port/jobs`` alike."""
    if not address:
        return None
    if "://" in address:
        address = urllib.parse.urlsplit(address).path
    name = address.lstrip("/")
    if name.lower().endswith(DEAD_LETTER_SUFFIX):  # Service Bus spells it /$DeadLetterQueue
        name = name[: -len(DEAD_LETTER_SUFFIX)] + DEAD_LETTER_SUFFIX
    return name or None
