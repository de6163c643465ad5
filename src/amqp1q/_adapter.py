"""The one seam between the :class:`~amqp1q.JobQueue` facade and a backend.

An adapter moves jobs to and from one queue on one broker. It knows its wire and its broker;
the facade knows everything else: lifecycle, timeouts, credit accounting (the prefetch bound),
the retry policy, statistics and tracing. Adapters never call back into the facade.

What an adapter implements (see :class:`Adapter` and :class:`Receiver`)::

    adapter.open()                      connect (raise ConnectFailed, AuthenticationFailed, ...)
    adapter.send(jobs, default_priority) -> [Receipt | Amqp1qError, ...]  one result per job,
                                        in order; returns once each has its outcome
    adapter.receiver(auto_ack)          -> Receiver, not yet open
    adapter.group_receiver(auto_ack, groups)  -> Receiver delivering groups natively, or None
                                        (see "Groups" below)
    adapter.dead_letter_adapter()       -> Adapter for the queue's dead-letter queue
    adapter.close()                     release everything; must not hang
    adapter.verify()                    raise QueueNotFound unless the queue exists (a startup
                                        check; an adapter whose open() checked already, or
                                        whose backend has no missing queues, returns at once)

and the facts the facade reads (``JobQueue.health()``, ``on_state_change()``, traces, metrics)::

    adapter.queue, .address, .display   the logical queue, its broker address, where (masked)
    adapter.state                       "connected", "reconnecting", "failed" or "closed"
    adapter.on_state_change(listener)   call listener(state) on each change (StateListeners
                                        does the calling); a backend without a connection
                                        never calls it
    adapter.at_most_once                True once the broker has been seen delivering at most
                                        once to a consumer that asked for at-least-once
                                        (pre-settled deliveries): health() says "at-most-once"
    adapter.server_facts                ServerFacts: messaging.system, server address and port

    receiver.open()                     attach; raise QueueNotFound if there is no such queue
    receiver.flow(n)                    grant n more deliveries (credit). Never deliver more
                                        than the credit granted and not yet used.
    receiver.receive()                  -> the next Incoming, or None once the receiver closed
    receiver.settle(incoming, settlement)  apply an outcome (not called in auto_ack mode);
                                        returns None when applied at once (the hot path: a
                                        disposition queued on the link), or an awaitable when
                                        it needs I/O first (a re-publish, an SDK call)
    receiver.stale(incoming)            True once a delivery can no longer be settled because the
                                        link or connection it came on is gone (the broker has it
                                        back and redelivers it); a consumer that holds jobs of a
                                        group drops stale ones instead of handing them out
    receiver.drain()                    stop deliveries without closing: void the credit and
                                        release deliveries received but not yet handed out
    receiver.close()                    release deliveries received but not yet handed out;
                                        anything still unsettled goes back to the broker

Groups (``queue.consume(groups=N)``, docs/ordering.md). The facade's consumer sequences in
every case: it holds the jobs of a group in arrival order, hands out the next only once the one
before is settled, keeps at most N groups in hand, and keeps a retried or released job of a group
itself (handing it out again after the delay) instead of sending it back, so that the broker never
puts it behind the group's later jobs. An adapter tells it where the jobs come from:

- ``group_receiver()`` returns None (memory, Proton): the facade reads the plain ``receiver()``
  and sequences over it; the queue must have one active consumer (RabbitMQ's
  ``x-single-active-consumer``), since two consumers would each hold part of a group;
- it returns a :class:`Receiver` (Service Bus sessions): the backend delivers the groups itself.
  Its contract, beyond the Receiver's: every Incoming has ``group`` set; the jobs of a group
  arrive in the group's order; it holds at most ``groups`` groups at once (a session lock each,
  renewed while held) and lets a group go (and takes the next available) once every job it
  delivered of it is settled and the group has nothing more for a while; ``flow``/credit as
  for ``receiver()``. It never sees RETRY or RELEASE for a job the consumer still holds (only
  when the consumer closes, or a job is given up): settle() gets one outcome per delivery.

A :class:`Backend` is one connection (an SDK client, a memory namespace) that many adapters
share: ``amqp1q.connect()`` opens one, and each ``client.queue()``, ``client.topic()`` and
``client.subscription()`` is an adapter it makes for an :class:`Entity`::

    backend.open() / backend.close()    connect once / close every adapter's links, then it
    backend.adapter(entity, options)    -> Adapter, open already (no I/O: it links up on its
                                        first push or consume); its close() releases its own
                                        links, never the connection
    backend.state, .display             the connection's state and where it is (masked)
    backend.connections                 connections held now (what a broker would count)

An adapter made by ``JobQueue.from_url`` owns a backend of its own: its ``dead_letter_adapter()``
shares it, and the connection closes with the last of them.

Rules every adapter keeps (the shared semantics suite in ``tests/semantics`` checks them):

- ``receive`` is cancellation-safe: if the awaiting task is cancelled, no delivery is lost.
- ``Incoming.attempt`` counts deliveries from 1; ``Outcome.RELEASE`` does not count one,
  ``Outcome.RETRY`` does.
- ``settle`` applies the outcome as the broker best can (see the DESIGN table); an outcome the
  broker lacks is emulated (RETRY with delay as re-publish-then-accept) or raises
  :class:`~amqp1q.UnsupportedFeature`.
- Errors are the typed errors of ``_errors``; nothing leaks a secret.
- An adapter whose deliveries can be lost while a handler holds one (a Service Bus lock that
  could not be renewed) sets ``Incoming.guard``: ``job.process()`` runs the handler inside it.
"""

from __future__ import annotations

import datetime
import enum
import logging
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Final, Protocol, runtime_checkable

import attrs

from ._errors import Amqp1qError
from ._job import Headers, Job, Receipt, new_job_id

if TYPE_CHECKING:
    from ._inspection import QueueOperations
    from ._options import AdapterOptions
    from ._replies import Reply, ReplyLink

__all__ = [
    "ACK",
    "CONNECTION_STATES",
    "QUEUE",
    "RELEASE",
    "SUBSCRIPTION",
    "TOPIC",
    "Adapter",
    "Backend",
    "Entity",
    "GroupState",
    "HandedOut",
    "Incoming",
    "Outcome",
    "Receiver",
    "SendResult",
    "ServerFacts",
    "Settlement",
    "StateListeners",
]

#: What ``Adapter.state`` says; ``JobQueue.health()`` passes it on.
CONNECTION_STATES: Final = ("connected", "reconnecting", "failed", "closed")

#: The kinds of :class:`Entity`.
QUEUE: Final = "queue"
TOPIC: Final = "topic"
SUBSCRIPTION: Final = "subscription"


@attrs.frozen(slots=True)
class Entity:
    """What an adapter moves jobs to or from: a queue (push and consume), a topic (push only:
    every subscription gets a copy) or a topic's subscription (consume only)."""

    kind: str
    name: str
    #: A subscription's topic.
    topic: str | None = None

    @classmethod
    def queue(cls, name: str) -> Entity:
        return cls(QUEUE, name)

    @classmethod
    def subscription(cls, topic: str, name: str) -> Entity:
        return cls(SUBSCRIPTION, name, topic)

    @property
    def label(self) -> str:
        """``queue 'jobs'``, ``topic 'events'``, ``subscription 'audit' of topic 'events'``."""
        if self.kind == SUBSCRIPTION:
            return f"subscription {self.name!r} of topic {self.topic!r}"
        return f"{self.kind} {self.name!r}"


class Outcome(enum.Enum):
    """How a received job was settled."""

    ACK = "ack"
    RETRY = "retry"
    RELEASE = "release"
    REJECT = "reject"


@attrs.frozen(slots=True)
class Settlement:
    """An outcome with its arguments: a retry's ``delay``, a rejection's ``reason``."""

    outcome: Outcome
    delay: float | None = None
    reason: str | None = None
    description: str | None = None


ACK = Settlement(Outcome.ACK)
RELEASE = Settlement(Outcome.RELEASE)


class GroupState(Protocol):
    """The state a backend keeps for one group (a Service Bus session's state): opaque bytes,
    read and replaced while the consumer holds the group."""

    async def get(self) -> bytes | None: ...

    async def set(self, state: bytes | None) -> None: ...


@attrs.define(slots=True, eq=False)
class Incoming:
    """A received message as an adapter hands it to the facade."""

    id: str
    name: str
    body: bytes
    content_type: str | None
    headers: Headers
    attempt: int
    #: The adapter's own handle for settling this delivery; opaque to the facade.
    token: Any = None
    priority: int | None = None
    enqueued_at: datetime.datetime | None = None
    dead_letter_reason: str | None = None
    dead_letter_description: str | None = None
    #: Set when the message could not be read as a job (its raw body is in ``body``).
    decode_error: str | None = None
    #: The job's group (``Job.group``: the AMQP group-id, the Service Bus SessionId), or None.
    group: str | None = None
    #: The state of the job's group, for a backend that keeps one (Service Bus sessions):
    #: ``ReceivedJob.group_state()`` / ``set_group_state()`` go through it. None elsewhere.
    group_state: GroupState | None = None
    #: Set by an adapter whose deliveries can be lost while in hand: a context manager factory
    #: ``job.process()`` enters around the handler; it cancels the block and raises
    #: :class:`~amqp1q.LockLost` when the delivery is lost.
    guard: Callable[[], AbstractAsyncContextManager[None]] | None = None
    #: A request's ``reply-to`` and ``correlation-id`` (a reply's ``correlation-id``), and on
    #: Service Bus its ``reply-to-session-id``: where and how a reply goes (``_replies``).
    reply_to: str | None = None
    correlation_id: str | None = None
    reply_to_session_id: str | None = None

    def copy_as_job(self, delay: float | None = None) -> Job:
        """The job to push for a re-published copy (a retry, a release, a dead-letter): the
        same name, body, id, headers, priority, content type and group (and a request's
        reply-to and correlation-id). A foreign message may have no id (a new one is made) or
        no name (``"unnamed"``)."""
        return Job(
            self.name or "unnamed",
            self.body,
            id=self.id or new_job_id(),
            headers=self.headers,
            priority=self.priority,
            content_type=self.content_type,
            delay=delay,
            reply_to=self.reply_to,
            correlation_id=self.correlation_id if self.reply_to is not None else None,
            group=self.group,
        )


class HandedOut(Protocol):
    """A job as the facade hands it out (a :class:`~amqp1q.ReceivedJob`), as an adapter's own
    helper sees it (``amqp1q.adapters.servicebus.lock_scope``): the Incoming it was made of."""

    @property
    def incoming(self) -> Incoming: ...


@attrs.frozen(slots=True)
class ServerFacts:
    """Where a queue lives, as traces and metrics name it: OpenTelemetry's
    ``messaging.system`` and ``server.address`` / ``server.port`` (None: no server)."""

    system: str = "amqp1q"
    server: tuple[str, int] | None = None


class StateListeners:
    """The listeners of an adapter's connection state (``Adapter.on_state_change``)."""

    __slots__ = ("_listeners", "_log")

    def __init__(self, logger: logging.Logger) -> None:
        self._listeners: list[Callable[[str], None]] = []
        self._log = logger

    def add(self, listener: Callable[[str], None]) -> None:
        self._listeners.append(listener)

    def announce(self, state: str) -> None:
        """Call each listener with ``state``; one that raises is logged, and stops no other."""
        for listener in list(self._listeners):
            try:
                listener(state)
            except Exception:  # noqa: PERF203 - a listener's bug must not stop the adapter
                self._log.exception("a state listener failed")


#: A push's result: its receipt, or the typed error that refused it (JobRejected, JobTooLarge,
#: QueueNotFound, ConnectionLost, ...).
SendResult = Receipt | Amqp1qError


@runtime_checkable
class Receiver(Protocol):
    """One consumer's link to the queue. See the module docstring for the contract."""

    async def open(self) -> None: ...

    def flow(self, credit: int) -> None: ...

    async def receive(self) -> Incoming | None: ...

    def settle(self, incoming: Incoming, settlement: Settlement) -> Awaitable[None] | None: ...

    def stale(self, incoming: Incoming) -> bool: ...

    async def drain(self) -> None: ...

    async def close(self) -> None: ...


@runtime_checkable
class Adapter(Protocol):
    """A backend for one queue. See the module docstring for the contract."""

    #: The logical queue name.
    @property
    def queue(self) -> str: ...

    #: The broker address the queue maps to (known after ``open`` for adapters that detect it).
    @property
    def address(self) -> str: ...

    #: Where the adapter connects, with every secret masked — for logs, reprs and errors.
    @property
    def display(self) -> str: ...

    #: One of :data:`CONNECTION_STATES`.
    @property
    def state(self) -> str: ...

    #: True once the broker has been seen delivering at most once (see the module docstring).
    @property
    def at_most_once(self) -> bool: ...

    @property
    def server_facts(self) -> ServerFacts: ...

    def on_state_change(self, listener: Callable[[str], None]) -> None: ...

    async def verify(self) -> None: ...

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def send(self, jobs: Sequence[Job], default_priority: int) -> list[SendResult]: ...

    def receiver(self, *, auto_ack: bool) -> Receiver: ...

    def group_receiver(self, *, auto_ack: bool, groups: int) -> Receiver | None: ...

    def dead_letter_adapter(self) -> Adapter: ...

    #: The queue's operations (depth, peek, purge, cancel): raises UnsupportedFeature where the
    #: broker has no means for them.
    def operations(self) -> QueueOperations: ...

    #: Request and reply (``amqp1q._replies``): the connection's one reply link (the same
    #: object until it closes), and sending one reply to a caller's reply-to address.
    def reply_link(self) -> ReplyLink: ...

    async def send_reply(self, address: str, reply: Reply) -> None: ...


@runtime_checkable
class Backend(Protocol):
    """One connection shared by the adapters it makes. See the module docstring."""

    @property
    def display(self) -> str: ...

    #: One of :data:`CONNECTION_STATES` (or ``"unopened"``).
    @property
    def state(self) -> str: ...

    #: Connections held now: 1 while open for a connection-oriented backend, 0 for memory.
    @property
    def connections(self) -> int: ...

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    def adapter(self, entity: Entity, options: AdapterOptions) -> Adapter: ...
