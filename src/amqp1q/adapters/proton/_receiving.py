"""Consuming over one receiver link: the :class:`~amqp1q.Receiver` half of the Proton adapter.

Deliveries arrive against credit the facade grants (:meth:`ProtonReceiver.flow`) and wait in a
buffer, still encoded; a delivery is decoded only when it is handed out. Settlement follows the
broker's profile (``_settling``); where the broker has no delayed delivery, delayed jobs are
held here until their time (``_holding``).

Deliveries a consumer will not hand out (it is closing, or the broker overran the credit) go
back to the broker: ``released`` where the profile honours that; elsewhere (Qpid Proton's
example brokers drop a released delivery) they are published again byte for byte, then
accepted. So do jobs still in hand when the consumer closes, on such a broker: one that drops
what a detaching link left unsettled would otherwise lose them.

A broker that sends deliveries *pre-settled* to a consumer that asked for unsettled ones (Qpid
Proton's C example broker) delivers at most once: the adapter is told (``at_most_once``, one
warning), such deliveries are kept across a lost link (nobody else has them), and their
settlement needs no link at all.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from ..._adapter import Incoming, Settlement
from ..._errors import Amqp1qError, QueueStateError
from ._deliveries import Condition, Delivery
from ._holding import Held, HeldJobs
from ._incoming import decode_delivery, to_incoming
from ._links import Link, ReceiverLink
from ._settling import Settler

if TYPE_CHECKING:
    from .adapter import ProtonAdapter

__all__ = ["ProtonReceiver", "to_incoming"]

log = logging.getLogger("amqp1q.proton")

_DRAIN_TIMEOUT = 5.0
_T = TypeVar("_T")
_YIELD_EVERY = 8


class ProtonReceiver:
    """One consumer's receiver link. Made by :meth:`ProtonAdapter.receiver`."""

    def __init__(self, adapter: ProtonAdapter, *, auto_ack: bool) -> None:
        self._adapter = adapter
        self._auto_ack = auto_ack
        self._link: ReceiverLink | None = None
        self._buffer: deque[tuple[Delivery, bytes]] = deque()
        self._event = asyncio.Event()
        self._drained = asyncio.Event()
        self._detached = asyncio.Event()
        self._closed = False
        self._holding = False
        self._opened = False
        self._failure: Amqp1qError | None = None
        self._streak = 0
        self._settler = Settler(adapter, self._hold)
        self._held = HeldJobs(self._on_due)
        self._due: deque[Held] = deque()  # held jobs whose time has come, waiting for credit
        self._ready: deque[Held] = deque()  # ... given credit: handed out before the buffer
        #: Jobs in hand that this consumer may have to give back itself, with their bytes:
        #: where the broker does not honour ``released``, or sent them pre-settled.
        self._in_hand: dict[Delivery, bytes] = {}
        self._late: list[tuple[Delivery, bytes]] = []  # arrived while closing
        # Credit, counted here rather than read from proton: RabbitMQ 3.x echoes flow frames
        # whose link-credit proton then adopts, and has been seen sending past the credit.
        self._granted = 0  # credit the consumer granted, in all
        self._told = 0  # credit told to the broker, in all
        self._received = 0  # deliveries taken against that credit, in all
        self._over = 0  # deliveries beyond the credit (given back at once)

    async def open(self) -> None:
        await self._attach()
        self._opened = True

    async def _attach(self) -> None:
        """A new link, granted the credit the consumer has out (a new link starts with none)."""
        adapter = self._adapter
        link = await adapter.connection.attach_receiver(
            adapter.address, queue=adapter.queue, settled=self._auto_ack
        )
        link.on_message = self._on_message
        link.on_remote_close = self._on_link_closed
        link.on_drained = self._on_drained
        self._detached.clear()
        self._link = link
        self._told = self._received
        if not self._holding:
            self._flush_credit(link, force=True)

    # -- credit -------------------------------------------------------------------------------

    def flow(self, credit: int) -> None:
        if self._closed or credit <= 0:
            return
        if self._holding:
            # After a drain-less pause the old credit still stands: top it up, never past it.
            self._holding = False
            self._event.set()
            standing = self._granted - self._received + len(self._buffer) + len(self._ready)
            credit = max(0, credit - standing)
        self._granted += credit
        self._admit_due()
        link = self._link
        if link is not None:
            self._flush_credit(link)

    def _flush_credit(self, link: ReceiverLink, *, force: bool = False) -> None:
        """Tell the broker about new credit -- batched: once what it still holds falls below
        what waits to be told (each flow costs RabbitMQ 3.x a basic.credit)."""
        waiting = self._granted - self._told
        if waiting <= 0:
            return
        at_broker = self._told - self._received
        if self._adapter.profile.fresh_credit:
            # RabbitMQ 3.x takes each flow as a fresh grant, not counting deliveries in flight:
            # top it up only once its credit is used up, when nothing can be in flight.
            due = at_broker <= 0
        else:
            due = at_broker < waiting  # half the window used: one flow frame per half window
        if force or due:
            self._told = self._granted
            # Set proton's credit to what we mean, not add to it: proton adopts the link-credit
            # of the broker's flow frames, which RabbitMQ 3.x sends late and out of date.
            more = (self._told - self._received) - link.credit
            if more > 0:
                link.flow(more)

    async def drain(self) -> None:
        """Void the credit, wait (bounded) for the broker to confirm, give back what is buffered.

        Where the broker cannot drain (RabbitMQ 3.x, the generic profile), stop handing jobs
        out instead: what is buffered, and what the standing credit still brings, waits for
        :meth:`flow` or is given back by :meth:`close`.
        """
        link = self._link
        if not self._adapter.profile.supports_drain:
            self._holding = True
            return
        if link is not None and link.alive and link.drain():
            self._drained.clear()
            try:
                await asyncio.wait_for(self._drained.wait(), _DRAIN_TIMEOUT)
            except asyncio.TimeoutError:
                log.debug(
                    "drain of %r unanswered after %.0f s", self._adapter.address, _DRAIN_TIMEOUT
                )
        # The credit is void: start counting afresh (the consumer grants anew on resume).
        self._granted = self._told = self._received
        self._give_back_buffered()

    def _on_drained(self, _: ReceiverLink) -> None:
        self._drained.set()

    def _give_back_buffered(self) -> None:
        if self._auto_ack:
            return
        buffered = list(self._buffer)
        buffered += [(held.delivery, held.payload) for held in self._ready]
        self._buffer.clear()
        self._ready.clear()
        self._settler.give_back(buffered)  # (jobs come due wait in _due for credit again)

    # -- receiving ------------------------------------------------------------------------------

    def _on_message(self, delivery: Delivery, payload: bytes) -> None:
        if delivery.remote_settled and not self._auto_ack:
            self._adapter.saw_presettled()
        if self._closed:
            if self._auto_ack:
                return
            # Arrived while closing: nobody will handle it.
            if self._adapter.profile.honours_released:
                self._settler.give_back([(delivery, payload)])
            else:
                self._late.append((delivery, payload))  # published again once detached
            return
        if self._received >= self._told and not delivery.remote_settled:
            # Past the credit we gave (a broker bug): back it goes, the prefetch bound holds.
            self._over += 1
            if self._over in (1, 100, 10_000):
                log.warning(
                    "the broker sent %d deliveries past the credit on %r; given back",
                    self._over,
                    self._adapter.address,
                    extra={"queue": self._adapter.queue},
                )
            self._settler.give_back([(delivery, payload)])
            return
        self._received += 1
        self._buffer.append((delivery, payload))
        self._event.set()
        if not self._holding:
            self._flush_credit(delivery.link)

    def _on_link_closed(self, _: Link, condition: Condition | None) -> None:
        # Deliveries buffered on a dead link were never handed out: the broker redelivers them,
        # and the credit they used is owed again -- except pre-settled ones, which the broker
        # forgot when it sent them: those stay, to be handed out (they need no link).
        # Filtered in place, never replaced: the deques live as long as the receiver (a receive()
        # that once waited across a replacement watched the old, empty one for ever).
        dropped = _keep_presettled(self._buffer, lambda entry: entry[0])
        dropped += _keep_presettled(self._ready, lambda held: held.delivery)
        self._received -= dropped
        self._link = None
        self._drained.set()
        self._detached.set()
        # A dropped connection is recorded (and being re-dialled) before its links die.
        if not self._closed and self._adapter.state == "reconnecting":
            return  # re-attached once it is back
        self._closed = True
        self._event.set()
        if condition is not None:
            log.warning(
                "the broker closed the receiver on %r: %s",
                self._adapter.address,
                condition,
                extra={"queue": self._adapter.queue},
            )

    async def reattach(self) -> None:
        """After a reconnect: a new link, granted the credit the consumer still has out."""
        if not self._closed:
            await self._attach()

    def connection_failed(self, error: Amqp1qError) -> None:
        """The supervisor gave up: the consumer's next receive raises ``error``."""
        self._failure = error
        self._closed = True
        self._forget_all()
        self._event.set()
        self._drained.set()

    async def receive(self) -> Incoming | None:
        if self._link is None and not self._opened:
            raise QueueStateError("the receiver is not open", queue=self._adapter.queue)
        event = self._event
        while True:
            # The deques are read afresh after every wait, never kept in locals across one.
            while not (self._buffer or self._ready) or self._holding:
                if self._closed:
                    if self._failure is not None:
                        raise self._failure
                    return None
                event.clear()
                self._streak = 0
                await event.wait()
            self._streak += 1
            if self._streak >= _YIELD_EVERY:
                # Jobs straight from the buffer never suspend the caller: give the loop a turn,
                # so acks and credit go out while the rest are handled (and the loop stays live).
                self._streak = 0
                await asyncio.sleep(0)
                continue
            if self._ready:
                held = self._ready.popleft()
                return self._hand_out(held.delivery, held.payload, held.incoming)
            delivery, payload = self._buffer.popleft()
            incoming, not_before = decode_delivery(
                payload, delivery, count_deliveries=self._adapter.profile.counts_attempts
            )
            if not_before is not None:
                wait = not_before / 1000 - time.time()
                if wait > 0:
                    self._hold(Held(delivery, payload, incoming, False, not_before), wait)
                    self._received -= 1  # held jobs use no credit: the broker may send another
                    link = self._link
                    if link is not None and not self._holding:
                        more = (self._told - self._received) - link.credit
                        if more > 0:
                            link.flow(more)
                    continue
            return self._hand_out(delivery, payload, incoming)

    def _hand_out(self, delivery: Delivery, payload: bytes, incoming: Incoming) -> Incoming:
        if not self._auto_ack and (
            delivery.remote_settled or not self._adapter.profile.honours_released
        ):
            self._in_hand[delivery] = payload
        return incoming

    # -- holding --------------------------------------------------------------------------------

    def _hold(self, held: Held, seconds: float) -> None:
        self._held.hold(held, seconds)

    def _on_due(self, held: Held) -> None:
        if held.retry:
            self._settler.retry_held(held)
        elif held.delivery.remote_settled or held.delivery.link.alive:
            self._due.append(held)
            self._admit_due()
        # else: unsettled on a link that died -- the broker has it back (and redelivers it)

    def _admit_due(self) -> None:
        """Give jobs that came due a unit of credit each, so the prefetch bound holds: credit
        not yet told to the broker first; else credit the broker holds (should it use that
        too, the delivery past the credit goes back); else they wait for :meth:`flow`."""
        due = self._due
        while due and not self._closed:
            if self._granted > self._told:
                self._told += 1
            elif self._told <= self._received:
                return
            self._received += 1
            self._ready.append(due.popleft())
            self._event.set()

    # -- settlement -----------------------------------------------------------------------------

    def settle(self, incoming: Incoming, settlement: Settlement) -> Awaitable[None] | None:
        payload = self._in_hand.pop(incoming.token, None)
        return self._settler.settle(incoming, settlement, payload)

    def stale(self, incoming: Incoming) -> bool:
        """True for an unsettled delivery whose link has died (a pre-settled one never is)."""
        delivery: Delivery = incoming.token
        return not (self._auto_ack or delivery.remote_settled or delivery.link.alive)

    def flush_acks(self) -> None:
        self._settler.flush_acks()

    # -- closing --------------------------------------------------------------------------------

    async def close(self) -> None:
        """Give back what this consumer holds and detach, waiting up to the adapter's
        ``close_timeout`` for each step.

        Where the broker honours ``released``, what was never handed out is released and the
        detach returns the rest. Elsewhere the link is detached *first* and everything it held
        is then published again: such a broker may drop what a detaching link held unsettled
        (Qpid Proton's C++ example broker does), and a give-back published while the link still
        had credit would come straight back to it. A broker that did return them then holds a
        duplicate -- never a loss.
        """
        try:
            if self._closed and self._link is None:
                return
            self._closed = True
            settler = self._settler
            settler.flush_acks()
            self._event.set()
            bound = self._adapter.close_timeout
            if self._auto_ack:
                self._forget_all()
                await self._detach(bound)
            elif self._adapter.profile.honours_released:
                self._give_back_all()
                await settler.wait_idle(bound)
                await self._detach(bound)
                await settler.wait_idle(bound)  # what arrived while detaching
            else:
                held, retries = self._take_all()
                await self._detach(bound)
                held += self._late
                self._late = []
                await settler.copy_out(held, retries, bound)
        finally:
            self._adapter.forget_receiver(self)

    async def _detach(self, bound: float) -> None:
        link = self._link
        if link is not None and link.alive:
            link.close()
            # The detach handshake: once answered, the broker has had the acks sent before it.
            try:
                await asyncio.wait_for(self._detached.wait(), bound)
            except asyncio.TimeoutError:
                log.debug("detach of %r unanswered after %.1f s", self._adapter.address, bound)
                if link.alive:
                    link.end_session()

    def _forget_all(self) -> None:
        self._buffer.clear()
        self._ready.clear()
        self._due.clear()
        self._held.take_all()

    def _take_all(self) -> tuple[list[tuple[Delivery, bytes]], list[Held]]:
        """Everything this consumer holds, for giving back: (deliveries, delayed retries).
        Jobs still in hand are among them: settling one later raises DeliveryStale."""
        items = list(self._buffer)
        items += [(held.delivery, held.payload) for held in (*self._ready, *self._due)]
        self._buffer.clear()
        self._ready.clear()
        self._due.clear()
        retries: list[Held] = []
        for held in self._held.take_all():
            if held.retry:
                retries.append(held)
            else:
                items.append((held.delivery, held.payload))
        for delivery, payload in self._in_hand.items():
            self._settler.returned.add(delivery)
            items.append((delivery, payload))
        self._in_hand.clear()
        return items, retries

    def _give_back_all(self) -> None:
        """Closing on a broker that honours ``released``: buffered and held jobs are released,
        delayed retries retried at once, pre-settled jobs in hand published again."""
        items, retries = self._take_all()
        settler = self._settler
        for held in retries:
            settler.retry_held(held)
        settler.give_back(items)


def _keep_presettled(entries: deque[_T], delivery_of: Callable[[_T], Delivery]) -> int:
    """Drop the entries whose delivery the broker still has (unsettled), in place, keeping
    the order of the rest; return how many were dropped."""
    kept = [entry for entry in entries if delivery_of(entry).remote_settled]
    dropped = len(entries) - len(kept)
    if dropped:
        entries.clear()
        entries.extend(kept)
    return dropped
