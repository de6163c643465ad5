"""amqp1q — asyncio job queues over AMQP 1.0.

One API for Azure Service Bus, RabbitMQ, ActiveMQ Artemis, Qpid and any AMQP 1.0 broker, plus an
in-memory backend for tests::

    from amqp1q import Job, JobQueue

    async with JobQueue.from_url("amqp://guest:guest@127.0.0.1:5672/jobs") as queue:
        await queue.push(Job("send_email", {"to": "a@b.c"}))
        async for job in queue.consume():
            async with job.process():
                await handle(job)

Many queues on one connection: ``async with amqp1q.connect(url) as client:``, then
``client.queue(name)``, ``client.topic(name)`` and ``client.subscription(topic, name)``.
"""

from __future__ import annotations

from ._adapter import Adapter, Incoming, Outcome, Receiver, ServerFacts, Settlement
from ._client import Client, connect
from ._consumer import Consumer
from ._errors import (
    AlreadySettled,
    Amqp1qConnectionError,
    Amqp1qError,
    AuthenticationFailed,
    CallError,
    CallTimeout,
    ConfigurationError,
    ConnectFailed,
    ConnectionLost,
    DeliveryStale,
    InvalidJob,
    InvalidSetting,
    InvalidURL,
    JobFailed,
    JobRejected,
    JobTooLarge,
    LockLost,
    MissingDependency,
    PayloadError,
    PayloadValidationError,
    PushError,
    PushTimeout,
    QueueNotFound,
    QueueStateError,
    SettlementError,
    TLSError,
    UnsupportedFeature,
)
from ._inspection import PeekedJob, QueueDepth
from ._job import Headers, Job, Receipt
from ._middleware import CallNext, Handled, Middleware
from ._policy import ReconnectPolicy, RetryPolicy
from ._queue import JobQueue
from ._received import Processing, ReceivedJob
from ._registry import Registry
from ._settings import TLSConfig
from ._stats import QueueStats
from ._version import __version__

__all__ = [  # noqa: RUF022 - public names sorted, then __version__ (test_public_api)
    "Adapter",
    "AlreadySettled",
    "Amqp1qConnectionError",
    "Amqp1qError",
    "AuthenticationFailed",
    "CallError",
    "CallNext",
    "CallTimeout",
    "Client",
    "ConfigurationError",
    "ConnectFailed",
    "ConnectionLost",
    "Consumer",
    "DeliveryStale",
    "Handled",
    "Headers",
    "Incoming",
    "InvalidJob",
    "InvalidSetting",
    "InvalidURL",
    "Job",
    "JobFailed",
    "JobQueue",
    "JobRejected",
    "JobTooLarge",
    "LockLost",
    "Middleware",
    "MissingDependency",
    "Outcome",
    "PayloadError",
    "PayloadValidationError",
    "PeekedJob",
    "Processing",
    "PushError",
    "PushTimeout",
    "QueueDepth",
    "QueueNotFound",
    "QueueStateError",
    "QueueStats",
    "Receipt",
    "ReceivedJob",
    "Receiver",
    "ReconnectPolicy",
    "Registry",
    "RetryPolicy",
    "ServerFacts",
    "Settlement",
    "SettlementError",
    "TLSConfig",
    "TLSError",
    "UnsupportedFeature",
    "connect",
    "__version__",
]
