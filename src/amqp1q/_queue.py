"""``JobQueue``: the facade -- its settings, construction (``from_url``), facts and consumers.

One class over any adapter, put together from one room per responsibility: opening and closing
are :mod:`._queuelife`'s (:class:`~amqp1q._queuelife.LifecycleMixin`), pushing and calling
:mod:`._sending`'s, operating the queue (depth, peek, dead-letter replay) :mod:`._operations`'s.
Here: the settings and their checks, :meth:`JobQueue.from_url` (the URL picks the adapter), the
facts a queue tells (name, address, health, stats), and :meth:`JobQueue.consume`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

from . import _metrics
from ._adapter import Adapter
from ._consumer import Consumer, ConsumerHooks
from ._errors import InvalidSetting
from ._factory import make_adapter
from ._operations import OperationsMixin
from ._options import adapter_options
from ._policy import ReconnectPolicy, RetryPolicy
from ._push import Pusher
from ._queuelife import LifecycleMixin, QueueState
from ._sending import SendingMixin
from ._settings import (
    TLSConfig,
    check_bool,
    check_positive_int,
    check_priority,
    check_seconds,
)
from ._stats import Counters, QueueStats
from ._urls import parse_url

__all__ = ["JobQueue"]

log = logging.getLogger("amqp1q.queue")


class JobQueue(SendingMixin, LifecycleMixin, OperationsMixin):
    """One queue on one broker: push jobs to it, consume jobs from it.

    Make one with :meth:`from_url`, or from an adapter: ``JobQueue(MemoryAdapter(...))``. Open it
    with ``async with queue:`` (or :meth:`open` / :meth:`close`); a closed queue is not reopened.
    One made by a client (``amqp1q.connect(url).queue(name)``) is open already, on the client's
    connection; ``async with`` then only closes it at the end (its links, not the connection).

    Settings (all keyword-only):

    - ``prefetch`` (10): jobs a consumer may hold unsettled — the credit it grants the broker;
    - ``auto_ack`` (False): settle on delivery (at-most-once) instead of after processing;
    - ``requeue_on_fail`` (True): a failing handler's job is retried per ``retry``; when False
      it is dead-lettered at once;
    - ``priority`` (0): the priority of jobs pushed without one;
    - ``retry``: the :class:`RetryPolicy` (backoff, ``max_attempts``, then dead-letter);
    - ``push_timeout`` (30 s): how long a push waits for the broker's outcome;
    - ``connect_timeout`` (10 s), ``close_timeout`` (10 s), ``settle_timeout`` (10 s).
    """

    def __init__(
        self,
        adapter: Adapter,
        *,
        prefetch: int = 10,
        auto_ack: bool = False,
        requeue_on_fail: bool = True,
        priority: int = 0,
        retry: RetryPolicy | None = None,
        push_timeout: float = 30.0,
        connect_timeout: float = 10.0,
        close_timeout: float = 10.0,
        settle_timeout: float = 10.0,
    ) -> None:
        self.prefetch = check_positive_int("prefetch", prefetch)
        self.auto_ack = check_bool("auto_ack", auto_ack)
        self.requeue_on_fail = check_bool("requeue_on_fail", requeue_on_fail)
        self.priority = check_priority("priority", priority)
        if retry is None:
            retry = RetryPolicy()
        elif not isinstance(retry, RetryPolicy):
            raise InvalidSetting(f"retry must be a RetryPolicy, not {type(retry).__name__}")
        self.retry_policy = retry
        self.push_timeout = check_seconds("push_timeout", push_timeout)
        self.connect_timeout = check_seconds("connect_timeout", connect_timeout)
        self.close_timeout = check_seconds("close_timeout", close_timeout)
        self.settle_timeout = check_seconds("settle_timeout", settle_timeout)
        self._adapter = adapter
        self._state: QueueState = QueueState.UNOPENED
        self._counters = Counters()
        self._consumers: set[Consumer] = set()
        self._pusher = Pusher(self, self._counters)
        self._hooks = ConsumerHooks(
            self._counters, self._check_open, self._consumer_opened, self._consumer_closed
        )
        self._closed = asyncio.Event()
        self._client_made = False
        _metrics.watch(self)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        queue: str | None = None,
        address: str | None = None,
        prefetch: int = 10,
        auto_ack: bool = False,
        requeue_on_fail: bool = True,
        priority: int = 0,
        container_id: str | None = None,
        tls: TLSConfig | Mapping[str, Any] | bool | None = None,
        retry: RetryPolicy | None = None,
        exchange: str | None = None,
        routing_key: str | None = None,
        broker: str | None = None,
        vhost: str | None = None,
        push_timeout: float = 30.0,
        connect_timeout: float = 10.0,
        close_timeout: float = 10.0,
        settle_timeout: float = 10.0,
        max_message_size: int | None = None,
        reconnect: ReconnectPolicy | bool = True,
        ignore_priority: bool = False,
        allow_plaintext_password: bool = False,
        wire_format: str = "amqp1q",
        pipeline: str | None = None,
        reply_queue: str | None = None,
    ) -> JobQueue:
        """A queue at ``url``; the URL's form picks the adapter.

        - ``amqp://user:pass@host:5672/QUEUE``, ``amqps://...`` — the Proton adapter (RabbitMQ,
          ActiveMQ Artemis, Qpid, any AMQP 1.0 broker);
        - ``Endpoint=sb://NS.servicebus.windows.net/;SharedAccessKeyName=..;SharedAccessKey=..;
          EntityPath=QUEUE`` — the Azure Service Bus adapter;
        - ``memory://QUEUE`` or ``memory://NAMESPACE/QUEUE`` — the in-memory adapter.

        ``queue=`` names a logical queue the adapter maps to the broker's address form;
        ``address=`` is used verbatim. Without either, the URL path (or ``EntityPath``) is the
        queue. ``exchange``/``routing_key`` publish through a RabbitMQ exchange; ``broker``
        overrides broker detection (``"rabbitmq3"``, ``"rabbitmq4"``, ``"artemis"``, ...).
        ``vhost`` (or ``?vhost=NAME`` in an ``amqp://`` URL) names the broker's virtual host:
        sent as ``vhost:NAME`` in the Open frame's hostname, as RabbitMQ reads it, or as
        ``NAME`` itself when ``broker`` names another broker.
        ``reconnect`` (a :class:`~amqp1q.ReconnectPolicy`; ``True`` for the default, ``False``
        for none) re-dials a lost connection and re-attaches consumers (``amqp://``); on
        Service Bus it replaces a failed sender or receiver with a fresh one.
        ``ignore_priority`` lets jobs with a priority go to a broker without priorities (Azure
        Service Bus), the priority dropped; otherwise they fail with UnsupportedFeature.
        A password is not sent over plaintext ``amqp://`` to a host that is not loopback
        unless ``allow_plaintext_password=True`` (InvalidSetting at open otherwise).
        ``wire_format="roadrunner"`` writes jobs in the RoadRunner ``amqp1`` driver's envelope,
        so PHP RoadRunner workers can consume them (``amqp://`` and Service Bus; both formats
        are read whatever it says); ``pipeline`` is the RoadRunner pipeline it names
        (``rr_pipeline``; default: the queue).
        ``reply_queue`` names the queue replies to :meth:`call` come back on, where the broker
        cannot make a temporary one (RabbitMQ 3.x; Service Bus): one per client.
        Raises :class:`~amqp1q.InvalidURL` or :class:`~amqp1q.InvalidSetting` for bad input.
        """
        endpoint = parse_url(url)
        options = adapter_options(
            endpoint,
            queue=queue,
            address=address,
            container_id=container_id,
            tls=tls,
            exchange=exchange,
            routing_key=routing_key,
            broker=broker,
            vhost=vhost,
            connect_timeout=connect_timeout,
            max_message_size=max_message_size,
            reconnect=reconnect,
            ignore_priority=ignore_priority,
            allow_plaintext_password=allow_plaintext_password,
            wire_format=wire_format,
            pipeline=pipeline,
            reply_queue=reply_queue,
        )
        check_positive_int("prefetch", prefetch)  # before any adapter is built
        return cls(
            make_adapter(endpoint, options),
            prefetch=prefetch,
            auto_ack=auto_ack,
            requeue_on_fail=requeue_on_fail,
            priority=priority,
            retry=retry,
            push_timeout=push_timeout,
            connect_timeout=connect_timeout,
            close_timeout=close_timeout,
            settle_timeout=settle_timeout,
        )

    # -- facts ----------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The logical queue name."""
        return self._adapter.queue

    @property
    def address(self) -> str:
        """The broker address the queue maps to."""
        return self._adapter.address

    @property
    def url(self) -> str:
        """Where the queue lives, with every secret masked."""
        return self._adapter.display

    @property
    def adapter(self) -> Adapter:
        return self._adapter

    @property
    def is_open(self) -> bool:
        return self._state is QueueState.OPEN

    def __repr__(self) -> str:
        return f"<JobQueue {self.name!r} at {self.url} {self._state.value}>"

    def stats(self) -> QueueStats:
        """Client-side counts since the queue was opened (see :class:`QueueStats`)."""
        return self._counters.snapshot()

    def on_state_change(self, listener: Callable[[str], None]) -> None:
        """Call ``listener`` with the new :meth:`health` when the connection is lost
        (``reconnecting``), comes back (``connected``) or is given up (``failed``). For
        the memory backend (no connection) it is never called."""
        self._adapter.on_state_change(listener)

    def health(self) -> str:
        """``unopened``, ``connected``, ``reconnecting`` (a lost connection is being
        re-dialled), ``failed`` (re-dialling gave up) or ``closed`` -- for readiness probes --
        or ``at-most-once``: connected, but the broker has been seen sending jobs pre-settled to
        a consumer that asked for at-least-once (a job in a consumer's hands is lost with its
        process)."""
        if self._state is not QueueState.OPEN:
            return "unopened" if self._state is QueueState.UNOPENED else "closed"
        adapter = self._adapter
        state = adapter.state
        if state == "connected" and adapter.at_most_once:
            return "at-most-once"
        return state

    # -- consume --------------------------------------------------------------------------------

    def consume(
        self,
        *,
        prefetch: int | None = None,
        auto_ack: bool | None = None,
        groups: int | None = None,
    ) -> Consumer:
        """A consumer of this queue: ``async for job in queue.consume(): ...``.

        ``prefetch`` and ``auto_ack`` default to the queue's settings. Many consumers may run at
        once; each holds at most ``prefetch`` unsettled jobs.

        ``groups=N`` processes in order (docs/ordering.md): the jobs of one group
        (``Job(group=...)``) are handed out in the order they arrive, each only once the one
        before is settled, and the jobs of up to N groups are in hand at once; a job without a
        group is a group of its own. A retried job keeps its place: its group waits for it. On
        Service Bus the groups are sessions; elsewhere the queue must have one active consumer
        (``amqp1q setup-rabbitmq --single-active-consumer``). Needs ``auto_ack=False``, and a
        ``prefetch`` of at least N for N groups to run at once.
        """
        self._check_open()
        prefetch = self.prefetch if prefetch is None else check_positive_int("prefetch", prefetch)
        auto_ack = self.auto_ack if auto_ack is None else check_bool("auto_ack", auto_ack)
        if groups is None:
            receiver = self._adapter.receiver(auto_ack=auto_ack)
        else:
            groups = check_positive_int("groups", groups)
            if auto_ack:
                raise InvalidSetting(
                    "groups= needs auto_ack=False: a group's next job waits for the one before "
                    "to be settled"
                )
            receiver = self._adapter.group_receiver(
                auto_ack=False, groups=groups
            ) or self._adapter.receiver(auto_ack=False)
        return Consumer(
            self, receiver, self._hooks, prefetch=prefetch, auto_ack=auto_ack, groups=groups
        )

    def _consumer_opened(self, consumer: Consumer) -> None:
        self._consumers.add(consumer)
        self._counters.consumers = len(self._consumers)

    def _consumer_closed(self, consumer: Consumer) -> None:
        self._consumers.discard(consumer)
        self._counters.consumers = len(self._consumers)

    def dead_letter_queue(self) -> JobQueue:
        """A new, unopened queue reading this queue's dead-letter queue (on the same
        connection).

        Jobs read there carry ``dead_letter_reason`` and ``dead_letter_description``, and the
        ``attempt`` they were dead-lettered on::

            async with queue.dead_letter_queue() as dlq:
                async for job in dlq.consume():
                    ...
        """
        return JobQueue(
            self._adapter.dead_letter_adapter(),
            prefetch=self.prefetch,
            auto_ack=False,
            requeue_on_fail=self.requeue_on_fail,
            priority=self.priority,
            retry=self.retry_policy,
            push_timeout=self.push_timeout,
            connect_timeout=self.connect_timeout,
            close_timeout=self.close_timeout,
            settle_timeout=self.settle_timeout,
        )
