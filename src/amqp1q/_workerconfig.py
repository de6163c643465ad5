"""``WorkerConfig``: a worker's settings as one frozen value (``amqp1q.worker.WorkerConfig``).

The ``amqp1q worker`` command builds one from ``--config`` and its flags; a program loads the
same file to push the jobs that worker runs (:meth:`WorkerConfig.job_queue`), or to get the
``JobQueue.from_url`` arguments (:meth:`WorkerConfig.queue_options`). Reading the file, amqp1q's
shape or a RoadRunner ``.rr.yaml``, is :mod:`._workerfile`'s job.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from ._errors import InvalidSetting, InvalidURL, UnsupportedFeature
from ._policy import ReconnectPolicy, RetryPolicy
from ._redact import MASK, Secret
from ._settings import TLSConfig
from ._urls import AmqpEndpoint, ServiceBusEndpoint, parse_url
from ._workerfile import read_worker_file
from ._workerqueues import QueueSpec

if TYPE_CHECKING:
    from ._queue import JobQueue

__all__ = ["WorkerConfig"]


def _secret(value: str | Secret | None) -> Secret | None:
    return Secret(value) if isinstance(value, str) else value


def _shown(url: Secret | None) -> str:
    if url is None:
        return "None"
    try:
        return repr(parse_url(url.reveal()).display)
    except InvalidURL:
        return repr(MASK)


@attrs.frozen(kw_only=True)
class WorkerConfig:
    """What ``amqp1q worker`` runs: the registry, where its jobs are, and how to run them.

    ``None`` means "not set": the command's defaults (or its flags) apply. ``url`` is kept as a
    :class:`~amqp1q._redact.Secret` and shown masked; ``url_env`` names an environment variable
    read by :meth:`resolve_url`. ``roadrunner`` says the file was RoadRunner's: the wire format
    then defaults to ``"roadrunner"`` on ``amqp://`` and Service Bus queues, so PHP workers can
    share them.
    """

    registry: str | None = None
    url: Secret | None = attrs.field(default=None, converter=_secret, repr=_shown)
    url_env: str | None = None
    queue: str | None = None
    address: str | None = None
    concurrency: int | None = None
    prefetch: int | None = None
    #: ``consume(groups=N)`` on each queue: in order per group, N groups at once (``--groups``).
    groups: int | None = None
    job_timeout: float | None = None
    grace: float | None = None
    stall_warning: float | None = None
    wire_format: str | None = None
    auto_ack: bool | None = None
    requeue_on_fail: bool | None = None
    priority: int | None = None
    exchange: str | None = None
    routing_key: str | None = None
    container_id: str | None = None
    broker: str | None = None
    vhost: str | None = None
    tls: TLSConfig | None = None
    retry: RetryPolicy | None = None
    reconnect: ReconnectPolicy | bool | None = None
    #: Several queues to consume on one connection (``--queue a --queue b``, ``queues`` in the
    #: file, or a RoadRunner file's ``jobs.consume``); empty: the one ``queue``.
    queues: tuple[QueueSpec, ...] = ()
    #: Worker processes (``--processes``; RoadRunner's ``jobs.pool.num_workers``).
    processes: int | None = None
    source: str | None = None
    pipeline: str | None = None
    roadrunner: bool = False
    #: RoadRunner-only keys that were read and ignored, as dotted paths.
    ignored: tuple[str, ...] = ()
    #: Where each setting came from in the file (``"rr.yaml: jobs.pipelines.x.queue"``).
    keys: Mapping[str, str] = attrs.field(factory=dict, repr=False, eq=False)

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, pipeline: str | None = None) -> WorkerConfig:
        """Read ``path`` (``.toml``, ``.yaml`` or ``.yml``); ``pipeline`` picks one of a
        RoadRunner file's pipelines (needed when several have ``driver: amqp1``).

        Raises :class:`~amqp1q.InvalidSetting` naming the file and the key, or
        :class:`~amqp1q.MissingDependency` for YAML without PyYAML installed.
        """
        file = read_worker_file(Path(path), pipeline)
        return cls(
            **file.values,
            source=file.name,
            pipeline=file.pipeline,
            roadrunner=file.roadrunner,
            ignored=tuple(file.ignored),
            keys=file.keys,
        )

    def override(self, **values: Any) -> WorkerConfig:
        """A copy with ``values`` set, skipping those that are ``None`` (flags not given)."""
        return attrs.evolve(self, **{k: v for k, v in values.items() if v is not None})

    def resolve_url(self) -> str | None:
        """``url``, else the value of the variable ``url_env`` names, else ``None``."""
        if self.url is not None:
            return self.url.reveal()
        if self.url_env is None:
            return None
        value = os.environ.get(self.url_env)
        if not value:
            where = self.keys.get("url_env", "url_env")
            raise InvalidSetting(f"{where}: the environment variable {self.url_env} is not set")
        return value

    def queue_options(self, url: str) -> dict[str, Any]:
        """Keyword arguments for ``JobQueue.from_url(url, ...)``, checked against ``url``."""
        endpoint = parse_url(url)
        network = isinstance(endpoint, (AmqpEndpoint, ServiceBusEndpoint))
        if self.exchange is not None:
            no_exchanges = _no_exchanges(endpoint, self.broker)
            if no_exchanges:
                where = self.keys.get("exchange", "exchange")
                raise UnsupportedFeature(
                    f"{where}: {no_exchanges} has no exchanges; remove exchange and routing_key "
                    f"(jobs then go straight to the queue)"
                )
        wire_format = self.wire_format
        if wire_format is None:
            wire_format = "roadrunner" if self.roadrunner and network else "amqp1q"
        options: dict[str, Any] = {"wire_format": wire_format}
        if wire_format == "roadrunner" and self.pipeline is not None:
            options["pipeline"] = self.pipeline  # RoadRunner reads it back as the job's pipeline
        for name in _QUEUE_OPTIONS:
            if getattr(self, name) is not None:
                options[name] = getattr(self, name)
        return options

    def queue_specs(self) -> tuple[QueueSpec, ...]:
        """The queues to consume: :attr:`queues`, else the one the settings name."""
        if self.queues:
            return self.queues
        return (QueueSpec(queue=self.queue, address=self.address, prefetch=self.prefetch),)

    def job_queue(self, url: str | None = None) -> JobQueue:
        """A :class:`~amqp1q.JobQueue` with these settings (to push jobs the worker runs)."""
        from ._queue import JobQueue

        url = url if url is not None else self.resolve_url()
        if url is None:
            raise InvalidSetting(f"{self.source or 'the configuration'} gives no URL")
        return JobQueue.from_url(url, **self.queue_options(url))


#: The settings passed on to ``JobQueue.from_url`` when set.
_QUEUE_OPTIONS = (
    "queue address auto_ack requeue_on_fail priority retry exchange routing_key container_id "
    "broker vhost tls reconnect"
).split()


def _no_exchanges(endpoint: object, broker: str | None) -> str | None:
    if isinstance(endpoint, ServiceBusEndpoint) or (
        isinstance(endpoint, AmqpEndpoint) and endpoint.host.endswith(".servicebus.windows.net")
    ):
        return "Azure Service Bus"
    if not isinstance(endpoint, AmqpEndpoint):
        return "a memory:// queue"
    if broker is not None and broker.lower() not in ("rabbitmq3", "rabbitmq4"):
        return f"the broker {broker!r}"
    return None
