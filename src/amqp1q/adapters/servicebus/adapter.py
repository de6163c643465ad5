"""``ServiceBusAdapter``: the :class:`~amqp1q.Adapter` for one Service Bus queue.

Its settings, facts and lifecycle (the ``ServiceBusClient`` it shares and the queue's sender),
and the consumers' receivers (:mod:`._receiving`, :mod:`._sessions`). What it pushes (jobs,
re-sent copies for settlements, replies) is built and sent by :mod:`._pushing`. Azure AD and
key credentials for :meth:`ServiceBusAdapter.from_credential` are adapted in :mod:`._sdk`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

from ..._adapter import SUBSCRIPTION, Entity, Incoming, SendResult, ServerFacts
from ..._errors import InvalidSetting, QueueStateError
from ..._job import Job
from ..._policy import ReconnectPolicy
from ..._replies import Reply
from ..._roadrunner import check_wire_format
from ..._urls import ServiceBusEndpoint
from ._entities import entity_path, refuse_topic, sdk_receiver
from ._pushing import Pusher
from ._receiving import QueueReceiver
from ._reconnect import DEFAULT_CONNECT_TIMEOUT, Supervisor
from ._replies import ServiceBusReplyLink
from ._sdk import (
    ServiceBusClient,
    ServiceBusReceiver,
    ServiceBusSender,
    async_credential,
)
from ._sessions import DEFAULT_SESSION_IDLE, SessionReceiver
from ._shared_client import SharedClient, client_settings

if TYPE_CHECKING:
    from ._inspect import ServiceBusOperations

__all__ = [
    "DEAD_LETTER_SUFFIX",
    "DEFAULT_MAX_LOCK_RENEWAL",
    "DEFAULT_RECEIVE_WAIT",
    "DEFAULT_SOCKET_TIMEOUT",
    "ServiceBusAdapter",
]

log = logging.getLogger("amqp1q.servicebus")

DEAD_LETTER_SUFFIX: Final = "/$deadletterqueue"
DEFAULT_MAX_LOCK_RENEWAL: Final = 300.0
#: How long one pull waits for messages before asking again.
DEFAULT_RECEIVE_WAIT: Final = 5.0
#: How long one read of a receiver's socket waits for a frame. The SDK reads only while an
#: operation waits, one reader at a time: a settlement whose outcome another reader took waits
#: out a read. Its default (0.2 s) makes every concurrent settlement take that long.
DEFAULT_SOCKET_TIMEOUT: Final = 0.02


class ServiceBusAdapter:
    """One Service Bus queue (or topic, or subscription) through azure-servicebus's asyncio
    client, on an SDK client it shares (:mod:`._shared_client`).

    ``ServiceBusAdapter(endpoint, queue)`` from a parsed connection string (what ``from_url``
    does), or :meth:`from_connection_string` / :meth:`from_credential`. Keyword settings:

    - ``ignore_priority`` (False): push jobs with a priority anyway, dropping it (Service Bus
      has none); by default a non-zero priority fails the push with ``UnsupportedFeature``;
    - ``wire_format`` (``"amqp1q"``): ``"roadrunner"`` writes jobs (and re-sent copies) in the
      RoadRunner ``amqp1`` driver's envelope, as the Proton adapter does; a job's own priority
      then travels in it. Both formats are read whatever it says;
    - ``pipeline`` (the queue): the RoadRunner pipeline the envelope names (``rr_pipeline``);
    - ``max_lock_renewal`` (300 s): how long a held message's lock is kept renewed;
    - ``receive_wait`` (5 s): how long one pull waits for messages before asking again;
    - ``session_idle`` (1 s): with ``consume(groups=N)`` (session receivers), how long a held
      session may have nothing new, all its jobs settled, before it is let go for the next;
    - ``socket_timeout`` (0.02 s): the receivers' socket read timeout (the SDK's is 0.2 s, which
      settlements running at once each wait out);
    - ``reconnect`` (a :class:`~amqp1q.ReconnectPolicy`; None: off) and ``connect_timeout``
      (10 s): when a receive or a send fails, the SDK receiver or sender is replaced by a fresh
      one (see :mod:`._reconnect`), the send is repeated and the consumer goes on;
    - ``retry_total`` (0 with a reconnect policy, else 3), ``retry_backoff_factor`` (0.8),
      ``retry_backoff_max`` (30 s): the SDK's own retries. With a reconnect policy amqp1q
      re-dials itself, faster (the SDK backs off 0.8 s, 1.6 s, ...) and without sharing a
      failing handler between operations; ``client_options``: any other ``ServiceBusClient``
      keyword.
    """

    def __init__(
        self,
        endpoint: ServiceBusEndpoint | None = None,
        queue: str | None = None,
        *,
        credential: Any = None,
        fully_qualified_namespace: str | None = None,
        emulator: bool = False,
        ignore_priority: bool = False,
        wire_format: str = "amqp1q",
        pipeline: str | None = None,
        max_lock_renewal: float = DEFAULT_MAX_LOCK_RENEWAL,
        receive_wait: float = DEFAULT_RECEIVE_WAIT,
        session_idle: float = DEFAULT_SESSION_IDLE,
        socket_timeout: float = DEFAULT_SOCKET_TIMEOUT,
        retry_total: int | None = None,
        retry_backoff_factor: float = 0.8,
        retry_backoff_max: float = 30.0,
        client_options: Mapping[str, Any] | None = None,
        reconnect: ReconnectPolicy | None = ReconnectPolicy(),  # noqa: B008 - frozen
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        dead_letters_of: str | None = None,
        shared: SharedClient | None = None,
        node: Entity | None = None,
        reply_queue: str | None = None,
    ) -> None:
        if endpoint is None and (credential is None or not fully_qualified_namespace):
            raise InvalidSetting(
                "ServiceBusAdapter needs a connection string's endpoint, or "
                "fully_qualified_namespace= and credential="
            )
        name = queue or (endpoint.queue if endpoint is not None else None)
        if not name:
            raise InvalidSetting("no Service Bus queue given: pass queue= or set EntityPath")
        if max_lock_renewal < 0 or not math.isfinite(max_lock_renewal):
            raise InvalidSetting(f"max_lock_renewal must be >= 0, got {max_lock_renewal!r}")
        if receive_wait <= 0:
            raise InvalidSetting(f"receive_wait must be > 0, got {receive_wait!r}")
        if session_idle <= 0 or not math.isfinite(session_idle):
            raise InvalidSetting(f"session_idle must be > 0, got {session_idle!r}")
        self._endpoint = endpoint
        self._node = node if node is not None else Entity.queue(name)
        self._entity = name = entity_path(self._node)
        self._dead_letters_of = dead_letters_of
        self.ignore_priority = ignore_priority
        self.wire_format = check_wire_format("wire_format", wire_format)
        self.pipeline = pipeline or name
        self.max_lock_renewal = max_lock_renewal
        self.receive_wait = receive_wait
        self.session_idle = session_idle
        self.socket_timeout = socket_timeout
        #: The client's queue for replies to its calls (see ``_replies``).
        self.reply_queue = reply_queue
        if shared is None:
            settings = client_settings(
                reconnect,
                retry_total=retry_total,
                retry_backoff_factor=retry_backoff_factor,
                retry_backoff_max=retry_backoff_max,
                client_options=client_options,
            )
            shared = SharedClient(
                endpoint,
                credential=credential,
                namespace=fully_qualified_namespace,
                emulator=emulator,
                settings=settings,
            )
        self._shared = shared
        self._leased = False
        self._receivers: set[QueueReceiver | SessionReceiver] = set()
        self._operations: ServiceBusOperations | None = None
        self._closed = False
        self._reconnect = reconnect
        self._connect_timeout = connect_timeout
        self.supervisor = self._new_supervisor()
        self._pusher = self._new_pusher()

    def _new_supervisor(self) -> Supervisor:
        return Supervisor(
            self._reconnect,
            queue=self.queue,
            display=self.display,
            connect_timeout=self._connect_timeout,
        )

    def _new_pusher(self) -> Pusher:
        return Pusher(
            self, self._shared, self._node, dead_letters=self._dead_letters_of is not None
        )

    @classmethod
    def from_connection_string(
        cls, connection_string: str, *, queue: str | None = None, **settings: Any
    ) -> ServiceBusAdapter:
        from ..._urls import parse_url

        endpoint = parse_url(connection_string)
        if not isinstance(endpoint, ServiceBusEndpoint):
            raise InvalidSetting("not a Service Bus connection string (Endpoint=sb://...)")
        return cls(endpoint, queue, **settings)

    @classmethod
    def from_credential(
        cls,
        fully_qualified_namespace: str,
        credential: Any,
        queue: str,
        **settings: Any,
    ) -> ServiceBusAdapter:
        """Azure AD (or a named key / SAS credential) instead of a connection string.

        ``credential`` is an azure-core ``TokenCredential`` or ``AsyncTokenCredential`` (for
        instance ``azure.identity.aio.DefaultAzureCredential``; azure-identity stays optional),
        an ``AzureNamedKeyCredential`` or an ``AzureSasCredential``. ``emulator=True`` talks
        plain AMQP to ``HOST:PORT`` (the development emulator, or a test broker).
        """
        return cls(
            None,
            queue,
            credential=async_credential(credential),
            fully_qualified_namespace=fully_qualified_namespace,
            **settings,
        )

    # -- facts ----------------------------------------------------------------------------------

    @property
    def queue(self) -> str:
        if self._dead_letters_of is not None:
            return self._dead_letters_of + DEAD_LETTER_SUFFIX
        return self._entity

    @property
    def address(self) -> str:
        return self.queue

    @property
    def server_facts(self) -> ServerFacts:
        """``messaging.system = servicebus``, and ``server.address`` and ``server.port`` for
        traces and metrics (AMQP over TLS: 5671)."""
        endpoint = self._endpoint
        if endpoint is not None:
            server = endpoint.host, endpoint.port or (5672 if self._shared.emulator else 5671)
        else:
            server = str(self._shared.namespace), 5671
        return ServerFacts("servicebus", server)

    @property
    def display(self) -> str:
        if self._endpoint is not None:
            text = self._endpoint.display
            if self._endpoint.entity_path != self._entity:
                text += f" (queue {self._entity})"
        else:
            text = f"sb://{self._shared.namespace}/{self._entity}"
        if self._dead_letters_of is not None:
            text += " [dead letters]"
        return text

    @property
    def state(self) -> str:
        """``connected``, ``reconnecting`` (a sender or receiver is being replaced), ``failed``
        (the reconnect policy gave up) or ``closed``."""
        return self.supervisor.state

    def on_state_change(self, listener: Callable[[str], None]) -> None:
        self.supervisor.listeners.add(listener)

    @property
    def at_most_once(self) -> bool:
        """Never: without ``auto_ack`` every message is received peek-locked."""
        return False

    @property
    def client(self) -> ServiceBusClient:
        return self._shared.client

    def _make_client(self) -> ServiceBusClient:
        return self._shared.make_client()

    @property
    def connections(self) -> int:
        """The SDK's connections this adapter holds: its senders' and receivers'."""
        return self._pusher.outboxes.senders + sum(1 for r in self._receivers if r.connected)

    @property
    def can_resend(self) -> bool:
        """Whether a settlement may push a copy back (not to a dead-letter queue, nor to a
        subscription: a copy would go to the topic, and to every subscription)."""
        return self._dead_letters_of is None and self._node.kind != SUBSCRIPTION

    # -- lifecycle ------------------------------------------------------------------------------

    async def open(self) -> None:
        if self._leased:
            return  # made open by its client
        if self._closed:
            raise QueueStateError("the adapter is closed", queue=self.queue)
        await self._shared.acquire()
        self._leased = True
        self._shared.join(self)
        if not self._pushes:
            return  # nothing is pushed here; receivers connect on their own
        sender = await self._pusher.connect()
        self.supervisor.connected_once = True
        self._pusher.outboxes.open(sender)
        log.debug("connected to %s", self.display)

    def bind(self) -> None:
        """Lease the (open) SDK client, with no I/O: a client's adapter, whose sender opens on
        its first push."""
        self._shared.lease_now()
        self._leased = True
        self._shared.join(self)
        if self._pushes:
            self._pusher.outboxes.open(None)

    @property
    def _pushes(self) -> bool:
        return self._dead_letters_of is None and self._node.kind != SUBSCRIPTION

    async def verify(self) -> None:
        """Raise QueueNotFound unless the entity exists: its sender is attached (by
        :meth:`open` already, for a ``from_url`` queue), which Service Bus refuses for a
        missing one; a dead-letter queue exists with its queue."""
        if self._pushes:
            await self._pusher.outboxes.get().ensure_sender()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.supervisor.close()
        self._shared.leave(self)
        for receiver in list(self._receivers):
            with contextlib.suppress(Exception):
                await receiver.close()
        operations, self._operations = self._operations, None
        closing = [self._pusher.outboxes.close()]
        if operations is not None:  # its peek receivers, with the senders: each close may wait
            closing.append(operations.close())
        await asyncio.gather(*closing)
        if self._leased:
            self._leased = False
            await self._shared.release()

    # -- push -----------------------------------------------------------------------------------

    async def send(self, jobs: Sequence[Job], default_priority: int) -> list[SendResult]:
        return await self._pusher.send(jobs, default_priority)

    async def resend(self, incoming: Incoming, *, attempt: int, delay: float | None) -> None:
        """Push a copy of a received job (a release, or a retry with delay); raises on failure."""
        await self._pusher.resend(incoming, attempt=attempt, delay=delay)

    # -- request and reply (see amqp1q._replies and _replies) -----------------------------------

    def reply_link(self) -> ServiceBusReplyLink:
        return self._shared.reply_link(self)

    async def send_reply(self, address: str, reply: Reply) -> None:
        """Send a reply to the queue ``address`` (with the caller's session id, if any)."""
        await self._pusher.send_reply(address, reply)

    # -- consume --------------------------------------------------------------------------------

    def receiver(self, *, auto_ack: bool) -> QueueReceiver:
        refuse_topic(self._node, self.queue, what="consume")
        receiver = QueueReceiver(self, auto_ack=auto_ack)
        self._receivers.add(receiver)
        return receiver

    def group_receiver(self, *, auto_ack: bool, groups: int) -> SessionReceiver:
        """Session receivers: a job's group is its SessionId, up to ``groups`` sessions held
        at once (see :mod:`._sessions`). The queue must require sessions."""
        refuse_topic(self._node, self.queue, what="consume")
        receiver = SessionReceiver(self, groups=groups, idle=self.session_idle)
        self._receivers.add(receiver)
        return receiver

    def forget_receiver(self, receiver: QueueReceiver | SessionReceiver) -> None:
        self._receivers.discard(receiver)

    def open_sdk_receiver(
        self, *, auto_ack: bool, next_session_wait: float | None = None
    ) -> ServiceBusReceiver:
        return sdk_receiver(
            self.client,
            self._node,
            dead_letters=self._dead_letters_of is not None,
            auto_ack=auto_ack,
            socket_timeout=self.socket_timeout,
            next_session_wait=next_session_wait,
        )

    @property
    def is_dead_letter_queue(self) -> bool:
        return self._dead_letters_of is not None

    def operations(self) -> ServiceBusOperations:
        """depth, peek, purge and cancel through the SDK (see ``_inspect``): one object per
        adapter, whose peek receivers are opened once and closed with the adapter."""
        if self._operations is None:
            from ._inspect import ServiceBusOperations

            self._operations = ServiceBusOperations(self)
        return self._operations

    async def scheduling_sender(self, to: str | None = None) -> ServiceBusSender:
        """The sender that pushes to ``to`` (else to this entity) go through: a job scheduled
        on it is cancelled on it."""
        return await self._pusher.outboxes.get(to).ensure_sender()

    def dead_letter_adapter(self) -> ServiceBusAdapter:
        """The dead-letter queue's adapter, on the same SDK client."""
        refuse_topic(self._node, self.queue, what="dead-letter")
        other = ServiceBusAdapter.__new__(ServiceBusAdapter)
        other.__dict__.update(self.__dict__)
        other._leased = False
        other._receivers = set()
        other._operations = None
        other._closed = False
        other._dead_letters_of = self._entity
        other.supervisor = other._new_supervisor()
        other._pusher = other._new_pusher()
        return other
