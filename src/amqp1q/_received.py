"""A job as a consumer receives it: its data, and the means to settle it once."""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Coroutine
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from . import _calls, _metrics, _tracing, _typed
from ._adapter import ACK, RELEASE, GroupState, Incoming, Outcome, Settlement
from ._errors import AlreadySettled, LockLost, PayloadError, UnsupportedFeature
from ._job import Headers, Job
from ._payload import decode_payload

if TYPE_CHECKING:
    from ._consumer import Consumer

__all__ = ["Processing", "ReceivedJob", "clip", "release_on_cancel", "settle_failure"]

log = logging.getLogger("amqp1q.consumer")
_UNDECODED: Any = object()
T = TypeVar("T")
_MAX_DESCRIPTION = 1024


class ReceivedJob:
    """A job received from a queue. Settle it exactly once — by hand, or with :meth:`process`.

    Read-only data: ``name``, ``id``, ``payload`` (decoded on first access), ``body`` (the raw
    bytes), ``content_type``, ``headers``, ``attempt`` (1 on the first delivery), ``priority``,
    ``enqueued_at``, ``queue``, ``group`` (the ordering key it was pushed with), and for jobs
    read from a dead-letter queue ``dead_letter_reason`` / ``dead_letter_description``. A
    request (sent with ``queue.call()``, or by any client with ``reply-to``) has ``reply_to``:
    answer it with :meth:`reply` (the worker sends a handler's return value itself).
    """

    __slots__ = ("_consumer", "_failure", "_incoming", "_outcome", "_payload", "_replied")

    def __init__(self, incoming: Incoming, consumer: Consumer) -> None:
        self._incoming = incoming
        self._consumer = consumer
        self._outcome: Outcome | None = Outcome.ACK if consumer.auto_ack else None
        self._payload: Any = _UNDECODED
        self._replied = False
        self._failure: tuple[str, str] | None = None

    # -- data ---------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._incoming.name

    @property
    def id(self) -> str:
        return self._incoming.id

    @property
    def body(self) -> bytes:
        return self._incoming.body

    @property
    def content_type(self) -> str | None:
        return self._incoming.content_type

    @property
    def payload(self) -> Any:
        """The payload: decoded JSON, or ``bytes``. Raises :class:`PayloadError` if undecodable."""
        if self._payload is _UNDECODED:
            try:
                self._payload = decode_payload(self._incoming.body, self._incoming.content_type)
            except PayloadError as exc:
                raise PayloadError(exc.message, queue=self.queue, job_id=self.id) from None
        return self._payload

    def payload_as(self, payload_type: type[T]) -> T:
        """The payload checked against ``payload_type`` and built as one: an attrs class, a
        dataclass, a ``TypedDict``, a pydantic model, or a JSON type (``list[int]``, ...);
        ``bytes`` gives the raw body. Raises :class:`PayloadValidationError` listing every
        problem — inside :meth:`process` that dead-letters the job at once, never retried."""
        built: T = _typed.build(payload_type, self)
        return built

    @property
    def headers(self) -> Headers:
        return self._incoming.headers

    @property
    def attempt(self) -> int:
        """The delivery attempt: 1 the first time, counted up by each retry."""
        return self._incoming.attempt

    @property
    def priority(self) -> int | None:
        return self._incoming.priority

    @property
    def group(self) -> str | None:
        """The job's group (``Job(group=...)``): its ordering key, or None."""
        return self._incoming.group

    async def group_state(self) -> bytes | None:
        """The state kept for the job's group (a Service Bus session's state), None if unset.

        For checkpoints: ``consume(groups=N)`` on a Service Bus queue that requires sessions.
        Elsewhere it raises :class:`~amqp1q.UnsupportedFeature`."""
        return await self._group_state().get()

    async def set_group_state(self, state: bytes | None) -> None:
        """Replace the state kept for the job's group (None clears it); see
        :meth:`group_state`."""
        await self._group_state().set(state)

    def _group_state(self) -> GroupState:
        handle = self._incoming.group_state
        if handle is None:
            raise UnsupportedFeature(
                "group state is kept only for Service Bus sessions: consume(groups=N) from a "
                "Service Bus queue that requires sessions",
                queue=self.queue,
                job_id=self.id,
            )
        return handle

    @property
    def enqueued_at(self) -> datetime.datetime | None:
        return self._incoming.enqueued_at

    @property
    def queue(self) -> str:
        return self._consumer.queue_name

    @property
    def dead_letter_reason(self) -> str | None:
        return self._incoming.dead_letter_reason

    @property
    def dead_letter_description(self) -> str | None:
        return self._incoming.dead_letter_description

    @property
    def incoming(self) -> Incoming:
        """The adapter's record of this delivery (:class:`~amqp1q.Incoming`): what an adapter's
        own helpers take (``amqp1q.adapters.servicebus.lock_scope``). Settle through the job."""
        return self._incoming

    @property
    def decode_error(self) -> str | None:
        """Why the message could not be read as a job, if it could not (the raw body is kept)."""
        return self._incoming.decode_error

    @property
    def reply_to(self) -> str | None:
        """Where the reply to a request goes (its ``reply-to``); None for a plain job."""
        return self._incoming.reply_to

    @property
    def wants_reply(self) -> bool:
        """True for a request not answered yet."""
        return self._incoming.reply_to is not None and not self._replied

    @property
    def settled(self) -> bool:
        return self._outcome is not None

    @property
    def outcome(self) -> Outcome | None:
        """How the job was settled, or ``None`` while it is not."""
        return self._outcome

    def __repr__(self) -> str:
        state = self._outcome.value if self._outcome else "unsettled"
        return (
            f"<ReceivedJob name={self.name!r} id={self.id!r} attempt={self.attempt} "
            f"queue={self.queue!r} {state}>"
        )

    def to_job(self, **changes: Any) -> Job:
        """A :class:`Job` with this one's name, id, body, headers and group, to push elsewhere."""
        fields: dict[str, Any] = {
            "id": self.id,
            "headers": self.headers,
            "priority": self.priority,
            "content_type": self.content_type,
            "group": self.group,
        }
        fields.update(changes)
        payload = fields.pop("payload", self.body)
        if "payload" in changes and "content_type" not in changes:
            fields["content_type"] = None
        return Job(fields.pop("name", self.name), payload, **fields)

    # -- reply --------------------------------------------------------------------------------

    async def reply(self, value: Any) -> bool:
        """Answer a request with ``value`` (bytes as they are, anything else as JSON): the
        caller's ``queue.call()`` returns it. Once per job (best before settling it, so a
        job is not gone before its answer is out); returns False
        (sending nothing) for a job that asked for no reply. The worker and
        ``job.process()`` users need not call it for failures: a request dead-lettered (its
        handler failed on its last attempt) is answered with the error."""
        if self._incoming.reply_to is None:
            return False
        if self._replied:
            raise AlreadySettled("the job was already answered", queue=self.queue, job_id=self.id)
        incoming = self._incoming
        reply = _calls.value_reply(
            value, self._reply_key(), incoming.name or None, incoming.reply_to_session_id
        )
        await self._send_reply(reply)
        return True

    def _reply_key(self) -> str:
        incoming = self._incoming
        return incoming.correlation_id or incoming.id

    async def _send_reply(self, reply: Any) -> None:
        address = self._incoming.reply_to
        assert address is not None
        self._replied = True
        try:
            await self._consumer.send_reply(address, reply)
        except BaseException:
            self._replied = False
            raise

    async def _answer_failure(self, settlement: Settlement) -> None:
        """A request is dead-lettered: tell its caller why (best effort: logged if it fails)."""
        if self._failure is not None:
            error_type, message = self._failure
        else:
            error_type = "rejected"
            message = settlement.description or settlement.reason or "rejected"
        incoming = self._incoming
        reply = _calls.error_reply(
            error_type,
            message,
            self._reply_key(),
            incoming.name or None,
            incoming.reply_to_session_id,
        )
        try:
            await self._send_reply(reply)
        except Exception:
            log.warning(
                "could not send the failure of job %s to its caller",
                self.id,
                exc_info=True,
                extra={"queue": self.queue, "job_id": self.id},
            )

    # -- settlement ---------------------------------------------------------------------------

    async def ack(self) -> None:
        """Done: remove the job from the queue (AMQP ``accepted``; Service Bus complete)."""
        await self._settle(ACK)

    async def retry(self, delay: float | None = None) -> None:
        """Try again later, counting an attempt; after ``max_attempts`` this dead-letters.

        ``delay`` in seconds; ``None`` or 0 makes the job available again at once.
        """
        await self._settle(self._consumer.retry_settlement(self, delay), by_policy=True)

    async def release(self) -> None:
        """Put the job back untouched, counting no attempt (AMQP ``released``)."""
        await self._settle(RELEASE)

    async def reject(self, reason: str = "rejected", description: str | None = None) -> None:
        """Dead-letter the job, with a reason (AMQP ``rejected``; Service Bus dead-letter)."""
        await self._settle(Settlement(Outcome.REJECT, reason=reason, description=clip(description)))

    def process(self, *, reraise: bool = False) -> Processing:
        """``async with job.process():`` — settle by how the block ends.

        - it ends normally: ``ack`` (unless the block settled the job itself);
        - it raises an exception: retry with backoff, or dead-letter after ``max_attempts``
          (or at once with ``requeue_on_fail=False``); the exception is logged and swallowed,
          so a consumer loop keeps going — pass ``reraise=True`` to have it propagate. Only
          the handler's own exception ever leaves the block: if settling it fails too (the
          connection is gone, say), that is logged, and the broker redelivers the job;
        - it is cancelled: ``release`` — the job goes back, no attempt counted, never lost or
          dead-lettered; the cancellation then propagates.
        """
        return Processing(self, reraise)

    def _settle(
        self, settlement: Settlement, *, by_policy: bool = False
    ) -> Coroutine[Any, Any, None]:
        """Settle once (``by_policy``: the retry policy chose the outcome, for metrics): the
        consumer's coroutine itself, one level less per job to await."""
        if self._outcome is not None:
            if self._consumer.auto_ack:
                raise AlreadySettled(
                    "the job was settled on delivery (auto_ack=True)",
                    queue=self.queue,
                    job_id=self.id,
                )
            raise AlreadySettled(
                f"the job was already settled ({self._outcome.value})",
                queue=self.queue,
                job_id=self.id,
            )
        self._outcome = settlement.outcome
        settled = self._consumer.settle(
            self._incoming, settlement, job_id=self.id, by_policy=by_policy
        )
        if settlement.outcome is Outcome.REJECT and self.wants_reply:
            return self._settle_and_answer(settled, settlement)
        return settled

    async def _settle_and_answer(
        self, settled: Coroutine[Any, Any, None], settlement: Settlement
    ) -> None:
        """Dead-lettered, a request's caller is told (JobFailed), once the broker has it."""
        await settled
        await self._answer_failure(settlement)


async def settle_failure(job: ReceivedJob, exc: Exception) -> None:
    """The job's handler raised ``exc``: retry it or dead-letter it, as the policy says."""
    job._failure = (type(exc).__name__, str(exc))
    await job._settle(job._consumer.failure_settlement(job, exc), by_policy=True)


async def release_on_cancel(job: ReceivedJob) -> None:
    """The handler was cancelled: put the job back (never lose or dead-letter it)."""
    try:
        await job._settle(RELEASE)
    except Exception:
        log.warning(
            "could not release job %s after cancellation; the broker redelivers it",
            job.id,
            exc_info=True,
            extra={"queue": job.queue, "job_id": job.id},
        )


class Processing:
    """The context manager :meth:`ReceivedJob.process` returns."""

    __slots__ = ("_guard", "_job", "_reraise", "_span", "_started")

    def __init__(self, job: ReceivedJob, reraise: bool) -> None:
        self._job = job
        self._reraise = reraise
        self._guard: AbstractAsyncContextManager[Any] | None = None
        self._span: tuple[Any, object] | None = None
        self._started: float | None = None

    async def __aenter__(self) -> ReceivedJob:
        self._started = _metrics.start()
        job = self._job
        if _tracing.active():
            facts = job._consumer.server_facts
            self._span = _tracing.consumer_span(
                job.queue, facts.system, job.id, job.headers, facts.server
            )
        # An adapter whose deliveries can be lost while in hand (a Service Bus lock that could
        # not be renewed) sets a guard: it cancels the block and raises LockLost.
        guard = job._incoming.guard
        if guard is not None:
            self._guard = guard()
            await self._guard.__aenter__()
        return self._job

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        span, self._span = self._span, None
        started, self._started = self._started, None
        ended = exc
        try:
            return await self._exit(exc_type, exc, tb)
        except BaseException as raised:
            ended = raised
            raise
        finally:
            if span is not None:
                failed = exc if isinstance(exc, Exception) else None
                _tracing.end_span(span[0], failed, span[1])
            if started is not None:
                self._job._consumer.processed(started, ended)

    async def _exit(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        job = self._job
        consumer = job._consumer
        guard, self._guard = self._guard, None
        if guard is not None:
            try:
                await guard.__aexit__(exc_type, exc, tb)
            except LockLost as lost:
                # Nothing can be settled any more: the broker takes the job back by itself.
                if not job.settled:
                    job._outcome = Outcome.RELEASE
                    consumer.lost(lost, job._incoming)
                raise
        if exc is None:
            if not job.settled:
                await job._settle(ACK)
            return False
        if isinstance(exc, asyncio.CancelledError) or not isinstance(exc, Exception):
            if not job.settled:
                await release_on_cancel(job)
            return False
        if job.settled:
            log.warning(
                "handler for job %s failed after settling it: %r",
                job.id,
                exc,
                extra={"queue": job.queue, "job_id": job.id},
            )
        else:
            try:
                await settle_failure(job, exc)
            except Exception as failure:
                # The handler's exception is what the caller hears about, never ours.
                log.warning(
                    "could not settle job %s after its handler failed: %r",
                    job.id,
                    failure,
                    exc_info=failure,
                    extra={"queue": job.queue, "job_id": job.id},
                )
        return not self._reraise


def clip(text: str | None) -> str | None:
    """``text`` cut to the length a dead-letter description may have."""
    if text is None or len(text) <= _MAX_DESCRIPTION:
        return text
    return text[: _MAX_DESCRIPTION - 1] + "…"
