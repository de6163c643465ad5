"""The exceptions amqp1q raises.

Every error derives from one root, :class:`Amqp1qError`, and carries the context it concerns —
the queue, the broker address, the job id, and the broker's own condition and description where
there is one — as attributes and in its message. No error ever carries a password, SAS key or
token: messages are built from redacted values only (see ``_redact``).

The tree::

    Amqp1qError
    ├── ConfigurationError                 (also ValueError) bad settings, found before any I/O
    │   ├── InvalidURL                     malformed URL / connection string, unknown scheme
    │   ├── InvalidSetting                 a setting out of range (prefetch < 1, ...)
    │   ├── UnsupportedFeature             the broker or adapter cannot do what was asked
    │   └── MissingDependency              (also ImportError) an optional extra is not installed
    ├── InvalidJob                         (also ValueError) a job that cannot be sent as given
    │   └── PayloadError                   a payload that cannot be (de)serialised
    │       └── PayloadValidationError     a received payload that is not the declared type
    ├── QueueStateError                    the queue or consumer is not open (or already closed)
    ├── Amqp1qConnectionError              (also ConnectionError)
    │   ├── ConnectFailed                  nothing listening, DNS failure, connect timeout
    │   ├── ConnectionLost                 an established connection dropped
    │   ├── AuthenticationFailed           SASL (or RabbitMQ's management API) refused them
    │   └── TLSError                       handshake or certificate verification failed
    ├── QueueNotFound                      the broker has no such queue / address
    ├── CallError                          a request (``queue.call()``) got no result
    │   ├── JobFailed                      its handler failed after its last attempt, or the
    │   │                                  job was dead-lettered (remote error type, message)
    │   └── CallTimeout                    (also TimeoutError) no reply in time
    ├── PushError
    │   ├── JobRejected                    the broker answered rejected, released or modified
    │   ├── PushTimeout                    no outcome within the push timeout
    │   └── JobTooLarge                    larger than the link's max-message-size
    └── SettlementError
        ├── AlreadySettled                 a job is settled once
        ├── DeliveryStale                  its link died; the broker redelivers the job
        └── LockLost                       its Service Bus lock expired or renewal failed

Adapters map their transport's exceptions onto this tree at the adapter boundary.
"""

from __future__ import annotations

__all__ = [
    "AlreadySettled",
    "Amqp1qConnectionError",
    "Amqp1qError",
    "AuthenticationFailed",
    "CallError",
    "CallTimeout",
    "ConfigurationError",
    "ConnectFailed",
    "ConnectionLost",
    "DeliveryStale",
    "InvalidJob",
    "InvalidSetting",
    "InvalidURL",
    "JobFailed",
    "JobRejected",
    "JobTooLarge",
    "LockLost",
    "MissingDependency",
    "PayloadError",
    "PayloadValidationError",
    "PushError",
    "PushTimeout",
    "QueueNotFound",
    "QueueStateError",
    "SettlementError",
    "TLSError",
    "UnsupportedFeature",
]


class Amqp1qError(Exception):
    """Root of every amqp1q error.

    Attributes (each may be ``None`` when it does not apply):

    - ``queue``: the logical queue name;
    - ``address``: the broker address (node name) the queue maps to;
    - ``job_id``: the job concerned;
    - ``condition`` and ``description``: the broker's AMQP error condition and text.
    """

    def __init__(
        self,
        message: str,
        *,
        queue: str | None = None,
        address: str | None = None,
        job_id: str | None = None,
        condition: str | None = None,
        description: str | None = None,
    ) -> None:
        self.message = message
        self.queue = queue
        self.address = address
        self.job_id = job_id
        self.condition = condition
        self.description = description
        super().__init__(self._render())

    def _render(self) -> str:
        parts = [self.message]
        context = []
        if self.queue is not None:
            context.append(f"queue={self.queue!r}")
        if self.address is not None and self.address != self.queue:
            context.append(f"address={self.address!r}")
        if self.job_id is not None:
            context.append(f"job={self.job_id!r}")
        if self.condition is not None:
            context.append(f"condition={self.condition!r}")
        if self.description:
            context.append(f"description={self.description!r}")
        if context:
            parts.append(f"({', '.join(context)})")
        return " ".join(parts)

    def __str__(self) -> str:
        return self._render()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._render()!r})"

    def __reduce__(self) -> tuple[object, ...]:
        return (
            _rebuild,
            (
                type(self),
                self.message,
                {
                    "queue": self.queue,
                    "address": self.address,
                    "job_id": self.job_id,
                    "condition": self.condition,
                    "description": self.description,
                },
            ),
        )


def _rebuild(cls: type[Amqp1qError], message: str, context: dict[str, str | None]) -> Amqp1qError:
    return cls(message, **context)


# -- configuration ---------------------------------------------------------------------------


class ConfigurationError(Amqp1qError, ValueError):
    """A setting is wrong; found before any I/O."""


class InvalidURL(ConfigurationError):
    """A malformed URL or connection string, or an unknown scheme. The URL shown is redacted."""


class InvalidSetting(ConfigurationError):
    """A setting outside its allowed range or of the wrong type."""


class UnsupportedFeature(ConfigurationError):
    """The broker (or adapter) cannot do what was asked; the message names both."""


class MissingDependency(ConfigurationError, ImportError):
    """An optional dependency is not installed; the message names the ``pip install`` to run."""


# -- jobs ------------------------------------------------------------------------------------


class InvalidJob(Amqp1qError, ValueError):
    """A job that cannot be sent as given: a bad name, header, priority or delay."""


class PayloadError(InvalidJob):
    """A payload that cannot be serialised (on push) or deserialised (on receipt)."""


class PayloadValidationError(PayloadError):
    """A received payload does not match the type its handler declared (or ``payload_as``).

    ``payload_type`` names the type; ``errors`` lists what is wrong, one ``"path: problem"``
    each. Inside ``job.process()`` it dead-letters the job at once (reason ``"invalid
    payload"``, the errors in the description): retrying cannot fix a payload.
    """

    def __init__(
        self,
        message: str,
        *,
        payload_type: str | None = None,
        errors: tuple[str, ...] = (),
        **context: str | None,
    ) -> None:
        self.payload_type = payload_type
        self.errors = errors
        super().__init__(message, **context)

    def __reduce__(self) -> tuple[object, ...]:
        return (
            _rebuild_invalid,
            (self.message, self.payload_type, self.errors, _context(self)),
        )


# -- state -----------------------------------------------------------------------------------


class QueueStateError(Amqp1qError):
    """The queue or consumer is not open: used before ``async with``, or after close."""


# -- connection ------------------------------------------------------------------------------


class Amqp1qConnectionError(Amqp1qError, ConnectionError):
    """A connection-level failure. Also a builtin :class:`ConnectionError`."""


class ConnectFailed(Amqp1qConnectionError):
    """Could not connect: nothing listening, name resolution failed, or the connect timed out."""


class ConnectionLost(Amqp1qConnectionError):
    """An established connection dropped (or the broker closed it with an error)."""

    #: True on the error a whole connection failed with (as opposed to one link closed on a
    #: live connection), set by the adapter: what was in flight may go again once it is back.
    connection_dropped = False


class AuthenticationFailed(Amqp1qConnectionError):
    """The broker refused the credentials (SASL outcome not ok; HTTP 401 from RabbitMQ's
    management API)."""


class TLSError(Amqp1qConnectionError):
    """The TLS handshake failed, or the certificate did not verify."""


# -- addressing ------------------------------------------------------------------------------


class QueueNotFound(Amqp1qError):
    """The broker has no node at the address the queue maps to."""


# -- push ------------------------------------------------------------------------------------


class PushError(Amqp1qError):
    """A push did not reach the ``accepted`` outcome."""


class JobRejected(PushError):
    """The broker answered ``rejected``, ``released`` or ``modified`` to a push.

    ``outcome`` names which; RabbitMQ answers ``released`` for a message no queue would take.
    """

    def __init__(self, message: str, *, outcome: str = "rejected", **context: str | None) -> None:
        self.outcome = outcome
        super().__init__(message, **context)

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_rejected, (self.message, self.outcome, _context(self)))


def _context(err: Amqp1qError) -> dict[str, str | None]:
    return {
        "queue": err.queue,
        "address": err.address,
        "job_id": err.job_id,
        "condition": err.condition,
        "description": err.description,
    }


def _rebuild_invalid(
    message: str,
    payload_type: str | None,
    errors: tuple[str, ...],
    context: dict[str, str | None],
) -> PayloadValidationError:
    return PayloadValidationError(message, payload_type=payload_type, errors=errors, **context)


def _rebuild_rejected(message: str, outcome: str, context: dict[str, str | None]) -> JobRejected:
    return JobRejected(message, outcome=outcome, **context)


class PushTimeout(PushError, TimeoutError):
    """No outcome arrived within the push timeout. The job may or may not have been queued."""


class JobTooLarge(PushError):
    """The encoded job is larger than the broker accepts (the link's max-message-size)."""


# -- request and reply -----------------------------------------------------------------------


class CallError(Amqp1qError):
    """A request sent with ``queue.call()`` did not give a result."""


class JobFailed(CallError):
    """The job's handler failed after its last attempt (or the job was dead-lettered): the
    reply carried the remote error. ``error_type`` names its type (``ValueError``, or
    ``rejected`` for a job dead-lettered by hand); ``error_message`` is its text."""

    def __init__(
        self,
        message: str,
        *,
        error_type: str = "Exception",
        error_message: str = "",
        **context: str | None,
    ) -> None:
        self.error_type = error_type
        self.error_message = error_message
        super().__init__(message, **context)

    def __reduce__(self) -> tuple[object, ...]:
        return (
            _rebuild_failed,
            (self.message, self.error_type, self.error_message, _context(self)),
        )


def _rebuild_failed(
    message: str, error_type: str, error_message: str, context: dict[str, str | None]
) -> JobFailed:
    return JobFailed(message, error_type=error_type, error_message=error_message, **context)


class CallTimeout(CallError, TimeoutError):
    """No reply arrived within the call's timeout. The job may still run; its late reply is
    dropped."""


# -- settlement ------------------------------------------------------------------------------


class SettlementError(Amqp1qError):
    """A received job could not be settled as asked."""


class AlreadySettled(SettlementError):
    """The job was already settled (each job is settled exactly once)."""


class DeliveryStale(SettlementError):
    """The link the job arrived on has died; the broker will redeliver the job."""


class LockLost(SettlementError):
    """The broker-side lock on the job expired or could not be renewed; it will be redelivered."""
