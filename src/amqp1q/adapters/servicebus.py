"""``ServiceBusAdapter``: the :class:`~amqp1q.Adapter` for Azure Service Bus, on
``azure.servicebus.aio`` (the optional extra ``amqp1q[azure]``).

Made by ``JobQueue.from_url("Endpoint=sb://...;EntityPath=QUEUE")`` (also with
``UseDevelopmentEmulator=true`` and an explicit port), or for Azure AD with
:meth:`ServiceBusAdapter.from_credential` and ``JobQueue(adapter)``.

- **push**: jobs become ``ServiceBusMessage`` (id = message_id, name = subject, headers =
  application properties) and go out through one ``ServiceBusSender`` in batches under the link's
  size limit; concurrent pushes are coalesced into the same batches. ``delay`` is
  ``schedule_messages`` (the receipt carries the sequence number). Service Bus has no priority:
  a non-zero priority is :class:`~amqp1q.UnsupportedFeature` unless ``ignore_priority=True``.
- **consume**: one ``ServiceBusReceiver`` per consumer, PEEK_LOCK (RECEIVE_AND_DELETE with
  ``auto_ack``), with the SDK's own prefetch off: a background pump asks for exactly the credit
  the consumer granted and not yet used, so the link credit follows the consumer's.
- **settlement** (DESIGN section 3): ack = complete (in the background, bounded, so acks never
  queue behind each other's round trips); retry() = abandon; retry(delay) = scheduled re-send with
  the attempt counted, then complete; release = re-send with the attempt unchanged, then complete
  (abandon would count an attempt); reject = dead_letter(reason, description).
- **locks**: every message held (buffered or in hand) has its lock renewed at half its span,
  for at most ``max_lock_renewal`` seconds from receipt; settling stops it. When renewal is
  refused the job is marked lost: settling it raises :class:`~amqp1q.LockLost`, code inside
  :func:`lock_scope` is cancelled and gets ``LockLost``, and the broker redelivers the job.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import functools
import logging
import math
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Coroutine, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Final, Protocol

import anyio

try:
    from azure.core.credentials import AccessToken, AzureNamedKeyCredential, AzureSasCredential
    from azure.servicebus import (
        ServiceBusMessage,
        ServiceBusMessageBatch,
        ServiceBusReceivedMessage,
        ServiceBusReceiveMode,
        ServiceBusSubQueue,
    )
    from azure.servicebus import exceptions as sb_errors
    from azure.servicebus.aio import ServiceBusClient, ServiceBusReceiver, ServiceBusSender
except ImportError as exc:  # pragma: no cover - exercised without the extra installed
    raise ImportError(
        'the Azure Service Bus adapter needs azure-servicebus: pip install "amqp1q[azure]"'
    ) from exc

from .._adapter import Incoming, Outcome, SendResult, Settlement
from .._errors import (
    AlreadySettled,
    Amqp1qError,
    AuthenticationFailed,
    ConnectFailed,
    ConnectionLost,
    DeliveryStale,
    InvalidSetting,
    JobRejected,
    JobTooLarge,
    LockLost,
    PushTimeout,
    QueueNotFound,
    QueueStateError,
    UnsupportedFeature,
)
from .._job import RESERVED_HEADER_PREFIX, Headers, Job, Receipt, new_job_id
from .._redact import redact
from .._tracing import TRACE_HEADERS
from .._urls import ServiceBusEndpoint

__all__ = [
    "ATTEMPT_PROPERTY",
    "ServiceBusAdapter",
    "lock_scope",
    "to_incoming",
    "to_message",
]

log = logging.getLogger("amqp1q.servicebus")

ATTEMPT_PROPERTY: Final = RESERVED_HEADER_PREFIX + "attempt"
DEAD_LETTER_SUFFIX: Final = "/$deadletterqueue"
_DEAD_LETTER_KEYS: Final = frozenset({"DeadLetterReason", "DeadLetterErrorDescription"})
#: Background settlements (acks) in flight per consumer before ``settle`` makes the caller wait.
MAX_PENDING_SETTLEMENTS: Final = 256
#: Lock renewals in flight at once per consumer.
MAX_CONCURRENT_RENEWALS: Final = 32
DEFAULT_MAX_LOCK_RENEWAL: Final = 300.0
#: How long one pull waits for messages before asking again.
DEFAULT_RECEIVE_WAIT: Final = 5.0
#: How long one read of a receiver's socket waits for a frame. The SDK reads only while an
#: operation waits, one reader at a time: a settlement whose outcome another reader took waits
#: out a read. Its default (0.2 s) makes every concurrent settlement take that long.
DEFAULT_SOCKET_TIMEOUT: Final = 0.02
#: After the first message of a pull, how long the SDK goes on collecting more (its own default,
#: 0.2 s, delays every job by that much when the queue is not full).
_FURTHER_PULL: Final = 0.005
_CLOSE_TIMEOUT: Final = 5.0
_EPOCH: Final = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


# -- Job <-> ServiceBusMessage ---------------------------------------------------------------


def to_message(
    job: Job,
    *,
    attempt: int = 1,
    scheduled_at: datetime.datetime | None = None,
) -> ServiceBusMessage:
    """The ``ServiceBusMessage`` for ``job``: id = message_id, name = subject, headers =
    application properties (``traceparent`` and ``Diagnostic-Id`` among them pass as they are,
    named in bytes as the SDK's tracing names them: with azure-core tracing on, the SDK then
    keeps them instead of adding a second key of the same name); an ``attempt`` above 1 rides
    in ``x-amqp1q-attempt``."""
    return _message(
        job.name, job.body, job.id, job.content_type, job.headers, attempt, scheduled_at
    )


def _message(
    name: str,
    body: bytes,
    message_id: str,
    content_type: str | None,
    headers: Mapping[str, str],
    attempt: int,
    scheduled_at: datetime.datetime | None,
) -> ServiceBusMessage:
    properties: dict[str | bytes, Any] = {}
    properties.update(headers)
    for key in TRACE_HEADERS:
        if key in properties:
            properties[key.encode()] = properties.pop(key)
    if attempt != 1:
        properties[ATTEMPT_PROPERTY] = attempt
    return ServiceBusMessage(
        body,
        message_id=message_id,
        subject=name or None,
        content_type=content_type,
        application_properties=properties or None,
        scheduled_enqueue_time_utc=scheduled_at,
    )


class _MessageLike(Protocol):
    """What :func:`to_incoming` reads; a ``ServiceBusReceivedMessage`` has it all."""

    @property
    def body(self) -> Any: ...

    @property
    def application_properties(self) -> Any: ...

    @property
    def message_id(self) -> str | None: ...

    @property
    def subject(self) -> str | None: ...

    @property
    def content_type(self) -> str | None: ...


def to_incoming(message: _MessageLike, token: Any = None) -> Incoming:
    """Decode a received message into what the facade hands out.

    Application properties come from the SDK as bytes: names and values are decoded to ``str``
    (numbers, booleans and UUIDs are written out); ``x-amqp1q-*`` are amqp1q's own and the
    broker's ``DeadLetterReason`` / ``DeadLetterErrorDescription`` become
    ``dead_letter_reason`` / ``dead_letter_description``. ``attempt`` is the ``x-amqp1q-attempt``
    the copy was sent with (1 if none) plus the broker's delivery count.
    """
    headers: dict[str, str] = {}
    base_attempt = 1
    reason: str | None = None
    description: str | None = None
    decode_error: str | None = None
    for raw_key, raw_value in (message.application_properties or {}).items():
        key = _text(raw_key)
        if key is None:
            decode_error = decode_error or "an application property name is not text"
            continue
        value = _text(raw_value)
        if key == ATTEMPT_PROPERTY:
            try:
                base_attempt = max(1, int(value or 1))
            except ValueError:
                decode_error = decode_error or f"{ATTEMPT_PROPERTY} is not a number: {value!r}"
            continue
        if key == "DeadLetterReason":
            reason = value
            continue
        if key == "DeadLetterErrorDescription":
            description = value
            continue
        if key.startswith(RESERVED_HEADER_PREFIX):
            continue
        if value is None:
            decode_error = decode_error or (
                f"application property {key!r} is a {type(raw_value).__name__}, not text"
            )
            continue
        headers[key] = value
    if reason is None:
        reason = getattr(message, "dead_letter_reason", None)
        description = description or getattr(message, "dead_letter_error_description", None)
    body, body_error = _body(message)
    delivery_count = getattr(message, "delivery_count", None) or 0
    content_type: Any = message.content_type
    if isinstance(content_type, bytes):
        content_type = content_type.decode("utf-8", "replace")
    return Incoming(
        id=_text(message.message_id) or "",
        name=_text(message.subject) or "",
        body=body,
        content_type=content_type,
        headers=Headers._trusted(headers),
        attempt=base_attempt + delivery_count,
        token=token,
        priority=None,
        enqueued_at=getattr(message, "enqueued_time_utc", None),
        dead_letter_reason=reason,
        dead_letter_description=description,
        decode_error=body_error or decode_error,
    )


def _text(value: Any) -> str | None:
    """An application property (or field) as text; ``None`` for what has no text form."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, uuid.UUID)):
        return str(value)
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    return None


def _body(message: _MessageLike) -> tuple[bytes, str | None]:
    body = message.body
    if isinstance(body, (bytes, bytearray, memoryview)):
        return bytes(body), None
    if isinstance(body, str):
        return body.encode("utf-8"), None
    if body is None:
        return b"", None
    try:
        parts = list(body)
    except TypeError:
        return b"", f"the body is an AMQP value ({type(body).__name__}), not data"
    if all(isinstance(part, (bytes, bytearray, memoryview)) for part in parts):
        return b"".join(bytes(part) for part in parts), None
    return b"", "the body is an AMQP sequence or value section, not data"


# -- errors ----------------------------------------------------------------------------------


def _describe(exc: BaseException) -> str:
    return redact(str(exc) or type(exc).__name__)[:500]


def _open_error(exc: Exception, *, queue: str, display: str) -> Amqp1qError:
    description = _describe(exc)
    if isinstance(exc, (sb_errors.ServiceBusAuthenticationError,)):
        return AuthenticationFailed(
            f"Service Bus refused the credentials for {display}",
            queue=queue,
            description=description,
        )
    if isinstance(exc, sb_errors.ServiceBusAuthorizationError):
        return AuthenticationFailed(
            f"the credentials for {display} may not use this queue",
            queue=queue,
            description=description,
        )
    if isinstance(exc, sb_errors.MessagingEntityNotFoundError):
        return QueueNotFound(
            f"no queue {queue!r} at {display}", queue=queue, description=description
        )
    return ConnectFailed(f"could not connect to {display}", queue=queue, description=description)


def _push_error(exc: Exception, *, queue: str, job_id: str | None) -> Amqp1qError:
    description = _describe(exc)
    if isinstance(exc, Amqp1qError):
        return exc
    if isinstance(exc, sb_errors.MessageSizeExceededError):
        return JobTooLarge(
            "the job is larger than Service Bus takes",
            queue=queue,
            job_id=job_id,
            description=description,
        )
    if isinstance(exc, sb_errors.MessagingEntityNotFoundError):
        return QueueNotFound(
            f"no queue {queue!r}", queue=queue, job_id=job_id, description=description
        )
    if isinstance(
        exc, (sb_errors.ServiceBusAuthenticationError, sb_errors.ServiceBusAuthorizationError)
    ):
        return AuthenticationFailed(
            "Service Bus refused the credentials",
            queue=queue,
            job_id=job_id,
            description=description,
        )
    if isinstance(exc, sb_errors.OperationTimeoutError):
        return PushTimeout(
            "Service Bus did not answer the send in time",
            queue=queue,
            job_id=job_id,
            description=description,
        )
    if isinstance(
        exc,
        (
            sb_errors.ServiceBusQuotaExceededError,
            sb_errors.ServiceBusServerBusyError,
            sb_errors.MessagingEntityDisabledError,
        ),
    ):
        return JobRejected(
            "Service Bus refused the job", queue=queue, job_id=job_id, description=description
        )
    return ConnectionLost(
        "the send to Service Bus failed", queue=queue, job_id=job_id, description=description
    )


def _settle_error(exc: Exception, *, queue: str, job_id: str) -> Amqp1qError:
    description = _describe(exc)
    if isinstance(exc, Amqp1qError):
        return exc
    if isinstance(exc, (sb_errors.MessageLockLostError, sb_errors.MessageNotFoundError)):
        return LockLost(
            "the job's lock had expired; Service Bus redelivers it",
            queue=queue,
            job_id=job_id,
            description=description,
        )
    if isinstance(exc, sb_errors.MessageAlreadySettled):
        return AlreadySettled(
            "Service Bus says the job was already settled",
            queue=queue,
            job_id=job_id,
            description=description,
        )
    return DeliveryStale(
        "the settlement did not reach Service Bus; it redelivers the job",
        queue=queue,
        job_id=job_id,
        description=description,
    )


# -- credentials -----------------------------------------------------------------------------


class _AsyncToken:
    """A synchronous azure-core ``TokenCredential`` for the asyncio client: ``get_token`` runs in
    a worker thread (a token fetch may block on HTTP)."""

    def __init__(self, credential: Any) -> None:
        self._credential = credential

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        call = functools.partial(self._credential.get_token, *scopes, **kwargs)
        token: AccessToken = await asyncio.to_thread(call)
        return token

    async def close(self) -> None:
        pass

    async def __aenter__(self) -> _AsyncToken:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        pass


def _async_credential(credential: Any) -> Any:
    if isinstance(credential, (AzureNamedKeyCredential, AzureSasCredential)):
        return credential
    get_token = getattr(credential, "get_token", None)
    if get_token is None:
        raise InvalidSetting(
            "credential must be an azure-core TokenCredential or AsyncTokenCredential "
            f"(with get_token), an AzureNamedKeyCredential or an AzureSasCredential, "
            f"not {type(credential).__name__}"
        )
    if asyncio.iscoroutinefunction(get_token):
        return credential
    return _AsyncToken(credential)


# -- the adapter -----------------------------------------------------------------------------


class ServiceBusAdapter:
    """One Service Bus queue through azure-servicebus's asyncio client.

    ``ServiceBusAdapter(endpoint, queue)`` from a parsed connection string (what ``from_url``
    does), or :meth:`from_connection_string` / :meth:`from_credential`. Keyword settings:

    - ``ignore_priority`` (False): push jobs with a priority anyway, dropping it (Service Bus
      has none); by default a non-zero priority fails the push with ``UnsupportedFeature``;
    - ``max_lock_renewal`` (300 s): how long a held message's lock is kept renewed;
    - ``receive_wait`` (5 s): how long one pull waits for messages before asking again;
    - ``socket_timeout`` (0.02 s): the receivers' socket read timeout (the SDK's is 0.2 s, which
      settlements running at once each wait out);
    - ``retry_total`` (3), ``retry_backoff_factor`` (0.8), ``retry_backoff_max`` (30 s): the
      SDK's retries; ``client_options``: any other ``ServiceBusClient`` keyword.
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
        max_lock_renewal: float = DEFAULT_MAX_LOCK_RENEWAL,
        receive_wait: float = DEFAULT_RECEIVE_WAIT,
        socket_timeout: float = DEFAULT_SOCKET_TIMEOUT,
        retry_total: int = 3,
        retry_backoff_factor: float = 0.8,
        retry_backoff_max: float = 30.0,
        client_options: Mapping[str, Any] | None = None,
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
        self.max_lock_renewal = max_lock_renewal
        self.receive_wait = receive_wait
        self.socket_timeout = socket_timeout
        self._client_kwargs: dict[str, Any] = {
            "retry_total": retry_total,
            "retry_backoff_factor": retry_backoff_factor,
            "retry_backoff_max": retry_backoff_max,
            **(client_options or {}),
        }
        self._client: ServiceBusClient | None = None
        self._sender: ServiceBusSender | None = None
        self._outbox: _Outbox | None = None
        self._receivers: set[_Receiver] = set()
        self._closed = False

    @classmethod
    def from_connection_string(
        cls, connection_string: str, *, queue: str | None = None, **settings: Any
    ) -> ServiceBusAdapter:
        from .._urls import parse_url

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
            credential=_async_credential(credential),
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

    #: The OpenTelemetry ``messaging.system`` value.
    messaging_system = "servicebus"

    @property
    def server(self) -> tuple[str, int]:
        """``server.address`` and ``server.port`` for traces and metrics (AMQP over TLS: 5671)."""
        endpoint = self._endpoint
        if endpoint is not None:
            return endpoint.host, endpoint.port or (5672 if self._emulator else 5671)
        return str(self._namespace), 5671

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
    def client(self) -> ServiceBusClient:
        if self._client is None:
            raise QueueStateError("the queue is not open", queue=self.queue)
        return self._client

    # -- lifecycle ------------------------------------------------------------------------------

    def _make_client(self) -> ServiceBusClient:
        kwargs = dict(self._client_kwargs)
        endpoint = self._endpoint
        if endpoint is not None:
            host = endpoint.host
            if endpoint.port is not None and endpoint.emulator:
                host = f"{host}:{endpoint.port}"
            parts = [f"Endpoint=sb://{host}/"]
            if endpoint.key_name is not None and endpoint.key is not None:
                parts.append(f"SharedAccessKeyName={endpoint.key_name}")
                parts.append(f"SharedAccessKey={endpoint.key.reveal()}")
            if endpoint.signature is not None:
                parts.append(f"SharedAccessSignature={endpoint.signature.reveal()}")
            if endpoint.emulator:
                parts.append("UseDevelopmentEmulator=true")
            return ServiceBusClient.from_connection_string(";".join(parts), **kwargs)
        if self._emulator:
            kwargs["use_tls"] = False
        assert self._namespace is not None
        return ServiceBusClient(self._namespace, self._credential, **kwargs)

    async def open(self) -> None:
        if self._closed:
            raise QueueStateError("the adapter is closed", queue=self.queue)
        self._client = self._make_client()
        if self._dead_letters_of is not None:
            return  # nothing is pushed to a dead-letter queue; receivers connect on their own
        sender = self._client.get_queue_sender(self._entity, socket_timeout=self.socket_timeout)
        try:
            await sender.__aenter__()
        except sb_errors.ServiceBusError as exc:
            raise _open_error(exc, queue=self.queue, display=self.display) from None
        self._sender = sender
        self._outbox = _Outbox(sender, self._entity)
        log.debug("connected to %s", self.display)

    async def close(self) -> None:
        self._closed = True
        for receiver in list(self._receivers):
            with contextlib.suppress(Exception):
                await receiver.close()
        outbox, self._outbox = self._outbox, None
        if outbox is not None:
            await outbox.close()
        client, self._client, self._sender = self._client, None, None
        if client is not None:
            try:
                await asyncio.wait_for(client.close(), _CLOSE_TIMEOUT)
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
                scheduled.setdefault(due, []).append((index, to_message(job)))
            else:
                immediate.append((index, to_message(job)))
        outbox = self._outbox_or_fail()
        futures = outbox.submit([message for _, message in immediate])
        for due, entries in scheduled.items():
            numbers = await self._schedule([m for _, m in entries], due, jobs[entries[0][0]].id)
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

    def _check(self, job: Job, default_priority: int) -> Amqp1qError | None:
        priority = default_priority if job.priority is None else job.priority
        if priority and not self.ignore_priority:
            return UnsupportedFeature(
                f"Azure Service Bus has no message priority (the job asks for {priority}); "
                "push without one, or pass ignore_priority=True to JobQueue.from_url to drop it",
                queue=self.queue,
                job_id=job.id,
            )
        return None

    def _outbox_or_fail(self) -> _Outbox:
        if self._dead_letters_of is not None:
            raise UnsupportedFeature(
                "Service Bus takes no pushes to a dead-letter queue", queue=self.queue
            )
        outbox = self._outbox
        if outbox is None:
            raise QueueStateError("the queue is not open", queue=self.queue)
        return outbox

    async def _schedule(
        self, messages: list[ServiceBusMessage], due: datetime.datetime, job_id: str | None
    ) -> list[int | Amqp1qError]:
        sender = self._sender
        if sender is None:
            error: Amqp1qError = QueueStateError("the queue is not open", queue=self.queue)
            return [error] * len(messages)
        try:
            numbers = await sender.schedule_messages(messages, due)
        except Exception as exc:
            mapped = _push_error(
                exc, queue=self.queue, job_id=job_id if len(messages) == 1 else None
            )
            return [mapped] * len(messages)
        return [int(n) for n in numbers]

    async def resend(self, incoming: Incoming, *, attempt: int, delay: float | None) -> None:
        """Push a copy of a received job (a release, or a retry with delay); raises on failure."""
        scheduled_at = None
        if delay:
            scheduled_at = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(
                seconds=delay
            )
        message = _message(
            incoming.name,
            incoming.body,
            incoming.id or new_job_id(),
            incoming.content_type,
            incoming.headers,
            attempt,
            None,
        )
        if scheduled_at is not None:
            [result] = await self._schedule([message], scheduled_at, incoming.id)
            if isinstance(result, Amqp1qError):
                raise result
            return
        await self._outbox_or_fail().submit([message])[0]

    # -- consume --------------------------------------------------------------------------------

    def receiver(self, *, auto_ack: bool) -> _Receiver:
        receiver = _Receiver(self, auto_ack=auto_ack)
        self._receivers.add(receiver)
        return receiver

    def forget_receiver(self, receiver: _Receiver) -> None:
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

    def dead_letter_adapter(self) -> ServiceBusAdapter:
        other = ServiceBusAdapter.__new__(ServiceBusAdapter)
        other.__dict__.update(self.__dict__)
        other._client = None
        other._sender = None
        other._outbox = None
        other._receivers = set()
        other._closed = False
        other._dead_letters_of = self._entity
        return other


# -- pushing: one writer per sender, coalescing concurrent pushes into batches ----------------


class _Outbox:
    """Messages waiting to be sent; one task sends them in batches under the size limit."""

    def __init__(self, sender: ServiceBusSender, queue: str) -> None:
        self._sender = sender
        self._queue = queue
        self._pending: deque[tuple[ServiceBusMessage, asyncio.Future[None]]] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()

    def submit(self, messages: list[ServiceBusMessage]) -> list[asyncio.Future[None]]:
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[None]] = []
        for message in messages:
            future: asyncio.Future[None] = loop.create_future()
            self._pending.append((message, future))
            futures.append(future)
        if messages:
            self._idle.clear()
            if self._task is None:
                self._task = loop.create_task(self._run(), name="amqp1q-servicebus-outbox")
            self._wake.set()
        return futures

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                await self._send_one_batch()
            self._idle.set()

    def _batch_limit(self) -> int | None:
        # The SDK sizes batches by the vendor batch limit, which may exceed the link's
        # max-message-size (a broker with a small limit would refuse the whole batch).
        sender: Any = self._sender
        limits = [
            value
            for value in (
                getattr(sender, "_max_batch_size_on_link", 0),
                getattr(sender, "_max_message_size_on_link", 0),
            )
            if isinstance(value, int) and value > 0
        ]
        return min(limits) if limits else None

    async def _send_one_batch(self) -> None:
        pending = self._pending
        try:
            batch: ServiceBusMessageBatch = await self._sender.create_message_batch(
                self._batch_limit()
            )
        except Exception as exc:
            self._fail_all(exc)
            return
        taken: list[asyncio.Future[None]] = []
        while pending:
            message, future = pending[0]
            if future.done():  # the push was given up (timeout, cancellation): not sent
                pending.popleft()
                continue
            try:
                batch.add_message(message)
            except sb_errors.MessageSizeExceededError:
                if taken:
                    break
                pending.popleft()
                future.set_exception(
                    JobTooLarge(
                        f"the job is larger than the {batch.max_size_in_bytes} bytes "
                        "Service Bus takes in one message",
                        queue=self._queue,
                        job_id=message.message_id,
                    )
                )
                continue
            pending.popleft()
            taken.append(future)
        if not taken:
            return
        try:
            await self._sender.send_messages(batch)
        except asyncio.CancelledError:
            for future in taken:
                if not future.done():
                    future.set_exception(
                        ConnectionLost("the queue closed while sending", queue=self._queue)
                    )
            raise
        except Exception as exc:
            error = _push_error(exc, queue=self._queue, job_id=None)
            for future in taken:
                if not future.done():
                    future.set_exception(_copy_error(error))
            return
        for future in taken:
            if not future.done():
                future.set_result(None)

    def _fail_all(self, exc: Exception) -> None:
        error = _push_error(exc, queue=self._queue, job_id=None)
        while self._pending:
            _, future = self._pending.popleft()
            if not future.done():
                future.set_exception(_copy_error(error))

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            if self._pending:  # let what is queued go out, within bounds
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._idle.wait(), _CLOSE_TIMEOUT)
            task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(task, _CLOSE_TIMEOUT)
        while self._pending:
            _, future = self._pending.popleft()
            if not future.done():
                future.set_exception(ConnectionLost("the queue closed", queue=self._queue))


def _copy_error(error: Amqp1qError) -> Amqp1qError:
    """One error object per job: each gets its own ``job_id`` filled in."""
    copy = type(error).__new__(type(error))
    copy.__dict__.update(error.__dict__)
    copy.args = error.args
    return copy


# -- consuming ---------------------------------------------------------------------------------


class _Delivery:
    """A received message while amqp1q holds it: the facade's ``Incoming.token``."""

    __slots__ = (
        "deadline",
        "incoming",
        "lost",
        "message",
        "received_at",
        "renew_at",
        "renewing",
        "scopes",
        "settled",
    )

    def __init__(self, message: ServiceBusReceivedMessage, now: float) -> None:
        self.message = message
        self.received_at = now
        self.deadline = math.inf
        self.renew_at = math.inf
        self.renewing = False
        self.settled = False
        self.lost: LockLost | None = None
        self.scopes: set[anyio.CancelScope] = set()
        self.incoming: Incoming | None = None

    def guard(self) -> AbstractAsyncContextManager[None]:
        """For ``job.process()``: cancel the handler and raise LockLost if the lock is lost."""
        return lock_scope(self.incoming)

    def locked_until(self, until: datetime.datetime | None, now: float) -> None:
        """Note the lock's end (broker time) and when to renew it: at half its span."""
        if until is None:
            self.deadline = self.renew_at = math.inf
            return
        if until.tzinfo is None:
            until = until.replace(tzinfo=datetime.timezone.utc)
        span = (until - datetime.datetime.now(datetime.timezone.utc)).total_seconds()
        span = max(span, 0.0)
        self.deadline = now + span
        self.renew_at = now + span / 2


class _Receiver:
    """One consumer's ``ServiceBusReceiver``, fed by a pump that asks for the credit granted."""

    def __init__(self, adapter: ServiceBusAdapter, *, auto_ack: bool) -> None:
        self._adapter = adapter
        self._auto_ack = auto_ack
        self._queue = adapter.queue
        self._sdk: ServiceBusReceiver | None = None
        self._credit = 0
        self._window = 0  # the most credit outstanding at once: the consumer's prefetch
        self._buffer: deque[_Delivery] = deque()
        self._event = asyncio.Event()
        self._pump_wake = asyncio.Event()
        self._pump: asyncio.Task[None] | None = None
        self._held: dict[int, _Delivery] = {}  # locked: buffered or in hand, by id()
        self._renewer: asyncio.Task[None] | None = None
        self._renew_wake = asyncio.Event()
        self._renewals = asyncio.Semaphore(MAX_CONCURRENT_RENEWALS)
        self._background: set[asyncio.Task[None]] = set()
        self._closed = False
        self._open = False

    # -- lifecycle ------------------------------------------------------------------------------

    async def open(self) -> None:
        if self._closed:
            raise QueueStateError("the receiver is closed", queue=self._queue)
        adapter = self._adapter
        sdk = adapter.open_sdk_receiver(auto_ack=self._auto_ack)
        if hasattr(sdk, "_further_pull_receive_timeout"):
            sdk._further_pull_receive_timeout = _FURTHER_PULL
        try:
            await sdk.__aenter__()
        except sb_errors.ServiceBusError as exc:
            with contextlib.suppress(Exception):
                await sdk.close()
            raise _open_error(exc, queue=self._queue, display=adapter.display) from None
        self._sdk = sdk
        self._open = True
        if self._credit > 0:
            self._start_pump()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._event.set()
        await self._stop_pump()
        await self._wait_background()
        await self._give_back()
        renewer, self._renewer = self._renewer, None
        if renewer is not None:
            renewer.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(renewer, _CLOSE_TIMEOUT)
        self._held.clear()
        sdk, self._sdk = self._sdk, None
        if sdk is not None:
            try:
                await asyncio.wait_for(sdk.close(), _CLOSE_TIMEOUT)
            except (Exception, asyncio.TimeoutError):
                log.debug("closing a Service Bus receiver failed", exc_info=True)
        self._adapter.forget_receiver(self)

    # -- credit and the pump --------------------------------------------------------------------

    def flow(self, credit: int) -> None:
        if self._closed or credit <= 0:
            return
        self._credit += credit
        self._window = max(self._window, self._credit)
        if self._open:
            self._start_pump()

    def _start_pump(self) -> None:
        if self._pump is None or self._pump.done():
            self._pump = asyncio.get_running_loop().create_task(
                self._run_pump(), name=f"amqp1q-servicebus-pump-{self._queue}"
            )
        self._pump_wake.set()

    async def _stop_pump(self) -> None:
        pump, self._pump = self._pump, None
        if pump is not None and not pump.done():
            pump.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(pump, _CLOSE_TIMEOUT)

    async def _run_pump(self) -> None:
        sdk = self._sdk
        assert sdk is not None
        loop = asyncio.get_running_loop()
        while not self._closed:
            want = self._credit
            # While jobs wait in the buffer, pull in batches of half the window (as the Proton
            # adapter batches its flow frames): each pull is a round trip.
            if want <= 0 or (self._buffer and want < max(1, self._window // 2)):
                self._pump_wake.clear()
                await self._pump_wake.wait()
                continue
            try:
                messages = await sdk.receive_messages(
                    max_message_count=want, max_wait_time=self._adapter.receive_wait
                )
            except Exception as exc:
                log.warning(
                    "receiving from %r failed; the consumer ends: %s",
                    self._queue,
                    _describe(exc),
                    extra={"queue": self._queue},
                )
                self._closed = True
                self._event.set()
                return
            now = loop.time()
            for message in messages:
                delivery = _Delivery(message, now)
                self._credit -= 1
                self._buffer.append(delivery)
                if not self._auto_ack:
                    self._hold(delivery, now)
            if messages:
                self._event.set()

    async def drain(self) -> None:
        self._credit = 0
        await self._stop_pump()
        await self._give_back()

    # -- receiving --------------------------------------------------------------------------------

    async def receive(self) -> Incoming | None:
        if not self._open:
            raise QueueStateError("the receiver is not open", queue=self._queue)
        while not self._buffer:
            if self._closed:
                return None
            self._event.clear()
            await self._event.wait()
        delivery = self._buffer.popleft()
        if not self._buffer and self._credit > 0:
            self._pump_wake.set()  # nothing left to hand out: pull what the credit allows
        incoming = to_incoming(delivery.message, delivery)
        delivery.incoming = incoming
        return incoming

    # -- locks ----------------------------------------------------------------------------------

    def _hold(self, delivery: _Delivery, now: float) -> None:
        delivery.locked_until(delivery.message.locked_until_utc, now)
        self._held[id(delivery)] = delivery
        if self._renewer is None:
            self._renewer = asyncio.get_running_loop().create_task(
                self._run_renewer(), name=f"amqp1q-servicebus-locks-{self._queue}"
            )
        self._renew_wake.set()

    def _release_hold(self, delivery: _Delivery) -> None:
        self._held.pop(id(delivery), None)

    async def _run_renewer(self) -> None:
        loop = asyncio.get_running_loop()
        limit = self._adapter.max_lock_renewal
        while True:
            now = loop.time()
            next_at = math.inf
            for delivery in list(self._held.values()):
                if delivery.renewing:
                    continue
                if now - delivery.received_at >= limit:
                    # Past the renewal budget: the lock runs out, the broker takes it back.
                    if now >= delivery.deadline:
                        self._lose(delivery, "its lock ran out after the maximum renewal time")
                        continue
                    next_at = min(next_at, delivery.deadline)
                    continue
                if delivery.renew_at <= now:
                    delivery.renewing = True
                    task = loop.create_task(self._renew(delivery))
                    self._background.add(task)
                    task.add_done_callback(self._background.discard)
                else:
                    next_at = min(next_at, delivery.renew_at)
            self._renew_wake.clear()
            timeout = None if next_at == math.inf else max(0.0, next_at - loop.time())
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._renew_wake.wait(), timeout)

    async def _renew(self, delivery: _Delivery) -> None:
        sdk = self._sdk
        loop = asyncio.get_running_loop()
        try:
            async with self._renewals:
                if delivery.settled or sdk is None or id(delivery) not in self._held:
                    return
                until = await sdk.renew_message_lock(delivery.message)
        except (
            sb_errors.MessageLockLostError,
            sb_errors.MessageNotFoundError,
            sb_errors.MessageAlreadySettled,
        ) as exc:
            if not delivery.settled:
                self._lose(delivery, f"Service Bus refused to renew its lock: {_describe(exc)}")
        except Exception as exc:
            now = loop.time()
            if delivery.settled:
                return
            if now >= delivery.deadline:
                self._lose(delivery, f"its lock could not be renewed in time: {_describe(exc)}")
            else:  # a transient failure: try again soon, while the lock lasts
                delivery.renew_at = now + min(1.0, (delivery.deadline - now) / 4)
        else:
            if not delivery.settled:
                delivery.locked_until(until, loop.time())
        finally:
            delivery.renewing = False
            self._renew_wake.set()

    def _lose(self, delivery: _Delivery, why: str) -> None:
        self._release_hold(delivery)
        if delivery.settled or delivery.lost is not None:
            return
        job_id = delivery.message.message_id
        delivery.lost = LockLost(
            f"the job's lock was lost ({why}); Service Bus redelivers it",
            queue=self._queue,
            job_id=str(job_id) if job_id is not None else None,
        )
        log.warning("%s", delivery.lost, extra={"queue": self._queue, "job_id": job_id})
        if delivery in self._buffer:  # never handed out: drop it, and ask for another
            self._buffer.remove(delivery)
            self._credit += 1
            if not self._closed and self._open:
                self._start_pump()
        for scope in list(delivery.scopes):
            scope.cancel()

    # -- settlement -----------------------------------------------------------------------------

    def settle(self, incoming: Incoming, settlement: Settlement) -> Awaitable[None] | None:
        delivery: _Delivery = incoming.token
        if delivery.settled:
            raise AlreadySettled(
                "the job was already settled", queue=self._queue, job_id=incoming.id
            )
        if self._closed or self._sdk is None:
            raise DeliveryStale(
                "the consumer closed before the job was settled; Service Bus redelivers it",
                queue=self._queue,
                job_id=incoming.id,
            )
        delivery.settled = True
        self._release_hold(delivery)
        if delivery.lost is not None:
            raise delivery.lost
        sdk = self._sdk
        message = delivery.message
        outcome = settlement.outcome
        if outcome is Outcome.ACK:
            if len(self._background) < MAX_PENDING_SETTLEMENTS:
                self._in_background(self._apply(incoming, sdk.complete_message(message)))
                return None
            return self._apply(incoming, sdk.complete_message(message))
        if outcome is Outcome.REJECT:
            return self._apply(
                incoming,
                sdk.dead_letter_message(
                    message,
                    reason=settlement.reason or "rejected",
                    error_description=settlement.description,
                ),
            )
        if outcome is Outcome.RETRY and not settlement.delay:
            return self._apply(incoming, sdk.abandon_message(message))
        if self._adapter.is_dead_letter_queue:
            # No pushes to a dead-letter queue: abandon (the broker counts an attempt).
            return self._apply(incoming, sdk.abandon_message(message))
        attempt = incoming.attempt + 1 if outcome is Outcome.RETRY else incoming.attempt
        return self._resend_then_complete(incoming, message, attempt, settlement.delay)

    async def _apply(self, incoming: Incoming, call: Coroutine[Any, Any, None]) -> None:
        try:
            await call
        except Exception as exc:
            raise _settle_error(exc, queue=self._queue, job_id=incoming.id) from None

    async def _resend_then_complete(
        self,
        incoming: Incoming,
        message: ServiceBusReceivedMessage,
        attempt: int,
        delay: float | None,
    ) -> None:
        """Send the copy first, then complete: a crash between gives a duplicate, never a loss."""
        await self._adapter.resend(incoming, attempt=attempt, delay=delay)
        sdk = self._sdk
        if sdk is None:
            raise DeliveryStale(
                "the consumer closed while the job was re-sent; it may arrive twice",
                queue=self._queue,
                job_id=incoming.id,
            )
        await self._apply(incoming, sdk.complete_message(message))

    def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task[None]) -> None:
        self._background.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.warning("a settlement failed: %s", exc, extra={"queue": self._queue})

    async def _wait_background(self) -> None:
        pending = [task for task in self._background if not task.done()]
        if pending:
            await asyncio.wait(pending, timeout=_CLOSE_TIMEOUT)

    async def _give_back(self) -> None:
        """Return what was received but never handed out, its attempt not counted."""
        buffered = list(self._buffer)
        self._buffer.clear()
        if not buffered:
            return
        sdk = self._sdk
        if self._auto_ack or sdk is None:
            if self._auto_ack:
                log.warning(
                    "%d job(s) received with auto_ack=True were never handed out: lost",
                    len(buffered),
                    extra={"queue": self._queue},
                )
            return
        for delivery in buffered:
            delivery.settled = True
            self._release_hold(delivery)
        work = [self._give_back_one(sdk, delivery) for delivery in buffered]
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(_gather_quietly(work, self._queue), _CLOSE_TIMEOUT)

    async def _give_back_one(self, sdk: ServiceBusReceiver, delivery: _Delivery) -> None:
        if delivery.lost is not None:
            return
        incoming = to_incoming(delivery.message, delivery)
        if self._adapter.is_dead_letter_queue:
            await sdk.abandon_message(delivery.message)
        else:
            await self._resend_then_complete(incoming, delivery.message, incoming.attempt, None)


async def _gather_quietly(work: list[Coroutine[Any, Any, None]], queue: str) -> None:
    results = await asyncio.gather(*work, return_exceptions=True)
    failed = [r for r in results if isinstance(r, BaseException)]
    if failed:
        log.warning(
            "%d buffered job(s) could not be given back; Service Bus redelivers them when "
            "their locks run out: %s",
            len(failed),
            failed[0],
            extra={"queue": queue},
        )


# -- lock scopes -------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def lock_scope(job: Any) -> AsyncIterator[None]:
    """Run the block while the job's Service Bus lock holds; cancel it when the lock is lost.

    ::

        async with job.process():          # job.process() does this by itself
            await handle(job)

    If renewing the lock fails (or the job outlives ``max_lock_renewal``), the block is
    cancelled and :class:`~amqp1q.LockLost` raised in its place; the broker redelivers the job.
    For jobs from other backends this does nothing.
    """
    incoming = getattr(job, "_incoming", job)
    delivery = getattr(incoming, "token", None)
    if not isinstance(delivery, _Delivery):
        yield
        return
    if delivery.lost is not None:
        raise delivery.lost
    with anyio.CancelScope() as scope:
        delivery.scopes.add(scope)
        try:
            yield
        finally:
            delivery.scopes.discard(scope)
    if scope.cancelled_caught and delivery.lost is not None:
        raise delivery.lost
