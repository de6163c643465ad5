"""Settling a consumer's jobs: the facade's side of ack, retry, reject and release.

:class:`SettlingMixin` gives :class:`~amqp1q.Consumer` what a
:class:`~amqp1q._received.ReceivedJob` calls once it has marked itself settled: ``settle()``
(through the receiver, bounded by ``settle_timeout`` and shielded; with ``groups``, a retry or
release is kept in the job's group instead), ``send_reply()``, ``lost()`` (a lock lost: nothing
settled), ``processed()`` (metrics), and the queue's policy for a retry asked for
(``retry_settlement``) or a handler that failed (``failure_settlement``: retry with backoff, or
dead-letter -- logged). Whatever happens, a settled job leaves the consumer's hands, which tops
its credit up. :class:`ConsumerState` is the consumer's lifecycle, read on both sides.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING

from . import _metrics
from ._adapter import RELEASE, Incoming, Outcome, ServerFacts, Settlement
from ._errors import PayloadValidationError, PushTimeout
from ._policy import INVALID_PAYLOAD, NOT_RETRIED
from ._received import ReceivedJob, clip
from ._replies import Reply
from ._shield import shielded

if TYPE_CHECKING:
    from ._consumer import Consumer

__all__ = ["ConsumerState", "SettlingMixin", "wait_settled"]

log = logging.getLogger("amqp1q.consumer")


class ConsumerState(enum.Enum):
    NEW = "new"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


class SettlingMixin:
    """``Consumer``'s settling methods (see the module docstring)."""

    @property
    def server_facts(self: Consumer) -> ServerFacts:  # type: ignore[misc]
        """Where the queue lives, for the job's ``process`` span."""
        return self._queue.adapter.server_facts

    async def settle(  # type: ignore[misc]
        self: Consumer,
        incoming: Incoming,
        settlement: Settlement,
        *,
        job_id: str,
        by_policy: bool = False,
    ) -> None:
        """Apply ``settlement`` to a job in hand (``by_policy``: the retry policy chose the
        outcome, for metrics); however it ends, the job has left the consumer's hands."""
        queue = self._queue
        started = _metrics.start()
        sequencer = self._sequencer
        if sequencer is not None and settlement.outcome in _KEPT:
            if self._state is ConsumerState.OPEN:
                # Kept in its group, not sent back: the broker would queue it behind the rest.
                if settlement.outcome is Outcome.RETRY:
                    incoming.attempt += 1
                sequencer.put_back(incoming, settlement.delay)
                self._left_hand()
                self._counters.settled(settlement.outcome, delayed=bool(settlement.delay))
                if started is not None:
                    _metrics.settled(queue, settlement.outcome, by_policy, started, None)
                return
            # Closing: released, where it was -- a re-published retry would overtake the group.
            settlement = RELEASE
        try:
            pending = self._receiver.settle(incoming, settlement)
            if pending is not None:
                await shielded(
                    wait_settled(pending), queue.settle_timeout, f"settling job {job_id}"
                )
        except BaseException as exc:
            if started is not None:
                _metrics.settled(queue, settlement.outcome, by_policy, started, exc)
            raise
        finally:
            self._left_hand()
            if sequencer is not None:
                sequencer.done(incoming)
        if sequencer is not None and settlement.outcome is Outcome.ACK:
            sequencer.acked(incoming)
        self._counters.settled(settlement.outcome, delayed=bool(settlement.delay))
        if started is not None:
            _metrics.settled(queue, settlement.outcome, by_policy, started, None)

    async def send_reply(self: Consumer, address: str, reply: Reply) -> None:  # type: ignore[misc]
        """Send a job's reply to ``address`` (bounded by the queue's push timeout)."""
        queue = self._queue
        adapter = queue.adapter
        try:
            await asyncio.wait_for(adapter.send_reply(address, reply), queue.push_timeout)
        except asyncio.TimeoutError:
            raise PushTimeout(
                f"the reply was not accepted within {queue.push_timeout:g} s",
                queue=queue.name,
                address=address,
            ) from None

    def lost(self: Consumer, error: BaseException, incoming: Incoming) -> None:  # type: ignore[misc]
        """A job in hand was lost (its lock): the broker takes it back, nothing is settled."""
        self._left_hand()
        if self._sequencer is not None:
            self._sequencer.done(incoming)
        if _metrics.active():
            _metrics.settled(self._queue, Outcome.RELEASE, False, None, error)

    def processed(self: Consumer, started: float, error: BaseException | None) -> None:  # type: ignore[misc]
        """``job.process()`` ended, for the metrics (``started``: from ``_metrics.start()``)."""
        _metrics.processed(self._queue, started, error)

    def _left_hand(self: Consumer) -> None:  # type: ignore[misc]
        """A job in hand was settled (or its settlement failed): it is no longer ours."""
        if self._state is ConsumerState.CLOSED:
            return
        self._in_hand -= 1
        self._counters.in_flight -= 1
        if self._in_hand == 0:
            self._idle.set()
        self._top_up()

    def retry_settlement(self: Consumer, job: ReceivedJob, delay: float | None) -> Settlement:  # type: ignore[misc]
        policy = self._queue.retry_policy
        if policy.exhausted(job.attempt):
            return Settlement(
                Outcome.REJECT,
                reason="max attempts exceeded",
                description=f"retry asked on attempt {job.attempt} of {policy.max_attempts}",
            )
        return Settlement(Outcome.RETRY, delay=delay or None)

    def failure_settlement(self: Consumer, job: ReceivedJob, exc: Exception) -> Settlement:  # type: ignore[misc]
        """How a job whose handler raised ``exc`` is settled, by the queue's policy (logged)."""
        queue = self._queue
        policy = queue.retry_policy
        detail = clip(f"{type(exc).__name__}: {exc}")
        context = {"queue": self.queue_name, "job_id": job.id, "attempt": job.attempt}
        if isinstance(exc, PayloadValidationError):  # retrying cannot fix a payload
            description = clip(exc.message)
            settlement = Settlement(Outcome.REJECT, reason=INVALID_PAYLOAD, description=description)
            log.warning("job %s dead-lettered: %s", job.id, description, extra=context)
        elif not queue.requeue_on_fail:
            settlement = Settlement(Outcome.REJECT, reason="handler failed", description=detail)
            log.warning(
                "job %s failed; dead-lettered (requeue_on_fail=False)",
                job.id,
                exc_info=exc,
                extra=context,
            )
        elif (refused := policy.dead_letters(exc)) is not None:
            settlement = Settlement(
                Outcome.REJECT, reason=NOT_RETRIED, description=clip(f"{refused}: {detail}")
            )
            log.warning(
                "job %s failed; dead-lettered without retrying (%s)",
                job.id,
                refused,
                exc_info=exc,
                extra=context,
            )
        elif policy.exhausted(job.attempt):
            settlement = Settlement(
                Outcome.REJECT,
                reason="max attempts exceeded",
                description=clip(f"attempt {job.attempt} of {policy.max_attempts}: {detail}"),
            )
            log.warning(
                "job %s failed on attempt %d of %d; dead-lettered",
                job.id,
                job.attempt,
                policy.max_attempts,
                exc_info=exc,
                extra=context,
            )
        else:
            delay = policy.backoff(job.attempt)
            settlement = Settlement(Outcome.RETRY, delay=delay or None)
            log.warning(
                "job %s failed on attempt %d of %d; retrying in %.2f s",
                job.id,
                job.attempt,
                policy.max_attempts,
                delay,
                exc_info=exc,
                extra=context,
            )
        return settlement


#: Outcomes a consumer with groups keeps in the job's group rather than sending to the broker.
_KEPT = frozenset({Outcome.RETRY, Outcome.RELEASE})


async def wait_settled(pending: Awaitable[None]) -> None:
    """Wait for a settlement the receiver left pending (the broker's answer)."""
    await pending
