"""Operating a queue over ``amqp://`` (``JobQueue.depth()``, ``peek()``, ...): by broker.

- amqp1q's embedded broker (plain or emulating Service Bus): amqp1q's own operations on the
  queue's ``$management`` node (``amqp1q.testing._management_ops``), over the same connection,
  so the broker may be another process;
- RabbitMQ: its management HTTP API (``_rabbitmq_inspect``);
- Artemis and Qpid: peek by browsing -- a receiver whose source asks for distribution-mode
  ``copy``, AMQP 1.0's standard non-destructive read -- where the broker's attach answers
  ``copy`` (else nothing is read: UnsupportedFeature); other brokers (profile ``generic``)
  are not browsed. Counting, purging and cancelling raise UnsupportedFeature.
"""

from __future__ import annotations

import asyncio
import datetime
import uuid
from typing import TYPE_CHECKING, Any, Final

import proton

from ..._inspection import PeekedJob, QueueDepth, QueueOperations, unsupported
from ..._job import Receipt
from ._codec import Message, decode_message, encode_message
from ._deliveries import ACCEPTED, Delivery
from ._incoming import decode_delivery

if TYPE_CHECKING:
    from ._client import ClientConnection
    from .adapter import ProtonAdapter

__all__ = ["ManagementOperations", "operations_for"]

MANAGEMENT: Final = "/$management"
DEAD_LETTER: Final = "/$deadletterqueue"
REQUEST_TIMEOUT: Final = 10.0
#: How long a browse waits for the next copy before it takes the queue as read.
BROWSE_IDLE: Final = 0.5
#: The profiles whose brokers honour distribution-mode copy. Qpid Proton's C++ example broker
#: (profile generic) grants copy at attach, yet a browse of it did not match the queue.
BROWSING: Final = frozenset({"artemis", "qpid"})
_STATES: Final = {0: "ready", 1: "deferred", 2: "scheduled"}
_EPOCH: Final = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


def operations_for(adapter: ProtonAdapter) -> QueueOperations:
    """The operations the adapter's broker offers (see the module docstring)."""
    profile = adapter.profile
    if profile.name == "amqp1q":
        return ManagementOperations(adapter)
    if profile.name.startswith("rabbitmq"):
        from ._rabbitmq_inspect import RabbitMQOperations

        return RabbitMQOperations(adapter)
    return BrowseOperations(adapter)


class ManagementOperations:
    """amqp1q's ``$management`` operations, on the embedded broker."""

    def __init__(self, adapter: ProtonAdapter) -> None:
        self._adapter = adapter
        self._queue = adapter.queue

    async def _request(self, entity: str, operation: str, body: dict[str, Any]) -> tuple[int, Any]:
        connection = await self._adapter.wait_connected()
        return await management_request(connection, entity + MANAGEMENT, operation, body)

    async def depth(self) -> QueueDepth:
        status, body = await self._request(self._queue, "amqp1q:queue-stats", {})
        if status != 200 or not isinstance(body, dict):
            raise unsupported("this broker", "count its queue", self._queue, f"status {status}")
        facts = {str(k): v for k, v in body.items()}
        oldest = facts.get("oldest-enqueued-time")
        return QueueDepth(
            self._queue,
            ready=int(facts["ready"]),
            scheduled=int(facts["scheduled"]),
            in_flight=int(facts["in-flight"]),
            dead_lettered=int(facts["dead-lettered"]),
            oldest_enqueued_at=_when(oldest),
            published=int(facts["published"]),
            delivered=int(facts["delivered"]),
            acked=int(facts["acked"]),
            source="amqp1q-broker",
        )

    async def peek(self, count: int, *, dead_letter: bool) -> list[PeekedJob]:
        entity = self._queue + (DEAD_LETTER if dead_letter else "")
        request = {"from-sequence-number": 0, "message-count": count}
        status, body = await self._request(entity, "amqp1q:peek", request)
        if status == 204 or not isinstance(body, dict):
            return []
        found = []
        for entry in body.get("messages") or []:
            payload = {str(k): v for k, v in entry.items()}["message"]
            found.append(peeked(bytes(payload), dead_letter=dead_letter))
        return found

    async def purge(self, *, dead_letter: bool) -> int:
        entity = self._queue + (DEAD_LETTER if dead_letter else "")
        _, body = await self._request(entity, "amqp1q:purge", {})
        return int(dict(body or {}).get("count", 0))

    async def cancel_scheduled(self, receipt: Receipt) -> bool:
        request = {"message-ids": [receipt.job_id]}
        _, body = await self._request(self._queue, "amqp1q:cancel-scheduled", request)
        return int(dict(body or {}).get("count", 0)) > 0


def _when(value: Any) -> datetime.datetime | None:
    if isinstance(value, datetime.datetime):
        return value
    if isinstance(value, int) and value > 0:
        return _EPOCH + datetime.timedelta(milliseconds=value)
    return None


def peeked(payload: bytes, *, dead_letter: bool) -> PeekedJob:
    """A peeked message's bytes as a :class:`PeekedJob` (decoded as a delivery would be)."""
    incoming, _ = decode_delivery(payload, None)
    annotations = _annotations(payload)
    code = annotations.get("x-opt-message-state")
    state = "dead-lettered" if dead_letter else _STATES.get(code if isinstance(code, int) else 0)
    sequence = annotations.get("x-opt-sequence-number")
    due = annotations.get("x-opt-scheduled-enqueue-time") or annotations.get("x-opt-delivery-time")
    scheduled_for = None
    if state == "scheduled" and isinstance(due, int):
        scheduled_for = _EPOCH + datetime.timedelta(milliseconds=due)
    elif state == "scheduled" and isinstance(due, datetime.datetime):
        scheduled_for = due
    return PeekedJob.of(
        incoming,
        state=state,
        sequence_number=sequence if isinstance(sequence, int) else None,
        scheduled_for=scheduled_for,
    )


def _annotations(payload: bytes) -> dict[str, Any]:
    try:
        message = decode_message(payload)
    except Exception:
        return {}
    return {str(k): v for k, v in (message.message_annotations or {}).items()}


async def management_request(
    connection: ClientConnection, node: str, operation: str, body: dict[str, Any]
) -> tuple[int, Any]:
    """One request to a ``$management`` node and its answer: (status, body)."""
    receiver = await connection.attach_receiver(node)
    try:
        sender = await connection.attach_sender(node)
    except BaseException:
        receiver.close()
        raise
    message_id = str(uuid.uuid4())
    answer: asyncio.Future[Message] = asyncio.get_running_loop().create_future()

    def on_message(delivery: Delivery, payload: bytes) -> None:
        if not delivery.remote_settled:
            delivery.settle(ACCEPTED)
        message = decode_message(payload)
        if str(message.correlation_id) == message_id and not answer.done():
            answer.set_result(message)

    receiver.on_message = on_message
    receiver.flow(1)
    request = Message(
        message_id=message_id,
        reply_to=node,
        application_properties={"operation": operation},
        body_kind="value",
        body=body,
    )
    try:
        sender.send(encode_message(request), None)
        reply = await asyncio.wait_for(answer, REQUEST_TIMEOUT)
    finally:
        sender.close()
        receiver.close()
    props = {str(k): v for k, v in (reply.application_properties or {}).items()}
    status = int(props.get("statusCode", props.get("status-code", 500)))
    if status >= 400:
        raise unsupported(
            "this broker", f"do {operation}", node, str(props.get("statusDescription", status))
        )
    return status, reply.body


class BrowseOperations:
    """A broker amqp1q knows no management for: peek by browsing where it honours ``copy``."""

    def __init__(self, adapter: ProtonAdapter) -> None:
        self._adapter = adapter
        self._queue = adapter.queue
        self._product = adapter.profile.product

    async def depth(self) -> QueueDepth:
        raise unsupported(self._product, "count a queue's jobs", self._queue, _NO_MANAGEMENT)

    async def purge(self, *, dead_letter: bool) -> int:
        raise unsupported(self._product, "purge a queue", self._queue, _NO_MANAGEMENT)

    async def cancel_scheduled(self, receipt: Receipt) -> bool:
        raise unsupported(self._product, "cancel a scheduled job", self._queue, _NO_MANAGEMENT)

    async def peek(self, count: int, *, dead_letter: bool) -> list[PeekedJob]:
        if self._adapter.profile.name not in BROWSING:
            raise unsupported(
                self._product,
                "peek without taking jobs",
                self._queue,
                "amqp1q browses (distribution-mode copy) only brokers it knows to honour it "
                "(Artemis, Qpid); pass broker='artemis' or broker='qpid' if yours does",
            )
        if dead_letter:
            address = self._adapter.profile.dead_letter_queue(self._queue)
            if address is None:
                raise unsupported(self._product, "peek a dead-letter queue", self._queue)
            address = self._adapter.profile.queue_address(address)
        else:
            address = self._adapter.address
        connection = await self._adapter.wait_connected()
        link = await connection.attach_receiver(address, browse=True)
        try:
            mode = link.wrapper.remote_source.distribution_mode
            if mode != proton.Terminus.DIST_MODE_COPY:
                raise unsupported(
                    self._product,
                    "peek without taking jobs",
                    self._queue,
                    "its attach did not grant distribution-mode copy (a browse)",
                )
            got: asyncio.Queue[bytes] = asyncio.Queue()

            def on_message(delivery: Delivery, payload: bytes) -> None:
                if not delivery.remote_settled:
                    delivery.settle(ACCEPTED)  # a copy: settling it takes nothing away
                got.put_nowait(payload)

            link.on_message = on_message
            link.flow(count)
            found: list[PeekedJob] = []
            while len(found) < count:
                try:
                    payload = await asyncio.wait_for(got.get(), BROWSE_IDLE)
                except asyncio.TimeoutError:
                    break
                found.append(peeked(payload, dead_letter=dead_letter))
            return found
        finally:
            link.close()


_NO_MANAGEMENT: Final = "amqp1q knows no management interface for it"
