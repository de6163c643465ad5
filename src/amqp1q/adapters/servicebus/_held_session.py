"""One Service Bus session a group consumer holds: taking it, keeping its lock, its state.

:func:`accept_session` opens an SDK session receiver on the *next available* session (Service
Bus picks an unlocked session with messages and locks it for that receiver). A
:class:`HeldSession` is what the consumer keeps of it: the SDK receiver, the deliveries taken
from it and not yet settled, whether it is still held, and :meth:`HeldSession.keep_locked`,
which renews the session's lock at half its span for as long as it is held. Its
:class:`SessionState` is the ``group_state`` handle every job of the session carries.

What the consumer does with the sessions it holds (credit, pumps, receiving and settling) is
:mod:`._sessions`.
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Final

from ..._errors import DeliveryStale, LockLost, UnsupportedFeature
from ._errors import describe, open_error
from ._locks import Delivery
from ._reconnect import open_fresh
from ._sdk import ServiceBusReceiver, sb_errors

if TYPE_CHECKING:
    from .adapter import ServiceBusAdapter

__all__ = ["HeldSession", "SessionState", "accept_session"]

#: Renew a session's lock when this much of its span is left (of the span at the last renewal).
_RENEW_AT: Final = 0.5
#: What a queue without sessions answers a session receiver (Service Bus's own words).
_NOT_A_SESSION_QUEUE: Final = "does not require sessions"
#: Opening a session receiver: no session within the wait, or a queue without sessions (a
#: bare ServiceBusError, ``amqp:not-allowed``), told apart from the other failures.
_NO_SESSION: Final = (sb_errors.OperationTimeoutError, sb_errors.ServiceBusError)


async def accept_session(
    adapter: ServiceBusAdapter, queue: str, wait: float
) -> ServiceBusReceiver | None:
    """The next available session's receiver, or None if none turned up within ``wait``."""
    sdk = adapter.open_sdk_receiver(auto_ack=False, next_session_wait=wait)
    try:
        return await open_fresh(sdk, queue=queue, display=adapter.display, keep=_NO_SESSION)
    except sb_errors.OperationTimeoutError:
        return None  # no session free
    except sb_errors.ServiceBusError as exc:
        if _NOT_A_SESSION_QUEUE not in str(exc):
            raise open_error(exc, queue=queue, display=adapter.display) from None
        raise UnsupportedFeature(
            "consume(groups=...) on Service Bus needs a queue that requires sessions; "
            f"{queue!r} does not",
            queue=queue,
            description=describe(exc),
        ) from None


class HeldSession:
    """One session this consumer holds: its SDK receiver, its pump, its lock's renewal."""

    def __init__(self, queue: str, sdk: ServiceBusReceiver, number: int) -> None:
        self.queue = queue
        self.sdk = sdk
        self.number = number  # the deliveries' generation: stale once this session is gone
        self.id = str(sdk.session.session_id)
        self.unsettled: set[Delivery] = set()
        self.alive = True
        self.state = SessionState(self)
        self.wake = asyncio.Event()
        self.done = asyncio.Event()  # set once let go of or lost
        self.tasks: list[asyncio.Task[None]] = []

    def __repr__(self) -> str:
        return f"<session {self.id!r} unsettled={len(self.unsettled)} alive={self.alive}>"

    def lock_left(self) -> float:
        """Seconds until the session's lock ends, as far as this side knows."""
        until = self.sdk.session.locked_until_utc
        if until is None:
            return 1.0
        return max(0.05, (until - datetime.datetime.now(datetime.timezone.utc)).total_seconds())

    def lock_ran_out(self) -> bool:
        """Whether the session's lock has run out, as far as this side knows."""
        until = self.sdk.session.locked_until_utc
        return until is not None and until <= datetime.datetime.now(datetime.timezone.utc)

    @property
    def gone(self) -> bool:
        """Let go of or lost (a property: read afresh after an await)."""
        return not self.alive

    def drop_jobs(self, why: str, *, lost: bool) -> None:
        """Forget the jobs delivered from the session and not settled (it is gone: ``why``).
        With ``lost`` (its lock's time is up) each is lost: its handler's lock scopes are
        cancelled and settling it raises LockLost."""
        for delivery in self.unsettled:
            if not lost or delivery.settled or delivery.lost is not None:
                continue
            delivery.lose(
                f"the lock on session {self.id!r} was lost ({why}); Service Bus redelivers the job",
                self.queue,
            )
        self.unsettled.clear()

    async def keep_locked(self, limit: float, lose: Callable[[HeldSession, str], None]) -> None:
        """Renew the session's lock at half its span while it is held; as for a job's lock, not
        past ``limit`` (``max_lock_renewal``) of a job in hand (then the lock runs out: the
        session is lost, and with it the job). ``lose`` is told when the session is lost."""
        loop = asyncio.get_running_loop()
        while self.alive:
            span = self.lock_left()
            await asyncio.sleep(span * _RENEW_AT)
            if self.gone:
                return
            oldest = min((d.received_at for d in self.unsettled), default=None)
            if oldest is not None and loop.time() - oldest >= limit:
                await asyncio.sleep(self.lock_left())
                why = "its lock ran out: a job was held past the maximum renewal time"
                lose(self, why)
                return
            try:
                await self.sdk.session.renew_lock()
            except Exception as exc:
                lose(self, f"its lock could not be renewed: {describe(exc)}")
                return


class SessionState:
    """``Incoming.group_state``: the session's state, through its receiver."""

    def __init__(self, session: HeldSession) -> None:
        self._session = session

    async def get(self) -> bytes | None:
        state = await self._call(self._session.sdk.session.get_state())
        return bytes(state) if state is not None else None

    async def set(self, state: bytes | None) -> None:
        await self._call(self._session.sdk.session.set_state(state))

    async def _call(self, call: Coroutine[Any, Any, Any]) -> Any:
        session = self._session
        queue = session.queue
        if not session.alive:
            call.close()
            raise LockLost(
                f"the lock on session {session.id!r} was lost; Service Bus gives the session "
                "to the next receiver",
                queue=queue,
            )
        try:
            return await call
        except sb_errors.SessionLockLostError as exc:
            why = f"the lock on session {session.id!r} was lost"
            raise LockLost(why, queue=queue, description=describe(exc)) from None
        except sb_errors.ServiceBusError as exc:
            raise DeliveryStale(
                f"the state of session {session.id!r} could not be reached",
                queue=queue,
                description=describe(exc),
            ) from None
