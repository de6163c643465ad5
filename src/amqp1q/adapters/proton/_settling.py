"""Settling received deliveries as the broker's profile allows: :class:`Settler`.

An outcome the profile honours goes to the broker as that outcome. Any other is emulated with
what every AMQP 1.0 broker has (DESIGN §3): the job is published again, then the original
accepted -- a release byte for byte (the same attempt), a retry with ``x-amqp1q-attempt`` + 1,
a dead-letter to the queue's ``.dlq`` with the reason. Publishing first means a crash between
the two gives a duplicate, never a loss.

A delivery the broker sent *pre-settled* (at most once) although the consumer asked for
unsettled ones has no outcome left to send: ``ack`` has nothing to do, and every other outcome
is the same re-publish -- the job's bytes are in the consumer's hands, and nowhere else.

Accepts are coalesced: an ack waits (at most ``_ACK_DELAY`` seconds, at most ``_ACK_BATCH``
acks) to go out with the others as one disposition range. Each disposition frame costs
RabbitMQ 3.x about as much as several deliveries, so this raised its delivery rate by about a
fifth (docs/benchmarks.md). An ack still waiting when its link dies is lost exactly like one
written to a socket that then dies: the broker redelivers that job (at-least-once).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Coroutine, Iterable
from typing import TYPE_CHECKING, Any

from ..._adapter import Incoming, Outcome, Settlement
from ..._errors import Amqp1qError, DeliveryStale
from ..._properties import (
    BROKER_DEAD_LETTER_DESCRIPTION,
    BROKER_DEAD_LETTER_REASON,
    dead_letter_properties,
)
from ._brokers import DEAD_LETTER_CONDITION, DeadLetterStyle, DelayStyle
from ._deliveries import ACCEPTED, MODIFIED, REJECTED, RELEASED, Condition, Delivery
from ._holding import Held

if TYPE_CHECKING:
    from .adapter import ProtonAdapter

__all__ = ["Settler"]

log = logging.getLogger("amqp1q.proton")

#: Accepts go out together once this many wait, or this many seconds after the first.
_ACK_BATCH = 64
_ACK_DELAY = 0.001


class Settler:
    """The settlement half of one :class:`~._receiving.ProtonReceiver`."""

    def __init__(self, adapter: ProtonAdapter, hold: Any) -> None:
        self._adapter = adapter
        #: ``hold(Held, seconds)``: the receiver's clock for delayed retries.
        self._hold = hold
        self._acks: list[Delivery] = []  # accepted, not yet handed to proton
        self._ack_timer: asyncio.TimerHandle | None = None
        #: Deliveries given back to the broker while their job was in hand (at close).
        self.returned: set[Delivery] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    # -- one job --------------------------------------------------------------------------------

    def settle(
        self, incoming: Incoming, settlement: Settlement, payload: bytes | None
    ) -> Awaitable[None] | None:
        """Apply ``settlement``; ``payload`` is the delivery's bytes where kept (for a release
        that must be re-published)."""
        delivery: Delivery = incoming.token
        if delivery in self.returned:
            self.returned.discard(delivery)
            raise DeliveryStale(
                "the job went back to the broker when its consumer closed",
                queue=self._adapter.queue,
                address=self._adapter.address,
                job_id=incoming.id,
            )
        outcome = settlement.outcome
        profile = self._adapter.profile
        presettled = delivery.remote_settled
        if outcome is Outcome.ACK:
            if presettled:
                return None  # the broker forgot the job when it sent it: nothing to say
            if not delivery.link.alive:
                self._apply(delivery, incoming, ACCEPTED)  # raises DeliveryStale
            acks = self._acks
            acks.append(delivery)
            if len(acks) >= _ACK_BATCH:
                self.flush_acks()
            elif self._ack_timer is None:
                self._ack_timer = asyncio.get_running_loop().call_later(_ACK_DELAY, self.flush_acks)
        elif outcome is Outcome.RELEASE:
            if presettled or not profile.honours_released:
                return self._give_back_one(delivery, incoming, payload)
            self._apply(delivery, incoming, RELEASED)
        elif outcome is Outcome.RETRY:
            delay = settlement.delay
            if delay and profile.delay is DelayStyle.HELD:
                if not presettled and not delivery.link.alive:
                    self._apply(delivery, incoming, MODIFIED)  # raises DeliveryStale
                self._hold(Held(delivery, payload or b"", incoming, retry=True), delay)
                return None
            if delay:
                return self._republish_then_accept(
                    delivery, incoming, self._adapter.queue, incoming.attempt + 1, delay, None
                )
            return self.retry_now(delivery, incoming)
        else:
            return self._dead_letter(delivery, incoming, settlement)
        return None

    def retry_now(self, delivery: Delivery, incoming: Incoming) -> Awaitable[None] | None:
        if self._adapter.profile.supports_modified and not delivery.remote_settled:
            self._apply(delivery, incoming, MODIFIED, delivery_failed=True)
            return None
        return self._republish_then_accept(
            delivery, incoming, self._adapter.queue, incoming.attempt + 1, None, None
        )

    def _dead_letter(
        self, delivery: Delivery, incoming: Incoming, settlement: Settlement
    ) -> Awaitable[None] | None:
        adapter = self._adapter
        profile = adapter.profile
        style = profile.dead_letter
        if style is DeadLetterStyle.REPUBLISH or delivery.remote_settled:
            dlq = profile.dead_letter_queue(adapter.queue) or adapter.queue + ".dlq"
            return self._republish_then_accept(
                delivery, incoming, dlq, incoming.attempt, None, settlement
            )
        if style is DeadLetterStyle.REJECT_WITH_INFO:
            reason = settlement.reason or "rejected"
            info: dict[str, Any] = {BROKER_DEAD_LETTER_REASON: reason}
            if settlement.description:
                info[BROKER_DEAD_LETTER_DESCRIPTION] = settlement.description
            condition = Condition(DEAD_LETTER_CONDITION, reason, info)
        else:
            description = settlement.reason or "rejected"
            if settlement.description:
                description += f": {settlement.description}"
            condition = Condition("amqp1q:rejected", description)
        self._apply(delivery, incoming, REJECTED, condition=condition)
        return None

    def flush_acks(self) -> None:
        """Hand the waiting accepts to proton (one disposition range where they are contiguous)."""
        timer = self._ack_timer
        if timer is not None:
            timer.cancel()
            self._ack_timer = None
        acks = self._acks
        if acks:
            self._acks = []
            for delivery in acks:
                delivery.settle(ACCEPTED)  # False if its link died meanwhile: redelivered

    def _apply(
        self,
        delivery: Delivery,
        incoming: Incoming,
        state: int,
        *,
        condition: Condition | None = None,
        delivery_failed: bool = False,
    ) -> None:
        if not delivery.settle(state, condition=condition, delivery_failed=delivery_failed):
            raise DeliveryStale(
                "the link the job arrived on has closed; the broker redelivers it",
                queue=self._adapter.queue,
                address=self._adapter.address,
                job_id=incoming.id,
            )

    async def _republish_then_accept(
        self,
        delivery: Delivery,
        incoming: Incoming,
        queue: str,
        attempt: int,
        delay: float | None,
        dead_letter: Settlement | None,
    ) -> None:
        """Publish a copy first, then accept: a crash between gives a duplicate, never a loss."""
        if not delivery.remote_settled and not delivery.link.alive:
            self._apply(delivery, incoming, ACCEPTED)  # raises DeliveryStale
        extra: dict[str, Any] = {}
        if dead_letter is not None:
            extra = dead_letter_properties(dead_letter.reason, dead_letter.description)
        job = incoming.copy_as_job(delay)
        await self._adapter.republish(job, queue, attempt=attempt, extra_properties=extra)
        self._apply(delivery, incoming, ACCEPTED)

    # -- giving jobs back -----------------------------------------------------------------------

    def _give_back_one(
        self, delivery: Delivery, incoming: Incoming, payload: bytes | None
    ) -> Awaitable[None]:
        if payload is None:  # (not kept: a copy re-encoded from the job does as well)
            return self._republish_then_accept(
                delivery, incoming, self._adapter.queue, incoming.attempt, None, None
            )
        return self._copy_back([(delivery, payload)], raise_errors=True)

    def give_back(self, deliveries: Iterable[tuple[Delivery, bytes]]) -> None:
        """Return deliveries nobody will handle (a consumer closing, credit overrun): released
        where the broker honours that, else published again byte for byte, then accepted."""
        honours = self._adapter.profile.honours_released
        copies: list[tuple[Delivery, bytes]] = []
        for delivery, payload in deliveries:
            if honours and not delivery.remote_settled:
                delivery.settle(RELEASED)  # False if its link died: the broker has it back
            else:
                copies.append((delivery, payload))
        if copies:
            self.spawn(self._copy_back(copies, raise_errors=False))

    async def _copy_back(self, copies: list[tuple[Delivery, bytes]], *, raise_errors: bool) -> None:
        """Publish each payload again, in order, then accept each original that made it."""
        errors = await self._adapter.republish_raw([payload for _, payload in copies])
        for (delivery, _), error in zip(copies, errors, strict=True):
            if error is None:
                delivery.settle(ACCEPTED)  # False if its link died: at worst a duplicate
            elif raise_errors:
                raise error
            else:
                log.warning(
                    "could not give a job back to %r (%s); the broker may redeliver it, "
                    "or may have dropped it",
                    self._adapter.address,
                    error,
                    extra={"queue": self._adapter.queue},
                )

    async def copy_out(
        self, deliveries: list[tuple[Delivery, bytes]], retries: list[Held], bound: float
    ) -> None:
        """After the link is gone: publish each delivery again byte for byte, and each delayed
        retry with its attempt counted (what the broker may have dropped with the link)."""
        adapter = self._adapter

        async def retry(held: Held) -> None:
            incoming = held.incoming
            await adapter.republish(
                incoming.copy_as_job(),
                adapter.queue,
                attempt=incoming.attempt + 1,
                extra_properties={},
            )

        async def copy() -> None:
            for error in await adapter.republish_raw([payload for _, payload in deliveries]):
                if error is not None:
                    log.warning(
                        "could not give a job back to %r (%s); the broker may have dropped it",
                        adapter.address,
                        error,
                        extra={"queue": adapter.queue},
                    )

        if deliveries:
            self.spawn(copy())
        for held in retries:
            self.spawn(retry(held))
        await self.wait_idle(bound)

    def retry_held(self, held: Held) -> None:
        """A delayed retry's time has come (or its consumer is closing): retry it now."""
        self.spawn(self._retry_held(held))

    async def _retry_held(self, held: Held) -> None:
        try:
            pending = self.retry_now(held.delivery, held.incoming)
            if pending is not None:
                await pending
        except DeliveryStale:
            log.debug("a held retry's link closed; the broker redelivers job %s", held.incoming.id)
        except Amqp1qError as exc:
            log.warning(
                "retrying job %s after its delay failed: %s; the broker redelivers it",
                held.incoming.id,
                exc,
                extra={"queue": self._adapter.queue, "job_id": held.incoming.id},
            )

    # -- background work ------------------------------------------------------------------------

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning(
                "settling on %r failed",
                self._adapter.address,
                exc_info=task.exception(),
                extra={"queue": self._adapter.queue},
            )

    async def wait_idle(self, timeout: float) -> None:
        """Wait (bounded) for give-backs and retries under way; cancel what is left."""
        tasks = set(self._tasks)
        if not tasks:
            return
        _, late = await asyncio.wait(tasks, timeout=timeout)
        for task in late:
            task.cancel()
        if late:
            log.warning(
                "%d job(s) were still being given back to %r after %.1f s; abandoned",
                len(late),
                self._adapter.address,
                timeout,
                extra={"queue": self._adapter.queue},
            )
