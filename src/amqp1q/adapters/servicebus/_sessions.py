"""Consuming groups from a queue that requires sessions: ``consume(groups=N)`` on Service Bus.

A job's group is its SessionId. :class:`SessionReceiver` holds up to N sessions at once, each
through its own SDK session receiver opened on the *next available* session (Service Bus picks
an unlocked session with messages and locks it for that receiver). For each session it holds:

- a pump pulls the session's messages, in the session's order, against the consumer's credit
  (no session takes more than its share of it, so one long session does not starve the rest);
- the session's lock is renewed at half its span, for as long as the session is held (taking
  a session, renewing its lock and its state handle: :mod:`._held_session`);
- once every job delivered from it is settled and it had nothing new for ``session_idle``
  seconds, the session is let go (its receiver closed): Service Bus may give it to any consumer
  now, and this one takes the next available session in its place.

Every job carries its session's state handle (``job.group_state()`` / ``set_group_state()``).
If a session's lock is lost, or its receiver fails (a dropped connection), its jobs still held
are stale (``stale()``; settling one raises :class:`~amqp1q.LockLost` or
:class:`~amqp1q.DeliveryStale`): Service Bus gives the session, from its first unsettled job,
to the next receiver that asks. The facade's consumer does the rest of the sequencing (one job
of a group in hand at a time, retries kept in the group: see :mod:`amqp1q._groups`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import deque
from collections.abc import Awaitable, Coroutine
from typing import TYPE_CHECKING, Any, Final

from ..._adapter import Incoming, Outcome, Settlement
from ..._errors import (
    AlreadySettled,
    Amqp1qError,
    DeliveryStale,
    LockLost,
    QueueStateError,
    UnsupportedFeature,
)
from ._errors import describe, settle_error
from ._held_session import HeldSession, accept_session
from ._locks import Delivery
from ._mapping import to_incoming
from ._sdk import CLOSE_TIMEOUT, ServiceBusReceiver, close_quietly, sb_errors

if TYPE_CHECKING:
    from .adapter import ServiceBusAdapter

__all__ = ["DEFAULT_SESSION_IDLE", "SessionReceiver"]

log = logging.getLogger("amqp1q.servicebus")

#: How long a held session may have nothing new (and nothing unsettled) before it is let go.
DEFAULT_SESSION_IDLE: Final = 1.0
#: How many sessions ``open()`` tries to take at once, and how long it waits for each.
_FIRST_TRIES: Final = 8
_FIRST_WAIT: Final = 0.2


class SessionReceiver:
    """The Receiver of ``consume(groups=N)`` on a queue that requires sessions."""

    def __init__(self, adapter: ServiceBusAdapter, *, groups: int, idle: float) -> None:
        self._adapter = adapter
        self.queue = adapter.queue
        self._groups = groups
        self._idle = idle
        self._credit = 0
        self._drains = 0  # how many drains: a pull that spans one gives back what it got
        self._window = 0
        self._buffer: deque[tuple[HeldSession, Delivery]] = deque()
        self._event = asyncio.Event()
        self._credit_changed = asyncio.Event()
        self._sessions: dict[int, HeldSession] = {}
        self._numbers = itertools.count(1)
        self._slots: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[None]] = set()
        self._failure: Amqp1qError | None = None
        self._open = False
        self._closed = False

    @property
    def connected(self) -> bool:
        return self._open and not self._closed

    @property
    def closed(self) -> bool:
        return self._closed

    # -- lifecycle ------------------------------------------------------------------------------

    async def open(self) -> None:
        if self._closed:
            raise QueueStateError("the receiver is closed", queue=self.queue)
        # A quick try at the first sessions, at once: a queue without sessions, or no queue,
        # fails here; and the consumer starts with several groups in hand.
        first_tries = min(self._groups, _FIRST_TRIES)
        tries = [accept_session(self._adapter, self.queue, _FIRST_WAIT) for _ in range(first_tries)]
        first = await asyncio.gather(*tries, return_exceptions=True)
        opened = [sdk for sdk in first if isinstance(sdk, ServiceBusReceiver)]
        failed = [error for error in first if isinstance(error, BaseException)]
        if failed:
            await asyncio.gather(*(close_quietly(sdk) for sdk in opened))
            raise failed[0]
        self._adapter.supervisor.connected_once = True
        self._open = True
        loop = asyncio.get_running_loop()
        self._slots = [
            loop.create_task(
                self._slot(opened[n] if n < len(opened) else None),
                name=f"amqp1q-sessions-{self.queue}-{n}",
            )
            for n in range(self._groups)
        ]

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._event.set()
        self._credit_changed.set()
        sessions = list(self._sessions.values())
        tasks = [task for s in sessions for task in s.tasks] + self._slots
        for task in tasks:  # nothing more comes in
            task.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), CLOSE_TIMEOUT)
        pending = [task for task in self._background if not task.done()]
        if pending:
            await asyncio.wait(pending, timeout=CLOSE_TIMEOUT)
        await self._give_back()
        await asyncio.gather(*(self._let_go(s) for s in sessions), return_exceptions=True)
        self._adapter.forget_receiver(self)

    async def drain(self) -> None:
        self._credit = 0
        self._drains += 1
        await self._give_back()

    # -- sessions -------------------------------------------------------------------------------

    async def _slot(self, sdk: ServiceBusReceiver | None) -> None:
        """One of the ``groups`` places for a session: hold the next available session while
        there is credit for its jobs, then the next once it is let go of or lost."""
        failures = 0
        policy = self._adapter.supervisor.policy
        while not self._closed and self._failure is None:
            if sdk is None:
                if self._credit <= 0:
                    self._credit_changed.clear()
                    await self._credit_changed.wait()
                    continue
                try:
                    wait = self._adapter.receive_wait
                    sdk = await accept_session(self._adapter, self.queue, wait)
                except UnsupportedFeature as exc:
                    self._fail(exc)
                    return
                except Amqp1qError as exc:
                    failures += 1
                    if policy is None or (
                        policy.max_attempts is not None and failures > policy.max_attempts
                    ):
                        self._fail(exc)
                        return
                    log.info("accepting a session of %r failed: %s", self.queue, exc)
                    await asyncio.sleep(policy.backoff(failures))
                    continue
                failures = 0
                if sdk is None:
                    continue  # none free within the wait: ask again
            if self.closed:  # (while it was accepted)
                await close_quietly(sdk)
                return
            session = self._hold(sdk)
            sdk = None
            await session.done.wait()

    def _hold(self, sdk: ServiceBusReceiver) -> HeldSession:
        session = HeldSession(self.queue, sdk, next(self._numbers))
        self._sessions[session.number] = session
        log.debug("holding session %r of %r", session.id, self.queue)
        loop = asyncio.get_running_loop()
        session.tasks = [
            loop.create_task(self._pump(session), name=f"amqp1q-session-{session.id}"),
            loop.create_task(
                session.keep_locked(self._adapter.max_lock_renewal, self._lose),
                name=f"amqp1q-session-lock-{session.id}",
            ),
        ]
        return session

    async def _pump(self, session: HeldSession) -> None:
        """Pull the session's messages while there is credit; let the session go when idle."""
        sdk = session.sdk
        loop = asyncio.get_running_loop()
        last = loop.time()
        while session.alive and not self._closed:
            share = max(1, self._window // self._groups) - len(session.unsettled)
            want = min(self._credit, share)
            if want <= 0:
                session.wake.clear()
                await session.wake.wait()
                last = loop.time()
                continue
            self._credit -= want  # reserved for this pull, what is not used comes back
            drains = self._drains
            try:
                messages = await sdk.receive_messages(
                    max_message_count=want, max_wait_time=min(self._idle, 1.0)
                )
            except Exception as exc:
                self._credit += want
                if not self._closed:
                    log.info("session %r of %r failed: %s", session.id, self.queue, describe(exc))
                    self._lose(session, f"its receiver failed: {describe(exc)}")
                return
            if drains != self._drains:  # drained meanwhile: no credit for these, back they go
                for message in messages:
                    self._in_background(_abandon_quietly(sdk, message))
                continue
            self._credit += want - len(messages)
            now = loop.time()
            if messages:
                last = now
                for message in messages:
                    delivery = Delivery(message, now, session.number)
                    session.unsettled.add(delivery)
                    self._buffer.append((session, delivery))
                self._event.set()
                self._wake_sessions(but=session)
            elif not session.unsettled and now - last >= self._idle:
                await self._let_go(session)
                return

    def _lose(self, session: HeldSession, why: str) -> None:
        """The session is gone (lock lost, receiver failed): its held jobs are stale. Once its
        lock's time is up, the jobs in hand are lost too (their handlers cancelled, settling
        raises LockLost); before (a dropped connection), settling them raises DeliveryStale."""
        if not session.alive:
            return
        lock_ran_out = session.lock_ran_out()
        session.alive = False
        session.done.set()
        self._sessions.pop(session.number, None)
        for buffered in [item for item in self._buffer if item[0] is session]:
            self._buffer.remove(buffered)  # never handed out: dropped, its credit back
            buffered[1].settled = True
            self._credit += 1
        session.drop_jobs(why, lost=lock_ran_out)
        log.warning("session %r of %r lost: %s", session.id, self.queue, why)
        self._in_background(close_quietly(session.sdk, dead=True))
        self._credit_changed.set()

    async def _let_go(self, session: HeldSession) -> None:
        """Stop holding the session (nothing of it unsettled, or the consumer closes)."""
        if not session.alive:
            return
        session.alive = False
        session.done.set()
        self._sessions.pop(session.number, None)
        current = asyncio.current_task()
        for task in session.tasks:
            if task is not current:
                task.cancel()
        log.debug("letting go of session %r of %r", session.id, self.queue)
        await close_quietly(session.sdk)
        self._credit_changed.set()

    def _wake_sessions(self, but: HeldSession | None = None) -> None:
        for session in self._sessions.values():
            if session is not but:
                session.wake.set()
        self._credit_changed.set()

    def _fail(self, error: Amqp1qError) -> None:
        log.error("the consumer of %r stops: %s", self.queue, error)
        self._failure = error
        self._event.set()

    # -- the Receiver -----------------------------------------------------------------------------

    def flow(self, credit: int) -> None:
        if self._closed or credit <= 0:
            return
        self._credit += credit
        self._window = max(self._window, self._credit + self._outstanding())
        self._wake_sessions()

    def _outstanding(self) -> int:
        return sum(len(s.unsettled) for s in self._sessions.values())

    async def receive(self) -> Incoming | None:
        if not self._open:
            raise QueueStateError("the receiver is not open", queue=self.queue)
        while not self._buffer:
            if self._failure is not None:
                raise self._failure
            if self._closed:
                return None
            self._event.clear()
            await self._event.wait()
        session, delivery = self._buffer.popleft()
        incoming = to_incoming(delivery.message, delivery)
        incoming.group = session.id
        incoming.group_state = session.state
        incoming.guard = delivery.guard
        delivery.incoming = incoming
        return incoming

    def stale(self, incoming: Incoming) -> bool:
        delivery: Delivery = incoming.token
        session = self._sessions.get(delivery.generation)
        return session is None or not session.alive or delivery.lost is not None

    def settle(self, incoming: Incoming, settlement: Settlement) -> Awaitable[None] | None:
        delivery: Delivery = incoming.token
        if delivery.settled:
            raise AlreadySettled(
                "the job was already settled", queue=self.queue, job_id=incoming.id
            )
        delivery.settled = True
        if delivery.lost is not None:
            raise delivery.lost
        session = self._sessions.get(delivery.generation)
        if session is None or not session.alive:
            raise DeliveryStale(
                "the session's receiver is gone; Service Bus redelivers the job",
                queue=self.queue,
                job_id=incoming.id,
            )
        sdk = session.sdk
        message = delivery.message
        outcome = settlement.outcome
        if outcome is Outcome.ACK:
            call = sdk.complete_message(message)
        elif outcome is Outcome.REJECT:
            call = sdk.dead_letter_message(
                message,
                reason=settlement.reason or "rejected",
                error_description=settlement.description,
            )
        else:
            # Retry and release: back to the head of the session (a re-sent copy would go
            # behind the session's later jobs); Service Bus counts the attempt.
            call = sdk.abandon_message(message)
        return self._apply(session, delivery, incoming, call)

    async def _apply(
        self,
        session: HeldSession,
        delivery: Delivery,
        incoming: Incoming,
        call: Coroutine[Any, Any, None],
    ) -> None:
        try:
            await call
        except Exception as exc:
            error = settle_error(exc, queue=self.queue, job_id=incoming.id)
            if isinstance(error, LockLost) and not session.lock_ran_out():
                # The SDK says "lock lost" for a session whose connection dropped: the job is
                # the broker's again, as after any cut.
                error = DeliveryStale(
                    "the session's connection was lost before the job was settled; Service Bus "
                    "redelivers it",
                    queue=self.queue,
                    job_id=incoming.id,
                    description=describe(exc),
                )
            if not isinstance(exc, sb_errors.MessageAlreadySettled):
                self._lose(session, describe(exc))
            raise error from None
        finally:
            session.unsettled.discard(delivery)
            session.wake.set()
            self._credit_changed.set()

    async def _give_back(self) -> None:
        """Abandon what was received but never handed out (it goes back to its session's
        head)."""
        buffered = list(self._buffer)
        self._buffer.clear()
        work = []
        for session, delivery in buffered:
            delivery.settled = True
            session.unsettled.discard(delivery)
            if session.alive:
                work.append(session.sdk.abandon_message(delivery.message))
        if work:
            results = await asyncio.gather(*work, return_exceptions=True)
            failed = [r for r in results if isinstance(r, BaseException)]
            if failed:
                log.info("%d buffered job(s) not given back: %s", len(failed), failed[0])

    def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


async def _abandon_quietly(sdk: ServiceBusReceiver, message: Any) -> None:
    with contextlib.suppress(Exception):
        await sdk.abandon_message(message)
