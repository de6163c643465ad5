"""Service Bus sessions in the emulation: session receivers, session locks, session state.

As azure-servicebus (7.x, pyamqp) uses them, against a queue declared with
``Broker.declare(name, requires_session=True)`` (a :class:`~._session_store.SessionQueue`):

- A session receiver attaches with the source filter ``com.microsoft:session-filter``: a
  session id, or null for the *next available* session. The broker locks the session for the
  link and answers the attach with the session id in the same filter and the lock's end in the
  link property ``com.microsoft:locked-until-utc`` (.NET ticks). A session another link holds
  is refused with ``com.microsoft:session-cannot-be-locked``. For the next available session
  the broker picks an unlocked session that has ready messages (the one whose oldest message
  is oldest); with none, the attach waits for one, up to the link property
  ``com.microsoft:timeout`` (ms; 60 s without it), then is refused with
  ``com.microsoft:timeout``.
- The link is offered only its session's messages, in order; their lock is the session's
  (``x-opt-locked-until``). The lock lasts the broker's ``lock_duration``, renewed by
  ``com.microsoft:renew-session-lock`` on ``$management``; once it runs out the link is
  detached with ``com.microsoft:session-lock-lost`` and what it held goes back, counted. A
  closed link lets its session go: another receiver may lock it.
- ``$management`` answers ``renew-session-lock`` ``{session-id}`` → ``{expiration}``,
  ``get-session-state`` ``{session-id}`` → ``{session-state}`` and ``set-session-state``
  ``{session-id, session-state}``, for a session the asking link holds (its
  ``associated-link-name``); otherwise 410 ``com.microsoft:session-lock-lost``.
- A receiver without the filter on a session queue is refused with ``amqp:not-allowed``, as
  is a session receiver on a queue without sessions; a message without a SessionId sent to a
  session queue is rejected with ``amqp:not-allowed`` (:data:`~._session_store.NO_SESSION_ID`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from proton import symbol

from ..adapters.proton.wire import Condition, SenderLink, Timestamp
from ._connection import refuse_link
from ._links import Outgoing, now_ms
from ._session_store import SessionQueue
from ._store import BrokerQueue, Stored

if TYPE_CHECKING:
    from ._broker import Broker
    from ._connection import BrokerConnection

__all__ = ["SESSION_OPERATIONS", "SessionLink", "attach_session_receiver"]

VENDOR: Final = "com.microsoft:"
SESSION_FILTER: Final = VENDOR + "session-filter"
LOCKED_UNTIL_UTC: Final = VENDOR + "locked-until-utc"
TIMEOUT: Final = VENDOR + "timeout"
SESSION_LOCK_LOST: Final = VENDOR + "session-lock-lost"
SESSION_CANNOT_BE_LOCKED: Final = VENDOR + "session-cannot-be-locked"
#: .NET ticks (100 ns) at the Unix epoch: Service Bus gives a session lock's end in ticks.
DATETIMEOFFSET_EPOCH: Final = 621355968000000000
#: How long a next-available attach waits for a session when the link does not say.
DEFAULT_ACCEPT_TIMEOUT_MS: Final = 60_000
NON_SESSIONFUL: Final = (
    "It is not possible for an entity that requires sessions to create a non-sessionful "
    "message receiver."
)
SESSIONFUL: Final = (
    "A sessionful message receiver cannot be created on an entity that does not require "
    "sessions. Ensure RequiresSession is set to true when creating a Queue or Subscription "
    "to enable sessionful behavior."
)


def attach_session_receiver(
    connection: BrokerConnection, link: SenderLink, address: str | None, queue: BrokerQueue
) -> bool:
    """Take a client's receiver if sessions concern it (a session filter, or a queue that
    requires sessions); False leaves it to the broker."""
    asked, session_id = _session_filter(link)
    if not isinstance(queue, SessionQueue):
        if asked:
            refuse_link(link, _condition("amqp:not-allowed", SESSIONFUL, queue))
        return asked
    if not asked:
        refuse_link(link, _condition("amqp:not-allowed", NON_SESSIONFUL, queue))
    elif session_id is not None:
        if session_id in queue.holders:
            why = (
                f"The requested session '{session_id}' cannot be accepted. It may be locked "
                "by another receiver."
            )
            refuse_link(link, _condition(SESSION_CANNOT_BE_LOCKED, why, queue))
        else:
            _lock(connection, link, address, queue, session_id)
    else:
        session_id = queue.next_available()
        if session_id is not None:
            _lock(connection, link, address, queue, session_id)
        else:
            _Waiting(connection, link, address, queue)
    return True


def _condition(name: str, description: str, queue: BrokerQueue) -> Condition:
    """An error condition with an info map (azure-servicebus reads an error's third field)."""
    return Condition(name, description, {"entity": queue.name})


def _session_filter(link: SenderLink) -> tuple[bool, str | None]:
    """Whether the link's source asks for a session, and which (None: the next available)."""
    data = link.wrapper.remote_source.filter
    data.rewind()
    if not data.next():
        return False, None
    filters = data.get_object()
    if not isinstance(filters, dict):
        return False, None
    for key, value in filters.items():
        if str(key) == SESSION_FILTER:
            value = getattr(value, "value", value)  # (a described filter: its value)
            if isinstance(value, bytes):
                value = value.decode("utf-8", "replace")
            return True, (str(value) if value is not None else None) or None
    return False, None


def _lock(
    connection: BrokerConnection,
    link: SenderLink,
    address: str | None,
    queue: SessionQueue,
    session_id: str,
) -> SessionLink:
    """Lock the session for the link and answer its attach."""
    broker = connection.broker
    until = now_ms() + broker.lock_duration_ms
    link.wrapper.source.filter.put_dict({symbol(SESSION_FILTER): session_id})
    link.set_properties({LOCKED_UNTIL_UTC: DATETIMEOFFSET_EPOCH + until * 10_000})

    def role(presettled: bool, lock_tokens: bool) -> Outgoing:
        return SessionLink(
            broker,
            link,
            queue,
            session_id,
            until,
            presettled=presettled,
            lock_tokens=lock_tokens,
        )

    outgoing = connection.serve(link, address, role)
    assert isinstance(outgoing, SessionLink)
    if link.remote_rcv_settle_mode == 1:
        link.echo_outcomes = outgoing.refusal
    return outgoing


class SessionLink(Outgoing):
    """A link that holds one session's lock: it is offered that session's messages only."""

    def __init__(
        self,
        broker: Broker,
        link: SenderLink,
        queue: SessionQueue,
        session_id: str,
        until: int,
        *,
        presettled: bool,
        lock_tokens: bool,
    ) -> None:
        self.session_id = session_id
        self.session_queue = queue
        self.until = until
        self.lost = False
        self._timer: asyncio.TimerHandle | None = None
        super().__init__(broker, link, queue, presettled=presettled, lock_tokens=lock_tokens)
        self._arm()

    def _subscribe(self) -> None:
        self.session_queue.hold(self.session_id, self)

    def offer(self, queue: BrokerQueue, stored: Stored) -> bool:
        return not self.lost and super().offer(queue, stored)

    def _lock_ms(self) -> int:
        return max(1, self.until - now_ms()) if self.lock_tokens else 0

    def _track(self, tag: bytes, stored: Stored) -> None:
        """A session's messages have no locks of their own: the session's lock is theirs."""

    def refusal(self, tag: bytes) -> Condition | None:
        """A settlement's answer (rcv-settle-mode ``second``): refused once the lock is gone."""
        if self.lost or tag not in self.by_token:
            return Condition(SESSION_LOCK_LOST, "the session's lock has expired")
        return None

    def renew(self) -> int:
        """Extend the session's lock by the lock duration; returns its new end (ms)."""
        self.until = now_ms() + self.broker.lock_duration_ms
        self._arm()
        return self.until

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        delay = max(0.0, (self.until - now_ms()) / 1000)
        self._timer = asyncio.get_running_loop().call_later(delay, self._expired)

    def _expired(self) -> None:
        self._timer = None
        why = f"the lock on session '{self.session_id}' has expired"
        self.closed()
        self.link.close(_condition(SESSION_LOCK_LOST, why, self.queue))

    def closed(self) -> None:
        """The link went away, or its lock ran out: what it held goes back, counted, and the
        session is free to be locked again."""
        if self.lost:
            return
        self.lost = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        now = now_ms()
        self.by_token.clear()
        out, self.out = list(self.out.values()), {}
        for stored in out:
            self.queue.release(stored, count=True, now_ms=now)
        self.session_queue.let_go(self.session_id, self)


class _Waiting:
    """A next-available attach with no session to give yet: answered when one turns up, or
    refused with ``com.microsoft:timeout`` once the link's timeout has passed."""

    def __init__(
        self,
        connection: BrokerConnection,
        link: SenderLink,
        address: str | None,
        queue: SessionQueue,
    ) -> None:
        self.connection = connection
        self.link = link
        self.address = address
        self.queue = queue
        timeout = link.wrapper.remote_properties or {}
        wait_ms = next(
            (int(v) for k, v in timeout.items() if str(k) == TIMEOUT and v),
            DEFAULT_ACCEPT_TIMEOUT_MS,
        )
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(wait_ms / 1000, self._timed_out)
        queue.on_available.append(self._available)
        connection.links[link] = self
        link.on_remote_close = connection.link_closed

    def _available(self) -> None:
        session_id = self.queue.next_available()
        if session_id is None or not self.link.alive:
            return
        self.closed()
        self.connection.links.pop(self.link, None)
        _lock(self.connection, self.link, self.address, self.queue, session_id)

    def _timed_out(self) -> None:
        self.closed()
        why = "The operation did not complete within the allotted timeout: no session is available."
        refuse_link(self.link, _condition(TIMEOUT, why, self.queue))

    def closed(self) -> None:
        self._timer.cancel()
        if self._available in self.queue.on_available:
            self.queue.on_available.remove(self._available)


# -- $management ----------------------------------------------------------------------------------

_Reply = tuple[int, str, Any, "str | None"]


def _held(queue: BrokerQueue, body: dict[str, Any], link_name: str | None) -> SessionLink | _Reply:
    """The link that holds the request's session (and is the asking link, if it says which),
    or the error reply."""
    session_id = str(body["session-id"])
    holder = queue.holders.get(session_id) if isinstance(queue, SessionQueue) else None
    if not isinstance(holder, SessionLink) or holder.lost:
        why = f"the session '{session_id}' is not locked"
        return 410, why, None, SESSION_LOCK_LOST
    if link_name is not None and holder.link.name != link_name:
        why = f"the session '{session_id}' is locked by another receiver"
        return 410, why, None, SESSION_LOCK_LOST
    return holder


def _renew_session_lock(queue: BrokerQueue, body: dict[str, Any], link: str | None) -> _Reply:
    holder = _held(queue, body, link)
    if not isinstance(holder, SessionLink):
        return holder
    return 200, "OK", {"expiration": Timestamp(holder.renew())}, None


def _get_session_state(queue: BrokerQueue, body: dict[str, Any], link: str | None) -> _Reply:
    holder = _held(queue, body, link)
    if not isinstance(holder, SessionLink):
        return holder
    state = holder.session_queue.states.get(holder.session_id)
    return 200, "OK", {"session-state": state}, None


def _set_session_state(queue: BrokerQueue, body: dict[str, Any], link: str | None) -> _Reply:
    holder = _held(queue, body, link)
    if not isinstance(holder, SessionLink):
        return holder
    state = body.get("session-state")
    states = holder.session_queue.states
    if state is None:
        states.pop(holder.session_id, None)
    else:
        states[holder.session_id] = bytes(state)
    return 200, "OK", {}, None


#: Session operations on ``QUEUE/$management``: (queue, body, associated link name) -> reply.
SESSION_OPERATIONS: Final[
    dict[str, Callable[[BrokerQueue, dict[str, Any], str | None], _Reply]]
] = {
    VENDOR + "renew-session-lock": _renew_session_lock,
    VENDOR + "get-session-state": _get_session_state,
    VENDOR + "set-session-state": _set_session_state,
}
