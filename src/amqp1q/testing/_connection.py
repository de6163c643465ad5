"""``BrokerConnection``: one client connection to the embedded broker.

An :class:`asyncio.Protocol`: the broker's own SASL layer first (:mod:`._sasl`), then a
server-mode :class:`~amqp1q.adapters.proton.wire.Engine` driven by the Proton adapter's
:class:`~amqp1q.adapters.proton.wire.Pump` — the same sans-IO engine and I/O as the client, in
the other role. As the engine's handler it answers the client's open and attaches: a link to a
queue gets an :class:`~._links.Incoming` or :class:`~._links.Outgoing` role, a Service Bus node
goes to the emulation (:mod:`._servicebus`), anything else is refused with the reason.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from .. import __version__
from ..adapters.proton.wire import (
    Condition,
    Engine,
    Link,
    Pump,
    ReceiverLink,
    SenderLink,
    Terminus,
)
from ._links import Incoming, Outgoing, Role
from ._sasl import SaslServer
from ._store import queue_name
from ._topics import ANONYMOUS_RELAY, BrokerTopic, Relay, asks_for_topic

if TYPE_CHECKING:
    from ._broker import Broker

__all__ = ["PRODUCT", "BrokerConnection", "refuse_link"]

log = logging.getLogger("amqp1q.testing")
#: The name of a dynamic node (a receiver's temporary queue) starts with this.
DYNAMIC_PREFIX: Final = "amqp1q.dynamic."

PRODUCT: Final = "amqp1q-broker"


class BrokerConnection(asyncio.Protocol):
    """One client connection: SASL, then an engine in server mode."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.sasl = SaslServer(
            anonymous=broker.anonymous,
            authenticate=broker.check_login,
        )
        self.engine: Engine | None = None
        self.pump: Pump | None = None
        self.transport: asyncio.Transport | None = None
        self.links: dict[Link, Role] = {}
        #: The dynamic nodes (temporary queues) of this connection's links, by link.
        self.dynamic: dict[Link, str] = {}
        self.user: str | None = None
        self.stalled = False

    # -- asyncio.Protocol -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.broker.listener.add(self)
        subject = _certificate_subject(transport.get_extra_info("peercert"))
        if subject is not None:
            self.sasl = SaslServer(
                anonymous=self.broker.anonymous,
                authenticate=self.broker.check_login,
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
        self.broker.listener.discard(self)
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
            offered_capabilities=[ANONYMOUS_RELAY],
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
            role.closed()
        dynamic, self.dynamic = self.dynamic, {}
        for name in dynamic.values():
            self.broker.store.delete(name)

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
        if broker.take_refusal():
            refuse_link(
                link, Condition("amqp:resource-limit-exceeded", "refused by fault injection")
            )
            return
        is_sender = isinstance(link, SenderLink)  # our sender: the client receives
        address = link.remote_source_address if is_sender else link.remote_target_address
        if is_sender and broker.servicebus is None and wrapper.remote_source.dynamic:
            address = self._dynamic_node(link)
        from ._servicebus import stand_in  # a $cbs link on a plain broker: told why not

        emulation = broker.servicebus or stand_in(broker, address)
        if emulation is not None and emulation.attach(self, link, address):
            return
        if not address and isinstance(link, ReceiverLink):  # the anonymous relay
            self._take(link, lambda: Relay(broker, link))
            return
        name = queue_name(address)
        store = broker.store
        if name and not is_sender and name not in store.queues and asks_for_topic(link):
            if not store.strict:
                store.declare_topic(name)
        # A dynamic node lives as long as its link: its name is never made again by use.
        dynamic = name is not None and name.startswith(DYNAMIC_PREFIX)
        queue = store.queue(name, create=False if dynamic else None) if name else None
        if is_sender and isinstance(queue, BrokerTopic):
            why = f"{name!r} is a topic: consume one of its subscriptions ({name}/Subscriptions/S)"
            refuse_link(link, Condition("amqp:not-allowed", why))
            return
        if queue is None:
            refuse_link(
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
            self.serve(
                link,
                address,
                lambda presettled, lock_tokens: Outgoing(
                    broker, link, queue, presettled=presettled, lock_tokens=lock_tokens
                ),
            )
        else:
            assert isinstance(link, ReceiverLink)
            wrapper.target.address = address or ""
            self._take(link, lambda: Incoming(broker, link, queue))

    def serve(
        self,
        link: SenderLink,
        address: str | None,
        role: Callable[[bool, bool], Outgoing],
    ) -> Outgoing:
        """Open a link the client receives on, in the settle modes it asked for, and give it
        its role (made by ``role(presettled, lock_tokens)``)."""
        wrapper = link.wrapper
        wrapper.source.address = address or ""
        presettled = link.remote_snd_settle_mode == 1
        if presettled:
            wrapper.snd_settle_mode = 1
        lock_tokens = self.broker.servicebus is not None or link.remote_rcv_settle_mode == 1
        if link.remote_rcv_settle_mode == 1:
            wrapper.rcv_settle_mode = 1
        link.open()
        outgoing = role(presettled, lock_tokens)
        self.links[link] = outgoing
        link.on_remote_close = self.link_closed
        return outgoing

    def _dynamic_node(self, link: Link) -> str:
        """A receiver asked for a dynamic source: a temporary queue with a fresh name, deleted
        when the link closes (the spec's default lifetime, delete-on-close)."""
        store = self.broker.store
        name = f"{DYNAMIC_PREFIX}{uuid.uuid4().hex}"
        store.declare(name)
        self.dynamic[link] = name
        return name

    def _take(self, link: ReceiverLink, role: Callable[[], Incoming]) -> None:
        """Open a link the client sends on (announcing the broker's max-message-size), then
        give it its role."""
        if self.broker.max_message_size:
            link.set_max_message_size(self.broker.max_message_size)
        link.open()
        self.links[link] = role()
        link.on_remote_close = self.link_closed

    def link_closed(self, link: Link, condition: Condition | None) -> None:
        """A link's ``on_remote_close``: its role lets go of what it held."""
        role = self.links.pop(link, None)
        if role is not None:
            role.closed()
        dynamic = self.dynamic.pop(link, None)
        if dynamic is not None:
            self.broker.store.delete(dynamic)


def _certificate_subject(cert: Any) -> str | None:
    """The common name of a verified client certificate (``None`` without one)."""
    if not cert:
        return None
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return "unnamed"


def refuse_link(link: Link, condition: Condition) -> None:
    """Attach with a null terminus, then detach with the reason (the spec's way to refuse)."""
    wrapper = link.wrapper
    terminus = wrapper.source if isinstance(link, SenderLink) else wrapper.target
    terminus.type = Terminus.UNSPECIFIED
    link.open()
    link.close(condition)
