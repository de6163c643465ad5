"""``amqp1q.connect()``: one connection, many queues, topics and subscriptions (:class:`Client`).

::

    async with amqp1q.connect("amqp://guest:guest@127.0.0.1:5672", vhost="prod") as client:
        emails = client.queue("emails", prefetch=50)        # a JobQueue on the shared connection
        events = client.topic("events")                     # push: every subscription gets a copy
        audit = client.subscription("events", "audit")      # consume one subscription

The client owns the connection (the backend the URL picks, see ``_factory``); each queue, topic
and subscription it makes is a :class:`~amqp1q.JobQueue` on an adapter of that connection,
usable at once (it attaches its links on its first push or consume). Closing one closes its
links only; closing the client closes them all, then the connection. ``JobQueue.from_url`` is
the one-queue shorthand: a queue whose close closes its own connection.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Mapping
from types import TracebackType
from typing import Any

from . import _calls, _urls
from ._adapter import SUBSCRIPTION, TOPIC, Entity
from ._errors import ConnectFailed, InvalidSetting, QueueStateError
from ._factory import make_backend
from ._options import AdapterOptions, adapter_options
from ._policy import ReconnectPolicy, RetryPolicy
from ._queue import JobQueue
from ._queuelife import opened_by_client
from ._settings import TLSConfig, check_seconds
from ._shield import CleanupTimeout, deadline, prepare, shielded
from ._urls import Endpoint

__all__ = ["Client", "connect"]

log = logging.getLogger("amqp1q.client")


class _State(enum.Enum):
    UNOPENED = "unopened"
    OPEN = "open"
    CLOSED = "closed"


def connect(
    url: str,
    *,
    container_id: str | None = None,
    tls: TLSConfig | Mapping[str, Any] | bool | None = None,
    broker: str | None = None,
    vhost: str | None = None,
    reconnect: ReconnectPolicy | bool = True,
    allow_plaintext_password: bool = False,
    connect_timeout: float = 10.0,
    close_timeout: float = 10.0,
    reply_queue: str | None = None,
) -> Client:
    """A client for the broker at ``url``, holding one connection for all it makes.

    ``url`` is what :meth:`JobQueue.from_url` takes, without a queue: ``amqp://`` or
    ``amqps://`` (its path, if any, is not read), a Service Bus connection string (its
    ``EntityPath``, if any, is not read), or ``memory://`` (``memory://NAMESPACE/`` for a
    namespace of its own). The connection settings are ``from_url``'s; queue settings go to
    :meth:`Client.queue`. ``reply_queue`` is the client's queue for the replies to
    ``queue.call()`` where the broker makes no temporary ones (docs/request-reply.md). Open it
    with ``async with`` (or :meth:`Client.open`).
    """
    settings: dict[str, Any] = {
        "container_id": container_id,
        "tls": tls,
        "broker": broker,
        "vhost": vhost,
        "reconnect": reconnect,
        "allow_plaintext_password": allow_plaintext_password,
        "connect_timeout": connect_timeout,
        "reply_queue": reply_queue,
    }
    endpoint = _urls.parse_url(url)  # (looked up at call time: tests may stand in)
    return Client(endpoint, settings, close_timeout=close_timeout)


class Client:
    """One connection to a broker, and the queues, topics and subscriptions on it.

    Made by :func:`connect` (``settings``: its connection keywords). ``async with client:``
    connects (a typed error if it cannot) and closes everything at the end; a closed client is
    not reopened.
    """

    def __init__(
        self, endpoint: Endpoint, settings: Mapping[str, Any], *, close_timeout: float = 10.0
    ) -> None:
        self._endpoint = endpoint
        self._connection_settings = dict(settings)
        options = adapter_options(endpoint, **self._connection_settings)
        self.connect_timeout = options.connect_timeout
        self.close_timeout = check_seconds("close_timeout", close_timeout)
        self._backend = make_backend(self._endpoint, options)
        self._state = _State.UNOPENED
        self._made: list[JobQueue] = []

    # -- facts ----------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Where the client connects, with every secret masked."""
        return self._backend.display

    @property
    def connections(self) -> int:
        """Connections this client holds now: 1 while connected (0 for ``memory://``)."""
        return self._backend.connections

    def health(self) -> str:
        """``unopened``, ``connected``, ``reconnecting``, ``failed`` or ``closed``: the
        connection's state, for readiness probes (each queue's ``health()`` says the same, or
        ``closed`` once that queue is)."""
        if self._state is not _State.OPEN:
            return self._state.value if self._state is _State.CLOSED else "unopened"
        return self._backend.state

    def __repr__(self) -> str:
        return f"<Client {self.url} {self.health()}>"

    # -- lifecycle ------------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect. Raises a connection error (typed, redacted) if the broker cannot be reached."""
        if self._state is not _State.UNOPENED:
            raise QueueStateError(f"the client is {self._state.value}; a client is opened once")
        prepare()
        try:
            async with deadline(self.connect_timeout):
                await self._backend.open()
        except TimeoutError:
            await self._abort_open()
            raise ConnectFailed(
                f"could not connect to {self.url} within {self.connect_timeout:g} s"
            ) from None
        except BaseException:
            await self._abort_open()
            raise
        self._state = _State.OPEN

    async def _abort_open(self) -> None:
        self._state = _State.CLOSED
        try:
            await shielded(self._backend.close(), self.close_timeout, "aborting a failed open")
        except (Exception, CleanupTimeout):
            log.debug("cleanup after a failed open failed", exc_info=True)

    async def __aenter__(self) -> Client:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self, grace: float | None = None) -> None:
        """Close every queue the client made (consumers get ``grace`` seconds, default
        ``close_timeout``, for jobs in hand), then the connection. Never hangs."""
        if self._state is not _State.OPEN:
            self._state = _State.CLOSED
            return
        self._state = _State.CLOSED
        made, self._made = self._made, []
        for queue in made:
            await queue.close(grace)  # each bounded by itself
        try:
            await shielded(self._backend.close(), 2 * self.close_timeout, f"closing {self.url}")
        except CleanupTimeout:
            log.warning("closing %s took too long; abandoned", self.url)
        await _calls.reap()  # the reply link's reader

    def _check_open(self) -> None:
        if self._state is not _State.OPEN:
            hint = " (use `async with amqp1q.connect(...) as client:`)"
            if self._state is _State.CLOSED:
                hint = ""
            raise QueueStateError(f"the client is {self._state.value}{hint}")

    # -- what it makes --------------------------------------------------------------------------

    def queue(
        self,
        name: str,
        *,
        address: str | None = None,
        prefetch: int = 10,
        auto_ack: bool = False,
        requeue_on_fail: bool = True,
        priority: int = 0,
        retry: RetryPolicy | None = None,
        exchange: str | None = None,
        routing_key: str | None = None,
        push_timeout: float = 30.0,
        close_timeout: float = 10.0,
        settle_timeout: float = 10.0,
        max_message_size: int | None = None,
        ignore_priority: bool = False,
        wire_format: str = "amqp1q",
        pipeline: str | None = None,
    ) -> JobQueue:
        """The queue ``name`` on the client's connection: push to it and consume from it.

        The settings are :meth:`JobQueue.from_url`'s (``address=`` is used verbatim;
        ``exchange``/``routing_key`` publish through a RabbitMQ exchange). Usable at once;
        ``async with client.queue(...) as q:`` closes just that queue at the end.
        """
        options = self._options(
            name,
            address=address,
            exchange=exchange,
            routing_key=routing_key,
            max_message_size=max_message_size,
            ignore_priority=ignore_priority,
            wire_format=wire_format,
            pipeline=pipeline,
        )
        return self._make(
            Entity.queue(name),
            options,
            prefetch=prefetch,
            auto_ack=auto_ack,
            requeue_on_fail=requeue_on_fail,
            priority=priority,
            retry=retry,
            push_timeout=push_timeout,
            close_timeout=close_timeout,
            settle_timeout=settle_timeout,
        )

    def topic(
        self,
        name: str,
        *,
        routing_key: str | None = None,
        priority: int = 0,
        push_timeout: float = 30.0,
        close_timeout: float = 10.0,
        max_message_size: int | None = None,
        ignore_priority: bool = False,
        wire_format: str = "amqp1q",
        pipeline: str | None = None,
    ) -> JobQueue:
        """The topic ``name``, to push to: every subscription gets a copy of each job.

        A Service Bus topic (or the embedded broker's); on RabbitMQ the exchange ``name``,
        ``routing_key`` its routing key (without one, RabbitMQ 3.x routes by the message's
        subject: the job's name). Consuming a topic raises
        :class:`~amqp1q.UnsupportedFeature`: consume its subscriptions.
        """
        options = self._options(
            name,
            routing_key=routing_key,
            max_message_size=max_message_size,
            ignore_priority=ignore_priority,
            wire_format=wire_format,
            pipeline=pipeline,
        )
        return self._make(
            Entity(TOPIC, name),
            options,
            priority=priority,
            push_timeout=push_timeout,
            close_timeout=close_timeout,
        )

    def subscription(
        self,
        topic: str,
        name: str,
        *,
        prefetch: int = 10,
        auto_ack: bool = False,
        requeue_on_fail: bool = True,
        retry: RetryPolicy | None = None,
        close_timeout: float = 10.0,
        settle_timeout: float = 10.0,
        wire_format: str = "amqp1q",
        pipeline: str | None = None,
    ) -> JobQueue:
        """The subscription ``name`` of ``topic``, to consume: the same settlement vocabulary
        as a queue's, and a dead-letter queue of its own (``dead_letter_queue()``).

        Service Bus: ``TOPIC/Subscriptions/NAME``; RabbitMQ: the queue ``TOPIC.NAME`` bound to
        the exchange ``TOPIC`` (``amqp1q setup-rabbitmq --topic TOPIC --subscription NAME``);
        ActiveMQ Artemis: the multicast queue ``TOPIC::NAME``. Pushing to a subscription
        raises :class:`~amqp1q.UnsupportedFeature`: push to its topic.
        """
        _check_name("topic", topic)
        options = self._options(name, wire_format=wire_format, pipeline=pipeline)
        return self._make(
            Entity(SUBSCRIPTION, name, topic),
            options,
            prefetch=prefetch,
            auto_ack=auto_ack,
            requeue_on_fail=requeue_on_fail,
            retry=retry,
            close_timeout=close_timeout,
            settle_timeout=settle_timeout,
        )

    def _options(self, name: str, **entity_settings: Any) -> AdapterOptions:
        _check_name("name", name)
        return adapter_options(self._endpoint, **self._connection_settings, **entity_settings)

    def _make(self, entity: Entity, options: AdapterOptions, **settings: Any) -> JobQueue:
        self._check_open()
        queue = JobQueue(self._backend.adapter(entity, options), **settings)
        opened_by_client(queue)
        self._made = [q for q in self._made if q.is_open]
        self._made.append(queue)
        return queue


def _check_name(what: str, name: object) -> None:
    if not isinstance(name, str) or not name:
        raise InvalidSetting(f"{what} must be a non-empty str, got {name!r}")
