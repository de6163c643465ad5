"""The embedded broker's queue hands each message out once, even when a consumer's callback
puts a message or subscribes another consumer while it is being offered one (a request
answered at once: the reply lands in the middle of the dispatch that delivered the request)."""

from __future__ import annotations

from amqp1q.testing._store import BrokerQueue, Store, Stored


def _queue() -> BrokerQueue:
    queue = Store().queue("jobs", create=True)
    assert queue is not None
    return queue


def test_a_put_from_inside_a_delivery_is_delivered_once_after_it() -> None:
    queue = _queue()
    got: list[bytes] = []

    def consumer(_queue: BrokerQueue, stored: Stored) -> bool:
        got.append(stored.payload)
        if stored.payload == b"request":
            # the answer goes in at once, ahead in the heap (a higher priority)
            queue.put(Stored(b"answer", priority=9), 0)
        return True

    queue.subscribe(consumer)
    queue.put(Stored(b"request"), 0)
    queue.put(Stored(b"next"), 0)
    assert got == [b"request", b"answer", b"next"]


def test_a_refused_message_stays_at_the_head_for_the_next_consumer() -> None:
    queue = _queue()
    taken: list[tuple[str, bytes]] = []
    credit = {"a": 0, "b": 1}

    def make(name: str):  # type: ignore[no-untyped-def]
        def consumer(_queue: BrokerQueue, stored: Stored) -> bool:
            if credit[name] <= 0:
                return False
            credit[name] -= 1
            taken.append((name, stored.payload))
            return True

        return consumer

    queue.put(Stored(b"one"), 0)
    queue.put(Stored(b"two"), 0)
    queue.subscribe(make("a"))
    queue.subscribe(make("b"))
    assert taken == [("b", b"one")]
    credit["a"] = 5
    queue.dispatch()
    assert taken == [("b", b"one"), ("a", b"two")]
