"""The queues a worker consumes: :class:`QueueSpec` (``amqp1q.worker.QueueSpec``).

``amqp1q worker --queue a --queue b`` (or a RoadRunner file whose ``jobs.consume`` lists several
``amqp1`` pipelines) consumes several queues on one connection: each is a :class:`QueueSpec`,
its own settings over the worker's. The worker's settings split in two: those of the
connection (:data:`CONNECTION_SETTINGS`, for ``amqp1q.connect``) and those of each queue.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import attrs

__all__ = ["CONNECTION_SETTINGS", "QueueSpec", "split_settings"]

#: ``JobQueue.from_url`` settings that belong to the connection (``amqp1q.connect``'s).
CONNECTION_SETTINGS: Final = frozenset(
    {
        "container_id",
        "tls",
        "broker",
        "vhost",
        "reconnect",
        "allow_plaintext_password",
        "connect_timeout",
    }
)


@attrs.frozen(kw_only=True)
class QueueSpec:
    """One queue a worker consumes, with settings of its own (``None``: the worker's)."""

    queue: str | None = None
    address: str | None = None
    prefetch: int | None = None
    priority: int | None = None
    auto_ack: bool | None = None
    requeue_on_fail: bool | None = None
    exchange: str | None = None
    routing_key: str | None = None
    #: The RoadRunner pipeline it came from (named in each envelope it writes).
    pipeline: str | None = None

    @property
    def name(self) -> str | None:
        """The queue's name: ``queue``, else ``address``."""
        return self.queue or self.address

    def settings(self, worker: Mapping[str, Any]) -> dict[str, Any]:
        """The worker's queue settings with this queue's own over them (its ``prefetch`` is
        the consumer's, not a queue setting: see :attr:`prefetch`)."""
        own = attrs.asdict(self)
        own.pop("prefetch")
        if own["pipeline"] is not None and worker.get("wire_format") != "roadrunner":
            own["pipeline"] = None  # only RoadRunner's envelope names a pipeline
        return {**worker, **{k: v for k, v in own.items() if v is not None}}


def split_settings(settings: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``from_url`` keyword arguments as ``(connection, queue)`` settings."""
    connection = {k: v for k, v in settings.items() if k in CONNECTION_SETTINGS}
    queue = {k: v for k, v in settings.items() if k not in CONNECTION_SETTINGS}
    return connection, queue
