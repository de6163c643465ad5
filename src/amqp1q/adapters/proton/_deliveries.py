"""Deliveries and their outcomes in the sans-IO engine: what a link carries (see ``_links``).

The outcome states (``accepted``, ``rejected``, ``released``, ``modified``), an error
:class:`Condition` and its translation to and from proton's, the peer's verdict on a message we
sent (:class:`DeliveryOutcome`), and a received :class:`Delivery` kept for settling later. A
delivery's pointer is touched only while its link is ``alive``: after a disconnect, settling
reports False instead of reaching freed memory.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

import attrs
import proton
from cproton_ffi import ffi, lib

if TYPE_CHECKING:
    from ._links import ReceiverLink

__all__ = [
    "ACCEPTED",
    "MODIFIED",
    "OUTCOME_NAMES",
    "RECEIVED",
    "REJECTED",
    "RELEASED",
    "TERMINAL",
    "Condition",
    "Delivery",
    "DeliveryOutcome",
    "condition_of",
    "set_condition",
]

ACCEPTED: Final[int] = lib.PN_ACCEPTED
REJECTED: Final[int] = lib.PN_REJECTED
RELEASED: Final[int] = lib.PN_RELEASED
MODIFIED: Final[int] = lib.PN_MODIFIED
RECEIVED: Final[int] = lib.PN_RECEIVED
#: The outcomes that settle a delivery.
TERMINAL: Final = frozenset({ACCEPTED, REJECTED, RELEASED, MODIFIED})
OUTCOME_NAMES: Final = {
    ACCEPTED: "accepted",
    REJECTED: "rejected",
    RELEASED: "released",
    MODIFIED: "modified",
}

_NULL = ffi.NULL


@attrs.frozen(slots=True)
class Condition:
    """An AMQP error condition: a symbolic name (``amqp:not-found``) and a description."""

    name: str
    description: str | None = None
    info: Mapping[Any, Any] | None = None

    def __str__(self) -> str:
        return f"{self.name}: {self.description}" if self.description else self.name


def condition_of(cond: Any) -> Condition | None:
    if cond == _NULL or not lib.pn_condition_is_set(cond):
        return None
    name = lib.pn_condition_get_name(cond)
    desc = lib.pn_condition_get_description(cond)
    info = None
    data = lib.pn_condition_info(cond)
    if data != _NULL:
        wrapped = proton.Data(data)
        wrapped.rewind()
        if wrapped.next() is not None:
            try:
                info = wrapped.get_object()
            except Exception:  # pragma: no cover - malformed info is not worth failing over
                info = None
    return Condition(
        ffi.string(name).decode("utf-8", "replace") if name != _NULL else "amqp:unknown",
        ffi.string(desc).decode("utf-8", "replace") if desc != _NULL else None,
        info if isinstance(info, Mapping) else None,
    )


def set_condition(cond: Any, condition: Condition | None) -> None:
    if condition is None:
        return
    lib.pn_condition_set_name(cond, condition.name.encode())
    if condition.description:
        lib.pn_condition_set_description(cond, condition.description.encode())
    if condition.info:
        data = proton.Data(lib.pn_condition_info(cond))
        data.clear()
        data.put_object({proton.symbol(str(k)): v for k, v in condition.info.items()})


@attrs.frozen(slots=True)
class DeliveryOutcome:
    """The peer's verdict on a delivery we sent."""

    state: int
    condition: Condition | None = None
    delivery_failed: bool = False
    undeliverable_here: bool = False

    @property
    def name(self) -> str:
        return OUTCOME_NAMES.get(self.state, f"state {self.state:#x}")

    @property
    def accepted(self) -> bool:
        return self.state == ACCEPTED


class Delivery:
    """A message received on a :class:`ReceiverLink`, kept for settling it later."""

    __slots__ = ("_ptr", "link", "remote_settled", "settled")

    def __init__(self, ptr: Any, link: ReceiverLink, remote_settled: bool) -> None:
        self._ptr = ptr
        self.link = link
        self.remote_settled = remote_settled
        self.settled = remote_settled

    @property
    def tag(self) -> bytes:
        """The delivery tag, as bytes (Service Bus lock tokens are 16-byte tags)."""
        if self.settled or not self.link.alive:
            raise RuntimeError("the delivery is settled or its link is gone")
        tag = lib.pn_delivery_tag(self._ptr)
        return bytes(ffi.buffer(tag.start, tag.size))

    def settle(
        self,
        state: int,
        *,
        condition: Condition | None = None,
        delivery_failed: bool = False,
        undeliverable_here: bool = False,
    ) -> bool:
        """Apply an outcome and settle. Returns False when the link is gone (nothing sent)."""
        if self.settled:
            return True
        link = self.link
        if not link.alive:
            return False
        self.settled = True
        ptr = self._ptr
        if state == MODIFIED:
            local = lib.pn_delivery_local(ptr)
            lib.pn_disposition_set_failed(local, delivery_failed)
            lib.pn_disposition_set_undeliverable(local, undeliverable_here)
        elif state == REJECTED and condition is not None:
            set_condition(lib.pn_disposition_condition(lib.pn_delivery_local(ptr)), condition)
        lib.pn_delivery_update(ptr, state)
        lib.pn_delivery_settle(ptr)
        link.engine.touch()
        return True
