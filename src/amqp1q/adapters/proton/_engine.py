"""proton's AMQP 1.0 engine as a sans-IO state machine: bytes in, callbacks and bytes out.

No sockets, no event loop, no threads. The owner (the asyncio driver, the embedded broker, or a
test wiring two engines back to back) moves bytes with :meth:`Engine.receive_data` and
:meth:`Engine.data_to_send`, calls :meth:`Engine.tick` for heartbeats, and hears about the
connection through a :class:`EngineHandler` and about each link through its own callbacks.
The engine sets the connection up, moves its bytes and opens links; what each of proton's
events means (to a link, to the handler) is :mod:`._dispatch`.

The hot paths (send, receive, settle, flow, event dispatch) call proton's C API through
``cproton_ffi`` directly; the Python wrappers are used only to set things up. That avoids an
allocation and a record lookup per delivery, and two traps of python-qpid-proton 0.40:
``Delivery.tag`` decodes binary tags as UTF-8 and raises, and binary values are memoryviews
into C memory that turn to garbage once the owner is freed. Here tags are never read and every
payload is copied into ``bytes`` at once.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from typing import Any, Final, Protocol

import proton
from cproton_ffi import ffi, lib

from ._deliveries import Condition, condition_of, set_condition
from ._dispatch import Dispatcher
from ._links import Link, ReceiverLink, SenderLink, wrap_link

__all__ = ["Engine", "EngineHandler"]

_NULL = ffi.NULL
_LOCAL_CLOSED = lib.PN_LOCAL_CLOSED
_REMOTE_CLOSED = lib.PN_REMOTE_CLOSED


class EngineHandler(Protocol):
    """What the engine's owner hears about the connection as a whole."""

    def on_remote_open(self, engine: Engine) -> None: ...

    def on_remote_close(self, engine: Engine, condition: Condition | None) -> None: ...

    def on_transport_error(self, engine: Engine, condition: Condition | None) -> None: ...

    def on_link_remote_open(self, engine: Engine, link: Link) -> None:
        """A link the peer began (server side); ours are reported to the link itself."""


class Engine:
    """One AMQP connection, client or server side, with no I/O of its own.

    Client: ``Engine(handler, container_id=..., user=..., password=...)`` then :meth:`open`.
    Server: ``Engine(handler, server=True, sasl=False)``; the owner authenticates (the broker has
    its own SASL layer) and opens in ``on_remote_open``.
    """

    def __init__(
        self,
        handler: EngineHandler,
        *,
        server: bool = False,
        container_id: str = "amqp1q",
        hostname: str | None = None,
        user: str | None = None,
        password: str | None = None,
        sasl: bool = True,
        mechanisms: str | None = None,
        idle_timeout: float | None = None,
        max_frame_size: int | None = None,
        properties: Mapping[str, Any] | None = None,
        offered_capabilities: list[str] | None = None,
    ) -> None:
        self.handler = handler
        self.server = server
        connection = proton.Connection()
        transport = proton.Transport(proton.Transport.SERVER if server else proton.Transport.CLIENT)
        collector = proton.Collector()
        connection.collect(collector)
        connection.container = container_id
        if hostname is not None:
            connection.hostname = hostname
        if properties:
            connection.properties = {proton.symbol(k): v for k, v in properties.items()}
        if offered_capabilities:
            connection.offered_capabilities = proton.SymbolList(
                [proton.symbol(c) for c in offered_capabilities]
            )
        if sasl:
            layer = transport.sasl()
            # amqp1q applies its own rule for PLAIN over plaintext (an explicit opt-in off
            # loopback); proton's refusal would otherwise stall the transport silently.
            layer.allow_insecure_mechs = True
            if mechanisms:
                layer.allowed_mechs(mechanisms)
            if user is not None:
                connection.user = user
                connection.password = password or ""
        if idle_timeout:
            transport.idle_timeout = idle_timeout
        if max_frame_size:
            transport.max_frame_size = max_frame_size
        transport.bind(connection)
        self._sasl = transport._impl and lib.pn_sasl(transport._impl) if sasl else None
        self._connection = connection
        self._transport = transport
        self._collector = collector
        self._conn = connection._impl
        self._trans = transport._impl
        self._col = collector._impl
        self._session: Any = None
        self._dispatcher = Dispatcher(self, self._conn, self._trans, self._col)
        self._links = self._dispatcher.links  # (the links events are routed to, by pointer)
        self._names = itertools.count(1)
        self._dirty = True
        #: Called (once per batch) when API calls leave output to write; the driver flushes.
        self.wakeup: Callable[[], None] | None = None
        #: Called when messages sent since the last write reach SEND_BATCH: the driver writes
        #: them now, unless it is feeding the engine (then it writes once that is done).
        self.write_now: Callable[[], None] | None = None
        self._unwritten = 0
        self._processing = False  # (events are being dispatched: write_now would re-enter)
        self.remote_opened = False
        self.closed = False
        self.error: Condition | None = None

    # -- bytes in and out -------------------------------------------------------------------

    def touch(self) -> None:
        """Note that API calls changed state to be written; wake the owner the first time."""
        if not self._dirty:
            self._dirty = True
            wakeup = self.wakeup
            if wakeup is not None:
                wakeup()

    def sent(self) -> None:
        """A message went out on a link (:meth:`SenderLink.send`): bytes to write. Past
        SEND_BATCH of them, written at once (unless the send came from an event being
        dispatched: the owner writes when that is done). A pipeline: a burst of pushes does
        not reach the broker as one write of the whole window, which the broker answers as
        one, each side waiting for the other."""
        self._unwritten += 1
        if self._unwritten >= SEND_BATCH and self.write_now is not None and not self._processing:
            self.write_now()
        else:
            self.touch()

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Feed bytes read from the peer, then process what they caused."""
        trans = self._trans
        view = memoryview(data)
        while view:
            capacity = lib.pn_transport_capacity(trans)
            if capacity < 0:
                break  # input closed: the rest is of no use
            if capacity == 0:
                self.process()
                if lib.pn_transport_capacity(trans) == 0:
                    break  # pragma: no cover - proton always frees room once processed
                continue
            chunk = view[:capacity]
            lib.pn_transport_push(trans, ffi.from_buffer(chunk), len(chunk))
            view = view[len(chunk) :]
            self.process()

    def receive_eof(self) -> None:
        """The peer closed its side of the stream."""
        lib.pn_transport_close_tail(self._trans)
        self.process()

    def data_to_send(self) -> bytes:
        """Bytes to write to the peer now (``b""`` if none)."""
        if self._dirty:
            self.process()
        self._unwritten = 0
        trans = self._trans
        chunks = []
        while True:
            # proton hands its output over a buffer's worth at a time: take all of it.
            pending = lib.pn_transport_pending(trans)
            if pending <= 0:
                break
            buffer = bytearray(pending)
            got = lib.pn_transport_peek(trans, ffi.from_buffer(buffer), pending)
            if got < 0:
                break
            lib.pn_transport_pop(trans, pending)
            chunks.append(buffer)
        if not chunks:
            return b""
        return bytes(chunks[0]) if len(chunks) == 1 else b"".join(chunks)

    @property
    def output_closed(self) -> bool:
        """Nothing more will ever be written: the socket may be closed once flushed."""
        return bool(lib.pn_transport_pending(self._trans) < 0)

    @property
    def finished(self) -> bool:
        """Both directions are closed (the close handshake is complete, or the stream died)."""
        return bool(lib.pn_transport_closed(self._trans))

    def close_output(self) -> None:
        lib.pn_transport_close_head(self._trans)

    def tick(self, now: float) -> float:
        """Run timers (heartbeats, idle timeout) at ``now`` seconds; return the next deadline."""
        deadline = self._transport.tick(now)
        self.process()
        return float(deadline)

    # -- connection ---------------------------------------------------------------------------

    @property
    def remote_properties(self) -> dict[str, Any]:
        props = self._connection.remote_properties
        return {str(k): v for k, v in props.items()} if props else {}

    @property
    def remote_container(self) -> str | None:
        container: str | None = self._connection.remote_container
        return container

    @property
    def remote_offered_capabilities(self) -> frozenset[str]:
        """The capabilities the peer's Open frame offers (``ANONYMOUS-RELAY``, ...)."""
        offered = self._connection.remote_offered_capabilities
        return frozenset(str(c) for c in offered) if offered else frozenset()

    @property
    def remote_hostname(self) -> str | None:
        hostname: str | None = self._connection.remote_hostname
        return hostname

    @property
    def transport_user(self) -> str | None:
        user: str | None = self._transport.user
        return user

    def open(self) -> None:
        # proton's wrapper copies properties and capabilities into the Open frame first.
        self._connection.open()
        self.touch()

    def close(self, condition: Condition | None = None) -> None:
        if lib.pn_connection_state(self._conn) & _LOCAL_CLOSED:
            return
        set_condition(lib.pn_connection_condition(self._conn), condition)
        lib.pn_connection_close(self._conn)
        self.touch()

    @property
    def sasl_refused(self) -> bool:
        """True once the peer's SASL outcome said the credentials are wrong."""
        sasl = self._sasl
        return sasl is not None and lib.pn_sasl_outcome(sasl) == lib.PN_SASL_AUTH

    @property
    def no_common_mechanism(self) -> bool:
        """True when SASL ended because the peer offered none of the mechanisms we allow
        (proton then closes without a word: its transport says ``[mech=none]``)."""
        if self._sasl is None:
            return False
        condition = condition_of(lib.pn_transport_condition(self._trans))
        return condition is not None and "mech=none" in (condition.description or "")

    def _ensure_session(self) -> Any:
        session = self._session
        if session is None or lib.pn_session_state(session) & (_LOCAL_CLOSED | _REMOTE_CLOSED):
            # (a session the peer ended takes no new links: senders attach on a fresh one)
            self._session = lib.pn_session(self._conn)
            lib.pn_session_open(self._session)
        return self._session

    def _session_for(self, own: bool) -> Any:
        """A new session for one link (``own``), else the connection's shared one."""
        if not own:
            return self._ensure_session()
        session = lib.pn_session(self._conn)
        lib.pn_session_open(session)
        return session

    def open_sender(
        self,
        target: str | None,
        *,
        name: str | None = None,
        settled: bool = False,
        capabilities: list[str] | None = None,
        properties: Mapping[str, Any] | None = None,
        own_session: bool = False,
    ) -> SenderLink:
        """Begin attaching a sender link (completed when ``on_remote_open`` fires).

        Senders share the connection's one session unless ``own_session``: a broker that runs
        each session in a process of its own (RabbitMQ 3.x) then spreads the queues' pushes
        over its cores, as separate connections would."""
        name = name or f"amqp1q-sender-{next(self._names)}"
        session = self._session_for(own_session)
        ptr = lib.pn_sender(session, name.encode())
        link = SenderLink(self, ptr, name)
        if own_session:
            link.own_session = session
        self._links[ptr] = link
        wrapper = wrap_link(ptr)
        if target is not None:
            wrapper.target.address = target
        if capabilities:
            wrapper.target.capabilities.put_array(False, proton.Data.SYMBOL)
            wrapper.target.capabilities.enter()
            for capability in capabilities:
                wrapper.target.capabilities.put_symbol(capability)
            wrapper.target.capabilities.exit()
        wrapper.snd_settle_mode = proton.Link.SND_SETTLED if settled else proton.Link.SND_UNSETTLED
        if properties:
            wrapper.properties = {proton.symbol(k): v for k, v in properties.items()}
        link.open()
        return link

    def open_receiver(
        self,
        source: str | None,
        *,
        name: str | None = None,
        settled: bool = False,
        second_mode: bool = False,
        properties: Mapping[str, Any] | None = None,
        own_session: bool = True,
        browse: bool = False,
        dynamic: bool = False,
    ) -> ReceiverLink:
        """Begin attaching a receiver link; grant credit with :meth:`ReceiverLink.flow`.

        With ``own_session`` (the default) the link gets a session of its own, ended when the
        link closes: brokers that tie unsettled deliveries to the session rather than the link
        (RabbitMQ 3.x) then give back everything the closed receiver still held. ``browse``
        asks for distribution-mode ``copy`` (the standard non-destructive read); ``dynamic``
        asks the peer for a node of its own making (``source`` None): its address is the
        link's ``remote_source_address`` once attached.
        """
        name = name or f"amqp1q-receiver-{next(self._names)}"
        session = self._session_for(own_session)
        ptr = lib.pn_receiver(session, name.encode())
        link = ReceiverLink(self, ptr, name)
        if own_session:
            link.own_session = session
        self._links[ptr] = link
        wrapper = wrap_link(ptr)
        if dynamic:
            wrapper.source.dynamic = True
        else:
            wrapper.source.address = source or ""
        wrapper.target.address = name
        if settled:
            wrapper.snd_settle_mode = proton.Link.SND_SETTLED
        if second_mode:
            wrapper.rcv_settle_mode = proton.Link.RCV_SECOND
        if browse:  # distribution-mode copy: the broker sends copies, and keeps the messages
            wrapper.source.distribution_mode = proton.Terminus.DIST_MODE_COPY
        if properties:
            wrapper.properties = {proton.symbol(k): v for k, v in properties.items()}
        link.open()
        return link

    # -- events -------------------------------------------------------------------------------

    def process(self) -> None:
        """Dispatch every pending proton event to links and the handler (see
        :mod:`._dispatch`)."""
        self._dirty = False
        self._processing = True
        try:
            self._dispatcher.dispatch()
        finally:
            self._processing = False

    @property
    def links(self) -> list[Link]:
        return list(self._links.values())

    def forget_link(self, ptr: Any) -> None:
        """Stop routing events to the link at ``ptr`` (it detached; proton frees it)."""
        self._links.pop(ptr, None)

    @property
    def transport(self) -> proton.Transport:
        """proton's Transport, for frame tracing (``_frames``); nothing else touches it."""
        return self._transport


#: Messages sent before the driver writes them without waiting for the end of the loop's turn.
SEND_BATCH: Final = 32
