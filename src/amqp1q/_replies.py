"""Request and reply: what a reply is, and the part of the adapter seam it uses.

A request is a job sent with ``reply-to`` (where the caller listens) and ``correlation-id``
(the job id). Whoever handles it sends one reply there: a plain AMQP message whose
``correlation-id`` is the request's message id, so any AMQP 1.0 client can be the caller:

- a result: the handler's return value as the body (JSON unless it is bytes), the content
  type saying which;
- a failure (the handler failed after its last attempt, or the job was dead-lettered): the
  body ``{"error": {"type": ..., "message": ...}}`` with the content type :data:`ERROR_TYPE`,
  which a caller's ``queue.call()`` raises as :class:`~amqp1q.JobFailed`.

The adapter seam (:class:`~amqp1q._adapter.Adapter`) declares the two methods replies use::

    adapter.reply_link()                -> ReplyLink: the connection's one reply link (the
                                        same object until it closes; no I/O until open())
    adapter.send_reply(address, reply)  send one Reply to a caller's reply-to address;
                                        returns once the broker accepted it

    link.open()                         attach (a dynamic node, a temporary queue, or the
                                        client's reply queue); then link.address says where
                                        replies go and link.session_id (Service Bus) which
                                        session of it
    link.receive()                      -> the next reply (an Incoming whose correlation_id
                                        is set), or None once the link closed
    link.close()                        detach; receive() returns None
    link.closed                         True once closed, by close() or with the connection
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Final, Protocol

import attrs

from ._adapter import Incoming

__all__ = ["ERROR_TYPE", "Reply", "ReplyLink", "reply_message_id"]

#: The content type of a failure reply (a JSON body: ``{"error": {"type", "message"}}``).
ERROR_TYPE: Final = "application/vnd.amqp1q.error+json"


def reply_message_id() -> str:
    return str(uuid.uuid4())


@attrs.frozen(slots=True)
class Reply:
    """One reply as an adapter sends it."""

    #: The request's message id (what the caller waits for).
    correlation_id: str
    body: bytes
    content_type: str
    #: The request's name, as the reply's subject (for a reader's logs).
    subject: str | None = None
    #: Service Bus: the request's ``reply-to-session-id``: the session the reply goes to.
    session_id: str | None = None
    #: Application properties, if any.
    properties: Mapping[str, str] = attrs.field(factory=dict)
    id: str = attrs.field(factory=reply_message_id)


class ReplyLink(Protocol):
    """The connection's reply link. See the module docstring."""

    @property
    def address(self) -> str: ...

    @property
    def session_id(self) -> str | None: ...

    #: True once closed (by close(), or with its connection): the next call makes a new link.
    @property
    def closed(self) -> bool: ...

    async def open(self) -> None: ...

    async def receive(self) -> Incoming | None: ...

    async def close(self) -> None: ...
