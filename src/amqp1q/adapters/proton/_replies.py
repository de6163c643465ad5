"""Replies on the Proton adapter: the connection's reply link, and sending a reply.

The reply link (:class:`ProtonReplyLink`, one per :class:`~._shared_connection.SharedConnection`)
is a receiver on

- a *dynamic node*: a receiver attached with ``dynamic=true`` and no address, for which the
  broker makes a temporary queue and says its address (the embedded broker; Artemis and Qpid
  brokers), deleted when the link detaches -- asked for only where the profile says it is safe
  (``BrokerProfile.dynamic_nodes``: not on unknown brokers, Qpid Proton's C example broker
  drops the connection);
- the client's reply queue (``reply_queue=``), where the broker refuses dynamic sources:
  RabbitMQ 3.x answers ``amqp:not-implemented`` ("Dynamic sources not supported"), so a
  client there declares one (``amqp1q setup-rabbitmq --reply-queue NAME``).

A reply queue given is used even where dynamic nodes exist. Replies arrive pre-settled (a
lost reply is a call timing out, never a job lost), with credit topped up as they come.

A reply goes out on the sender link for its address (one per address, as pushes do): a plain
AMQP message, ``correlation-id`` = the request's message id.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING, Final

from ..._adapter import Incoming
from ..._errors import Amqp1qError, UnsupportedFeature
from ..._replies import Reply
from ._codec import Message, encode_message
from ._deliveries import ACCEPTED, Condition, Delivery
from ._incoming import to_incoming
from ._links import Link, ReceiverLink

if TYPE_CHECKING:
    from ._shared_connection import SharedConnection

__all__ = ["ProtonReplyLink", "encode_reply"]

log = logging.getLogger("amqp1q.proton")

#: Credit the reply link keeps granted (topped up when half is used).
REPLY_CREDIT: Final = 1000
_NOT_IMPLEMENTED: Final = ("amqp:not-implemented", "amqp:not-allowed", "amqp:invalid-field")


class ProtonReplyLink:
    """The connection's reply link (see the module docstring)."""

    def __init__(self, shared: SharedConnection, reply_queue: str | None) -> None:
        self._shared = shared
        self._reply_queue = reply_queue
        self.address = ""
        self.session_id: str | None = None
        self._link: ReceiverLink | None = None
        self._buffer: deque[Incoming] = deque()
        self._event = asyncio.Event()
        self.closed = False
        #: How the reply link was made: "dynamic" or "reply queue" (after open()).
        self.kind = ""

    async def open(self) -> None:
        connection = await self._shared.wait_connected()
        profile = self._shared.profile
        assert profile is not None
        link: ReceiverLink | None = None
        if self._reply_queue is None and not profile.dynamic_nodes:
            raise UnsupportedFeature(
                f"amqp1q does not ask {profile.product} for a dynamic node (an unknown broker "
                "may drop the connection, as Qpid Proton's C example broker does): give the "
                "client a reply queue of its own, reply_queue=NAME"
            )
        if self._reply_queue is None:
            try:
                link = await connection.attach_receiver(None, dynamic=True, settled=True)
            except Amqp1qError as exc:
                if exc.condition not in _NOT_IMPLEMENTED:
                    raise
                why = exc.description or exc.condition
                raise UnsupportedFeature(
                    f"{profile.product} makes no dynamic nodes for replies ({why}): give the "
                    "client a reply queue of its own, reply_queue=NAME (on RabbitMQ 3.x: "
                    "amqp1q setup-rabbitmq --reply-queue NAME)",
                    condition=exc.condition,
                ) from None
            self.address = link.remote_source_address or ""
            self.kind = "dynamic"
            if not self.address:
                link.close()
                raise UnsupportedFeature(
                    f"{profile.product} attached a dynamic reply node without an address: "
                    "give the client a reply queue, reply_queue=NAME"
                )
        else:
            self.address = profile.queue_address(self._reply_queue)
            link = await connection.attach_receiver(
                self.address, queue=self._reply_queue, settled=True
            )
            self.kind = "reply queue"
        link.on_message = self._on_message
        link.on_remote_close = self._on_closed
        link.flow(REPLY_CREDIT)
        self._link = link

    def _on_message(self, delivery: Delivery, payload: bytes) -> None:
        link = self._link
        if not delivery.remote_settled:  # (a broker that ignores snd-settle-mode)
            delivery.settle(ACCEPTED)
        self._buffer.append(to_incoming(payload, None, count_deliveries=False))
        self._event.set()
        if link is not None and link.credit < REPLY_CREDIT // 2:
            link.flow(REPLY_CREDIT - link.credit)

    def _on_closed(self, _: Link, condition: Condition | None) -> None:
        if not self.closed:
            log.debug("the reply link closed: %s", condition)
        self.closed = True
        self._event.set()

    def wake(self) -> None:
        """Wake the reader (closed: the connection went)."""
        self._event.set()

    async def receive(self) -> Incoming | None:
        while True:
            if self._buffer:
                return self._buffer.popleft()
            if self.closed:
                return None
            self._event.clear()
            await self._event.wait()

    async def close(self) -> None:
        """Detach (no wait: the broker deletes a dynamic node once it sees the detach)."""
        if self.closed:
            return
        self.closed = True
        self._event.set()
        link, self._link = self._link, None
        if link is not None and link.alive:
            link.on_remote_close = None
            link.close()


def encode_reply(reply: Reply) -> bytes:
    """A reply as a plain AMQP message (durable: a reply queue may be durable too)."""
    return encode_message(
        Message(
            durable=True,
            message_id=reply.id,
            subject=reply.subject,
            correlation_id=reply.correlation_id,
            content_type=reply.content_type,
            group_id=reply.session_id,
            application_properties=dict(reply.properties) or None,
            body_kind="data",
            body=reply.body,
        )
    )
