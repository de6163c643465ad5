"""The embedded broker's Service Bus emulation, driven by azure-servicebus's asyncio client.

Each test starts ``Broker(servicebus=True)`` and connects with the SDK's development-emulator
connection string (plain AMQP on the broker's port). SDK retries are off (``retry_total=0``) so a
failure shows at once instead of after backoffs.
"""

from __future__ import annotations

import asyncio
import datetime
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from amqp1q import AuthenticationFailed, Job, JobQueue
from amqp1q.testing import Broker

servicebus = pytest.importorskip("azure.servicebus")
servicebus_aio = pytest.importorskip("azure.servicebus.aio")

ServiceBusMessage = servicebus.ServiceBusMessage
ServiceBusSubQueue = servicebus.ServiceBusSubQueue
ServiceBusClient = servicebus_aio.ServiceBusClient

pytestmark = [pytest.mark.anyio]

KEY_NAME = "RootManageSharedAccessKey"


@pytest.fixture
async def broker() -> AsyncIterator[Broker]:
    async with Broker(servicebus=True) as broker:
        yield broker


def _client(broker: Broker, **kwargs: Any) -> Any:
    return ServiceBusClient.from_connection_string(
        broker.servicebus_connection_string(), retry_total=0, **kwargs
    )


def _queue() -> str:
    return f"sb-{uuid.uuid4().hex[:8]}"


async def _receive(receiver: Any, count: int, wait: float = 5.0) -> list[Any]:
    """Up to ``count`` messages, asking until they are there or ``wait`` seconds pass."""
    got: list[Any] = []
    deadline = time.monotonic() + wait
    while len(got) < count and time.monotonic() < deadline:
        got += await receiver.receive_messages(
            max_message_count=count - len(got), max_wait_time=max(0.2, deadline - time.monotonic())
        )
    return got


async def test_a_thousand_batched_messages_received_in_peek_lock_and_completed(
    broker: Broker,
) -> None:
    queue = _queue()
    async with _client(broker) as client:
        async with client.get_queue_sender(queue) as sender:
            sent = batches = 0
            while sent < 1000:
                batch = await sender.create_message_batch(max_size_in_bytes=16 * 1024)
                while sent < 1000:
                    try:
                        batch.add_message(
                            ServiceBusMessage(f"job-{sent}", application_properties={"n": sent})
                        )
                    except ValueError:  # the batch is full
                        break
                    sent += 1
                await sender.send_messages(batch)
                batches += 1
        assert batches > 1  # several batches, each unpacked into its messages
        assert len(broker.queue(queue)) == 1000

        bodies: list[str] = []
        sequence_numbers: set[int] = set()
        async with client.get_queue_receiver(queue, prefetch_count=50) as receiver:
            while len(bodies) < 1000:
                messages = await receiver.receive_messages(max_message_count=50, max_wait_time=5)
                assert messages, f"stalled after {len(bodies)} messages"
                for message in messages:
                    assert message.delivery_count == 0
                    assert isinstance(message.lock_token, uuid.UUID)
                    assert message.locked_until_utc > message.enqueued_time_utc
                    bodies.append(str(message))
                    sequence_numbers.add(message.sequence_number)
                    await receiver.complete_message(message)
    assert sorted(bodies) == sorted(f"job-{n}" for n in range(1000))
    assert len(sequence_numbers) == 1000
    assert len(broker.queue(queue)) == 0  # every completion reached the broker


async def test_abandon_redelivers_with_the_delivery_count_one_higher(broker: Broker) -> None:
    queue = _queue()
    async with _client(broker) as client:
        async with client.get_queue_sender(queue) as sender:
            await sender.send_messages(ServiceBusMessage("again", message_id="m-1"))
        async with client.get_queue_receiver(queue) as receiver:
            [first] = await _receive(receiver, 1)
            assert first.delivery_count == 0
            await receiver.abandon_message(first)
            [second] = await _receive(receiver, 1)
            assert (second.message_id, str(second)) == ("m-1", "again")
            assert second.delivery_count == first.delivery_count + 1
            assert second.lock_token != first.lock_token
            await receiver.complete_message(second)
    assert len(broker.queue(queue)) == 0


async def test_dead_lettered_message_is_read_from_the_dead_letter_subqueue(
    broker: Broker,
) -> None:
    queue = _queue()
    async with _client(broker) as client:
        async with client.get_queue_sender(queue) as sender:
            await sender.send_messages(
                ServiceBusMessage("poison", application_properties={"k": "v"})
            )
        async with client.get_queue_receiver(queue) as receiver:
            [message] = await _receive(receiver, 1)
            await receiver.dead_letter_message(
                message, reason="bad-input", error_description="field x is missing"
            )
        assert len(broker.queue(queue)) == 0
        async with client.get_queue_receiver(
            queue, sub_queue=ServiceBusSubQueue.DEAD_LETTER
        ) as dead_letters:
            [dead] = await _receive(dead_letters, 1)
            assert str(dead) == "poison"
            assert dead.dead_letter_reason == "bad-input"
            assert dead.dead_letter_error_description == "field x is missing"
            assert dead.application_properties[b"k"] == b"v"
            await dead_letters.complete_message(dead)
    assert len(broker.queue(queue + "/$deadletterqueue")) == 0


async def test_a_scheduled_message_arrives_no_earlier_and_a_cancelled_one_never(
    broker: Broker,
) -> None:
    queue = _queue()
    async with _client(broker) as client:
        due = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=2)
        async with client.get_queue_sender(queue) as sender:
            [kept] = await sender.schedule_messages(ServiceBusMessage("later"), due)
            [dropped] = await sender.schedule_messages(ServiceBusMessage("never"), due)
            assert kept != dropped
            await sender.cancel_scheduled_messages(dropped)
        assert broker.queue(queue).scheduled_count == 1
        async with client.get_queue_receiver(queue) as receiver:
            messages = await _receive(receiver, 2, wait=4)
            arrived = datetime.datetime.now(datetime.timezone.utc)
            assert [str(m) for m in messages] == ["later"]
            assert messages[0].sequence_number == kept
            assert arrived >= due
            assert messages[0].enqueued_time_utc >= due - datetime.timedelta(milliseconds=1)
            assert messages[0].scheduled_enqueue_time_utc == due.replace(
                microsecond=due.microsecond // 1000 * 1000
            )
            await receiver.complete_message(messages[0])


async def test_renew_message_lock_moves_locked_until_forward(broker: Broker) -> None:
    queue = _queue()
    async with _client(broker) as client:
        async with client.get_queue_sender(queue) as sender:
            await sender.send_messages(ServiceBusMessage("long job"))
        async with client.get_queue_receiver(queue) as receiver:
            [message] = await _receive(receiver, 1)
            before = message.locked_until_utc
            await asyncio.sleep(0.3)
            renewed = await receiver.renew_message_lock(message)
            assert renewed > before
            assert message.locked_until_utc == renewed
            await receiver.complete_message(message)
    assert len(broker.queue(queue)) == 0


async def test_an_expired_lock_returns_the_message_with_the_count_one_higher() -> None:
    queue = _queue()
    async with Broker(servicebus=True, lock_duration=1) as broker, _client(broker) as client:
        async with client.get_queue_sender(queue) as sender:
            await sender.send_messages(ServiceBusMessage("slow"))
        async with client.get_queue_receiver(queue, prefetch_count=1) as receiver:
            [first] = await _receive(receiver, 1)
            left = first.locked_until_utc - datetime.datetime.now(datetime.timezone.utc)
            assert left < datetime.timedelta(seconds=1.1)
            # Not settled: the broker takes the message back when the lock runs out.
            [second] = await _receive(receiver, 1, wait=4)
            assert str(second) == "slow"
            assert second.delivery_count == first.delivery_count + 1
            assert second.lock_token != first.lock_token
            with pytest.raises(servicebus.exceptions.MessageLockLostError):
                await receiver.complete_message(first)
            await receiver.complete_message(second)
    assert len(broker.queue(queue)) == 0


async def test_peek_returns_messages_without_locking_them(broker: Broker) -> None:
    queue = _queue()
    async with _client(broker) as client:
        async with client.get_queue_sender(queue) as sender:
            await sender.send_messages([ServiceBusMessage(f"p{n}") for n in range(3)])
        async with client.get_queue_receiver(queue) as receiver:
            peeked = await receiver.peek_messages(max_message_count=10, sequence_number=1)
            assert [str(m) for m in peeked] == ["p0", "p1", "p2"]
            assert [m.sequence_number for m in peeked] == sorted(m.sequence_number for m in peeked)
            assert all(m.lock_token is None for m in peeked)
            assert broker.queue(queue).ready_count == 3  # nothing taken or locked
            assert not broker.queue(queue).unacked
            again = await receiver.peek_messages(max_message_count=2, sequence_number=1)
            assert [str(m) for m in again] == ["p0", "p1"]
            received = await _receive(receiver, 3)
            assert sorted(str(m) for m in received) == ["p0", "p1", "p2"]
            assert all(m.delivery_count == 0 for m in received)  # peeking did not count
            for message in received:
                await receiver.complete_message(message)
            assert await receiver.peek_messages(max_message_count=5, sequence_number=1) == []


async def test_a_message_sent_with_the_sdk_is_a_job_for_jobqueue(broker: Broker) -> None:
    queue = _queue()
    async with _client(broker) as client, client.get_queue_sender(queue) as sender:
        await sender.send_messages(
            ServiceBusMessage(
                b'{"width": 640}',
                subject="resize",
                message_id="job-42",
                content_type="application/json",
                application_properties={"tenant": "acme"},
            )
        )
    async with JobQueue.from_url(broker.url, queue=queue) as jobs, jobs.consume() as consumer:
        job = await asyncio.wait_for(consumer.receive(), 5)
        assert (job.name, job.id) == ("resize", "job-42")
        assert job.body == b'{"width": 640}'
        assert job.payload == {"width": 640}
        assert dict(job.headers) == {"tenant": "acme"}
        await job.ack()
    assert len(broker.queue(queue)) == 0


async def test_a_job_pushed_by_jobqueue_is_a_message_for_the_sdk(broker: Broker) -> None:
    queue = _queue()
    async with JobQueue.from_url(broker.url, queue=queue) as jobs:
        receipt = await jobs.push(Job("resize", {"width": 640}, headers={"tenant": "acme"}))
    async with _client(broker) as client, client.get_queue_receiver(queue) as receiver:
        [message] = await _receive(receiver, 1)
        assert message.subject == "resize"
        assert message.message_id == receipt.job_id
        assert b"".join(message.body) == b'{"width":640}'
        assert message.application_properties[b"tenant"] == b"acme"
        await receiver.complete_message(message)
    assert len(broker.queue(queue)) == 0


async def test_cbs_tokens_are_checked_against_the_brokers_keys() -> None:
    queue = _queue()
    async with Broker(servicebus=True, users={KEY_NAME: "s3cret"}) as broker:
        good = broker.servicebus_connection_string()
        async with ServiceBusClient.from_connection_string(good, retry_total=0) as client:
            async with client.get_queue_sender(queue) as sender:
                await sender.send_messages(ServiceBusMessage("signed"))
        assert len(broker.queue(queue)) == 1
        bad = good.replace("SharedAccessKey=s3cret", "SharedAccessKey=wrong")
        async with ServiceBusClient.from_connection_string(bad, retry_total=0) as client:
            with pytest.raises(servicebus.exceptions.ServiceBusError):
                async with client.get_queue_sender(queue) as sender:
                    await sender.send_messages(ServiceBusMessage("forged"))
        assert len(broker.queue(queue)) == 1
        assert broker.servicebus.tokens_refused >= 1


async def test_a_prefetch_burst_over_16_kb_arrives_without_waiting_for_the_client(
    broker: Broker,
) -> None:
    queue = _queue()
    async with _client(broker) as client:
        async with client.get_queue_sender(queue) as sender:
            await sender.send_messages([ServiceBusMessage(f"burst-{n:03}") for n in range(300)])
        async with client.get_queue_receiver(queue, prefetch_count=300) as receiver:
            messages = await receiver.receive_messages(max_message_count=300, max_wait_time=3)
            # Over 16 KB of transfers at once: all of proton's output must go out, not one
            # buffer's worth per frame the client happens to send.
            assert len(messages) == 300
            for message in messages:
                await receiver.complete_message(message)
    assert len(broker.queue(queue)) == 0


async def test_plain_amqp_clients_authenticate_with_the_sas_key_over_sasl_plain() -> None:
    async with Broker(servicebus=True, users={"RootManageSharedAccessKey": "k3y"}) as broker:
        good = f"amqp://RootManageSharedAccessKey:k3y@127.0.0.1:{broker.port}"
        async with JobQueue.from_url(good, queue="sas") as queue:
            await queue.push(Job("with-key", b""))
        assert len(broker.queue("sas")) == 1
        bad = JobQueue.from_url(
            f"amqp://RootManageSharedAccessKey:wrong@127.0.0.1:{broker.port}", queue="sas"
        )
        with pytest.raises(AuthenticationFailed):
            await bad.open()


async def test_a_plain_broker_tells_the_sdk_at_once_to_start_it_with_servicebus() -> None:
    async with Broker() as plain:  # no emulation
        started = time.monotonic()
        # The SDK's own retries on: the refusal must not be one it retries.
        async with ServiceBusClient.from_connection_string(
            plain.servicebus_connection_string()
        ) as client:
            with pytest.raises(servicebus.exceptions.ServiceBusError) as caught:
                async with client.get_queue_sender("jobs") as sender:
                    await sender.send_messages(ServiceBusMessage("lost?"))
        assert time.monotonic() - started < 5
        assert "start it with `amqp1q broker --servicebus`" in str(caught.value)
        assert plain.store.queues == {}  # no "$cbs" queue made of the token requests
