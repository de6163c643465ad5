"""Pushing over one sender link: credit-gated, with a bounded in-flight window.

proton lets a sender exceed its credit and buffers locally, so nothing is handed to the link
without credit. At most ``window`` messages are in flight (sent, outcome unknown) or waiting
for credit; further pushes wait for room (back-pressure, never an unbounded buffer). Each
message's future is resolved by the broker's disposition — or failed, if the link dies first.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from ..._errors import Amqp1qError, ConnectionLost
from ._deliveries import Condition, DeliveryOutcome
from ._links import Link, SenderLink

__all__ = ["Sender"]


class Sender:
    """Sends on ``link`` and resolves one future per message with its :class:`DeliveryOutcome`."""

    def __init__(
        self,
        link: SenderLink,
        *,
        window: int,
        on_dead: Callable[[Condition | None], Amqp1qError],
    ) -> None:
        self.link = link
        self.window = window
        self._loop = asyncio.get_running_loop()  # (asking for it per message costs a getpid)
        self._on_dead = on_dead
        self._waiting: deque[tuple[bytes, asyncio.Future[DeliveryOutcome]]] = deque()
        self._in_flight: set[asyncio.Future[DeliveryOutcome]] = set()
        self._room = asyncio.Event()
        self._room.set()
        self.failure: Amqp1qError | None = None
        link.on_flow = self._on_flow
        link.on_remote_close = self._on_closed

    @property
    def alive(self) -> bool:
        return self.failure is None and self.link.alive

    @property
    def max_message_size(self) -> int:
        """The broker's max-message-size for this link (0: no limit)."""
        return self.link.remote_max_message_size

    @property
    def busy(self) -> int:
        return len(self._waiting) + len(self._in_flight)

    async def wait_for_room(self) -> None:
        """Return once a message may be queued without exceeding the window."""
        while self.failure is None and self.busy >= self.window:
            self._room.clear()
            await self._room.wait()
        if self.failure is not None:
            raise self.failure

    @property
    def has_room(self) -> bool:
        """A message may be queued now, without waiting (:meth:`wait_for_room`)."""
        return self.failure is None and len(self._waiting) + len(self._in_flight) < self.window

    def send(self, payload: bytes) -> asyncio.Future[DeliveryOutcome]:
        """Queue ``payload``; the future resolves with the broker's verdict."""
        future: asyncio.Future[DeliveryOutcome] = self._loop.create_future()
        if self.failure is not None:
            future.set_exception(self.failure)
            return future
        link = self.link
        if not self._waiting and link.alive and link.credit > 0:  # straight out: no queueing
            self._in_flight.add(future)
            link.send(payload, _resolver(self, future))
            return future
        self._waiting.append((payload, future))
        self._pump()
        return future

    def _pump(self) -> None:
        waiting = self._waiting
        link = self.link
        if not waiting or not link.alive:
            return
        credit = link.credit
        in_flight = self._in_flight
        while waiting and credit > 0:
            payload, future = waiting.popleft()
            if future.done():  # the pusher gave up (timeout, cancellation) before it went out
                continue
            in_flight.add(future)
            link.send(payload, _resolver(self, future))
            credit -= 1
        self._signal_room()

    def _resolved(self, future: asyncio.Future[DeliveryOutcome], outcome: DeliveryOutcome) -> None:
        self._in_flight.discard(future)
        if not future.done():
            future.set_result(outcome)
        self._signal_room()

    def _signal_room(self) -> None:
        if self.busy < self.window:
            self._room.set()

    def _on_flow(self, _: SenderLink) -> None:
        self._pump()

    def _on_closed(self, _: Link, condition: Condition | None) -> None:
        self.fail(self._on_dead(condition))

    def fail(self, error: Amqp1qError) -> None:
        """Fail every message waiting or in flight (their outcome will never come)."""
        if self.failure is None:
            self.failure = error
        pending = [f for _, f in self._waiting] + list(self._in_flight)
        self._waiting.clear()
        self._in_flight.clear()
        for future in pending:
            if not future.done():
                future.set_exception(error)
                future.exception()  # retrieved: a pusher that timed out is no longer waiting
        self._room.set()

    def close(self) -> None:
        if self.link.alive:
            self.link.close()
        self.fail(ConnectionLost("the sender link was closed"))


def _resolver(
    sender: Sender, future: asyncio.Future[DeliveryOutcome]
) -> Callable[[DeliveryOutcome], None]:
    def resolve(outcome: DeliveryOutcome) -> None:
        sender._resolved(future, outcome)

    return resolve
