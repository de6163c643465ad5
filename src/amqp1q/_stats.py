"""Client-side counters behind ``queue.stats()``."""

from __future__ import annotations

import attrs

from ._adapter import Outcome

__all__ = ["Counters", "QueueStats"]


@attrs.frozen(slots=True)
class QueueStats:
    """A snapshot of one queue's client-side counts since it was opened.

    - ``pushed``: jobs the broker accepted; ``push_failed``: pushes that raised;
    - ``delayed``: pushes and retries sent with a delay;
    - ``consumed``: jobs handed to consumers;
    - ``acked``, ``retried``, ``released``, ``rejected``: settlements by outcome
      (``rejected`` means dead-lettered);
    - ``in_flight``: jobs handed out and not yet settled;
    - ``consumers``: consumers open now.
    """

    pushed: int = 0
    push_failed: int = 0
    delayed: int = 0
    consumed: int = 0
    acked: int = 0
    retried: int = 0
    released: int = 0
    rejected: int = 0
    in_flight: int = 0
    consumers: int = 0


class Counters:
    """Mutable counters, updated on the hot path; :meth:`snapshot` makes a :class:`QueueStats`."""

    __slots__ = (
        "acked",
        "consumed",
        "consumers",
        "delayed",
        "in_flight",
        "push_failed",
        "pushed",
        "rejected",
        "released",
        "retried",
    )

    def __init__(self) -> None:
        self.pushed = 0
        self.push_failed = 0
        self.delayed = 0
        self.consumed = 0
        self.acked = 0
        self.retried = 0
        self.released = 0
        self.rejected = 0
        self.in_flight = 0
        self.consumers = 0

    def settled(self, outcome: Outcome, *, delayed: bool = False) -> None:
        if outcome is Outcome.ACK:
            self.acked += 1
        elif outcome is Outcome.RETRY:
            self.retried += 1
            if delayed:
                self.delayed += 1
        elif outcome is Outcome.RELEASE:
            self.released += 1
        else:
            self.rejected += 1

    def snapshot(self) -> QueueStats:
        return QueueStats(
            pushed=self.pushed,
            push_failed=self.push_failed,
            delayed=self.delayed,
            consumed=self.consumed,
            acked=self.acked,
            retried=self.retried,
            released=self.released,
            rejected=self.rejected,
            in_flight=self.in_flight,
            consumers=self.consumers,
        )
