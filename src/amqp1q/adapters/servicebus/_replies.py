"""Replies on the Service Bus adapter: the client's reply link, read through the SDK.

Service Bus makes no dynamic nodes, so replies come back on a queue the client names
(``reply_queue=``), read in RECEIVE_AND_DELETE mode (a reply lost with its caller is a call
timing out, never a job lost). A request carries ``reply-to`` = that queue; a reply goes to
the queue a request's ``reply-to`` names, ``session_id`` = the request's
``reply-to-session-id`` where it has one.

A reply queue that requires sessions is Microsoft's request-reply pattern: many callers share
one queue, each reading its own session. Service Bus refuses a plain receiver on such a queue
(``amqp:not-allowed``); the link then reads the session named after the client (a fresh UUID),
and every request the client sends to that queue carries it as ``reply-to-session-id``. A
reply queue without sessions is read whole: one per client.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import deque
from typing import TYPE_CHECKING, Any, Final

from ..._adapter import Incoming
from ..._errors import Amqp1qError, UnsupportedFeature
from ._mapping import to_incoming
from ._reconnect import open_fresh
from ._sdk import ServiceBusReceiveMode, ServiceBusReceiver, close_quietly

if TYPE_CHECKING:
    from .adapter import ServiceBusAdapter

__all__ = ["ServiceBusReplyLink", "session_of"]

log = logging.getLogger("amqp1q.servicebus")

#: Replies taken per receive call, and how long one waits before asking again.
_BATCH: Final = 100
_WAIT: Final = 5.0


class ServiceBusReplyLink:
    """The client's reply link on its reply queue (see the module docstring)."""

    def __init__(self, adapter: ServiceBusAdapter, reply_queue: str | None) -> None:
        self._adapter = adapter
        self._reply_queue = reply_queue
        self.address = reply_queue or ""
        self.session_id: str | None = None
        self._receiver: ServiceBusReceiver | None = None
        self._buffer: deque[Incoming] = deque()
        self.closed = False

    async def open(self) -> None:
        adapter = self._adapter
        if self._reply_queue is None:
            raise UnsupportedFeature(
                "Azure Service Bus makes no temporary queues for replies: give the client a "
                "reply queue of its own, reply_queue=NAME (docs/request-reply.md)",
                queue=adapter.queue,
            )
        try:
            self._receiver = await self._attach(None)
        except Amqp1qError as exc:
            if not _requires_session(exc):
                raise
            session = str(uuid.uuid4())
            self._receiver = await self._attach(session)
            self.session_id = session

    async def _attach(self, session: str | None) -> ServiceBusReceiver:
        adapter = self._adapter
        assert self._reply_queue is not None
        options: dict[str, Any] = {}
        if session is not None:
            options["session_id"] = session
        receiver = adapter.client.get_queue_receiver(
            self._reply_queue,
            receive_mode=ServiceBusReceiveMode.RECEIVE_AND_DELETE,
            prefetch_count=0,
            socket_timeout=adapter.socket_timeout,
            **options,
        )
        return await open_fresh(receiver, queue=self._reply_queue, display=adapter.display)

    async def receive(self) -> Incoming | None:
        while not self._buffer:
            receiver = self._receiver
            if receiver is None or self.closed:
                return None
            try:
                messages = await receiver.receive_messages(
                    max_message_count=_BATCH, max_wait_time=_WAIT
                )
            except Exception:
                if self._receiver is not receiver:  # closed meanwhile
                    return None
                log.warning("reading replies failed; the reply link closes", exc_info=True)
                await self.close()
                return None
            self._buffer.extend(to_incoming(message) for message in messages)
        return self._buffer.popleft()

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        receiver, self._receiver = self._receiver, None
        if receiver is not None:
            await asyncio.shield(close_quietly(receiver))


def _requires_session(error: Amqp1qError) -> bool:
    """Service Bus refused a plain receiver: the queue requires sessions."""
    text = f"{error.condition or ''} {error.description or ''}"
    return "amqp:not-allowed" in text and "session" in text.lower()


def session_of(link: ServiceBusReplyLink | None, reply_to: str | None) -> str | None:
    """The ``reply-to-session-id`` a request to ``reply_to`` carries: the client's session,
    when it is the client's own reply queue and that queue has sessions."""
    if link is None or reply_to is None or link.closed or link.address != reply_to:
        return None
    return link.session_id
