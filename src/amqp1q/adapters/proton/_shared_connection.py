"""One AMQP connection that many queues share: :class:`SharedConnection`.

``amqp1q.connect()`` opens one (the :class:`~amqp1q._adapter.Backend` of the Proton adapter),
and every queue, topic and subscription the client makes is a
:class:`~.adapter.ProtonAdapter` on it. ``JobQueue.from_url`` makes a queue with a connection
of its own, which its ``dead_letter_queue()`` shares.

What lives here, once per connection rather than per queue:

- dialling (SASL mechanism, TLS, the virtual host in the Open frame) and the broker's profile,
  detected from the Open frame (or forced with ``broker=``);
- the reconnect :class:`~._supervisor.Supervisor`: when the connection drops, every member's
  pushes fail over and, once it is back, every member's consumers re-attach;
- leases: each open adapter holds one, and a client holds one while it is open. The
  connection is dialled by the first lease and closed with the last (a ``from_url`` queue
  and its dead-letter queue close it together; a client closes it when it closes).

Sessions: each consumer's receiver link has a session of its own (RabbitMQ 3.x ties unsettled
deliveries to the session, and ending it gives them back), and so does each queue's sender
link (RabbitMQ 3.x runs a session in one Erlang process: ten queues' pushes through one session
went at 0.84x the rate of ten connections); other senders (the anonymous relay, replies, probes)
share one session. Closing a queue detaches its links only.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import TYPE_CHECKING, Final

from ..._adapter import Entity
from ..._errors import (
    Amqp1qError,
    ConnectionLost,
    InvalidSetting,
    QueueNotFound,
    QueueStateError,
)
from ..._options import AdapterOptions
from ..._settings import TLSConfig
from ..._urls import AmqpEndpoint
from ..._version import __version__
from .._leases import Leases
from ._brokers import BrokerProfile, detect, profile_named
from ._client import ClientConnection, is_loopback
from ._replies import ProtonReplyLink
from ._supervisor import Supervisor
from ._tls import tls_context
from ._vhosts import declare_hint, is_rabbitmq, open_hostname

if TYPE_CHECKING:
    from .adapter import ProtonAdapter

__all__ = ["ANONYMOUS_RELAY", "CLOSE_TIMEOUT", "SharedConnection"]

log = logging.getLogger("amqp1q.proton")

#: How long closing waits for the broker's answer: to each link's detach (all links at once),
#: then to the connection's close (after which the socket is aborted).
CLOSE_TIMEOUT: Final = 5.0
#: The capability a broker offers in its Open frame when a sender with no target may send
#: each message to the address in its ``to`` property.
ANONYMOUS_RELAY: Final = "ANONYMOUS-RELAY"


class SharedConnection(Leases["ProtonAdapter"]):
    """One connection to ``endpoint``, kept up, shared by the adapters that lease it."""

    def __init__(
        self,
        endpoint: AmqpEndpoint,
        options: AdapterOptions,
        *,
        name: str | None = None,
        close_timeout: float = CLOSE_TIMEOUT,
    ) -> None:
        if options.tls is not None and endpoint.scheme != "amqps":
            raise InvalidSetting(f"tls= needs an amqps:// URL, not {endpoint.display}", queue=name)
        self.endpoint = endpoint
        self.options = options
        #: The queue errors about the connection name (a from_url queue's; None: a client's).
        self.name = name
        self.close_timeout = close_timeout
        self.container_id = options.container_id or f"amqp1q-{uuid.uuid4()}"
        self._profile: BrokerProfile | None = (
            profile_named(options.broker) if options.broker else None
        )
        super().__init__()
        self._lock: asyncio.Lock | None = None
        self._supervisor: Supervisor | None = None
        self._relay = False
        self._replies: ProtonReplyLink | None = None

    # -- facts ----------------------------------------------------------------------------------

    @property
    def display(self) -> str:
        return self.endpoint.display

    @property
    def profile(self) -> BrokerProfile | None:
        """The broker's profile: forced by ``broker=``, else known once the connection opened."""
        return self._profile

    @property
    def state(self) -> str:
        """``unopened``, ``connected``, ``reconnecting``, ``failed`` or ``closed``."""
        supervisor = self._supervisor
        if supervisor is None:
            return "closed" if self._ended else "unopened"
        return supervisor.state

    @property
    def connections(self) -> int:
        """1 while a connection is up, else 0 (what the broker counts for this client)."""
        supervisor = self._supervisor
        if supervisor is None or supervisor.state != "connected":
            return 0
        return 1

    @property
    def anonymous_relay(self) -> bool:
        """Whether the broker offered ``ANONYMOUS-RELAY`` when the connection opened."""
        return self._relay

    @property
    def current(self) -> ClientConnection | None:
        """The connection dialled last (it may have failed), or None."""
        supervisor = self._supervisor
        return supervisor.current if supervisor is not None else None

    @property
    def connection(self) -> ClientConnection:
        """The live connection (raise if there is none: not open, or it failed)."""
        return self._live().connection

    def _live(self) -> Supervisor:
        supervisor = self._supervisor
        if supervisor is None:
            raise QueueStateError(f"the connection to {self.display} is not open", queue=self.name)
        return supervisor

    async def wait_connected(self) -> ClientConnection:
        """The live connection, once there is one (raise if re-dialling gave up)."""
        return await self._live().wait_connected()

    def may_resend(self, error: ConnectionLost) -> bool:
        """Whether a push that failed with ``error`` may go again (see the supervisor)."""
        supervisor = self._supervisor
        return supervisor is not None and supervisor.may_resend(error)

    def hint(self, address: str, queue: str) -> str:
        """How to declare what is missing at ``address``, for a QueueNotFound's message."""
        return declare_hint(
            self._profile,
            address,
            queue=queue,
            vhost=self.options.vhost,
            host=self.endpoint.host,
        )

    def reply_link(self) -> ProtonReplyLink:
        """The connection's reply link (a new one once the last closed; see ``_replies``)."""
        link = self._replies
        if link is None or link.closed:
            link = self._replies = ProtonReplyLink(self, self.options.reply_queue)
        return link

    def _close_replies(self) -> None:
        link, self._replies = self._replies, None
        if link is not None:
            link.closed = True
            link.wake()

    # -- leases ---------------------------------------------------------------------------------

    async def acquire(self) -> None:
        """Take a lease, dialling the connection if there is none (raise as dialling does)."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._ended:
                raise QueueStateError(f"the client of {self.display} is closed", queue=self.name)
            if self._supervisor is None:
                await self._open()
            self._leases += 1

    def lease_now(self) -> None:
        """Take a lease on the open connection (a client's adapter: no I/O)."""
        if self._supervisor is None or self._ended:
            raise QueueStateError(
                f"the connection to {self.display} is not open (use `async with client:`)",
                queue=self.name,
            )
        self._leases += 1

    def release_now(self) -> None:
        """Give a lease back at once (a close cut short): the last one aborts the socket."""
        self._leases -= 1
        if self._leases <= 0:
            self._leases = 0
            supervisor, self._supervisor = self._supervisor, None
            connection = supervisor.halt() if supervisor is not None else None
            if connection is not None:
                connection.abort()

    # -- the Backend a client opens (open, close: see Leases) -------------------------------------

    def adapter(self, entity: Entity, options: AdapterOptions) -> ProtonAdapter:
        """An adapter for ``entity`` on this (open) connection, open already."""
        from .adapter import ProtonAdapter

        adapter = ProtonAdapter(self.endpoint, options, entity.name, shared=self, entity=entity)
        adapter.bind()
        return adapter

    # -- dialling -------------------------------------------------------------------------------

    async def _open(self) -> None:
        supervisor = Supervisor(
            queue=self.name,
            display=self.display,
            policy=self.options.reconnect,
            connect_timeout=self.options.connect_timeout,
            dial=self.dial,
            on_lost=self._lost,
            reattach=self._reattach,
            on_give_up=self._give_up,
        )
        supervisor.on_state_change(self._announce)
        connection = self.dial()
        supervisor.dialled(connection)
        try:
            await connection.open()
        except BaseException:
            connection.abort()
            raise
        if self._profile is None:
            self._profile = detect(connection.remote_properties, self.endpoint.host)
        self._relay = connection.offers(ANONYMOUS_RELAY)
        self._warn_about_vhost(self._profile)
        supervisor.opened()
        self._supervisor = supervisor
        log.debug("connected to %s (%s)", self.display, self._profile.product)

    def _warn_about_vhost(self, profile: BrokerProfile) -> None:
        vhost = self.options.vhost
        if vhost is not None and self.options.broker is None and not is_rabbitmq(profile):
            log.warning(
                "%s is %s, not RabbitMQ, yet the virtual host went in RabbitMQ's form (%r); "
                "pass broker=%r to send %r",
                self.display,
                profile.product,
                open_hostname(self.endpoint.host, vhost, None),
                profile.name,
                vhost,
            )

    def dial(self) -> ClientConnection:
        """A new, unopened connection to the broker, with this connection's settings."""
        endpoint = self.endpoint
        options = self.options
        user = endpoint.username
        password = endpoint.password.reveal() if endpoint.password is not None else None
        tls = options.tls if options.tls is not None else (TLSConfig() if endpoint.tls else None)
        if tls is not None and tls.cert is not None and user is None:
            mechanisms = "EXTERNAL"
        elif user is not None:
            mechanisms = "PLAIN"
        else:
            mechanisms = "ANONYMOUS"
        if mechanisms == "PLAIN" and tls is None and not is_loopback(endpoint.host):
            if not options.allow_plaintext_password:
                raise InvalidSetting(
                    f"refusing to send a password to {endpoint.display} without TLS: use "
                    "amqps://, or pass allow_plaintext_password=True on a trusted network",
                    queue=self.name,
                )
            log.warning(
                "sending a password to %s without TLS (allow_plaintext_password=True)",
                endpoint.display,
            )
        connection = ClientConnection(
            host=endpoint.host,
            port=endpoint.port,
            ssl_context=tls_context(tls) if tls is not None else None,
            server_hostname=(tls.server_hostname or endpoint.host) if tls is not None else None,
            container_id=self.container_id,
            user=user,
            password=password,
            mechanisms=mechanisms,
            virtual_host=open_hostname(endpoint.host, options.vhost, options.broker),
            idle_timeout=60.0,
            properties={"product": "amqp1q", "version": __version__},
            queue=self.name,
        )
        connection.not_found_hint = self.hint
        return connection

    async def _disconnect(self) -> None:
        """Stop re-dialling and close the connection: bounded by :attr:`close_timeout`; cut
        short by cancellation, it aborts the socket before the cancellation goes on."""
        self._close_replies()
        supervisor, self._supervisor = self._supervisor, None
        if supervisor is None:
            return
        connection = supervisor.current
        try:
            connection = await supervisor.stop()  # (a re-dial may have made a new one)
            if connection is not None:
                await connection.close(self.close_timeout)
        except BaseException:
            if connection is not None:
                connection.abort()  # never leave the socket open behind an unfinished close
            raise

    # -- the supervisor's calls -----------------------------------------------------------------

    def _lost(self, error: Amqp1qError) -> None:
        self._close_replies()  # calls waiting fail; the next call attaches a new reply link
        for member in list(self._members):
            member.connection_lost(error)

    async def _reattach(self) -> None:
        """After a reconnect: every member's consumers, each on a new link. A queue the broker
        no longer has fails its own consumers, not the connection; anything else (the
        connection dropped again) goes up to the supervisor, which dials again."""
        connection = self.current
        if connection is not None:
            self._relay = connection.offers(ANONYMOUS_RELAY)
        for member in list(self._members):
            try:
                await member.reattach()
            except QueueNotFound as exc:  # noqa: PERF203 - one member's failure is its own
                member.connection_gave_up(exc)

    def _give_up(self, error: Amqp1qError) -> None:
        for member in list(self._members):
            member.connection_gave_up(error)

    def _announce(self, state: str) -> None:
        for member in list(self._members):
            member.announce(state)
