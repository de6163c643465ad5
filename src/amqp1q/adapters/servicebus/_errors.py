"""azure-servicebus exceptions -> amqp1q's: the one place that maps them, per operation.

Opening a sender or receiver (:func:`open_error`), pushing (:func:`push_error`) and settling
(:func:`settle_error`) each map the SDK's exceptions to the :class:`~amqp1q.Amqp1qError` the
caller sees, with the SDK's message redacted into ``description``.
"""

from __future__ import annotations

import socket
import ssl
from typing import Final

from ..._errors import (
    AlreadySettled,
    Amqp1qError,
    AuthenticationFailed,
    ConnectFailed,
    ConnectionLost,
    DeliveryStale,
    JobRejected,
    JobTooLarge,
    LockLost,
    PushTimeout,
    QueueNotFound,
    TLSError,
)
from ..._redact import redact
from ._sdk import sb_errors

__all__ = ["copy_error", "describe", "open_error", "push_error", "settle_error"]


def describe(exc: BaseException) -> str:
    return redact(str(exc) or type(exc).__name__)[:500]


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and what it wraps (the SDK's ``inner_exception``, ``__cause__``, ``__context__``)."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain and len(chain) < 10:
        chain.append(current)
        current = (
            getattr(current, "inner_exception", None) or current.__cause__ or current.__context__
        )
    return chain


def _flat(exc: BaseException) -> str:
    return " ".join(describe(exc).split())


def open_error(exc: Exception, *, queue: str, display: str) -> Amqp1qError:
    """Opening failed: say why, from the innermost cause the SDK kept (the socket's or TLS's
    own error, or the broker's answer to the token)."""
    chain = _causes(exc)
    description = " <- ".join(dict.fromkeys(_flat(cause) for cause in chain))[:1000]
    for cause in chain:
        if isinstance(cause, ssl.SSLError):
            reason = getattr(cause, "verify_message", None) or cause.reason or cause
            hint = ""
            if isinstance(cause, ssl.SSLCertVerificationError):
                hint = (
                    " (the certificate did not verify: to trust another CA, pass "
                    "client_options={'connection_verify': CA_FILE} to ServiceBusAdapter)"
                )
            return TLSError(
                f"the TLS handshake with {display} failed: {reason}{hint}",
                queue=queue,
                description=description,
            )
        why = _socket_failure(cause)
        if why is not None:
            return ConnectFailed(
                f"cannot connect to {display}: {why}", queue=queue, description=description
            )
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


def _socket_failure(cause: BaseException) -> str | None:
    """What went wrong on the socket, in words, if ``cause`` is a socket's error."""
    if not isinstance(cause, OSError) or isinstance(cause, Amqp1qError):
        return None
    text = cause.strerror or str(cause) or type(cause).__name__
    if isinstance(cause, socket.gaierror):
        return f"its host name does not resolve ({text}; is the namespace right?)"
    if isinstance(cause, ConnectionRefusedError):
        return f"connection refused ({text}; nothing listens there)"
    return text


#: A mapping per operation: (the SDK's exceptions, amqp1q's error, what it says); the first
#: row that matches wins, and an exception no row names is the operation's last word.
_Rows = tuple[tuple[tuple[type[BaseException], ...], type[Amqp1qError], str], ...]
_PUSH: Final[_Rows] = (
    (
        (sb_errors.MessageSizeExceededError,),
        JobTooLarge,
        "the job is larger than Service Bus takes",
    ),
    ((sb_errors.MessagingEntityNotFoundError,), QueueNotFound, "no queue {queue!r}"),
    (
        (sb_errors.ServiceBusAuthenticationError, sb_errors.ServiceBusAuthorizationError),
        AuthenticationFailed,
        "Service Bus refused the credentials",
    ),
    (
        (sb_errors.OperationTimeoutError,),
        PushTimeout,
        "Service Bus did not answer the send in time",
    ),
    (
        (
            sb_errors.ServiceBusQuotaExceededError,
            sb_errors.ServiceBusServerBusyError,
            sb_errors.MessagingEntityDisabledError,
        ),
        JobRejected,
        "Service Bus refused the job",
    ),
    ((Exception,), ConnectionLost, "the send to Service Bus failed"),
)
_SETTLE: Final[_Rows] = (
    (
        (
            sb_errors.MessageLockLostError,
            sb_errors.MessageNotFoundError,
            sb_errors.SessionLockLostError,
        ),
        LockLost,
        "the job's lock had expired; Service Bus redelivers it",
    ),
    (
        (sb_errors.MessageAlreadySettled,),
        AlreadySettled,
        "Service Bus says the job was already settled",
    ),
    (
        (Exception,),
        DeliveryStale,
        "the settlement did not reach Service Bus; it redelivers the job",
    ),
)


#: How azure-servicebus words a refusal of the message itself (``amqp:not-allowed``: a job
#: without a SessionId sent to a queue that requires sessions), which it raises as a bare
#: ServiceBusError: the job is refused, the connection is fine.
_NOT_ALLOWED: Final = "Error condition: amqp:not-allowed"


def push_error(exc: Exception, *, queue: str, job_id: str | None) -> Amqp1qError:
    """A push (or schedule) failed with ``exc``: the error its job gets."""
    if type(exc) is sb_errors.ServiceBusError and _NOT_ALLOWED in str(exc):
        return JobRejected(
            "Service Bus refused the job", queue=queue, job_id=job_id, description=describe(exc)
        )
    return _mapped(exc, _PUSH, queue=queue, job_id=job_id)


def settle_error(exc: Exception, *, queue: str, job_id: str) -> Amqp1qError:
    """A settlement failed with ``exc``: the error ``ack()`` (or the others) raises."""
    return _mapped(exc, _SETTLE, queue=queue, job_id=job_id)


def _mapped(exc: Exception, rows: _Rows, *, queue: str, job_id: str | None) -> Amqp1qError:
    if isinstance(exc, Amqp1qError):
        return exc
    for kinds, error, message in rows:
        if isinstance(exc, kinds):
            return error(
                message.format(queue=queue), queue=queue, job_id=job_id, description=describe(exc)
            )
    raise AssertionError("the last row matches any Exception")  # pragma: no cover


def copy_error(error: Amqp1qError) -> Amqp1qError:
    """One error object per job: each gets its own ``job_id`` filled in."""
    copy = type(error).__new__(type(error))
    copy.__dict__.update(error.__dict__)
    copy.args = error.args
    return copy
