"""Ordered processing: the jobs of a group, one at a time and in order (``consume(groups=N)``).

A :class:`Sequencer` sits between a consumer's receiver and its hand-out. It keeps the jobs it
has received in a queue per group (``Incoming.group``; a job without a group is a group of its
own), hands out a group's next job only once the one before has been settled, and keeps at most
``limit`` groups in hand at once. The groups whose next job may go are handed out in the order
they became ready, so no group starves.

A retried or released job of a group is not sent back to the broker, which would queue it behind
the group's later jobs: it goes back to the head of its group here, and is handed out again once
its delay has passed (the group waits: it stays in hand meanwhile). Everything the sequencer holds
is counted by :attr:`Sequencer.held`, and counts against the consumer's prefetch.

A job the broker delivers again after this consumer acked it (the ack was lost with a connection
cut) is acked again rather than handed out: handed out, it would run after its group's later jobs.
The sequencer remembers the ids of the last :data:`REMEMBERED` jobs acked for that
(:meth:`Sequencer.acked`, :meth:`Sequencer.seen`; jobs without an id are not remembered).

A delivery whose link died while it was held is *stale* (``Receiver.stale``): the broker has it
back and redelivers it, so it is dropped rather than handed out (with its group's later jobs from
the same link: they come back after it).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Hashable, Iterator
from typing import Final

from ._adapter import Incoming

__all__ = ["REMEMBERED", "Sequencer"]

#: How many acked job ids a sequencer remembers, to ack a redelivered one again.
REMEMBERED: Final = 4096


def _key(incoming: Incoming) -> Hashable:
    group = incoming.group
    return incoming if group is None else group


class Sequencer:
    """Per-group order over a stream of deliveries (see the module docstring)."""

    __slots__ = (
        "_acked",
        "_busy",
        "_changed",
        "_delayed",
        "_ended",
        "_limit",
        "_ready",
        "_stale",
        "_waiting",
        "held",
    )

    def __init__(self, limit: int, stale: Callable[[Incoming], bool]) -> None:
        self._limit = limit
        self._stale = stale
        #: A group's held jobs, head first.
        self._waiting: dict[Hashable, deque[Incoming]] = {}
        #: Groups whose head may be handed out, in the order they became ready.
        self._ready: deque[Hashable] = deque()
        #: Groups with a job in hand (or waiting out a retry's delay).
        self._busy: set[Hashable] = set()
        #: Retries waiting out their delay: the timer that puts each back.
        self._delayed: dict[Incoming, asyncio.TimerHandle] = {}
        self._changed = asyncio.Event()
        self._ended = False
        #: Jobs held (received, not in hand): they count against the prefetch.
        self.held = 0
        #: The ids of the jobs acked last, oldest first (a dict as an ordered set).
        self._acked: dict[str, None] = {}

    # -- facts ----------------------------------------------------------------------------------

    @property
    def in_hand(self) -> int:
        """Groups in hand now (a job handed out, or a retry waiting out its delay)."""
        return len(self._busy)

    @property
    def ended(self) -> bool:
        """The receiver ended and nothing more can be handed out."""
        return self._ended and not self._ready

    # -- the stream in --------------------------------------------------------------------------

    def add(self, incoming: Incoming) -> None:
        """A job arrived from the receiver."""
        key = _key(incoming)
        self.held += 1
        waiting = self._waiting.get(key)
        if waiting is not None:
            waiting.append(incoming)
            return
        self._waiting[key] = deque((incoming,))
        if key not in self._busy:
            self._ready.append(key)
            self._changed.set()

    def end(self) -> None:
        """The receiver ended: hand out nothing more once the ready groups are out."""
        self._ended = True
        self._changed.set()

    # -- hand-out -------------------------------------------------------------------------------

    def take(self) -> Incoming | None:
        """The next job that may be handed out now, or None."""
        while self._ready and len(self._busy) < self._limit:
            key = self._ready.popleft()
            waiting = self._waiting[key]
            if self._stale(waiting[0]):
                # The broker has it back, and the group's later ones from the same link: drop
                # those (it redelivers them after it); keep any that came on a live one.
                fresh = [incoming for incoming in waiting if not self._stale(incoming)]
                self.held -= len(waiting) - len(fresh)
                if not fresh:
                    del self._waiting[key]
                    continue
                waiting = self._waiting[key] = deque(fresh)
            incoming = waiting.popleft()
            self.held -= 1
            if not waiting:
                del self._waiting[key]
            self._busy.add(key)
            return incoming
        return None

    async def wait(self) -> None:
        """Until something changed (a job arrived, a group came free, the receiver ended)."""
        self._changed.clear()
        await self._changed.wait()

    # -- settlement -----------------------------------------------------------------------------

    def done(self, incoming: Incoming) -> None:
        """A job in hand was settled (or lost): its group's next may go."""
        key = _key(incoming)
        self._busy.discard(key)
        if key in self._waiting:
            self._ready.append(key)
        self._changed.set()

    def put_back(self, incoming: Incoming, delay: float | None) -> None:
        """A job in hand was retried or released: to the head of its group, handed out again
        after ``delay`` seconds; its group stays in hand meanwhile."""
        self.held += 1
        if delay:
            loop = asyncio.get_running_loop()
            self._delayed[incoming] = loop.call_later(delay, self._due, incoming)
        else:
            self._due(incoming)

    def _due(self, incoming: Incoming) -> None:
        self._delayed.pop(incoming, None)
        key = _key(incoming)
        waiting = self._waiting.get(key)
        if waiting is None:
            self._waiting[key] = deque((incoming,))
        else:
            waiting.appendleft(incoming)
        self._busy.discard(key)
        self._ready.appendleft(key)
        self._changed.set()

    def acked(self, incoming: Incoming) -> None:
        """A job in hand was acked: remember its id."""
        if incoming.id:
            self._acked[incoming.id] = None
            if len(self._acked) > REMEMBERED:
                del self._acked[next(iter(self._acked))]

    def seen(self, incoming: Incoming) -> bool:
        """True for a job this consumer acked already (the broker did not get the ack)."""
        return bool(incoming.id) and incoming.id in self._acked

    # -- closing --------------------------------------------------------------------------------

    def take_all(self) -> Iterator[Incoming]:
        """Everything held, not stale, in arrival order per group (for giving back); the
        sequencer then holds nothing."""
        for handle in self._delayed.values():
            handle.cancel()
        delayed = list(self._delayed)
        self._delayed.clear()
        groups = list(self._waiting.values())
        self._waiting.clear()
        self._ready.clear()
        self.held = 0
        self._changed.set()
        for incoming in delayed:
            if not self._stale(incoming):
                yield incoming
        for waiting in groups:
            for incoming in waiting:
                if not self._stale(incoming):
                    yield incoming
