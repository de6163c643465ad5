"""``ServiceBusAdapter``: the :class:`~amqp1q.Adapter` for one Service Bus queue.

Its settings and lifecycle (the ``ServiceBusClient`` and the queue's sender), pushes (immediate
ones through the outbox of :mod:`._sending`, delayed ones scheduled), re-sent copies for
settlements, and the consumers' receivers (:mod:`._receiving`). Azure AD and key credentials
for :meth:`ServiceBusAdapter.from_credential` are adapted in :mod:`._sdk`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

from ..._adapter import Incoming, SendResult, ServerFacts
from ..._errors import (
    Amqp1qError,
    InvalidSetting,
    InvalidURL,
    QueueStateError,
    UnsupportedFeature,
)
from ..._job import Job, Receipt, new_job_id
from ..._policy import ReconnectPolicy
from ..._properties import job_properties
from ..._roadrunner import ROADRUNNER, check_wire_format
from ..._urls import ServiceBusEndpoint

if TYPE_CHECKING:
    from ._inspect import ServiceBusOperations
from ._mapping import message_for, to_message, to_roadrunner_message
from ._receiving import QueueReceiver
from ._reconnect import DEFAULT_CONNECT_TIMEOUT, Supervisor, open_fresh
from ._sdk import (
    CLOSE_TIMEOUT,
    ServiceBusClient,
    ServiceBusMessage,
    ServiceBusReceiveMode,
    ServiceBusReceiver,
    ServiceBusSender,
    ServiceBusSubQueue,
    async_credential,
    make_client,
)
from ._sending import Outbox

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
    """One Service Bus queue through azure-servicebus's asyncio client.

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
        socket_timeout: float = DEFAULT_SOCKET_TIMEOUT,
        retry_total: int | None = None,
        retry_backoff_factor: float = 0.8,
        retry_backoff_max: float = 30.0,
        client_options: Mapping[str, Any] | None = None,
        reconnect: ReconnectPolicy | None = ReconnectPolicy(),  # noqa: B008 - frozen
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        dead_letters_of: str | None = None,
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
        self._endpoint = endpoint
        self._credential = credential
        self._namespace = fully_qualified_namespace
        self._emulator = emulator or (endpoint is not None and endpoint.emulator)
        self._entity = name
        self._dead_letters_of = dead_letters_of
        self.ignore_priority = ignore_priority
        self.wire_format = check_wire_format("wire_format", wire_format)
        self.pipeline = pipeline or name
        self.max_lock_renewal = max_lock_renewal
        self.receive_wait = receive_wait
        self.socket_timeout = socket_timeout
        if retry_total is None:  # amqp1q re-dials itself: the SDK's retries only slow it down
            retry_total = 0 if reconnect is not None else 3
        self._client_kwargs: dict[str, Any] = {
            "retry_total": retry_total,
            "retry_backoff_factor": retry_backoff_factor,
            "retry_backoff_max": retry_backoff_max,
            **(client_options or {}),
        }
        self._client: ServiceBusClient | None = None
        self._outbox: Outbox | None = None
        self._receivers: set[QueueReceiver] = set()
        self._closed = False
        self._reconnect = reconnect
        self._connect_timeout = connect_timeout
        self.supervisor = self._new_supervisor()

    def _new_supervisor(self) -> Supervisor:
        return Supervisor(
            self._reconnect,
            queue=self.queue,
            display=self.display,
            connect_timeout=self._connect_timeout,
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
            server = endpoint.host, endpoint.port or (5672 if self._emulator else 5671)
        else:
            server = str(self._namespace), 5671
        return ServerFacts("servicebus", server)

    @property
    def display(self) -> str:
        if self._endpoint is not None:
            text = self._endpoint.display
            if self._endpoint.entity_path != self._entity:
                text += f" (queue {self._entity})"
        else:
            text = f"sb://{self._namespace}/{self._entity}"
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
        if self._client is None:
            raise QueueStateError("the queue is not open", queue=self.queue)
        return self._client

    # -- lifecycle ------------------------------------------------------------------------------

    def _make_client(self) -> ServiceBusClient:
        return make_client(
            self._endpoint,
            credential=self._credential,
            namespace=self._namespace,
            emulator=self._emulator,
            options=self._client_kwargs,
        )

    async def open(self) -> None:
        if self._closed:
            raise QueueStateError("the adapter is closed", queue=self.queue)
        try:
            self._client = self._make_client()
        except ValueError as exc:  # what the SDK refuses that parse_url let through
            raise InvalidURL(
                f"azure-servicebus refused the connection string {self.display}: {exc}",
                queue=self.queue,
            ) from None
        if self._dead_letters_of is not None:
            return  # nothing is pushed to a dead-letter queue; receivers connect on their own
        sender = await self._connect_sender()
        self.supervisor.connected_once = True
        self._outbox = Outbox(
            sender, self._entity, supervisor=self.supervisor, connect=self._connect_sender
        )
        log.debug("connected to %s", self.display)

    async def verify(self) -> None:
        """Nothing to do: :meth:`open` attached the queue's sender, which Service Bus refuses
        for a missing queue (QueueNotFound); a dead-letter queue exists with its queue."""

    async def _connect_sender(self) -> ServiceBusSender:
        """A fresh, open SDK sender (raise the mapped error, having closed it, if it fails)."""
        sender = self.client.get_queue_sender(self._entity, socket_timeout=self.socket_timeout)
        return await open_fresh(sender, queue=self.queue, display=self.display)

    async def close(self) -> None:
        self._closed = True
        self.supervisor.close()
        for receiver in list(self._receivers):
            with contextlib.suppress(Exception):
                await receiver.close()
        outbox, self._outbox = self._outbox, None
        if outbox is not None:
            await outbox.close()
        client, self._client = self._client, None
        if client is not None:
            try:
                await asyncio.wait_for(client.close(), CLOSE_TIMEOUT)
            except (Exception, asyncio.TimeoutError):
                log.debug("closing the Service Bus client failed", exc_info=True)

    # -- push -----------------------------------------------------------------------------------

    async def send(self, jobs: Sequence[Job], default_priority: int) -> list[SendResult]:
        results: list[SendResult | None] = [None] * len(jobs)
        now = datetime.datetime.now(datetime.timezone.utc)
        immediate: list[tuple[int, ServiceBusMessage]] = []
        scheduled: dict[datetime.datetime, list[tuple[int, ServiceBusMessage]]] = {}
        for index, job in enumerate(jobs):
            refusal = self._check(job, default_priority)
            if refusal is not None:
                results[index] = refusal
                continue
            if job.delay:
                due = now + datetime.timedelta(seconds=job.delay)
                scheduled.setdefault(due, []).append((index, self._to_message(job)))
            else:
                immediate.append((index, self._to_message(job)))
        outbox = self._outbox_or_fail()
        futures = outbox.submit([message for _, message in immediate])
        for due, entries in scheduled.items():
            messages = [m for _, m in entries]
            numbers = await outbox.schedule(messages, due, jobs[entries[0][0]].id)
            for (index, _), number in zip(entries, numbers, strict=True):
                job = jobs[index]
                if isinstance(number, Amqp1qError):
                    results[index] = number
                else:
                    results[index] = Receipt(job.id, self.queue, sequence_number=number)
        for (index, _), future in zip(immediate, futures, strict=True):
            job = jobs[index]
            try:
                await future
            except Amqp1qError as exc:
                exc.job_id = exc.job_id or job.id
                results[index] = exc
            else:
                results[index] = Receipt(job.id, self.queue)
        done: list[SendResult] = []
        for result in results:
            assert result is not None, "every job has a result by now"
            done.append(result)
        return done

    def _to_message(self, job: Job, attempt: int = 1) -> ServiceBusMessage:
        if self.wire_format == ROADRUNNER:
            return to_roadrunner_message(job, self.pipeline, attempt=attempt)
        return to_message(job, attempt=attempt)

    def _check(self, job: Job, default_priority: int) -> Amqp1qError | None:
        if self.wire_format == ROADRUNNER and job.priority is not None:
            return None  # it travels in the envelope (rr_priority), as on the Proton adapter
        priority = default_priority if job.priority is None else job.priority
        if priority and not self.ignore_priority:
            return UnsupportedFeature(
                f"Azure Service Bus has no message priority (the job asks for {priority}); "
                "push without one, or pass ignore_priority=True to JobQueue.from_url to drop it",
                queue=self.queue,
                job_id=job.id,
            )
        return None

    def _outbox_or_fail(self) -> Outbox:
        if self._dead_letters_of is not None:
            raise UnsupportedFeature(
                "Service Bus takes no pushes to a dead-letter queue", queue=self.queue
            )
        outbox = self._outbox
        if outbox is None:
            raise QueueStateError("the queue is not open", queue=self.queue)
        return outbox

    async def resend(self, incoming: Incoming, *, attempt: int, delay: float | None) -> None:
        """Push a copy of a received job (a release, or a retry with delay); raises on failure."""
        scheduled_at = None
        if delay:
            scheduled_at = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(
                seconds=delay
            )
        if self.wire_format == ROADRUNNER:  # readable by RoadRunner's workers too
            message = self._to_message(incoming.copy_as_job(delay), attempt)
        else:
            message = message_for(
                incoming.name,
                incoming.body,
                incoming.id or new_job_id(),
                incoming.content_type,
                job_properties(incoming.headers, attempt=attempt),
                None,
            )
        if scheduled_at is not None:
            [result] = await self._outbox_or_fail().schedule([message], scheduled_at, incoming.id)
            if isinstance(result, Amqp1qError):
                raise result
            return
        await self._outbox_or_fail().submit([message])[0]

    # -- consume --------------------------------------------------------------------------------

    def receiver(self, *, auto_ack: bool) -> QueueReceiver:
        receiver = QueueReceiver(self, auto_ack=auto_ack)
        self._receivers.add(receiver)
        return receiver

    def forget_receiver(self, receiver: QueueReceiver) -> None:
        self._receivers.discard(receiver)

    def open_sdk_receiver(self, *, auto_ack: bool) -> ServiceBusReceiver:
        mode = (
            ServiceBusReceiveMode.RECEIVE_AND_DELETE
            if auto_ack
            else ServiceBusReceiveMode.PEEK_LOCK
        )
        options: dict[str, Any] = {
            "receive_mode": mode,
            "prefetch_count": 0,
            "socket_timeout": self.socket_timeout,
        }
        if self._dead_letters_of is not None:
            options["sub_queue"] = ServiceBusSubQueue.DEAD_LETTER
        return self.client.get_queue_receiver(self._entity, **options)

    @property
    def is_dead_letter_queue(self) -> bool:
        return self._dead_letters_of is not None

    def operations(self) -> ServiceBusOperations:
        """depth, peek, purge and cancel through the SDK (see ``_inspect``)."""
        from ._inspect import ServiceBusOperations

        return ServiceBusOperations(self)

    def scheduling_sender(self) -> ServiceBusSender:
        """The sender pushes go through (scheduled jobs are cancelled on it)."""
        return self._outbox_or_fail().sender

    def dead_letter_adapter(self) -> ServiceBusAdapter:
        other = ServiceBusAdapter.__new__(ServiceBusAdapter)
        other.__dict__.update(self.__dict__)
        other._client = None
        other._outbox = None
        other._receivers = set()
        other._closed = False
        other._dead_letters_of = self._entity
        other.supervisor = other._new_supervisor()
        return other
