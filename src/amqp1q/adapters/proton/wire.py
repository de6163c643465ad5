"""The Proton adapter's engine surface for amqp1q's embedded broker. Internal: not public API.

:mod:`amqp1q.testing` serves AMQP 1.0 with the same sans-IO engine and I/O as the client, in
the other role, and reads and writes messages with the same codec. This module is the one door
it goes through: it names what the broker may use of the adapter's private modules, so the
adapter can rearrange them behind it. Nothing here is for applications; names may change in
any release.

- the engine and its I/O: :class:`Engine` (``server=True``) driven by :class:`Pump`;
- links and deliveries: :class:`Link`, :class:`SenderLink`, :class:`ReceiverLink`,
  :class:`Delivery`, :class:`DeliveryOutcome`, :class:`Condition` and the outcome codes;
  proton's :class:`Terminus`, to set up a link's ``wrapper`` (a null terminus refuses it);
- messages: :func:`split_sections` and the section codes, :class:`Message` with
  :func:`decode_message` / :func:`encode_message`;
- the AMQP 1.0 type system: :func:`encode`, :func:`decode` and the typed values.
"""

from __future__ import annotations

from proton import Terminus

from ._codec import (
    APPLICATION_PROPERTIES,
    HEADER,
    MESSAGE_ANNOTATIONS,
    Message,
    decode_message,
    encode_message,
    split_sections,
)
from ._driver import Pump
from ._engine import Engine
from ._links import (
    ACCEPTED,
    MODIFIED,
    REJECTED,
    RELEASED,
    Condition,
    Delivery,
    DeliveryOutcome,
    Link,
    ReceiverLink,
    SenderLink,
)
from ._types import (
    AMQPDecodeError,
    Array,
    Described,
    Int,
    Symbol,
    Timestamp,
    UByte,
    UInt,
    ULong,
    decode,
    encode,
)

__all__ = [
    "ACCEPTED",
    "APPLICATION_PROPERTIES",
    "HEADER",
    "MESSAGE_ANNOTATIONS",
    "MODIFIED",
    "REJECTED",
    "RELEASED",
    "AMQPDecodeError",
    "Array",
    "Condition",
    "Delivery",
    "DeliveryOutcome",
    "Described",
    "Engine",
    "Int",
    "Link",
    "Message",
    "Pump",
    "ReceiverLink",
    "SenderLink",
    "Symbol",
    "Terminus",
    "Timestamp",
    "UByte",
    "UInt",
    "ULong",
    "decode",
    "decode_message",
    "encode",
    "encode_message",
    "split_sections",
]
