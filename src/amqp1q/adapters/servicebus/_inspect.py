"""Operating a Service Bus queue (``JobQueue.depth()``, ``peek()``, ...) through the SDK's AMQP
operations -- what the embedded broker's emulation serves too.

- peek: ``ServiceBusReceiver.peek_messages`` (``$management`` ``peek-message``), on the queue
  or its dead-letter sub-queue, through one peek receiver each (no credit, so it never holds a
  message), opened on first use and kept until the adapter closes: opening and closing an SDK
  receiver takes about a second, a peek a few milliseconds. A kept receiver that fails (its
  connection dropped) is closed and a fresh one tried, once;
- depth: counted by peeking, page after page, up to :data:`COUNT_LIMIT` messages per
  sub-queue: active (``ready``, locked ones among them: Service Bus does not tell peeked
  messages in flight apart, so ``in_flight`` is None) and scheduled, by each message's state.
  The runtime counts of ``ServiceBusAdministrationClient`` come over HTTPS, which the
  emulation does not serve, and cost a round trip to Azure Resource Manager's ATOM feed; the
  peek works wherever the queue does. ``exact`` is False only for a queue past the limit
  (counted to the limit). No running totals (``None``).
- purge of the dead-letter queue: counted by peeking first (nothing to do for an empty one),
  then received in RECEIVE_AND_DELETE mode until that many are gone (or, past the count limit,
  until it is empty);
- cancel: ``ServiceBusSender.cancel_scheduled_messages`` with the receipt's sequence number.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from typing import TYPE_CHECKING, Any, Final

from azure.servicebus import ServiceBusMessageState, ServiceBusReceiveMode, ServiceBusSubQueue
from azure.servicebus import exceptions as sb_errors

from ..._inspection import PeekedJob, QueueDepth, unsupported
from ..._job import Receipt
from ._mapping import to_incoming
from ._sdk import close_quietly, track_sockets

if TYPE_CHECKING:
    from .adapter import ServiceBusAdapter

__all__ = ["COUNT_LIMIT", "ServiceBusOperations"]

log = logging.getLogger("amqp1q.servicebus")

#: How many messages :meth:`ServiceBusOperations.depth` counts per sub-queue at most.
COUNT_LIMIT: Final = 5000
PAGE: Final = 250
#: How long purging waits for more dead-lettered messages before it takes the queue as empty.
PURGE_WAIT: Final = 1.0


class ServiceBusOperations:
    """The :class:`~amqp1q._inspection.QueueOperations` of a Service Bus queue."""

    def __init__(self, adapter: ServiceBusAdapter) -> None:
        self._adapter = adapter
        self._queue = adapter.queue
        self._entity: str = adapter._entity
        #: The kept peek receivers: of the queue (False) and of its dead-letter queue (True).
        self._peekers: dict[bool, Any] = {}
        self._peeking = {False: asyncio.Lock(), True: asyncio.Lock()}

    def _receiver(self, *, dead_letter: bool, delete: bool = False) -> Any:
        options: dict[str, Any] = {"prefetch_count": 0}
        if dead_letter:
            options["sub_queue"] = ServiceBusSubQueue.DEAD_LETTER
        if delete:
            options["receive_mode"] = ServiceBusReceiveMode.RECEIVE_AND_DELETE
        receiver = self._adapter.client.get_queue_receiver(self._entity, **options)
        track_sockets(receiver)  # (for close_quietly)
        return receiver

    async def _peek_all(self, *, dead_letter: bool, limit: int) -> list[Any]:
        async with self._peeking[dead_letter]:
            while True:
                receiver = self._peekers.get(dead_letter)
                kept = receiver is not None
                if receiver is None:
                    receiver = self._peekers[dead_letter] = self._receiver(dead_letter=dead_letter)
                try:
                    return await _pages(receiver, limit)
                except BaseException as exc:
                    if self._peekers.get(dead_letter) is receiver:
                        del self._peekers[dead_letter]
                    await asyncio.shield(close_quietly(receiver, dead=True))
                    if not kept or not isinstance(exc, Exception):
                        raise
                    log.debug("a kept peek receiver of %s failed; opening another", self._queue)

    async def close(self) -> None:
        """Close the kept peek receivers (together: the SDK's close of each can wait up to a
        second, for its keep-alive task's next tick)."""
        receivers, self._peekers = list(self._peekers.values()), {}
        await asyncio.gather(*(close_quietly(receiver) for receiver in receivers))

    async def depth(self) -> QueueDepth:
        active, dead = await asyncio.gather(  # (each receiver opens in half a second, at once)
            self._peek_all(dead_letter=False, limit=COUNT_LIMIT),
            self._peek_all(dead_letter=True, limit=COUNT_LIMIT),
        )
        scheduled = [m for m in active if m.state == ServiceBusMessageState.SCHEDULED]
        ready = [m for m in active if m.state == ServiceBusMessageState.ACTIVE]
        times = [m.enqueued_time_utc for m in ready if m.enqueued_time_utc is not None]
        return QueueDepth(
            self._queue,
            ready=len(ready),
            scheduled=len(scheduled),
            in_flight=None,
            dead_lettered=len(dead),
            oldest_enqueued_at=min(times) if times else None,
            exact=len(active) < COUNT_LIMIT and len(dead) < COUNT_LIMIT,
            source="servicebus-peek",
        )

    async def peek(self, count: int, *, dead_letter: bool) -> list[PeekedJob]:
        found = await self._peek_all(dead_letter=dead_letter, limit=count)
        return [_peeked(message, dead_letter) for message in found[:count]]

    async def purge(self, *, dead_letter: bool) -> int:
        if not dead_letter:
            raise unsupported(
                "Azure Service Bus",
                "purge a queue through amqp1q",
                self._queue,
                "consume it with auto_ack=True, or purge it in the portal",
            )
        held = len(await self._peek_all(dead_letter=True, limit=COUNT_LIMIT))
        if held == 0:
            return 0
        receiver = self._receiver(dead_letter=True, delete=True)
        count = 0
        try:
            while held >= COUNT_LIMIT or count < held:
                batch = await receiver.receive_messages(
                    max_message_count=100, max_wait_time=PURGE_WAIT
                )
                if not batch:
                    break
                count += len(batch)
        finally:
            await close_quietly(receiver)
        return count

    async def cancel_scheduled(self, receipt: Receipt) -> bool:
        if receipt.sequence_number is None:
            return False
        adapter = self._adapter
        to = None if receipt.queue == adapter.queue else receipt.queue
        sender = await adapter.scheduling_sender(to)
        try:
            await sender.cancel_scheduled_messages(receipt.sequence_number)
        except sb_errors.MessageNotFoundError:
            return False
        return True


async def _pages(receiver: Any, limit: int) -> list[Any]:
    """Up to ``limit`` messages, peeked page after page from the head."""
    found: list[Any] = []
    start = 1  # (not 0: the SDK takes that as "after the last one this receiver peeked")
    while len(found) < limit:
        page = await receiver.peek_messages(
            max_message_count=min(PAGE, limit - len(found)), sequence_number=start
        )
        if not page:
            break
        found += page
        start = max(m.sequence_number or 0 for m in page) + 1
    return found


def _peeked(message: Any, dead_letter: bool) -> PeekedJob:
    state = "dead-lettered" if dead_letter else "ready"
    scheduled_for: datetime.datetime | None = None
    if not dead_letter and message.state == ServiceBusMessageState.SCHEDULED:
        state = "scheduled"
        scheduled_for = message.scheduled_enqueue_time_utc
    return PeekedJob.of(
        to_incoming(message),
        state=state,
        sequence_number=message.sequence_number,
        scheduled_for=scheduled_for,
    )
