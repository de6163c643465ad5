"""Links of the sans-IO engine (see ``_engine``): ours and the peer's, senders and receivers.

These objects hold raw proton pointers. A pointer is used only while its link is ``alive``: once
the peer detaches, the connection dies or the link is freed, every handle here refuses to touch
it, so a settlement after a disconnect is reported (``Delivery.settle`` returns False) instead of
reaching freed memory. Deliveries and their outcomes are in ``_deliveries``; the names listed
from there in ``__all__`` are importable from here too (the embedded broker imports them so).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import proton
from cproton_ffi import ffi, lib

from ._deliveries import (
    ACCEPTED,
    MODIFIED,
    OUTCOME_NAMES,
    RECEIVED,
    REJECTED,
    RELEASED,
    TERMINAL,
    Condition,
    Delivery,
    DeliveryOutcome,
    condition_of,
    set_condition,
)

if TYPE_CHECKING:
    from ._engine import Engine

__all__ = [
    "ACCEPTED",
    "MODIFIED",
    "OUTCOME_NAMES",
    "RECEIVED",
    "REJECTED",
    "RELEASED",
    "Condition",
    "Delivery",
    "DeliveryOutcome",
    "Link",
    "ReceiverLink",
    "SenderLink",
    "condition_of",
    "set_condition",
    "wrap_link",
]

_NULL = ffi.NULL
_LOCAL_CLOSED = lib.PN_LOCAL_CLOSED
_REMOTE_CLOSED = lib.PN_REMOTE_CLOSED


class Link:
    """One link, ours or the peer's. Subclasses carry the role-specific half."""

    is_sender = False

    def __init__(self, engine: Engine, ptr: Any, name: str) -> None:
        self.engine = engine
        self._ptr = ptr
        self.name = name
        self.alive = True
        self.remote_opened = False
        self.remote_condition: Condition | None = None
        #: The session this link alone uses (ended with the link), if it has one.
        self.own_session: Any = None
        #: Set by the owner: called once the peer attached (with a null terminus if it refused).
        self.on_remote_open: Callable[[Link], None] | None = None
        #: Set by the owner: called once the peer detached or closed the link (or it died).
        self.on_remote_close: Callable[[Link, Condition | None], None] | None = None

    @property
    def ptr(self) -> Any:
        """proton's ``pn_link_t`` (for the engine, which routes events by it)."""
        return self._ptr

    # The engine's events (``handle_*``): called by :class:`~._engine.Engine` only.

    def handle_delivery(self, delivery: Any) -> None:
        raise NotImplementedError

    @property
    def remote_source_address(self) -> str | None:
        return address_of(lib.pn_link_remote_source(self._ptr))

    @property
    def remote_target_address(self) -> str | None:
        return address_of(lib.pn_link_remote_target(self._ptr))

    @property
    def remote_terminus_is_null(self) -> bool:
        """True when the peer attached with no terminus: its way of refusing the link."""
        terminus = (
            lib.pn_link_remote_target(self._ptr)
            if self.is_sender
            else lib.pn_link_remote_source(self._ptr)
        )
        return bool(lib.pn_terminus_get_type(terminus) == lib.PN_UNSPECIFIED)

    @property
    def remote_max_message_size(self) -> int:
        """The peer's max-message-size (0: no limit)."""
        return int(lib.pn_link_remote_max_message_size(self._ptr)) if self.alive else 0

    @property
    def remote_snd_settle_mode(self) -> int:
        return int(lib.pn_link_remote_snd_settle_mode(self._ptr))

    @property
    def remote_rcv_settle_mode(self) -> int:
        return int(lib.pn_link_remote_rcv_settle_mode(self._ptr))

    @property
    def wrapper(self) -> proton.Link:
        """proton's Python object for this link, for setting it up (not for the hot path)."""
        return wrap_link(self._ptr)

    def set_properties(self, properties: Mapping[str, Any]) -> None:
        """The link properties of our attach (set before :meth:`open`; keys become symbols).
        proton's Python ``Link.properties`` reach the wire only through its own ``open()``."""
        data = proton.Data(lib.pn_link_properties(self._ptr))
        data.clear()
        data.put_dict({proton.symbol(k): v for k, v in properties.items()})

    def open(self) -> None:
        lib.pn_link_open(self._ptr)
        self.engine.touch()

    def close(self, condition: Condition | None = None) -> None:
        if not self.alive or lib.pn_link_state(self._ptr) & _LOCAL_CLOSED:
            return
        set_condition(lib.pn_link_condition(self._ptr), condition)
        lib.pn_link_close(self._ptr)
        # The link's own session ends once the peer answers the detach (handle_remote_close),
        # not now: RabbitMQ 3.10 given detach and end back to back sometimes answers neither (one
        # close in four or five, measured), and a consumer's close waits for that answer.
        self.engine.touch()

    def end_session(self) -> None:
        """End the link's own session now (the peer never answered its detach)."""
        self._end_session()
        self.engine.touch()

    def _end_session(self) -> None:
        session = self.own_session
        if session is not None:
            self.own_session = None
            lib.pn_session_close(session)

    def handle_remote_close(self, condition: Condition | None) -> None:
        """The peer detached: answer, forget the link, tell the owner, free proton's half."""
        self.remote_condition = condition
        ptr = self._ptr
        if lib.pn_link_state(ptr) & _LOCAL_CLOSED == 0:
            lib.pn_link_close(ptr)
        self._end_session()
        self.engine.touch()
        self.engine.forget_link(ptr)
        self.handle_death(condition)
        lib.pn_link_free(ptr)

    def handle_death(self, condition: Condition | None = None) -> None:
        self.alive = False
        callback = self.on_remote_close
        if callback is not None:
            self.on_remote_close = None
            callback(self, condition)


class SenderLink(Link):
    """Our side sends. Gate :meth:`send` on :attr:`credit`: proton would buffer past it."""

    is_sender = True

    def __init__(self, engine: Engine, ptr: Any, name: str) -> None:
        super().__init__(engine, ptr, name)
        self._tags = itertools.count(1)
        self._unsettled: dict[Any, Callable[[DeliveryOutcome], None]] = {}
        #: Set by the owner: called when the peer grants credit.
        self.on_flow: Callable[[SenderLink], None] | None = None
        #: Settle with the peer's own outcome (a receiver in rcv-settle-mode ``second`` waits
        #: for the sender to confirm it). Called with the delivery tag first: a condition it
        #: returns turns the outcome into ``rejected`` with it (a lock that has expired).
        self.echo_outcomes: Callable[[bytes], Condition | None] | None = None

    @property
    def credit(self) -> int:
        return int(lib.pn_link_credit(self._ptr)) if self.alive else 0

    @property
    def unsettled(self) -> int:
        return len(self._unsettled)

    @property
    def drain_requested(self) -> bool:
        """The peer asked us to use all credit now, or give it back (:meth:`drained`)."""
        return self.alive and bool(lib.pn_link_get_drain(self._ptr))

    def drained(self) -> None:
        """Give back unused credit after a drain request (nothing left to send)."""
        if self.alive and lib.pn_link_drained(self._ptr) > 0:
            self.engine.touch()

    def send(
        self,
        payload: bytes,
        on_outcome: Callable[[DeliveryOutcome], None] | None,
        *,
        tag: bytes | None = None,
    ) -> None:
        """Send one message; ``on_outcome`` hears the peer's verdict (``None``: pre-settled)."""
        ptr = self._ptr
        if tag is None:
            tag = b"%x" % next(self._tags)
        delivery = lib.pn_delivery(ptr, (len(tag), ffi.from_buffer(tag)))
        lib.pn_link_send(ptr, ffi.from_buffer(payload), len(payload))
        lib.pn_link_advance(ptr)
        if on_outcome is None:
            lib.pn_delivery_settle(delivery)
        else:
            self._unsettled[delivery] = on_outcome
        self.engine.touch()

    def handle_delivery(self, delivery: Any) -> None:
        state = lib.pn_delivery_remote_state(delivery)
        if state not in TERMINAL and not lib.pn_delivery_settled(delivery):
            return  # "received" and the like: not an outcome
        if self.echo_outcomes is not None and state in TERMINAL:
            self._echo(delivery, state)
        callback = self._unsettled.pop(delivery, None)
        lib.pn_delivery_settle(delivery)
        self.engine.touch()
        if callback is None:
            return
        remote = lib.pn_delivery_remote(delivery) if state in TERMINAL else _NULL
        if state == REJECTED:
            outcome = DeliveryOutcome(state, condition_of(lib.pn_disposition_condition(remote)))
        elif state == MODIFIED:
            outcome = DeliveryOutcome(
                state,
                delivery_failed=bool(lib.pn_disposition_is_failed(remote)),
                undeliverable_here=bool(lib.pn_disposition_is_undeliverable(remote)),
            )
        else:
            outcome = DeliveryOutcome(state)
        callback(outcome)

    def _echo(self, delivery: Any, state: int) -> None:
        assert self.echo_outcomes is not None
        tag = lib.pn_delivery_tag(delivery)
        refusal = self.echo_outcomes(bytes(ffi.buffer(tag.start, tag.size)))
        local = lib.pn_delivery_local(delivery)
        if refusal is not None:
            set_condition(lib.pn_disposition_condition(local), refusal)
            state = REJECTED
        elif state == MODIFIED:
            remote = lib.pn_delivery_remote(delivery)
            lib.pn_disposition_set_failed(local, lib.pn_disposition_is_failed(remote))
            lib.pn_disposition_set_undeliverable(local, lib.pn_disposition_is_undeliverable(remote))
        lib.pn_delivery_update(delivery, state)

    def handle_death(self, condition: Condition | None = None) -> None:
        # Outcomes that will never come: the owner fails or re-sends them (on_remote_close).
        self._unsettled.clear()
        super().handle_death(condition)

    def drop_unsettled(self) -> list[Callable[[DeliveryOutcome], None]]:
        """Forget every delivery still awaiting an outcome; return their callbacks."""
        callbacks = list(self._unsettled.values())
        self._unsettled.clear()
        return callbacks


class ReceiverLink(Link):
    """Our side receives. Credit is granted only by :meth:`flow`."""

    def __init__(self, engine: Engine, ptr: Any, name: str) -> None:
        super().__init__(engine, ptr, name)
        #: Set by the owner: called with each complete message (a copy) and its delivery.
        self.on_message: Callable[[Delivery, bytes], None] | None = None
        #: Set by the owner: called when a drain completes (the peer used or returned credit).
        self.on_drained: Callable[[ReceiverLink], None] | None = None
        self._draining = False

    @property
    def credit(self) -> int:
        return int(lib.pn_link_credit(self._ptr)) if self.alive else 0

    def set_max_message_size(self, size: int) -> None:
        """Announce the largest message we take on this link (before opening it)."""
        lib.pn_link_set_max_message_size(self._ptr, size)

    def flow(self, credit: int) -> None:
        if credit > 0 and self.alive:
            lib.pn_link_flow(self._ptr, credit)
            self.engine.touch()

    def drain(self) -> bool:
        """Ask the peer to use or return all credit. False when there is none to drain."""
        if not self.alive or lib.pn_link_credit(self._ptr) <= 0:
            return False
        self._draining = True
        lib.pn_link_set_drain(self._ptr, True)
        lib.pn_link_flow(self._ptr, 0)
        self.engine.touch()
        return True

    def handle_flow(self) -> None:
        if self._draining and lib.pn_link_credit(self._ptr) <= 0:
            self._draining = False
            lib.pn_link_set_drain(self._ptr, False)
            callback = self.on_drained
            if callback is not None:
                callback(self)

    def handle_delivery(self, delivery: Any) -> None:
        if lib.pn_delivery_partial(delivery) or not lib.pn_delivery_readable(delivery):
            if lib.pn_delivery_aborted(delivery):
                lib.pn_delivery_settle(delivery)
            return
        if lib.pn_delivery_aborted(delivery):
            lib.pn_delivery_settle(delivery)
            return
        ptr = self._ptr
        size = lib.pn_delivery_pending(delivery)
        buffer = bytearray(size)
        got = lib.pn_link_recv(ptr, ffi.from_buffer(buffer), size)
        lib.pn_link_advance(ptr)
        payload = bytes(buffer) if got == size else bytes(buffer[: max(got, 0)])
        remote_settled = bool(lib.pn_delivery_settled(delivery))
        handle = Delivery(delivery, self, remote_settled)
        if remote_settled:
            lib.pn_delivery_settle(delivery)
        self.engine.touch()
        callback = self.on_message
        if callback is not None:
            callback(handle, payload)
        elif not remote_settled:
            handle.settle(RELEASED)


def wrap_link(ptr: Any) -> proton.Link:
    """proton's Python wrapper (a Sender or Receiver) for a raw link pointer."""
    link: proton.Link = proton.Link.wrap(ptr)  # type: ignore[no-untyped-call]
    return link


def address_of(terminus: Any) -> str | None:
    address = lib.pn_terminus_get_address(terminus)
    return None if address == _NULL else ffi.string(address).decode("utf-8", "replace")
