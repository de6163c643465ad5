"""Operating a Service Bus queue (``JobQueue.depth()``, ``peek()``, ...) through the SDK's AMQP
operations -- what the embedded broker's emulation serves too.

- peek: ``ServiceBusReceiver.peek_messages`` (``$management`` ``peek-message``), on the queue
  or its dead-letter sub-queue;
- depth: counted by peeking, page after page, up to :data:`COUNT_LIMIT` messages per
  sub-queue: active (``ready``, locked ones among them: Service Bus does not tell peeked
  messages in flight apart, so ``in_flight`` is None) and scheduled, by each message's state.
  The runtime counts of ``ServiceBusAdministrationClient`` come over HTTPS, which the
  emulation does not serve, and cost a round trip to Azure Resource Manager's ATOM feed; the
  peek works wherever the queue does. ``exact`` is False only for a queue past the limit
  (counted to the limit). No running totals (``None``).
- purge of the dead-letter queue: received in RECEIVE_AND_DELETE mode until it is empty;
- cancel: ``ServiceBusSender.cancel_scheduled_messages`` with the receipt's sequence number.
"""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Any, Final

from azure.servicebus import ServiceBusMessageState, ServiceBusReceiveMode, ServiceBusSubQueue
from azure.servicebus import exceptions as sb_errors

from ..._inspection import PeekedJob, QueueDepth, unsupported
from ..._job import Receipt
from ._mapping import to_incoming
from ._sdk import close_quietly

if TYPE_CHECKING:
    from .adapter import ServiceBusAdapter

__all__ = ["COUNT_LIMIT", "ServiceBusOperations"]

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

    def _receiver(self, *, dead_letter: bool, delete: bool = False) -> Any:
        options: dict[str, Any] = {"prefetch_count": 0}
        if dead_letter:
            options["sub_queue"] = ServiceBusSubQueue.DEAD_LETTER
        if delete:
            options["receive_mode"] = ServiceBusReceiveMode.RECEIVE_AND_DELETE
        return self._adapter.client.get_queue_receiver(self._entity, **options)

    async def _peek_all(self, *, dead_letter: bool, limit: int) -> list[Any]:
        receiver = self._receiver(dead_letter=dead_letter)
        found: list[Any] = []
        try:
            start = 0
            while len(found) < limit:
                page = await receiver.peek_messages(
                    max_message_count=min(PAGE, limit - len(found)), sequence_number=start
                )
                if not page:
                    break
                found += page
                start = max(m.sequence_number or 0 for m in page) + 1
        finally:
            await close_quietly(receiver)
        return found

    async def depth(self) -> QueueDepth:
        active = await self._peek_all(dead_letter=False, limit=COUNT_LIMIT)
        dead = await self._peek_all(dead_letter=True, limit=COUNT_LIMIT)
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
        receiver = self._receiver(dead_letter=True, delete=True)
        count = 0
        try:
            while True:
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
