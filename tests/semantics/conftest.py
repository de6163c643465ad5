"""Backends the shared queue-semantics suite runs against.

Each backend makes fresh, unopened :class:`JobQueue` objects on queues no other test uses. A new
adapter joins the suite by adding a :class:`Backend` subclass and its name to ``BACKENDS``.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from amqp1q import ConnectFailed, JobQueue

from ..conftest import RABBITMQ_MANAGEMENT_URL, RABBITMQ_URL, unavailable


class Backend:
    """Makes queues for one test. Subclasses override :meth:`make_queue` and the flags."""

    name = "abstract"
    #: Retry delays and ``delay`` are honoured to within this many seconds.
    timing_slack = 0.05
    #: The broker orders jobs by priority (Azure Service Bus has no priority).
    supports_priority = True
    #: A job with a priority is refused at push (UnsupportedFeature) unless
    #: ``ignore_priority=True``, rather than taken and delivered in push order.
    priority_refused = False
    #: A released job goes back in its place, ahead of those behind it. On Service Bus a release
    #: is a re-send then complete (docs/brokers/servicebus.md): the job goes to the back.
    release_keeps_order = True
    #: The broker sends jobs pre-settled whatever the consumer asks for (at most once):
    #: ``health()`` says ``at-most-once`` and one warning is logged.
    at_most_once = False
    #: Jobs a consumer held unsettled when its connection died go to the next consumer.
    keeps_unsettled = True
    #: :meth:`cut_connection` can drop a queue's connection the way a dying process would.
    can_cut_connections = False
    #: Consumers of one queue each get jobs while another holds its whole prefetch.
    consumers_share_a_queue = True
    #: ``depth()`` counts (False: UnsupportedFeature), and counts what is in flight.
    counts = True
    counts_in_flight = True
    #: Its ordered queue (``make_ordered_queue``) takes only jobs with a group (Service Bus
    #: sessions).
    groups_required = False
    #: ``depth()`` counts when asked (False: a sample that lags; the test polls).
    exact_counts = True
    #: ``peek()`` reads without taking (False: UnsupportedFeature).
    peeks = True
    #: ``purge_dead_letters()`` works (False: UnsupportedFeature).
    purges = True
    #: ``receipt.cancel()`` takes a scheduled job back (False: UnsupportedFeature).
    cancels = True
    #: A job whose ``ttl`` ran out is dropped unconsumed.
    expires = True

    def __init__(self) -> None:
        self.run_id = uuid.uuid4().hex[:12]

    def queue_name(self, name: str) -> str:
        return f"amqp1q-test-{self.run_id}-{name}"

    async def make_queue(self, name: str = "jobs", **settings: Any) -> JobQueue:
        raise NotImplementedError

    async def make_ordered_queue(self, name: str = "ordered", **settings: Any) -> JobQueue:
        """A queue for ``consume(groups=N)`` (tests/semantics/test_ordering.py): one with one
        active consumer where the broker has that, a session queue on Service Bus."""
        return await self.make_queue(name, **settings)

    async def cleanup(self) -> None:
        """Called once after the test."""

    def cut_connection(self, queue: JobQueue) -> None:
        """Drop ``queue``'s connection at once, as if its process died (Proton adapter)."""
        queue.adapter.connection.abort()  # type: ignore[attr-defined]


class MemoryBackend(Backend):
    name = "memory"
    timing_slack = 0.02

    async def make_queue(self, name: str = "jobs", **settings: Any) -> JobQueue:
        return JobQueue.from_url(f"memory://{self.run_id}/{name}", **settings)


class RabbitMQBackend(Backend):
    """RabbitMQ 3.x over AMQP 1.0 through the Proton adapter; queues declared per test."""

    name = "rabbitmq"
    timing_slack = 0.1
    can_cut_connections = True
    exact_counts = False  # the management API's statistics, sampled every 5 s
    cancels = False  # a delayed job waits in a shared TTL queue
    _delays_ready = False

    def __init__(self) -> None:
        super().__init__()
        from amqp1q.adapters.proton.rabbitmq_setup import RabbitMQManagement

        self.management = RabbitMQManagement(RABBITMQ_MANAGEMENT_URL)
        self.queues: list[str] = []
        try:
            if not RabbitMQBackend._delays_ready:
                self.management.setup_delays()
                RabbitMQBackend._delays_ready = True
        except ConnectFailed as exc:
            unavailable(f"RabbitMQ is not reachable: {exc} (run scripts/brokers/rabbitmq.sh)")

    async def make_queue(self, name: str = "jobs", **settings: Any) -> JobQueue:
        queue = self.queue_name(name)
        if queue not in self.queues:
            self.management.setup_job_queue(queue)
            self.queues.append(queue)
        return JobQueue.from_url(RABBITMQ_URL, queue=queue, **settings)

    async def make_ordered_queue(self, name: str = "ordered", **settings: Any) -> JobQueue:
        """Declared with ``x-single-active-consumer``, as ``setup-rabbitmq
        --single-active-consumer`` does."""
        queue = self.queue_name(name)
        if queue not in self.queues:
            self.management.setup_job_queue(queue, single_active_consumer=True)
            self.queues.append(queue)
        return JobQueue.from_url(RABBITMQ_URL, queue=queue, **settings)

    async def cleanup(self) -> None:
        for queue in self.queues:
            self.management.delete_queue(queue)
            self.management.delete_queue(f"{queue}.dlq")


class EmbeddedBackend(Backend):
    """The embedded broker (amqp1q.testing) through the Proton adapter, over real TCP."""

    name = "embedded"
    timing_slack = 0.05
    can_cut_connections = True

    def __init__(self) -> None:
        super().__init__()
        from amqp1q.testing import Broker

        self.broker: Any = Broker()
        self._started = False

    async def make_queue(self, name: str = "jobs", **settings: Any) -> JobQueue:
        """A queue on :attr:`broker` (started on first use), by the profile it is detected as."""
        if not self._started:
            await self.broker.start()
            self._started = True
        return JobQueue.from_url(self.broker.url, queue=self.queue_name(name), **settings)

    async def cleanup(self) -> None:
        await self.broker.stop()


class ServiceBusBackend(Backend):
    """The embedded broker emulating Service Bus, through the Service Bus adapter (the Azure
    SDK over real TCP, ``UseDevelopmentEmulator=true``); one broker per test."""

    name = "servicebus"
    timing_slack = 0.05
    supports_priority = False
    priority_refused = True
    release_keeps_order = False
    can_cut_connections = True
    counts_in_flight = False  # a peeked message does not say it is locked
    groups_required = True  # its ordered queue requires sessions: every job needs a group

    def __init__(self) -> None:
        super().__init__()
        try:
            import azure.servicebus.aio  # noqa: F401
        except ImportError:
            unavailable("azure-servicebus is not installed (pip install 'amqp1q[azure,test]')")
        from amqp1q.testing import Broker

        self.broker = Broker(servicebus=True)
        self._started = False

    async def make_queue(self, name: str = "jobs", **settings: Any) -> JobQueue:
        if not self._started:
            await self.broker.start()
            self._started = True
        url = self.broker.servicebus_connection_string(self.queue_name(name))
        return JobQueue.from_url(url, **settings)

    async def make_ordered_queue(self, name: str = "ordered", **settings: Any) -> JobQueue:
        """A session queue (``requires_session=True``): the groups are sessions."""
        if not self._started:
            await self.broker.start()
            self._started = True
        self.broker.declare(self.queue_name(name), requires_session=True)
        return await self.make_queue(name, **settings)

    def cut_connection(self, queue: JobQueue) -> None:
        """Drop every connection at the broker (the SDK opens one per sender and receiver)."""
        self.broker.drop_connections()

    async def cleanup(self) -> None:
        await self.broker.stop()


class QpidBackend(EmbeddedBackend):
    """One of Qpid Proton's example brokers (scripts/brokers/qpid.sh builds them) through the
    Proton adapter, profile ``generic`` as detected; one broker process per test. Neither has
    priorities; each drops whatever is not accepted, so a release is a re-publish (to the
    back of the queue) and a consumer that dies loses what it held (docs/brokers/qpid.md)."""

    kind = "cpp"
    timing_slack = 0.05
    supports_priority = False
    release_keeps_order = False
    keeps_unsettled = False
    can_cut_connections = True
    counts = False
    peeks = False  # profile generic: amqp1q does not browse a broker it cannot name
    purges = False
    cancels = False
    expires = False

    def __init__(self) -> None:
        Backend.__init__(self)
        from ..qpid import QpidBroker

        self.broker = QpidBroker(self.kind)
        self._started = False

    async def cleanup(self) -> None:
        self.broker.stop()


class QpidCppBackend(QpidBackend):
    """broker.cpp's ``Queue::tryToSend`` stops at the first subscriber without credit (its
    ``else`` branch never moves ``current_`` on), so a consumer holding its whole prefetch
    can starve the others of a queue."""

    name = "qpid-cpp"
    kind = "cpp"
    consumers_share_a_queue = False


class QpidCBackend(QpidBackend):
    """The C example broker sends every delivery pre-settled: at most once."""

    name = "qpid-c"
    kind = "c"
    at_most_once = True


BACKENDS: dict[str, type[Backend]] = {
    "memory": MemoryBackend,
    "rabbitmq": RabbitMQBackend,
    "embedded": EmbeddedBackend,
    "servicebus": ServiceBusBackend,
    "qpid-c": QpidCBackend,
    "qpid-cpp": QpidCppBackend,
}

#: Tests that need a capability some backends lack: test name -> (Backend flag, why it is off).
REQUIRES: dict[str, tuple[str, str]] = {
    "test_jobs_held_by_a_consumer_whose_connection_dies": (
        "can_cut_connections",
        "the suite cannot cut this backend's connection",
    ),
}


@pytest.fixture(params=sorted(BACKENDS))
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    cls = BACKENDS[request.param]
    needed = REQUIRES.get(request.function.__name__)
    if needed is not None and not getattr(cls, needed[0]):
        pytest.skip(f"{cls.name}: {needed[1]} ({needed[0]} = False)")
    instance = cls()
    try:
        yield instance
    finally:
        await instance.cleanup()
