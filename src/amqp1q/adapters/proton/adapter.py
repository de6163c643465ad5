"""``ProtonAdapter``: the :class:`~amqp1q.Adapter` for ``amqp://`` and ``amqps://`` URLs."""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from ..._adapter import SendResult, ServerFacts, StateListeners
from ..._errors import (
    Amqp1qError,
    AuthenticationFailed,
    ConnectionLost,
    InvalidSetting,
    JobRejected,
    JobTooLarge,
    QueueStateError,
    UnsupportedFeature,
)
from ..._job import Job, Receipt
from ..._options import AdapterOptions
from ..._policy import ReconnectPolicy
from ..._roadrunner import ROADRUNNER, encode_envelope, envelope_properties
from ..._settings import TLSConfig
from ..._urls import AmqpEndpoint
from ..._version import __version__
from ._brokers import BrokerProfile, DelayPlan, detect, profile_named
from ._client import ClientConnection, is_loopback, link_error
from ._codec import Message, encode_job, encode_message
from ._links import Condition
from ._receiving import ProtonReceiver
from ._sending import Sender
from ._types import Symbol, Timestamp
from ._vhosts import declare_hint, is_rabbitmq, open_hostname

__all__ = ["ProtonAdapter"]

log = logging.getLogger("amqp1q.proton")

#: Messages in flight (sent, outcome unknown) per sender link.
DEFAULT_WINDOW: Final = 1000
#: How long closing waits for the broker's answer: to each link's detach (all links at once),
#: then to the connection's close (after which the socket is aborted).
CLOSE_TIMEOUT: Final = 5.0
#: Link or connection conditions that say "not your fault": the outcome of what was in flight is
#: unknown, and it is sent again once the link is back.
_FORCED: Final = frozenset(
    {None, "amqp:connection:forced", "amqp:link:detach-forced", "amqp:internal-error"}
)
#: A long push_many gives the event loop a turn after this many jobs.
_YIELD_EVERY: Final = 32


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
        self._window = window
        #: The bound on each wait for the broker while closing (see :data:`CLOSE_TIMEOUT`).
        self.close_timeout = close_timeout
        self._connection: ClientConnection | None = None
        self._profile: BrokerProfile | None = (
            profile_named(options.broker) if options.broker else None
        )
        self._address: str | None = options.address if dead_letters_of is None else None
        self._senders: dict[str, Sender] = {}
        self._opening_senders: dict[str, asyncio.Future[Sender]] = {}
        self._receivers: set[ProtonReceiver] = set()
        self._container_id = options.container_id or f"amqp1q-{uuid.uuid4()}"
        self._connected = asyncio.Event()
        self._closing = False
        self._gave_up: Amqp1qError | None = None
        self._reconnecting: asyncio.Task[None] | None = None
        self._at_most_once = False
        self._listeners = StateListeners(log)
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
        connection = self._connection
        if connection is None:
            raise QueueStateError("the queue is not open", queue=self._queue)
        if connection.failure is not None:
            raise connection.failure
        return connection

    # -- lifecycle ------------------------------------------------------------------------------

    async def open(self) -> None:
        connection = self._new_connection()
        self._connection = connection
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
            self._queue = dlq
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
        self._watch(connection)
        self._connected.set()
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

    # -- the supervisor: re-dial a lost connection ----------------------------------------------

    @property
    def state(self) -> str:
        """``connected``, ``reconnecting``, ``failed`` or ``closed``."""
        if self._closing:
            return "closed"
        if self._gave_up is not None:
            return "failed"
        return "connected" if self._connected.is_set() else "reconnecting"

    def _watch(self, connection: ClientConnection) -> None:
        connection.on_lost(self._lost)

    def _lost(self, error: Amqp1qError) -> None:
        if isinstance(error, ConnectionLost):
            error.connection_dropped = True
        self._connected.clear()
        for sender in self._senders.values():
            sender.fail(error)
        self._senders.clear()
        policy = self._options.reconnect
        if self._closing or policy is None or isinstance(error, AuthenticationFailed):
            # Refused credentials (or virtual host) are not passing: re-dialling only flaps.
            self._give_up(error)
            return
        log.warning(
            "lost the connection to %s (%s); reconnecting",
            self._endpoint.display,
            error,
            extra={"queue": self._queue},
        )
        self._reconnecting = asyncio.get_running_loop().create_task(self._reconnect(policy))
        self._announce()

    def on_state_change(self, listener: Callable[[str], None]) -> None:
        self._listeners.add(listener)

    def _announce(self) -> None:
        self._listeners.announce(self.state)

    async def _reconnect(self, policy: ReconnectPolicy) -> None:
        attempt = 0
        while not self._closing:
            attempt += 1
            if policy.max_attempts is not None and attempt > policy.max_attempts:
                self._give_up(
                    ConnectionLost(
                        f"could not reconnect to {self._endpoint.display} "
                        f"in {policy.max_attempts} attempts",
                        queue=self._queue,
                    )
                )
                return
            await asyncio.sleep(policy.backoff(attempt))
            connection = self._new_connection()
            try:
                await asyncio.wait_for(connection.open(), self._options.connect_timeout)
            except (Amqp1qError, asyncio.TimeoutError) as exc:
                connection.abort()
                log.info("reconnect attempt %d to %s failed: %s", attempt, self.display, exc)
                continue
            self._connection = connection
            self._watch(connection)
            try:
                for receiver in list(self._receivers):
                    await receiver.reattach()
            except Amqp1qError as exc:
                log.warning("re-attaching consumers after reconnect failed: %s", exc)
                connection.abort()
                continue
            if connection.failure is not None:
                continue
            self._connected.set()
            self._announce()
            log.warning(
                "reconnected to %s after %d attempt(s)",
                self._endpoint.display,
                attempt,
                extra={"queue": self._queue},
            )
            return

    def _give_up(self, error: Amqp1qError) -> None:
        self._gave_up = error
        self._connected.set()  # wake waiters: they find the failure
        for receiver in list(self._receivers):
            receiver.connection_failed(error)
        self._announce()

    async def wait_connected(self) -> ClientConnection:
        """The live connection, once there is one (raise if the supervisor gave up)."""
        while True:
            await self._connected.wait()
            if self._gave_up is not None:
                raise self._gave_up
            if self._closing:
                raise QueueStateError("the queue is closed", queue=self._queue)
            connection = self._connection
            if connection is not None and connection.failure is None:
                return connection
            self._connected.clear()

    async def close(self) -> None:
        """Detach every link, then close the connection: at most two :attr:`close_timeout`
        waits for a broker that stops answering, however many consumers there are.

        Not shielded here: the facade shields and bounds it. Cut short by cancellation, it
        aborts the socket before the cancellation goes on.
        """
        self._closing = True
        self._connected.set()
        connection = self._connection
        try:
            task = self._reconnecting
            if task is not None and not task.done():
                task.cancel()
                await asyncio.wait((task,))  # a cancellation of close itself still propagates
                if not task.cancelled() and task.exception() is not None:
                    log.debug("the reconnect task failed", exc_info=task.exception())
                connection = self._connection  # (it may have dialled a new one)
            await self._close_receivers()
            for sender in self._senders.values():
                sender.close()
            self._senders.clear()
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
        await self._sender(self._push_address())

    # -- push -----------------------------------------------------------------------------------

    async def send(self, jobs: Sequence[Job], default_priority: int) -> list[SendResult]:
        results: list[SendResult | None] = [None] * len(jobs)
        waiting: list[tuple[int, bytes, str, asyncio.Future[Any]]] = []
        target = self._push_address()
        for index, job in enumerate(jobs):
            if index % _YIELD_EVERY == _YIELD_EVERY - 1:
                # Let the loop write what is queued and read outcomes: a pipeline, not batches.
                await asyncio.sleep(0)
            try:
                payload, address = self._encode(
                    job, default_priority, target, attempt=1, extra=None
                )
                waiting.append((index, payload, address, await self._send_one(payload, address)))
            except Amqp1qError as exc:
                exc.job_id = exc.job_id or job.id
                results[index] = _push_error(exc, job)
        for index, payload, address, future in waiting:
            job = jobs[index]
            try:
                outcome = await self._outcome(future, payload, address)
            except Amqp1qError as exc:
                results[index] = _push_error(exc, job)
                continue
            if outcome.accepted:
                results[index] = Receipt(job_id=job.id, queue=self._queue)
            else:
                results[index] = self._refusal(outcome.name, outcome.condition, job)
        done: list[SendResult] = []
        for result in results:
            assert result is not None, "every job has a result by now"
            done.append(result)
        return done

    async def _send_one(self, payload: bytes, address: str) -> asyncio.Future[Any]:
        """Hand ``payload`` to the sender for ``address``; its future resolves with the outcome.
        Waits out a reconnect (the facade's push timeout bounds the wait)."""
        while True:
            try:
                sender = await self._sender(address)
                limit = sender.max_message_size
                if limit and len(payload) > limit:
                    raise JobTooLarge(
                        f"the job encodes to {len(payload)} bytes; "
                        f"the broker takes at most {limit} on this link",
                        queue=self._queue,
                        address=address,
                    )
                await sender.wait_for_room()
                return sender.send(payload)
            except ConnectionLost as exc:  # noqa: PERF203 - the retry loop itself
                if not self._may_resend(exc):
                    raise

    async def _outcome(self, future: asyncio.Future[Any], payload: bytes, address: str) -> Any:
        """The broker's outcome; if the connection died first, the same bytes (same
        message-id) go again once it is back -- at-least-once, as the policy allows."""
        while True:
            try:
                return await future
            except ConnectionLost as exc:  # noqa: PERF203 - the retry loop itself
                if not self._may_resend(exc):
                    raise
                future = await self._send_one(payload, address)

    def _may_resend(self, error: ConnectionLost) -> bool:
        """For a connection that dropped, or a link the broker closed without blaming the
        message (RabbitMQ detaches links first when it stops); not for a refused attach or a
        link closed over what was sent."""
        policy = self._options.reconnect
        connection = self._connection
        dropped = not self._connected.is_set() or (
            connection is not None and connection.failure is not None
        )
        if error.condition in _FORCED or error.connection_dropped:
            dropped = True  # (that connection may be back already: the error is what says so)
        return (
            dropped
            and policy is not None
            and policy.resend_pushes
            and self._gave_up is None
            and not self._closing
        )

    async def republish(
        self, job: Job, queue: str, *, attempt: int, extra_properties: Mapping[str, Any]
    ) -> None:
        """Publish ``job`` to ``queue`` (a retry or a dead-letter) and wait for acceptance."""
        profile = self.profile
        address = profile.queue_address(queue)
        payload, address = self._encode(
            job, job.priority or 0, address, attempt=attempt, extra=extra_properties
        )
        sender = await self._sender(address)
        await sender.wait_for_room()
        outcome = await sender.send(payload)
        if not outcome.accepted:
            raise self._refusal(outcome.name, outcome.condition, job)

    async def republish_raw(self, payloads: Sequence[bytes]) -> list[Amqp1qError | None]:
        """Publish received messages again, byte for byte, to the address consumed from (a
        release the broker would not honour); one error or None per payload, in order."""
        address = self.address
        outcomes: list[asyncio.Future[Any] | Amqp1qError] = []
        try:
            sender = await self._sender(address)
        except Amqp1qError as exc:
            return [exc] * len(payloads)
        for payload in payloads:
            try:
                await sender.wait_for_room()
                outcomes.append(sender.send(payload))
            except Amqp1qError as exc:  # noqa: PERF203 - one error per payload
                outcomes.append(exc)
        errors: list[Amqp1qError | None] = []
        for outcome in outcomes:
            if isinstance(outcome, Amqp1qError):
                errors.append(outcome)
                continue
            try:
                result = await outcome
            except Amqp1qError as exc:
                errors.append(exc)
                continue
            errors.append(
                None
                if result.accepted
                else JobRejected(
                    f"the broker answered {result.name} to a job given back to it",
                    outcome=result.name,
                    queue=self._queue,
                    address=address,
                )
            )
        return errors

    def _push_address(self) -> str:
        options = self._options
        if options.exchange is not None and options.address is None:
            return self.profile.exchange_address(
                options.exchange, options.routing_key or self._queue
            )
        return self.address

    def _encode(
        self,
        job: Job,
        default_priority: int,
        address: str,
        *,
        attempt: int,
        extra: Mapping[str, Any] | None,
    ) -> tuple[bytes, str]:
        priority = default_priority if job.priority is None else job.priority
        extra_properties: dict[str, Any] = dict(extra) if extra else {}
        annotations: dict[Symbol, Any] | None = None
        ttl: int | None = None
        if job.delay:
            plan = self.profile.plan_delay(self._queue, address, job.delay, int(time.time() * 1000))
            address = plan.address
            annotations = _annotations(plan)
            ttl = plan.ttl_ms
            extra_properties.update(plan.properties)
        if self._options.wire_format == ROADRUNNER:
            return self._encode_roadrunner(
                job, attempt, extra_properties, annotations, ttl
            ), address
        payload = encode_job(
            job,
            priority=min(priority, 255),
            attempt=attempt,
            annotations=annotations,
            extra_properties=extra_properties or None,
            ttl=ttl,
        )
        return payload, address

    def _encode_roadrunner(
        self,
        job: Job,
        attempt: int,
        extra: dict[str, Any],
        annotations: dict[Symbol, Any] | None,
        ttl: int | None,
    ) -> bytes:
        """The RoadRunner ``amqp1`` driver's envelope (see ``_roadrunner``), durable."""
        properties = envelope_properties(job, attempt=attempt, extra=extra)
        message = Message(
            durable=job.durable,
            ttl=ttl,
            message_annotations=dict(annotations) if annotations else None,
            application_properties=properties or None,
            body_kind="data",
            body=encode_envelope(job, self._options.pipeline or self._queue),
        )
        return encode_message(message)

    async def _sender(self, address: str) -> Sender:
        sender = self._senders.get(address)
        if sender is not None and sender.alive:
            return sender
        opening = self._opening_senders.get(address)
        if opening is not None:
            return await asyncio.shield(opening)
        future: asyncio.Future[Sender] = asyncio.get_running_loop().create_future()
        self._opening_senders[address] = future
        try:
            connection = await self.wait_connected()
            profile = self.profile
            if profile.probe_queues and address.startswith(profile.queue_prefix):
                # A receiver with no credit takes nothing, but is refused if the queue is missing.
                probe = await connection.attach_receiver(address)
                probe.close()
            link = await connection.attach_sender(address)
            sender = Sender(link, window=self._window, on_dead=self._sender_died(address))
            self._senders[address] = sender
            future.set_result(sender)
            return sender
        except BaseException as exc:
            future.set_exception(exc if isinstance(exc, Exception) else ConnectionLost("cancelled"))
            future.exception()
            raise
        finally:
            del self._opening_senders[address]

    def _sender_died(self, address: str) -> Any:
        def error(condition: Condition | None) -> Amqp1qError:
            connection = self._connection
            if connection is not None and connection.failure is not None:
                return connection.failure
            return link_error(
                condition,
                queue=self._queue,
                address=address,
                what="sender",
                hint=self.not_found_hint(address),
            )

        return error

    def _refusal(self, outcome: str, condition: Condition | None, job: Job) -> JobRejected:
        profile = self._profile
        hint = ""
        if outcome == "released" and profile is not None and profile.name.startswith("rabbitmq"):
            hint = " (RabbitMQ releases a message no queue would take: does the queue exist?)"
        return JobRejected(
            f"the broker answered {outcome}{hint}",
            outcome=outcome,
            queue=self._queue,
            address=self.address,
            job_id=job.id,
            condition=condition.name if condition else None,
            description=condition.description if condition else None,
        )

    # -- consume --------------------------------------------------------------------------------

    def receiver(self, *, auto_ack: bool) -> ProtonReceiver:
        receiver = ProtonReceiver(self, auto_ack=auto_ack)
        self._receivers.add(receiver)
        return receiver

    def forget_receiver(self, receiver: ProtonReceiver) -> None:
        self._receivers.discard(receiver)

    def dead_letter_adapter(self) -> ProtonAdapter:
        return ProtonAdapter(
            self._endpoint,
            self._options,
            self._queue,
            dead_letters_of=self._queue,
            window=self._window,
            close_timeout=self.close_timeout,
        )


def _annotations(plan: DelayPlan) -> dict[Symbol, Any] | None:
    if not plan.annotations:
        return None
    out: dict[Symbol, Any] = {}
    for key, (kind, value) in plan.annotations.items():
        out[Symbol(key)] = Timestamp(value) if kind == "timestamp" else int(value)
    return out


def _push_error(exc: Amqp1qError, job: Job) -> Amqp1qError:
    if exc.job_id is None:
        exc.job_id = job.id
    return exc


def _ssl_context(tls: TLSConfig) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=tls.root_ca)
    if tls.cert is not None:
        context.load_cert_chain(tls.cert, tls.key)
    if tls.insecure_skip_verify:
        log.warning("TLS certificate verification is off (insecure_skip_verify=True)")
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
