"""OpenTelemetry metrics: exact counts of jobs sent, consumed and settled by outcome, process
durations, and jobs in flight going back to zero whichever way a job leaves the hand — on the
in-memory adapter and on the embedded broker.

As in test_tracing.py, the SDK's meter provider is given to amqp1q for the test only (the global
provider can be set once per process); one test sets it globally in a child process."""

from __future__ import annotations

import asyncio
import json
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, Metric

from amqp1q import (
    DeliveryStale,
    Job,
    JobQueue,
    LockLost,
    Outcome,
    QueueStateError,
    ReconnectPolicy,
    _metrics,
)
from amqp1q.testing import Broker

from ..conftest import unavailable
from ..semantics.conftest import Backend, EmbeddedBackend, MemoryBackend
from ..semantics.helpers import take, take_one

pytestmark = pytest.mark.anyio

SENT = "messaging.client.sent.messages"
CONSUMED = "messaging.client.consumed.messages"
OPERATION = "messaging.client.operation.duration"
PROCESS = "messaging.process.duration"
SETTLED = "amqp1q.settled.messages"
IN_FLIGHT = "amqp1q.in_flight"

#: In a ``where``: the attribute must be absent.
ABSENT = object()


class Readings:
    """What the SDK collected, summed over the data points that match."""

    def __init__(self, reader: InMemoryMetricReader) -> None:
        self.reader = reader

    def metric(self, name: str) -> Metric | None:
        data = self.reader.get_metrics_data()
        for resource in data.resource_metrics if data is not None else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        return metric
        return None

    def points(self, name: str, where: Mapping[str, Any] | None = None) -> list[Any]:
        metric = self.metric(name)
        if metric is None:
            return []
        return [
            point
            for point in metric.data.data_points
            if all(
                (key not in (point.attributes or {}))
                if value is ABSENT
                else (point.attributes or {}).get(key) == value
                for key, value in (where or {}).items()
            )
        ]

    def total(self, name: str, where: Mapping[str, Any] | None = None) -> int:
        """A counter's sum, or a histogram's count of measurements."""
        return sum(
            getattr(point, "count", None) or point.value for point in self.points(name, where)
        )

    def in_flight(self, queue: JobQueue) -> int:
        points = self.points(IN_FLIGHT, {"messaging.destination.name": queue.name})
        assert points, f"no {IN_FLIGHT} reported for {queue.name!r}"
        return int(sum(point.value for point in points))


@pytest.fixture
def readings(monkeypatch: pytest.MonkeyPatch) -> Iterator[Readings]:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    instruments = _metrics._Instruments(provider.get_meter("amqp1q"))
    monkeypatch.setattr(_metrics, "_instruments", instruments)
    monkeypatch.setattr(_metrics, "active", lambda: True)
    yield Readings(reader)
    provider.shutdown()


@pytest.fixture(params=["memory", "embedded"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    instance: Backend = MemoryBackend() if request.param == "memory" else EmbeddedBackend()
    try:
        yield instance
    finally:
        await instance.cleanup()


def _where(queue: JobQueue, **more: Any) -> dict[str, Any]:
    return {"messaging.destination.name": queue.name, **more}


async def test_counts_sent_consumed_settled_by_outcome_and_processed(
    backend: Backend, readings: Readings
) -> None:
    queue = await backend.make_queue(requeue_on_fail=False)
    async with queue:
        await queue.push(Job("one", 1))
        await queue.push_many([Job("many", n) for n in range(5)])
        async with queue.consume(prefetch=10) as consumer:
            ack, retry, release, reject, failing, processed = await take(consumer, 6)
            assert readings.in_flight(queue) == 6
            await ack.ack()
            await retry.retry()
            await release.release()
            await reject.reject("no good")
            async with failing.process():  # requeue_on_fail=False: dead-lettered by policy
                raise RuntimeError("boom")
            async with processed.process():
                pass
            assert readings.in_flight(queue) == 0

            where = _where(queue)
            assert readings.total(SENT, {**where, "error.type": ABSENT}) == 6
            assert readings.total(SENT, {**where, "messaging.operation.name": "send"}) == 6
            sends = {**where, "messaging.operation.type": "send", "error.type": ABSENT}
            assert readings.total(OPERATION, sends) == 2  # one per push / push_many call
            assert readings.total(CONSUMED, {**where, "messaging.operation.name": "receive"}) == 6
            outcomes = {"ack": 2, "retry": 1, "release": 1, "reject": 1, "dead_letter": 1}
            for outcome, count in outcomes.items():
                settled = {**where, "amqp1q.outcome": outcome, "error.type": ABSENT}
                assert readings.total(SETTLED, settled) == count, outcome
                settles = {**where, "messaging.operation.type": "settle"}
                assert readings.total(OPERATION, {**settles, "messaging.operation.name": outcome})
            assert readings.total(SETTLED, where) == 6
            assert readings.total(OPERATION, {**where, "messaging.operation.type": "settle"}) == 6
            assert readings.total(PROCESS, {**where, "error.type": ABSENT}) == 1
            assert readings.total(PROCESS, {**where, "error.type": "RuntimeError"}) == 1
            assert failing.outcome is Outcome.REJECT

    for name, unit in ((SENT, "{message}"), (PROCESS, "s"), (OPERATION, "s")):
        metric = readings.metric(name)
        assert metric is not None
        assert metric.unit == unit
    (point,) = readings.points(PROCESS, {"error.type": ABSENT})
    assert tuple(point.explicit_bounds) == _metrics.DURATION_BUCKETS
    attributes = dict(point.attributes)
    assert attributes["messaging.operation.name"] == "process"
    if isinstance(backend, EmbeddedBackend):
        assert attributes["messaging.system"] == "amqp"
        assert attributes["server.address"] == "127.0.0.1"
        assert attributes["server.port"] == backend.broker.port
    else:
        assert attributes["messaging.system"] == "amqp1q"
        assert "server.address" not in attributes


async def test_a_refused_push_is_counted_with_its_error_type(
    backend: Backend, readings: Readings
) -> None:
    if isinstance(backend, EmbeddedBackend):
        backend.broker.max_message_size = 512  # the broker's limit, told at attach
        queue = await backend.make_queue()
    else:
        queue = await backend.make_queue(max_message_size=512)
    async with queue:
        results = await queue.push_many(
            [Job("small", b"x"), Job("big", b"x" * 2000), Job("small", b"y")],
            return_exceptions=True,
        )
        assert [type(result).__name__ for result in results] == [
            "Receipt",
            "JobTooLarge",
            "Receipt",
        ]
        where = _where(queue)
        assert readings.total(SENT, {**where, "error.type": ABSENT}) == 2
        assert readings.total(SENT, {**where, "error.type": "JobTooLarge"}) == 1
        assert readings.total(OPERATION, {**where, "error.type": "JobTooLarge"}) == 1


async def test_a_cancelled_handler_releases_its_job_and_leaves_nothing_in_flight(
    backend: Backend, readings: Readings
) -> None:
    queue = await backend.make_queue()
    async with queue:
        await queue.push(Job("slow"))
        async with queue.consume() as consumer:
            job = await take_one(consumer)
            entered = asyncio.Event()

            async def handle() -> None:
                async with job.process():
                    entered.set()
                    await asyncio.sleep(30)

            task = asyncio.create_task(handle())
            await asyncio.wait_for(entered.wait(), 5)
            assert readings.in_flight(queue) == 1
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert job.outcome is Outcome.RELEASE
            assert readings.in_flight(queue) == 0
            where = _where(queue, **{"error.type": ABSENT})
            assert readings.total(SETTLED, {**where, "amqp1q.outcome": "release"}) == 1
            assert readings.total(SETTLED, _where(queue)) == 1
            assert readings.total(PROCESS, _where(queue, **{"error.type": "CancelledError"})) == 1


async def test_closing_a_consumer_with_jobs_in_hand_leaves_nothing_in_flight(
    backend: Backend, readings: Readings
) -> None:
    queue = await backend.make_queue()
    async with queue:
        await queue.push_many([Job("held", n) for n in range(3)])
        consumer = queue.consume(prefetch=3)
        jobs = await take(consumer, 3)
        await jobs[0].ack()
        assert readings.in_flight(queue) == 2
        await consumer.close(grace=0)
        assert readings.in_flight(queue) == 0
        # Settling after the close is counted once (with error.type where the adapter refuses
        # it: memory says DeliveryStale), and in-flight does not go below zero.
        try:
            await jobs[1].ack()
        except (DeliveryStale, QueueStateError) as exc:
            late: Any = type(exc).__name__
        else:
            late = ABSENT
        assert readings.in_flight(queue) == 0
        acks = _where(queue, **{"amqp1q.outcome": "ack"})
        assert readings.total(SETTLED, acks) == 2
        assert readings.total(SETTLED, {**acks, "error.type": late}) == (2 if late is ABSENT else 1)
        if isinstance(backend, MemoryBackend):
            assert late == "DeliveryStale"
        assert readings.total(CONSUMED, _where(queue)) == 3


async def test_a_delivery_stale_after_a_dropped_connection_leaves_nothing_in_flight(
    readings: Readings,
) -> None:
    fast = ReconnectPolicy(initial_delay=0.05, max_delay=0.2)
    async with Broker() as broker:
        async with JobQueue.from_url(broker.url, queue="stale", reconnect=fast) as queue:
            await queue.push(Job("n"))
            async with queue.consume(prefetch=1) as consumer:
                job = await take_one(consumer)
                assert readings.in_flight(queue) == 1
                assert broker.drop_connections() == 1
                await asyncio.sleep(0.2)  # the client sees the drop
                with pytest.raises(DeliveryStale):
                    await job.ack()
                assert readings.in_flight(queue) == 0
                stale = _where(queue, **{"error.type": "DeliveryStale"})
                assert readings.total(SETTLED, {**stale, "amqp1q.outcome": "ack"}) == 1
                assert readings.total(OPERATION, {**stale, "messaging.operation.name": "ack"}) == 1
                again = await take_one(consumer)  # redelivered on the new connection
                await again.ack()
                assert readings.in_flight(queue) == 0
                assert readings.total(SETTLED, _where(queue, **{"error.type": ABSENT})) == 1


async def test_a_lost_lock_releases_the_job_and_leaves_nothing_in_flight(
    readings: Readings,
) -> None:
    try:
        import azure.servicebus.aio  # noqa: F401
    except ImportError:
        unavailable("azure-servicebus is not installed (pip install 'amqp1q[azure,test]')")
    async with Broker(servicebus=True, lock_duration=1) as broker:
        url = broker.servicebus_connection_string("locked")
        async with JobQueue.from_url(url) as queue:
            await queue.push(Job("doomed"))
            async with queue.consume() as consumer:
                job = await take_one(consumer)
                assert readings.in_flight(queue) == 1
                broker.locks.clear()  # the broker forgets every lock: renewals are refused
                with pytest.raises(LockLost):
                    async with job.process():  # cancelled when the lock is lost
                        await asyncio.sleep(30)
                assert job.outcome is Outcome.RELEASE
                assert readings.in_flight(queue) == 0
                lost = _where(queue, **{"error.type": "LockLost"})
                assert readings.total(SETTLED, {**lost, "amqp1q.outcome": "release"}) == 1
                assert readings.total(SETTLED, _where(queue)) == 1
                assert readings.total(PROCESS, lost) == 1


async def test_auto_ack_jobs_are_consumed_but_never_in_flight(readings: Readings) -> None:
    queue = await MemoryBackend().make_queue(auto_ack=True)
    async with queue:
        await queue.push_many([Job("n", n) for n in range(3)])
        async with queue.consume() as consumer:
            await take(consumer, 3)
            assert readings.in_flight(queue) == 0
        assert readings.total(CONSUMED, _where(queue)) == 3
        assert readings.total(SETTLED, _where(queue)) == 0


async def test_without_an_sdk_nothing_is_recorded() -> None:
    assert not _metrics.active()
    assert _metrics.start() is None
    async with JobQueue.from_url("memory://plain-metrics") as queue:
        await queue.push(Job("n"))
        async with queue.consume() as consumer:
            job = await take_one(consumer)
            async with job.process():
                pass
        assert queue.stats().acked == 1


_GLOBAL_PROVIDER = textwrap.dedent(
    """
    import asyncio, json
    from amqp1q import Job, JobQueue  # instruments made before the provider exists
    from opentelemetry import metrics
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))

    def totals():
        found = {}
        for resource in reader.get_metrics_data().resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    found[metric.name] = sum(
                        getattr(p, "count", None) or p.value for p in metric.data.data_points
                    )
        return found

    async def main():
        async with JobQueue.from_url("memory://global") as queue:
            await queue.push_many([Job("n", n) for n in range(4)])
            async with queue.consume() as consumer:
                jobs = [await consumer.receive() for _ in range(4)]
                held = totals()["amqp1q.in_flight"]
                for job in jobs:
                    async with job.process():
                        pass
                print(json.dumps({"held": held, **totals()}))

    asyncio.run(main())
    """
)


async def test_a_global_provider_set_after_import_receives_the_metrics() -> None:
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _GLOBAL_PROVIDER,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(child.communicate(), 30)
    assert child.returncode == 0, err.decode()
    found = json.loads(out)
    assert found["held"] == 4
    assert found[SENT] == 4
    assert found[CONSUMED] == 4
    assert found[SETTLED] == 4
    assert found[PROCESS] == 4
    assert found[OPERATION] == 5  # one push_many, four settlements
    assert found[IN_FLIGHT] == 0
