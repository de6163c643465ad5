"""The Service Bus adapter against the embedded broker's Service Bus emulation (real TCP, the
Azure SDK on the wire): batching, limits, delay, credentials, lock renewal, interop."""

from __future__ import annotations

import asyncio
import datetime
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from amqp1q import (
    AuthenticationFailed,
    Job,
    JobQueue,
    JobTooLarge,
    LockLost,
    Outcome,
    UnsupportedFeature,
)
from amqp1q.testing import Broker

servicebus = pytest.importorskip("azure.servicebus")
from azure.core.credentials import AccessToken  # noqa: E402
from azure.servicebus.aio import ServiceBusClient  # noqa: E402

from amqp1q.adapters.servicebus import ServiceBusAdapter  # noqa: E402

pytestmark = [pytest.mark.anyio]

KEY_NAME = "RootManageSharedAccessKey"


@pytest.fixture
async def broker() -> AsyncIterator[Broker]:
    async with Broker(servicebus=True) as broker:
        yield broker


def _queue() -> str:
    return f"sb-{uuid.uuid4().hex[:8]}"


def _jobs(broker: Broker, queue: str, **settings: Any) -> JobQueue:
    return JobQueue.from_url(broker.servicebus_connection_string(queue), **settings)


async def _sdk_send(broker: Broker, queue: str, *messages: Any) -> None:
    """Send ``messages`` (``ServiceBusMessage``) with azure-servicebus itself."""
    async with (
        ServiceBusClient.from_connection_string(
            broker.servicebus_connection_string(), retry_total=0
        ) as client,
        client.get_queue_sender(queue) as sender,
    ):
        await sender.send_messages(list(messages))


async def _one(queue: JobQueue, timeout: float = 5.0) -> Any:
    async with queue.consume() as consumer:
        job = await consumer.receive(timeout=timeout)
        assert job is not None, "no job arrived"
        await job.ack()
        return job


# -- push ----------------------------------------------------------------------------------------


async def test_push_many_goes_out_in_batches_under_the_size_limit(broker: Broker) -> None:
    name = _queue()
    jobs = [Job("n", {"i": i, "pad": "x" * 1000}) for i in range(600)]  # ~600 KB: > 2 batches
    async with _jobs(broker, name) as queue:
        receipts = await queue.push_many(jobs)
        assert [r.job_id for r in receipts] == [j.id for j in jobs]
        assert len(broker.queue(name)) == 600
        async with queue.consume(prefetch=100) as consumer:
            seen = []
            while len(seen) < 600:
                job = await consumer.receive(timeout=5)
                assert job is not None
                seen.append(job.payload["i"])
                await job.ack()
    # Service Bus promises no strict order without sessions (the SDK may hand a message it
    # pulled late after later ones): every job once is the contract here.
    assert sorted(seen) == list(range(600))
    assert len(broker.queue(name)) == 0


async def test_a_job_over_the_message_size_limit_is_refused_alone() -> None:
    name = _queue()
    async with Broker(servicebus=True, max_message_size=64 * 1024) as broker:
        async with _jobs(broker, name) as queue:
            small, big = Job("ok", b"x" * 1000), Job("big", b"x" * 100_000)
            results = await queue.push_many([small, big], return_exceptions=True)
            assert results[0].job_id == small.id  # type: ignore[union-attr]
            assert isinstance(results[1], JobTooLarge)
            assert results[1].job_id == big.id
        assert len(broker.queue(name)) == 1


async def test_priority_is_refused_unless_ignored(broker: Broker) -> None:
    name = _queue()
    async with _jobs(broker, name) as queue:
        with pytest.raises(UnsupportedFeature, match="priority"):
            await queue.push(Job("p", priority=5))
        await queue.push(Job("p", priority=0))
    adapter = ServiceBusAdapter.from_connection_string(
        broker.servicebus_connection_string(name), ignore_priority=True
    )
    async with JobQueue(adapter, priority=7) as queue:
        await queue.push(Job("p", "dropped priority"))
    url = broker.servicebus_connection_string(name)
    async with JobQueue.from_url(url, ignore_priority=True) as queue:
        await queue.push(Job("p", "dropped too", priority=9))
    assert len(broker.queue(name)) == 3


async def test_a_delayed_job_is_scheduled_and_arrives_no_earlier(broker: Broker) -> None:
    name = _queue()
    async with _jobs(broker, name) as queue:
        started = time.monotonic()
        receipt = await queue.push(Job("later", delay=1.0))
        assert receipt.sequence_number is not None
        assert broker.queue(name).scheduled_count == 1
        job = await _one(queue)
        assert job.id == receipt.job_id
        assert time.monotonic() - started >= 0.95


async def test_the_dead_letter_queue_takes_no_pushes(broker: Broker) -> None:
    async with _jobs(broker, _queue()) as queue, queue.dead_letter_queue() as dlq:
        with pytest.raises(UnsupportedFeature):
            await dlq.push(Job("x"))


# -- credentials ---------------------------------------------------------------------------------


async def test_a_wrong_key_is_authentication_failed_and_the_key_never_shows() -> None:
    async with Broker(servicebus=True, users={KEY_NAME: "s3cret"}) as broker:
        good = broker.servicebus_connection_string("jobs")
        bad = good.replace("SharedAccessKey=s3cret", "SharedAccessKey=wrong-key")
        # retry_total=0: the SDK retries a refused token like any other error
        queue = JobQueue(ServiceBusAdapter.from_connection_string(bad, retry_total=0))
        with pytest.raises(AuthenticationFailed) as info:
            await queue.open()
        assert "wrong-key" not in str(info.value)
        async with JobQueue.from_url(good) as ok:
            await ok.push(Job("signed"))


class _AsyncCredential:
    """An AsyncTokenCredential (as azure-identity's aio credentials are): the emulator takes
    any JWT at $cbs, so Azure AD's code path runs over the wire."""

    def __init__(self) -> None:
        self.calls = 0

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.calls += 1
        return AccessToken("aad-token", int(time.time()) + 3600)

    async def close(self) -> None:
        pass


class _SyncCredential:
    """A synchronous azure-core TokenCredential."""

    def __init__(self) -> None:
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes.append(scopes)
        return AccessToken("aad-token", int(time.time()) + 3600)


@pytest.mark.parametrize("credential_type", [_AsyncCredential, _SyncCredential])
async def test_azure_ad_credentials(broker: Broker, credential_type: type[Any]) -> None:
    name = _queue()
    credential = credential_type()
    adapter = ServiceBusAdapter.from_credential(
        f"{broker.host}:{broker.port}", credential, name, emulator=True
    )
    async with JobQueue(adapter) as queue:
        pushed = await queue.push(Job("aad", {"ok": True}))
        job = await _one(queue)
        assert (job.id, job.payload) == (pushed.job_id, {"ok": True})
    if isinstance(credential, _SyncCredential):
        assert credential.scopes
        assert "servicebus.azure.net" in credential.scopes[0][0]
    else:
        assert credential.calls >= 1
    assert broker.servicebus.tokens_accepted >= 2


# -- mapping over the wire -----------------------------------------------------------------------


async def test_properties_from_the_sdk_arrive_as_text_with_trace_context(broker: Broker) -> None:
    name = _queue()
    await _sdk_send(
        broker,
        name,
        servicebus.ServiceBusMessage(
            b"{}",
            message_id="m-1",
            subject="traced",
            content_type="application/json",
            application_properties={
                "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                "Diagnostic-Id": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                "n": 42,
            },
        ),
    )
    async with _jobs(broker, name) as queue:
        job = await _one(queue)
    assert (job.id, job.name, job.payload, job.attempt) == ("m-1", "traced", {}, 1)
    assert job.headers["traceparent"].startswith("00-0af7651916cd43dd")
    assert job.headers["Diagnostic-Id"] == job.headers["traceparent"]
    assert job.headers["n"] == "42"


# -- interop with the Proton adapter (SAS key over SASL PLAIN) -----------------------------------


def _proton_url(broker: Broker) -> str:
    return f"amqp://{KEY_NAME}:amqp1q-test-key@{broker.host}:{broker.port}"


async def test_pushed_through_service_bus_consumed_through_proton(broker: Broker) -> None:
    name = _queue()
    sent = Job("interop", {"to": "a@b.c"}, headers={"tenant": "a", "traceparent": "00-1-2-01"})
    async with _jobs(broker, name) as queue:
        await queue.push(sent)
    async with JobQueue.from_url(_proton_url(broker), queue=name) as queue:
        job = await _one(queue)
    assert (job.id, job.name, job.payload, dict(job.headers), job.attempt) == (
        sent.id,
        "interop",
        {"to": "a@b.c"},
        {"tenant": "a", "traceparent": "00-1-2-01"},
        1,
    )


async def test_pushed_through_proton_consumed_through_service_bus(broker: Broker) -> None:
    name = _queue()
    sent = Job("interop", b"\x00bytes\xff", headers={"tenant": "b"})
    async with JobQueue.from_url(_proton_url(broker), queue=name) as queue:
        await queue.push(sent)
    async with _jobs(broker, name) as queue:
        job = await _one(queue)
    assert (job.id, job.name, job.body, dict(job.headers), job.attempt) == (
        sent.id,
        "interop",
        b"\x00bytes\xff",
        {"tenant": "b"},
        1,
    )


async def test_an_attempt_counted_by_service_bus_reads_the_same_through_proton(
    broker: Broker,
) -> None:
    name = _queue()
    async with _jobs(broker, name) as queue:
        await queue.push(Job("again"))
        async with queue.consume() as consumer:
            job = await consumer.receive(timeout=5)
            assert job is not None
            await job.retry(delay=0.1)  # a re-sent copy carrying attempt 2
    async with JobQueue.from_url(_proton_url(broker), queue=name) as queue:
        job = await _one(queue)
    assert job.attempt == 2


# -- lock renewal ---------------------------------------------------------------------------------


async def test_a_handler_running_three_lock_durations_completes_without_lock_lost() -> None:
    name = _queue()
    async with Broker(servicebus=True, lock_duration=1) as broker:
        async with _jobs(broker, name) as queue:
            await queue.push(Job("slow"))
            async with queue.consume() as consumer:
                job = await consumer.receive(timeout=5)
                assert job is not None
                async with job.process(reraise=True):
                    await anyio.sleep(3.0)  # three times the lock duration
                assert job.outcome is Outcome.ACK
                assert await consumer.receive(timeout=1.5) is None  # not redelivered
        await asyncio.sleep(0.2)
        assert len(broker.queue(name)) == 0


async def test_a_refused_renewal_cancels_the_handler_with_lock_lost_and_the_job_returns() -> None:
    name = _queue()
    async with Broker(servicebus=True, lock_duration=1) as broker:
        async with _jobs(broker, name) as queue:
            pushed = await queue.push(Job("doomed"))
            async with queue.consume() as consumer:
                job = await consumer.receive(timeout=5)
                assert job is not None
                broker.locks.clear()  # the broker forgets every lock: renewals are refused
                started = time.monotonic()
                with pytest.raises(LockLost) as info:
                    async with job.process():  # cancelled when the lock is lost
                        await anyio.sleep(30)
                assert time.monotonic() - started < 5
                assert info.value.job_id == pushed.job_id
            # The consumer's link is gone: the broker takes the job back (counted).
            async with queue.consume() as again:
                redelivered = await again.receive(timeout=5)
                assert redelivered is not None
                assert (redelivered.id, redelivered.attempt) == (pushed.job_id, 2)
                await redelivered.ack()


async def test_a_job_held_past_the_renewal_budget_loses_its_lock() -> None:
    name = _queue()
    async with Broker(servicebus=True, lock_duration=1) as broker:
        adapter = ServiceBusAdapter.from_connection_string(
            broker.servicebus_connection_string(name), max_lock_renewal=1.5
        )
        async with JobQueue(adapter) as queue:
            pushed = await queue.push(Job("forgotten"))
            async with queue.consume(prefetch=1) as consumer:
                job = await consumer.receive(timeout=5)
                assert job is not None
                await anyio.sleep(3.5)  # renewed until 1.5 s, then the lock runs out
                with pytest.raises(LockLost):
                    await job.ack()
                again = await consumer.receive(timeout=5)
                assert again is not None
                assert (again.id, again.attempt) == (pushed.job_id, 2)
                await again.ack()


async def test_release_counts_no_attempt_and_keeps_the_headers(broker: Broker) -> None:
    name = _queue()
    async with _jobs(broker, name) as queue:
        pushed = await queue.push(Job("back", {"k": 1}, headers={"h": "v"}))
        async with queue.consume() as consumer:
            for _ in range(3):
                job = await consumer.receive(timeout=5)
                assert job is not None
                assert (job.id, job.attempt, dict(job.headers)) == (pushed.job_id, 1, {"h": "v"})
                await job.release()
            job = await consumer.receive(timeout=5)
            assert job is not None
            await job.ack()


async def test_a_scheduled_retry_reports_when_it_was_enqueued(broker: Broker) -> None:
    name = _queue()
    async with _jobs(broker, name) as queue:
        await queue.push(Job("r"))
        async with queue.consume() as consumer:
            job = await consumer.receive(timeout=5)
            assert job is not None
            before = datetime.datetime.now(datetime.timezone.utc)
            await job.retry(delay=0.5)
            again = await consumer.receive(timeout=5)
            assert again is not None
            assert again.attempt == 2
            assert again.enqueued_at is not None
            assert again.enqueued_at >= before
            await again.ack()


async def test_peeks_share_one_receiver_per_sub_queue_and_survive_a_drop(broker: Broker) -> None:
    async with _jobs(broker, _queue()) as queue:
        await queue.push(Job("kept", {"n": 1}))
        before = broker.connection_count
        for _ in range(3):
            assert [p.name for p in await queue.peek(5)] == ["kept"]
            assert (await queue.depth()).ready == 1
        # one receiver for the queue, one for its dead-letter queue, kept for the next call
        assert broker.connection_count == before + 2
        broker.drop_connections()
        # the kept receivers failed: each is closed, and a fresh one peeks instead
        assert [p.name for p in await queue.peek(5)] == ["kept"]
        assert (await queue.depth()).dead_lettered == 0
    await asyncio.sleep(0.1)
    assert broker.connection_count == 0  # closing the queue closed them
