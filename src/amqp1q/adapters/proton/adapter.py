"""``ProtonAdapter``: the :class:`~amqp1q.Adapter` for ``amqp://`` and ``amqps://`` URLs.

Its facts and lifecycle live here: dialling the broker (SASL mechanism, TLS, virtual host),
detecting its profile at open, and closing (consumers detach together, then the connection).
The rest is in one room each: keeping the connection up (``_supervisor``), pushing over sender
links (``_publishing``), consuming (``_receiving``, with ``_settling`` and ``_holding``).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from ..._adapter import SendResult, ServerFacts
from ..._errors import Amqp1qError, InvalidSetting, QueueStateError, UnsupportedFeature
from ..._inspection import QueueOperations
from ..._job import Job
from ..._options import AdapterOptions
from ..._settings import TLSConfig
from ..._urls import AmqpEndpoint
from ..._version import __version__
from ._brokers import BrokerProfile, detect, profile_named
from ._client import ClientConnection, is_loopback
from ._publishing import DEFAULT_WINDOW, Publisher
from ._receiving import ProtonReceiver
from ._supervisor import Supervisor
from ._vhosts import declare_hint, is_rabbitmq, open_hostname

__all__ = ["DEFAULT_WINDOW", "ProtonAdapter"]

log = logging.getLogger("amqp1q.proton")

#: How long closing waits for the broker's answer: to each link's detach (all links at once),
#: then to the connection's close (after which the socket is aborted).
CLOSE_TIMEOUT: Final = 5.0


class ProtonAdapter:
    """Jobs over AMQP 1.0 through python-qpid-proton's engine, on the running event loop."""

    def __init__(
        self,
        endpoint: AmqpEndpoint,
        options: AdapterOptions,
        queue: str,
        *,
        dead_letters_of: str | None = None,
        window: int = DEFAULT_WINDOW,
        close_timeout: float = CLOSE_TIMEOUT,
    ) -> None:
        self._endpoint = endpoint
        self._options = options
        self._queue = queue
        self._dead_letters_of = dead_letters_of
        #: The bound on each wait for the broker while closing (see :data:`CLOSE_TIMEOUT`).
        self.close_timeout = close_timeout
        self._profile: BrokerProfile | None = (
            profile_named(options.broker) if options.broker else None
        )
        self._address: str | None = options.address if dead_letters_of is None else None
        self._receivers: set[ProtonReceiver] = set()
        self._container_id = options.container_id or f"amqp1q-{uuid.uuid4()}"
        self._at_most_once = False
        self._supervisor = Supervisor(
            queue=queue,
            display=endpoint.display,
            policy=options.reconnect,
            connect_timeout=options.connect_timeout,
            dial=self._new_connection,
            on_lost=self._lost,
            reattach=self._reattach,
            on_give_up=self._give_up,
        )
        self._publisher = Publisher(self, self._supervisor, options, window=window)
        if options.tls is not None and endpoint.scheme != "amqps":
            raise InvalidSetting(f"tls= needs an amqps:// URL, not {endpoint.display}", queue=queue)
        if options.routing_key is not None and options.exchange is None:
            raise InvalidSetting("routing_key= needs exchange=", queue=queue)

    # -- facts ----------------------------------------------------------------------------------

    @property
    def queue(self) -> str:
        return self._queue

    @property
    def address(self) -> str:
        if self._address is not None:
            return self._address
        if self._profile is not None:
            return self._profile.queue_address(self._queue)
        return self._queue

    @property
    def display(self) -> str:
        return self._endpoint.display

    @property
    def server_facts(self) -> ServerFacts:
        """The broker's ``(host, port)``, and the OpenTelemetry ``messaging.system`` value for
        it (known once the broker is, at open)."""
        name = self._profile.name if self._profile is not None else "generic"
        if name.startswith("rabbitmq"):
            system = "rabbitmq"
        else:
            system = {"servicebus": "servicebus", "artemis": "activemq"}.get(name, "amqp")
        return ServerFacts(system, (self._endpoint.host, self._endpoint.port))

    @property
    def profile(self) -> BrokerProfile:
        if self._profile is None:
            raise QueueStateError(
                "the broker is not known before the queue opens", queue=self._queue
            )
        return self._profile

    @property
    def at_most_once(self) -> bool:
        """True once the broker has sent a consumer that asked for unsettled deliveries one
        already settled: it delivers at most once (``JobQueue.health()`` says so)."""
        return self._at_most_once

    def saw_presettled(self) -> None:
        """A receiver got a pre-settled delivery it did not ask for: say so, once."""
        if self._at_most_once:
            return
        self._at_most_once = True
        log.warning(
            "the broker at %s sends jobs on %r already settled although amqp1q asked for "
            "unsettled ones: it delivers at most once. Jobs a consumer holds (up to its "
            "prefetch) are lost if its process dies; ack needs nothing from the broker, and "
            "release, retry and reject publish the job again (docs/brokers/qpid.md)",
            self._endpoint.display,
            self.address,
            extra={"queue": self._queue, "address": self.address},
        )

    @property
    def connection(self) -> ClientConnection:
        """The live connection (raise if there is none: not open, or it failed)."""
        return self._supervisor.connection

    @property
    def state(self) -> str:
        """``connected``, ``reconnecting``, ``failed`` or ``closed``."""
        return self._supervisor.state

    def on_state_change(self, listener: Callable[[str], None]) -> None:
        self._supervisor.on_state_change(listener)

    # -- lifecycle ------------------------------------------------------------------------------

    async def open(self) -> None:
        connection = self._new_connection()
        self._supervisor.dialled(connection)
        await connection.open()
        if self._profile is None:
            self._profile = detect(connection.remote_properties, self._endpoint.host)
        profile = self._profile
        if self._dead_letters_of is not None:
            dlq = profile.dead_letter_queue(self._dead_letters_of)
            if dlq is None:
                raise UnsupportedFeature(
                    f"{profile.product} has no dead-letter queue amqp1q knows how to read; "
                    "consume it by its address with JobQueue.from_url(..., address=...)",
                    queue=self._dead_letters_of,
                )
            self._queue = self._supervisor.queue = dlq
        if self._address is None:
            self._address = profile.queue_address(self._queue)
        vhost = self._options.vhost
        if vhost is not None and self._options.broker is None and not is_rabbitmq(profile):
            log.warning(
                "%s is %s, not RabbitMQ, yet the virtual host went in RabbitMQ's form (%r); "
                "pass broker=%r to send %r",
                self._endpoint.display,
                profile.product,
                open_hostname(self._endpoint.host, vhost, None),
                profile.name,
                vhost,
            )
        self._supervisor.opened()
        log.debug("connected to %s (%s)", self._endpoint.display, profile.product)

    def _new_connection(self) -> ClientConnection:
        endpoint = self._endpoint
        options = self._options
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
                    queue=self._queue,
                )
            log.warning(
                "sending a password to %s without TLS (allow_plaintext_password=True)",
                endpoint.display,
            )
        connection = ClientConnection(
            host=endpoint.host,
            port=endpoint.port,
            ssl_context=_ssl_context(tls) if tls is not None else None,
            server_hostname=(tls.server_hostname or endpoint.host) if tls is not None else None,
            container_id=self._container_id,
            user=user,
            password=password,
            mechanisms=mechanisms,
            virtual_host=open_hostname(endpoint.host, options.vhost, options.broker),
            idle_timeout=60.0,
            properties={"product": "amqp1q", "version": __version__},
            queue=self._queue,
        )
        connection.not_found_hint = self.not_found_hint
        return connection

    def not_found_hint(self, address: str) -> str:
        """How to declare what is missing at ``address``, for a QueueNotFound's message."""
        return declare_hint(
            self._profile,
            address,
            queue=self._queue,
            vhost=self._options.vhost,
            host=self._endpoint.host,
        )

    # -- the supervisor's calls (see _supervisor) ------------------------------------------------

    def _lost(self, error: Amqp1qError) -> None:
        self._publisher.fail(error)

    async def _reattach(self) -> None:
        for receiver in list(self._receivers):
            await receiver.reattach()

    def _give_up(self, error: Amqp1qError) -> None:
        for receiver in list(self._receivers):
            receiver.connection_failed(error)

    async def wait_connected(self) -> ClientConnection:
        """The live connection, once there is one (raise if re-dialling gave up)."""
        return await self._supervisor.wait_connected()

    async def close(self) -> None:
        """Detach every link, then close the connection: at most two :attr:`close_timeout`
        waits for a broker that stops answering, however many consumers there are.

        Not shielded here: the facade shields and bounds it. Cut short by cancellation, it
        aborts the socket before the cancellation goes on.
        """
        supervisor = self._supervisor
        connection = supervisor.current
        try:
            connection = await supervisor.stop()  # (a re-dial may have made a new one)
            await self._close_receivers()
            self._publisher.close()
            if connection is not None:
                await connection.close(self.close_timeout)
        except BaseException:
            if connection is not None:
                connection.abort()  # never leave the socket open behind an unfinished close
            raise

    async def _close_receivers(self) -> None:
        """Close the receivers together: each waits (bounded) for its detach to be answered,
        so a silent broker costs one bound, not one per consumer; one failing stops no other."""
        receivers = list(self._receivers)
        if not receivers:
            return
        outcomes = await asyncio.gather(*(r.close() for r in receivers), return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                log.debug(
                    "closing a receiver on %r failed",
                    self.address,
                    exc_info=outcome,
                    extra={"queue": self._queue},
                )

    async def verify(self) -> None:
        """Raise QueueNotFound unless the broker has the queue: attach the link a push uses
        (on RabbitMQ 3.x, after a credit-less receiver probe), and keep it for the pushes."""
        publisher = self._publisher
        await publisher.sender(publisher.push_address())

    # -- push (see _publishing) -----------------------------------------------------------------

    async def send(self, jobs: Sequence[Job], default_priority: int) -> list[SendResult]:
        return await self._publisher.send(jobs, default_priority)

    async def republish(
        self, job: Job, queue: str, *, attempt: int, extra_properties: Mapping[str, Any]
    ) -> None:
        """Publish ``job`` to ``queue`` (a retry or a dead-letter) and wait for acceptance."""
        await self._publisher.republish(
            job, queue, attempt=attempt, extra_properties=extra_properties
        )

    async def republish_raw(self, payloads: Sequence[bytes]) -> list[Amqp1qError | None]:
        """Publish received messages again, byte for byte, to the address consumed from (a
        release the broker would not honour); one error or None per payload, in order."""
        return await self._publisher.republish_raw(payloads)

    # -- consume --------------------------------------------------------------------------------

    def receiver(self, *, auto_ack: bool) -> ProtonReceiver:
        receiver = ProtonReceiver(self, auto_ack=auto_ack)
        self._receivers.add(receiver)
        return receiver

    def forget_receiver(self, receiver: ProtonReceiver) -> None:
        self._receivers.discard(receiver)

    def operations(self) -> QueueOperations:
        """depth, peek, purge and cancel, by the means the broker has (see ``_inspect``)."""
        from ._inspect import operations_for

        return operations_for(self)

    def dead_letter_adapter(self) -> ProtonAdapter:
        return ProtonAdapter(
            self._endpoint,
            self._options,
            self._queue,
            dead_letters_of=self._queue,
            window=self._publisher.window,
            close_timeout=self.close_timeout,
        )


def _ssl_context(tls: TLSConfig) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=tls.root_ca)
    if tls.cert is not None:
        context.load_cert_chain(tls.cert, tls.key)
    if tls.insecure_skip_verify:
        log.warning("TLS certificate verification is off (insecure_skip_verify=True)")
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
