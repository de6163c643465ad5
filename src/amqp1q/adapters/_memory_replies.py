"""Request and reply on the in-memory broker: a client's reply link is a temporary queue of
its own (``$replies/...``), read by one receiver and deleted when the link closes; a reply to a
caller that has gone is dropped."""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Final

from .._adapter import Incoming
from .._job import Headers
from .._replies import Reply
from ._memory_store import Entry, MemoryReceiver

if TYPE_CHECKING:
    from .memory import MemoryBroker

__all__ = ["REPLY_PREFIX", "MemoryReplies", "MemoryReplyLink"]

#: The name of a caller's temporary reply queue starts with this.
REPLY_PREFIX: Final = "$replies/"


class MemoryReplies:
    """The reply link of one client (a ``from_url`` queue, or a ``connect()`` client): a
    temporary queue of its own, deleted when the link closes."""

    def __init__(self, broker: MemoryBroker) -> None:
        self._broker = broker
        self._link: MemoryReplyLink | None = None

    def link(self) -> MemoryReplyLink:
        link = self._link
        if link is None or link.closed:
            link = self._link = MemoryReplyLink(self._broker)
        return link

    def send(self, address: str, reply: Reply) -> None:
        broker = self._broker
        if address.startswith(REPLY_PREFIX) and not broker.has_queue(address):
            return  # its caller has gone: nobody would read it
        broker.queue(address).put(
            Entry(
                seq=broker.next_seq(),
                id=reply.id,
                name=reply.subject or "reply",
                body=reply.body,
                content_type=reply.content_type,
                headers=Headers(reply.properties) if reply.properties else Headers(),
                priority=0,
                enqueued_at=datetime.datetime.now(datetime.timezone.utc),
                correlation_id=reply.correlation_id,
            )
        )

    async def close(self) -> None:
        link, self._link = self._link, None
        if link is not None:
            await link.close()


class MemoryReplyLink:
    """A temporary reply queue and the receiver reading it (at most once: replies are
    settled on delivery)."""

    _CREDIT: Final = 1000

    def __init__(self, broker: MemoryBroker) -> None:
        self._broker = broker
        self.address = f"{REPLY_PREFIX}{broker.next_seq()}-{id(self):x}"
        self.session_id: str | None = None
        self._receiver: MemoryReceiver | None = None
        self.closed = False

    async def open(self) -> None:
        receiver = MemoryReceiver(self._broker.queue(self.address), auto_ack=True)
        await receiver.open()
        receiver.flow(self._CREDIT)
        self._receiver = receiver

    async def receive(self) -> Incoming | None:
        receiver = self._receiver
        if receiver is None or self.closed:
            return None
        incoming = await receiver.receive()
        if incoming is not None:
            receiver.flow(1)
        return incoming

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        receiver, self._receiver = self._receiver, None
        if receiver is not None:
            await receiver.close()
        self._broker.delete(self.address)
