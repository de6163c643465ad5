"""The embedded broker's session queue, without a network: who is offered what, in which order,
and which session is the next available one (the links and locks are in
tests/integration/test_servicebus_sessions.py, judged by azure-servicebus)."""

from __future__ import annotations

import pytest

from amqp1q.adapters.proton.wire import Message, encode_message
from amqp1q.testing._session_store import NO_SESSION_ID, SessionQueue
from amqp1q.testing._store import BrokerQueue, Store, Stored


def _stored(body: str, session: str | None, priority: int = 4) -> Stored:
    payload = encode_message(Message(group_id=session, body_kind="value", body=body))
    return Stored(payload, priority=priority)


class Holder:
    """A consumer with room for ``credit`` messages."""

    def __init__(self, credit: int) -> None:
        self.credit = credit
        self.got: list[Stored] = []

    def offer(self, queue: BrokerQueue, stored: Stored) -> bool:
        if self.credit <= 0:
            return False
        self.credit -= 1
        self.got.append(stored)
        queue.delivered(stored)
        return True


def _bodies(holder: Holder) -> list[str]:
    from amqp1q.adapters.proton.wire import decode_message

    return [str(decode_message(s.payload).body) for s in holder.got]


@pytest.fixture
def queue() -> SessionQueue:
    made = Store().declare("orders", requires_session=True)
    assert isinstance(made, SessionQueue)
    return made


def test_a_message_without_a_session_is_refused_with_service_bus_words(queue: SessionQueue) -> None:
    assert queue.admits(_stored("free", None)) == ("amqp:not-allowed", NO_SESSION_ID)
    assert queue.admits(_stored("mine", "s1")) is None
    with pytest.raises(ValueError, match="SessionId"):
        queue.put(_stored("free", None), 0)


def test_only_the_holder_gets_its_sessions_messages_oldest_first_whatever_the_priority(
    queue: SessionQueue,
) -> None:
    for n, session in enumerate(["a", "b", "a", "b", "a"]):
        queue.put(_stored(f"{session}{n}", session, priority=n), 0)
    a, b = Holder(10), Holder(1)
    queue.hold("a", a)
    queue.hold("b", b)
    assert _bodies(a) == ["a0", "a2", "a4"]  # first in, first out: priority does not reorder
    assert _bodies(b) == ["b1"]  # no more credit
    assert queue.ready_count == 1
    b.credit = 1
    queue.dispatch()
    assert _bodies(b) == ["b1", "b3"]


def test_a_message_given_back_goes_back_to_the_head_of_its_session(queue: SessionQueue) -> None:
    for n in range(3):
        queue.put(_stored(f"m{n}", "s", priority=9 - n), 0)
    holder = Holder(1)
    queue.hold("s", holder)
    first = holder.got[0]
    queue.let_go("s", holder)
    queue.release(first, count=True, now_ms=0)
    again = Holder(3)
    queue.hold("s", again)
    assert _bodies(again) == ["m0", "m1", "m2"]
    assert again.got[0].delivery_count == 1


def test_the_next_available_session_is_unlocked_has_messages_and_the_oldest_head(
    queue: SessionQueue,
) -> None:
    assert queue.next_available() is None
    for session in ["x", "y", "x", "z"]:
        queue.put(_stored(session, session), 0)
    told: list[str | None] = []
    queue.on_available.append(lambda: told.append(queue.next_available()))
    assert queue.next_available() == "x"
    queue.hold("x", Holder(5))
    assert queue.next_available() == "y"
    queue.hold("y", Holder(0))  # held with no credit: its message stays, still not available
    assert queue.next_available() == "z"
    assert queue.take() is not None  # (a pull not driven by credit: the next available's head)
    assert queue.next_available() is None
    queue.let_go("y", queue.holders["y"])
    assert told[-1] == "y"  # its message is there and nobody holds it now


def test_peek_purge_and_counts_see_every_session(queue: SessionQueue) -> None:
    for n in range(4):
        queue.put(_stored(f"m{n}", f"s{n % 2}"), 0)
    assert queue.ready_count == len(queue) == 4
    assert [s.sequence for s in queue.peek(10)] == sorted(s.sequence for s in queue.peek(10))
    assert len(queue.waiting(0)[0]) == 4
    assert queue.purge() == 4
    assert queue.ready_count == 0
    assert queue.next_available() is None


def test_a_queue_declared_without_sessions_cannot_become_one() -> None:
    store = Store()
    store.declare("plain")
    with pytest.raises(ValueError, match="without sessions"):
        store.declare("plain", requires_session=True)
    assert store.declare("plain").requires_session is False
