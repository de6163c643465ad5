"""A queue that requires sessions, as Service Bus has them: the store's half, no I/O.

Every message of a :class:`SessionQueue` belongs to a session, named by its ``group-id``
(Service Bus's SessionId); a message without one is refused (:meth:`SessionQueue.admits`).
Ready messages wait in one heap per session, in arrival order (a session is first in, first
out: priority does not reorder it). Only the *holder* of a session, the one consumer that has
locked it (:meth:`SessionQueue.hold`), is offered its messages, oldest first; a message given
back goes back to the head of its session. A queue also keeps each session's state (opaque
bytes, set and read through ``$management``) and offers a session to consumers that asked for
the next available one (:meth:`SessionQueue.next_available`).

The locks' timers and the links are :mod:`._sessions`'s.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Final, Protocol

from ..adapters.proton.wire import AMQPDecodeError, decode_message
from ._links import now_ms
from ._store import BrokerQueue, Consumer, Store, Stored

__all__ = ["NO_SESSION_ID", "SessionHolder", "SessionQueue"]

#: What Service Bus answers a message without a SessionId sent to a session queue.
NO_SESSION_ID: Final = (
    "The SessionId was not set on a message, and it cannot be sent to the entity. Entities "
    "that have session support enabled can only receive messages that have the SessionId set "
    "to a valid value."
)


class SessionHolder(Protocol):
    """The consumer that has locked a session."""

    def offer(self, queue: BrokerQueue, stored: Stored) -> bool:
        """Take the message if there is credit for it; False otherwise."""


class SessionQueue(BrokerQueue):
    """A queue whose messages are each in a session (see the module docstring)."""

    requires_session = True

    def __init__(self, name: str, store: Store) -> None:
        super().__init__(name, store)
        #: Ready messages by session: heaps of (sequence, message).
        self._sessions: dict[str, list[tuple[int, Stored]]] = {}
        #: The consumer that holds each locked session.
        self.holders: dict[str, SessionHolder] = {}
        #: Each session's state, once set.
        self.states: dict[str, bytes] = {}
        #: Called when a session may have become available (messages and no holder).
        self.on_available: list[Callable[[], None]] = []
        self._ready_total = 0

    # -- in -------------------------------------------------------------------------------------

    def admits(self, stored: Stored) -> tuple[str, str] | None:
        if stored.session_id is None:
            try:
                group = decode_message(stored.payload).group_id
            except AMQPDecodeError:
                group = None
            stored.session_id = group or None
        if stored.session_id is None:
            return "amqp:not-allowed", NO_SESSION_ID
        return None

    def put(self, stored: Stored, now_ms: int) -> None:
        if self.admits(stored) is not None:
            raise ValueError(NO_SESSION_ID)  # callers check admits() first
        super().put(stored, now_ms)

    def _push_ready(self, stored: Stored) -> None:
        assert stored.session_id is not None
        heap = self._sessions.setdefault(stored.session_id, [])
        heapq.heappush(heap, (stored.sequence, stored))
        self._ready_total += 1

    # -- facts ----------------------------------------------------------------------------------

    @property
    def ready_count(self) -> int:
        return self._ready_total

    def _ready_items(self) -> list[Stored]:
        return [stored for heap in self._sessions.values() for _, stored in heap]

    def session_ready(self, session_id: str) -> int:
        return len(self._sessions.get(session_id, ()))

    def next_available(self) -> str | None:
        """The unlocked session whose oldest ready message is the oldest of all, if any."""
        best: tuple[int, str] | None = None
        for session_id, heap in self._sessions.items():
            if heap and session_id not in self.holders:
                head = heap[0][0]
                if best is None or head < best[0]:
                    best = (head, session_id)
        return None if best is None else best[1]

    # -- out ------------------------------------------------------------------------------------

    def hold(self, session_id: str, holder: SessionHolder) -> None:
        """``holder`` holds the session: it is offered the session's messages from now on."""
        self.holders[session_id] = holder
        self.dispatch()

    def let_go(self, session_id: str, holder: SessionHolder) -> None:
        """``holder`` no longer holds the session (another consumer may lock it)."""
        if self.holders.get(session_id) is holder:
            del self.holders[session_id]
            self._tell_available()

    def subscribe(self, consumer: Consumer) -> None:
        raise TypeError(f"{self.name!r} requires sessions: consumers hold a session instead")

    def _dispatch_pass(self) -> None:
        """Offer each held session's messages, oldest first, while its holder takes them
        (``dispatch()`` runs this, never nested: see BrokerQueue.dispatch)."""
        now = now_ms()
        for session_id, holder in list(self.holders.items()):
            heap = self._sessions.get(session_id)
            while heap:
                entry = heapq.heappop(heap)  # taken before it is offered (see BrokerQueue)
                stored = entry[1]
                if not (stored.ttl and stored.expired(now)) and not holder.offer(self, stored):
                    heapq.heappush(heap, entry)
                    break
                self._ready_total -= 1  # taken, or its time to live ran out (dropped)
            if heap is not None and not heap and self._sessions.get(session_id) is heap:
                del self._sessions[session_id]
        self._tell_available()

    def _tell_available(self) -> None:
        if self.on_available and self.next_available() is not None:
            for callback in list(self.on_available):
                callback()

    def take(self) -> Stored | None:
        session_id = self.next_available()
        if session_id is None:
            return None
        heap = self._sessions[session_id]
        stored = heapq.heappop(heap)[1]
        self._ready_total -= 1
        if not heap:
            del self._sessions[session_id]
        return stored

    def purge(self) -> int:
        count = super().purge()  # (the scheduled messages, and ready_count)
        self._sessions.clear()
        self._ready_total = 0
        return count
