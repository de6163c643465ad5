"""The one seam between the :class:`~amqp1q.JobQueue` facade and a backend.

An adapter moves jobs to and from one queue on one broker. It knows its wire and its broker;
the facade knows everything else: lifecycle, timeouts, credit accounting (the prefetch bound),
the retry policy, statistics and tracing. Adapters never call back into the facade.

What an adapter implements (see :class:`Adapter` and :class:`Receiver`)::

    adapter.open()                      connect (raise ConnectFailed, AuthenticationFailed, ...)
    adapter.send(jobs, default_priority) -> [Receipt | Amqp1qError, ...]  one result per job,
                                        in order; returns once each has its outcome
    adapter.receiver(auto_ack)          -> Receiver, not yet open
    adapter.dead_letter_adapter()       -> Adapter for the queue's dead-letter queue
    adapter.close()                     release everything; must not hang
    adapter.at_most_once                (optional, default False) True once the broker has been
                                        seen delivering at most once to a consumer that asked
                                        for at-least-once (pre-settled deliveries); read by
                                        ``JobQueue.health()``, which then says ``at-most-once``
    adapter.verify()                    optional: raise QueueNotFound unless the queue exists
                                        (a startup check; without it, open() is taken to have
                                        checked, or the backend has no missing queues)

    receiver.open()                     attach; raise QueueNotFound if there is no such queue
    receiver.flow(n)                    grant n more deliveries (credit). Never deliver more
                                        than the credit granted and not yet used.
    receiver.receive()                  -> the next Incoming, or None once the receiver closed
    receiver.settle(incoming, settlement)  apply an outcome (not called in auto_ack mode);
                                        returns None when applied at once (the hot path: a
                                        disposition queued on the link), or an awaitable when
                                        it needs I/O first (a re-publish, an SDK call)
    receiver.drain()                    stop deliveries without closing: void the credit and
                                        release deliveries received but not yet handed out
    receiver.close()                    release deliveries received but not yet handed out;
                                        anything still unsettled goes back to the broker

Rules every adapter keeps (the shared semantics suite in ``tests/semantics`` checks them):

- ``receive`` is cancellation-safe: if the awaiting task is cancelled, no delivery is lost.
- ``Incoming.attempt`` counts deliveries from 1; ``Outcome.RELEASE`` does not count one,
  ``Outcome.RETRY`` does.
- ``settle`` applies the outcome as the broker best can (see the DESIGN table); an outcome the
  broker lacks is emulated (RETRY with delay as re-publish-then-accept) or raises
  :class:`~amqp1q.UnsupportedFeature`.
- Errors are the typed errors of ``_errors``; nothing leaks a secret.
"""

from __future__ import annotations

import datetime
import enum
from collections.abc import Awaitable, Sequence
from typing import Any, Protocol, runtime_checkable

import attrs

from ._errors import Amqp1qError
from ._job import Headers, Job, Receipt, new_job_id

__all__ = [
    "ACK",
    "RELEASE",
    "Adapter",
    "Incoming",
    "Outcome",
    "Receiver",
    "SendResult",
    "Settlement",
]


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

    def copy_as_job(self, delay: float | None = None) -> Job:
        """The job to push for a re-published copy (a retry, a release, a dead-letter): the
        same name, body, id, headers, priority and content type. A foreign message may have no
        id (a new one is made) or no name (``"unnamed"``)."""
        return Job(
            self.name or "unnamed",
            self.body,
            id=self.id or new_job_id(),
            headers=self.headers,
            priority=self.priority,
            content_type=self.content_type,
            delay=delay,
        )


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

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def send(self, jobs: Sequence[Job], default_priority: int) -> list[SendResult]: ...

    def receiver(self, *, auto_ack: bool) -> Receiver: ...

    def dead_letter_adapter(self) -> Adapter: ...
