"""Service Bus sessions on the embedded broker's emulation, judged by azure-servicebus itself.

A queue declared with ``requires_session=True`` (``amqp1q broker --session-queue``): the SDK's
session sender, its session receivers (a named session and ``NEXT_AVAILABLE_SESSION``), session
state, session lock renewal and expiry, and the refusals Service Bus gives.
"""

from __future__ import annotations

import asyncio
import datetime
import re
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from amqp1q.testing import Broker

from ..cli import start_cli
from .test_servicebus_sdk import _receive as _drain

servicebus = pytest.importorskip("azure.servicebus")
servicebus_aio = pytest.importorskip("azure.servicebus.aio")
exceptions = pytest.importorskip("azure.servicebus.exceptions")

ServiceBusMessage = servicebus.ServiceBusMessage
NEXT_AVAILABLE_SESSION = servicebus.NEXT_AVAILABLE_SESSION
ServiceBusClient = servicebus_aio.ServiceBusClient

pytestmark = [pytest.mark.anyio]


@pytest.fixture
async def broker() -> AsyncIterator[Broker]:
    async with Broker(servicebus=True) as broker:
        yield broker


@pytest.fixture
def queue(broker: Broker) -> str:
    name = f"sessions-{uuid.uuid4().hex[:8]}"
    broker.declare(name, requires_session=True)
    return name


def _client(broker: Broker) -> Any:
    return ServiceBusClient.from_connection_string(
        broker.servicebus_connection_string(), retry_total=0
    )


async def _send(client: Any, queue: str, items: list[tuple[str, str]]) -> None:
    """Send (session id, body) pairs, in that order."""
    async with client.get_queue_sender(queue) as sender:
        await sender.send_messages(
            [ServiceBusMessage(body, session_id=session) for session, body in items]
        )


async def test_a_session_receiver_gets_its_sessions_messages_in_order_and_only_those(
    broker: Broker, queue: str
) -> None:
    items = [(f"s{n % 3}", f"m{n}") for n in range(30)]
    async with _client(broker) as client:
        await _send(client, queue, items)
        async with client.get_queue_receiver(queue, session_id="s1", max_wait_time=2) as receiver:
            session = receiver.session
            assert session.session_id == "s1"
            assert session.locked_until_utc is not None
            assert session.locked_until_utc > datetime.datetime.now(datetime.timezone.utc)
            got = await _drain(receiver, 10)
            assert [str(m) for m in got] == [body for sid, body in items if sid == "s1"]
            assert {m.session_id for m in got} == {"s1"}
            assert await receiver.receive_messages(max_wait_time=0.5) == []  # nothing else
            for message in got:
                await receiver.complete_message(message)
    assert broker.queue(queue).ready_count == 20


async def test_next_available_gives_unlocked_sessions_with_messages_one_receiver_each(
    broker: Broker, queue: str
) -> None:
    async with _client(broker) as client:
        await _send(client, queue, [("a", "a1"), ("b", "b1"), ("a", "a2"), ("c", "c1")])
        async with client.get_queue_receiver(queue, session_id="b", max_wait_time=2) as held:
            first = client.get_queue_receiver(
                queue, session_id=NEXT_AVAILABLE_SESSION, max_wait_time=2
            )
            second = client.get_queue_receiver(
                queue, session_id=NEXT_AVAILABLE_SESSION, max_wait_time=2
            )
            async with first, second:
                # The oldest message's session first; "b" is held by another receiver.
                assert first.session.session_id == "a"
                assert second.session.session_id == "c"
                assert [str(m) for m in await _drain(first, 2)] == ["a1", "a2"]
                assert [str(m) for m in await _drain(second, 1)] == ["c1"]
            assert [str(m) for m in await _drain(held, 1)] == ["b1"]
        # None left with messages (they went back unsettled, so all three have some again)
        async with client.get_queue_receiver(
            queue, session_id=NEXT_AVAILABLE_SESSION, max_wait_time=2
        ) as again:
            assert again.session.session_id in {"a", "b", "c"}


async def test_next_available_waits_for_a_session_then_times_out_as_service_bus_does(
    broker: Broker, queue: str
) -> None:
    async with _client(broker) as client:
        receiver = client.get_queue_receiver(
            queue, session_id=NEXT_AVAILABLE_SESSION, max_wait_time=5
        )
        opening = asyncio.ensure_future(receiver.__aenter__())
        await asyncio.sleep(0.5)
        assert not opening.done()  # no session yet: the attach waits
        await _send(client, queue, [("late", "hello")])
        await asyncio.wait_for(opening, 5)
        try:
            assert receiver.session.session_id == "late"
            assert [str(m) for m in await _drain(receiver, 1)] == ["hello"]
        finally:
            await receiver.close()
        # Nothing unlocked with messages ("late" has its message back but is free again, so
        # lock it): the next-available attach is refused once the link's timeout has passed.
        async with client.get_queue_receiver(queue, session_id="late", max_wait_time=2):
            started = time.monotonic()
            with pytest.raises(exceptions.OperationTimeoutError, match=r"com\.microsoft:timeout"):
                async with client.get_queue_receiver(
                    queue, session_id=NEXT_AVAILABLE_SESSION, max_wait_time=1
                ) as nothing:
                    await nothing.receive_messages(max_wait_time=1)
            assert time.monotonic() - started < 10


async def test_session_state_is_set_read_and_kept_across_receivers(
    broker: Broker, queue: str
) -> None:
    async with _client(broker) as client:
        await _send(client, queue, [("ckpt", "one")])
        async with client.get_queue_receiver(queue, session_id="ckpt", max_wait_time=2) as first:
            assert await first.session.get_state() is None
            await first.session.set_state(b"step-1")
            assert await first.session.get_state() == b"step-1"
        async with client.get_queue_receiver(queue, session_id="ckpt", max_wait_time=2) as again:
            assert await again.session.get_state() == b"step-1"
            await again.session.set_state(None)
            assert await again.session.get_state() is None
    assert broker.queue(queue).states == {}  # type: ignore[attr-defined]


async def test_the_session_lock_is_renewed_and_lost_when_it_runs_out() -> None:
    async with Broker(servicebus=True, lock_duration=1.0) as broker:
        broker.declare("short", requires_session=True)
        async with _client(broker) as client:
            await _send(client, "short", [("s", "m1"), ("s", "m2")])
            async with client.get_queue_receiver("short", session_id="s", max_wait_time=2) as r:
                first_until = r.session.locked_until_utc
                got = await _drain(r, 2)
                assert [str(m) for m in got] == ["m1", "m2"]
                for _ in range(3):  # kept past the lock duration by renewing it
                    await asyncio.sleep(0.5)
                    renewed = await r.session.renew_lock()
                    assert renewed > first_until
                await r.complete_message(got[0])
                await asyncio.sleep(1.5)  # not renewed: lost
                with pytest.raises((exceptions.SessionLockLostError, exceptions.ServiceBusError)):
                    await r.session.renew_lock()
            # m2 went back when the lock ran out, counted, and is delivered again, first.
            async with client.get_queue_receiver("short", session_id="s", max_wait_time=2) as r:
                again = await _drain(r, 1)
                assert [str(m) for m in again] == ["m2"]
                assert again[0].delivery_count == 1
                await r.complete_message(again[0])


async def test_an_abandoned_message_comes_back_first_in_its_session(
    broker: Broker, queue: str
) -> None:
    async with _client(broker) as client:
        await _send(client, queue, [("o", f"m{n}") for n in range(3)])
        async with client.get_queue_receiver(queue, session_id="o", max_wait_time=2) as r:
            first = await _drain(r, 1)
            assert [str(m) for m in first] == ["m0"]
            await r.abandon_message(first[0])
            order = []
            for _ in range(3):
                (message,) = await _drain(r, 1)
                order.append((str(message), message.delivery_count))
                await r.complete_message(message)
            assert order == [("m0", 1), ("m1", 0), ("m2", 0)]


async def test_a_locked_session_cannot_be_locked_again_until_its_receiver_closes(
    broker: Broker, queue: str
) -> None:
    async with _client(broker) as client:
        await _send(client, queue, [("x", "m")])
        async with client.get_queue_receiver(queue, session_id="x", max_wait_time=2):
            with pytest.raises(exceptions.SessionCannotBeLockedError, match="locked"):
                async with client.get_queue_receiver(queue, session_id="x", max_wait_time=2) as r:
                    await r.receive_messages(max_wait_time=0.5)
        async with client.get_queue_receiver(queue, session_id="x", max_wait_time=2) as r:
            got = await _drain(r, 1)
            assert [str(m) for m in got] == ["m"]
            await r.complete_message(got[0])


async def test_what_service_bus_refuses_on_a_session_queue_is_refused_with_its_words(
    broker: Broker, queue: str
) -> None:
    async with _client(broker) as client:
        with pytest.raises(exceptions.ServiceBusError, match="SessionId was not set"):
            await _send(client, queue, [(None, "no session")])  # type: ignore[list-item]
        with pytest.raises(exceptions.ServiceBusError, match="requires sessions to create a non"):
            async with client.get_queue_receiver(queue, max_wait_time=1) as receiver:
                await receiver.receive_messages(max_wait_time=0.5)
        with pytest.raises(exceptions.ServiceBusError, match="does not require sessions"):
            async with client.get_queue_receiver(
                "plain", session_id="s", max_wait_time=1
            ) as receiver:
                await receiver.receive_messages(max_wait_time=0.5)
    assert len(broker.queue(queue)) == 0  # the refused message was not taken


async def test_amqp1q_broker_session_queue_serves_the_sdks_session_receiver() -> None:
    process = await start_cli(
        "broker", "--port", "0", "--servicebus", "--session-queue", "orders",
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        lines = [(await asyncio.wait_for(process.stdout.readline(), 20)).decode() for _ in range(3)]
        assert "entities: orders (sessions)" in lines[2]
        found = re.search(r"connection string: (Endpoint=\S+)", lines[1])
        assert found is not None, lines
        async with ServiceBusClient.from_connection_string(found.group(1), retry_total=0) as client:
            await _send(client, "orders", [("customer-1", "a"), ("customer-1", "b")])
            with pytest.raises(exceptions.ServiceBusError, match="SessionId was not set"):
                await _send(client, "orders", [(None, "c")])  # type: ignore[list-item]
            async with client.get_queue_receiver(
                "orders", session_id=NEXT_AVAILABLE_SESSION, max_wait_time=2
            ) as receiver:
                assert receiver.session.session_id == "customer-1"
                got = await _drain(receiver, 2)
                assert [str(m) for m in got] == ["a", "b"]
                for message in got:
                    await receiver.complete_message(message)
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 10)
