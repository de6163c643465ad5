"""``ProtonAdapter``: the :class:`~amqp1q.Adapter` for ``amqp://`` and ``amqps://`` URLs.

One adapter is one queue, topic or subscription on a connection it shares
(:mod:`._shared_connection`: dialling, the broker's profile, the reconnect supervisor). Its
facts and lifecycle live here: binding to the connection (the address its entity maps to on
this broker), and closing (consumers detach together, then its senders; the connection goes
with its last lease). The rest is in one room each: pushing over sender links
(``_publishing``), consuming (``_receiving``, with ``_settling`` and ``_holding``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any

from ..._adapter import QUEUE, SUBSCRIPTION, TOPIC, Entity, SendResult, ServerFacts, StateListeners
from ..._errors import Amqp1qError, InvalidSetting, QueueStateError, UnsupportedFeature
from ..._inspection import QueueOperations
from ..._job import Job
from ..._options import AdapterOptions
from ..._replies import Reply
from ..._urls import AmqpEndpoint
from ._brokers import BrokerProfile
from ._client import ClientConnection
from ._publishing import DEFAULT_WINDOW, Publisher
from ._receiving import ProtonReceiver
from ._replies import ProtonReplyLink, encode_reply
from ._shared_connection import CLOSE_TIMEOUT, SharedConnection

__all__ = ["CLOSE_TIMEOUT", "DEFAULT_WINDOW", "ProtonAdapter"]

log = logging.getLogger("amqp1q.proton")


class ProtonAdapter:
    """Jobs over AMQP 1.0 through python-qpid-proton's engine, on the running event loop.

    ``ProtonAdapter(endpoint, options, queue)`` dials a connection of its own when it opens
    (what ``JobQueue.from_url`` makes); with ``shared=`` it is one of a client's adapters on
    that connection, for ``entity`` (a queue, a topic or a subscription).
    """

    def __init__(
        self,
        endpoint: AmqpEndpoint,
        options: AdapterOptions,
        queue: str,
        *,
        dead_letters_of: str | None = None,
        window: int = DEFAULT_WINDOW,
        close_timeout: float = CLOSE_TIMEOUT,
        shared: SharedConnection | None = None,
        entity: Entity | None = None,
    ) -> None:
        entity = entity if entity is not None else Entity.queue(queue)
        if options.routing_key is not None and options.exchange is None and entity.kind != TOPIC:
            raise InvalidSetting("routing_key= needs exchange=", queue=queue)
        self._endpoint = endpoint
        self._options = options
        self._entity = entity
        self._queue = queue
        self._dead_letters_of = dead_letters_of
        #: The bound on each wait for the broker while closing (see :data:`CLOSE_TIMEOUT`).
        self.close_timeout = close_timeout
        self._shared = (
            shared
            if shared is not None
            else SharedConnection(endpoint, options, name=queue, close_timeout=close_timeout)
        )
        self._address: str | None = options.address if dead_letters_of is None else None
        self._receivers: set[ProtonReceiver] = set()
        self._at_most_once = False
        self._listeners = StateListeners(log)
        self._leased = False
        self._closed = False
        self._publisher = Publisher(self, self._shared, options, window=window)
        self._operations: QueueOperations | None = None
        #: server_facts, and the profile they were made for (a span reads them per job).
        self._facts: tuple[object, ServerFacts] | None = None

    # -- facts ----------------------------------------------------------------------------------

    @property
    def queue(self) -> str:
        return self._queue

    @property
    def entity(self) -> Entity:
        return self._entity

    @property
    def address(self) -> str:
        if self._address is not None:
            return self._address
        profile = self._shared.profile
        if profile is not None and self._entity.kind == QUEUE:
            return profile.queue_address(self._queue)
        return self._queue

    @property
    def display(self) -> str:
        return self._endpoint.display

    @property
    def shared(self) -> SharedConnection:
        """The connection this adapter's links are on."""
        return self._shared

    @property
    def server_facts(self) -> ServerFacts:
        """The broker's ``(host, port)``, and the OpenTelemetry ``messaging.system`` value for
        it (known once the broker is, at open)."""
        profile = self._shared.profile
        facts = self._facts
        if facts is not None and facts[0] is profile:
            return facts[1]
        name = profile.name if profile is not None else "generic"
        if name.startswith("rabbitmq"):
            system = "rabbitmq"
        else:
            system = {"servicebus": "servicebus", "artemis": "activemq"}.get(name, "amqp")
        made = ServerFacts(system, (self._endpoint.host, self._endpoint.port))
        self._facts = (profile, made)
        return made

    @property
    def endpoint(self) -> AmqpEndpoint:
        """Where the adapter connects (its secret masked in every display)."""
        return self._endpoint

    @property
    def options(self) -> AdapterOptions:
        return self._options

    @property
    def profile(self) -> BrokerProfile:
        profile = self._shared.profile
        if profile is None:
            raise QueueStateError(
                "the broker is not known before the queue opens", queue=self._queue
            )
        return profile

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
        return self._shared.connection

    @property
    def state(self) -> str:
        """``connected``, ``reconnecting``, ``failed`` or ``closed``."""
        if self._closed:
            return "closed"
        state = self._shared.state
        return "closed" if state == "unopened" else state

    def on_state_change(self, listener: Callable[[str], None]) -> None:
        self._listeners.add(listener)

    def announce(self, state: str) -> None:
        """The connection's state changed (called by the shared connection)."""
        self._listeners.announce(state)

    def capabilities(self, address: str) -> list[str] | None:
        """The target capabilities of a sender to ``address``: ``topic`` for a topic's own
        address (Artemis routes it multicast; the embedded broker fans it out), none on
        brokers that publish to topics through exchanges."""
        entity = self._entity
        if entity.kind == TOPIC and address == self._address:
            if self.profile.exchange_form is None:
                return ["topic"]
        return None

    def not_found_hint(self, address: str) -> str:
        """How to declare what is missing at ``address``, for a QueueNotFound's message."""
        return self._shared.hint(address, self._queue)

    # -- lifecycle ------------------------------------------------------------------------------

    async def open(self) -> None:
        """Lease the connection (dialling it if this adapter is its first user) and bind."""
        if self._leased:
            return  # made open by its client
        if self._closed:
            raise QueueStateError("the queue is closed", queue=self._queue)
        await self._shared.acquire()
        self._leased = True
        try:
            self._bind()
        except BaseException:
            self._leased = False
            await self._shared.release()
            raise

    def bind(self) -> None:
        """Lease the (open) connection and bind, with no I/O: a client's adapter."""
        self._shared.lease_now()
        self._leased = True
        try:
            self._bind()
        except BaseException:
            self._leased = False
            self._shared.release_now()
            raise

    def _bind(self) -> None:
        """The queue and address the entity maps to on this broker; join the connection."""
        profile = self.profile
        entity = self._entity
        if self._dead_letters_of is not None:
            dlq = profile.dead_letter_queue(self._dead_letters_of)
            if dlq is None:
                raise UnsupportedFeature(
                    f"{profile.product} has no dead-letter queue amqp1q knows how to read; "
                    "consume it by its address with JobQueue.from_url(..., address=...)",
                    queue=self._dead_letters_of,
                )
            self._queue = dlq
        elif entity.kind == SUBSCRIPTION:
            assert entity.topic is not None
            self._queue = profile.subscription_queue(entity.topic, entity.name)
        elif entity.kind == TOPIC and self._address is None:
            self._address = profile.topic_address(entity.name, self._options.routing_key)
        if self._address is None:
            self._address = profile.queue_address(self._queue)
        self._shared.join(self)

    # -- the shared connection's calls ----------------------------------------------------------

    def connection_lost(self, error: Amqp1qError) -> None:
        self._publisher.fail(error)

    async def reattach(self) -> None:
        for receiver in list(self._receivers):
            await receiver.reattach()

    def connection_gave_up(self, error: Amqp1qError) -> None:
        for receiver in list(self._receivers):
            receiver.connection_failed(error)

    async def wait_connected(self) -> ClientConnection:
        """The live connection, once there is one (raise if re-dialling gave up)."""
        return await self._shared.wait_connected()

    async def close(self) -> None:
        """Detach this adapter's links, then give its lease back (the last closes the
        connection): at most two :attr:`close_timeout` waits for a broker that stops
        answering, however many consumers there are.

        Not shielded here: the facade shields and bounds it. Cut short by cancellation, the
        lease goes at once (the last one aborting the socket) before the cancellation goes on.
        """
        if self._closed:
            return
        self._closed = True
        self._shared.leave(self)
        try:
            await self._close_receivers()
            self._publisher.close()
        except BaseException:
            if self._leased:
                self._leased = False
                self._shared.release_now()
            raise
        if self._leased:
            self._leased = False
            await self._shared.release()

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
        (on RabbitMQ 3.x, after a credit-less receiver probe), and keep it for the pushes; a
        subscription, with a credit-less receiver."""
        if self._entity.kind == SUBSCRIPTION:
            connection = await self.wait_connected()
            probe = await connection.attach_receiver(self.address, queue=self._queue)
            probe.close()
            return
        publisher = self._publisher
        await publisher.sender(publisher.push_address())

    # -- push (see _publishing) -----------------------------------------------------------------

    def send(
        self, jobs: Sequence[Job], default_priority: int
    ) -> Coroutine[Any, Any, list[SendResult]]:
        # The publisher's own coroutine, not one around it: a push() awaits one level less.
        if self._entity.kind == SUBSCRIPTION:
            return _at_once([self._no_push(job) for job in jobs])
        return self._publisher.send(jobs, default_priority)

    def _no_push(self, job: Job) -> SendResult:
        return UnsupportedFeature(
            f"jobs are pushed to the topic {self._entity.topic!r}, not to one of its "
            "subscriptions: use client.topic(NAME)",
            queue=self._queue,
            job_id=job.id,
        )

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

    # -- request and reply (see amqp1q._replies and _replies) -----------------------------------

    def reply_link(self) -> ProtonReplyLink:
        return self._shared.reply_link()

    async def send_reply(self, address: str, reply: Reply) -> None:
        await self._publisher.send_reply(address, encode_reply(reply), reply.correlation_id)

    def receiver(self, *, auto_ack: bool) -> ProtonReceiver:
        if self._entity.kind == TOPIC:
            raise UnsupportedFeature(
                f"a topic is consumed through its subscriptions: use "
                f"client.subscription({self._entity.name!r}, NAME)",
                queue=self._queue,
            )
        receiver = ProtonReceiver(self, auto_ack=auto_ack)
        self._receivers.add(receiver)
        return receiver

    def group_receiver(self, *, auto_ack: bool, groups: int) -> None:
        """None: the consumer sequences groups over :meth:`receiver`, on a queue with one
        active consumer (docs/ordering.md)."""
        return None

    def forget_receiver(self, receiver: ProtonReceiver) -> None:
        self._receivers.discard(receiver)

    def operations(self) -> QueueOperations:
        """depth, peek, purge and cancel, by the means the broker has (see ``_inspect``)."""
        if self._operations is None:
            from ._inspect import operations_for

            self._operations = operations_for(self)
        return self._operations

    def dead_letter_adapter(self) -> ProtonAdapter:
        """The dead-letter queue's adapter, on the same connection."""
        if self._entity.kind == TOPIC:
            raise UnsupportedFeature(
                "a topic has no dead-letter queue; its subscriptions each have one",
                queue=self._queue,
            )
        return ProtonAdapter(
            self._endpoint,
            self._options,
            self._queue,
            dead_letters_of=self._queue,
            window=self._publisher.window,
            close_timeout=self.close_timeout,
            shared=self._shared,
        )


async def _at_once(results: list[SendResult]) -> list[SendResult]:
    return results
