"""Pushing over sender links: the publishing half of the Proton adapter (:class:`Publisher`).

One sender link per address, attached on first use (on RabbitMQ 3.x after a credit-less receiver
probe, which a missing queue refuses) and shared by every push to it; sends are pipelined under
the link's in-flight window and gated on credit (``_sending``). A job is encoded once (amqp1q's
format, or RoadRunner's envelope with ``wire_format="roadrunner"``), its delay planned by the
broker's profile. A push is confirmed only by ``accepted``; when the connection drops before
the outcome, the same bytes (the same message-id) go again once it is back, as the reconnect
policy allows. Re-published copies (a retry, a dead-letter, a give-back) go out here too.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

from ..._adapter import SendResult
from ..._errors import Amqp1qError, ConnectionLost, JobRejected, JobTooLarge
from ..._job import Job, Receipt
from ..._options import AdapterOptions
from ..._roadrunner import ROADRUNNER, encode_envelope, envelope_properties
from ._brokers import DelayPlan
from ._client import link_error
from ._codec import Message, encode_job, encode_message
from ._deliveries import Condition
from ._expiry import expiry_ttl
from ._routing import RELAY, relay_address
from ._sending import Sender
from ._types import Symbol, Timestamp

if TYPE_CHECKING:
    from ._shared_connection import SharedConnection
    from .adapter import ProtonAdapter

__all__ = ["DEFAULT_WINDOW", "Publisher"]

#: Messages in flight (sent, outcome unknown) per sender link.
DEFAULT_WINDOW: Final = 1000
#: Sender links to callers' reply nodes kept at most (the least recently used go).
REPLY_SENDERS: Final = 64
#: A long push_many gives the event loop a turn after this many jobs.
_YIELD_EVERY: Final = 32


class Publisher:
    """The sender links of one :class:`~.adapter.ProtonAdapter`, and what goes out on them."""

    def __init__(
        self,
        adapter: ProtonAdapter,
        supervisor: SharedConnection,
        options: AdapterOptions,
        *,
        window: int = DEFAULT_WINDOW,
    ) -> None:
        self._adapter = adapter
        self._supervisor = supervisor
        self._options = options
        self.window = window
        self._senders: dict[str, Sender] = {}
        #: The reply addresses answered, oldest first (see :meth:`send_reply`).
        self._reply_addresses: dict[str, None] = {}
        self._opening_senders: dict[str, asyncio.Future[Sender]] = {}

    def fail(self, error: Amqp1qError) -> None:
        """The connection is lost: what waits on a sender fails with ``error``."""
        for sender in self._senders.values():
            sender.fail(error)
        self._senders.clear()

    def close(self) -> None:
        for sender in self._senders.values():
            sender.close()
        self._senders.clear()

    def send(
        self, jobs: Sequence[Job], default_priority: int
    ) -> Coroutine[Any, Any, list[SendResult]]:
        if len(jobs) == 1:  # one push(): no lists to keep, one coroutine
            return self._push_one(jobs[0], default_priority)
        return self._send_many(jobs, default_priority)

    async def _send_many(self, jobs: Sequence[Job], default_priority: int) -> list[SendResult]:
        results: list[SendResult | None] = [None] * len(jobs)
        waiting: list[tuple[int, bytes, str, asyncio.Future[Any]]] = []
        target = self.push_address()
        for index, job in enumerate(jobs):
            if index % _YIELD_EVERY == _YIELD_EVERY - 1:
                # Let the loop write what is queued and read outcomes: a pipeline, not batches.
                await asyncio.sleep(0)
            try:
                payload, address = self._encode(
                    job, default_priority, target, attempt=1, extra=None
                )
                future = self._hand_over(payload, address)
                if future is None:
                    future = await self._send_one(payload, address)
                waiting.append((index, payload, address, future))
            except Amqp1qError as exc:
                results[index] = _push_error(exc, job)
        for index, payload, address, future in waiting:
            job = jobs[index]
            try:
                outcome = await self._outcome(future, payload, address)
            except Amqp1qError as exc:
                results[index] = _push_error(exc, job)
                continue
            results[index] = self._result(outcome, job)
        done: list[SendResult] = []
        for result in results:
            assert result is not None, "every job has a result by now"
            done.append(result)
        return done

    async def _push_one(self, job: Job, default_priority: int) -> list[SendResult]:
        try:
            payload, address = self._encode(
                job, default_priority, self.push_address(), attempt=1, extra=None
            )
            future = self._hand_over(payload, address)
            if future is None:
                future = await self._send_one(payload, address)
            try:
                outcome = await future
            except ConnectionLost as exc:
                if not self._supervisor.may_resend(exc):
                    raise
                outcome = await self._outcome(
                    await self._send_one(payload, address), payload, address
                )
        except Amqp1qError as exc:
            return [_push_error(exc, job)]
        return [self._result(outcome, job)]

    def _result(self, outcome: Any, job: Job) -> SendResult:
        if outcome.accepted:
            return Receipt(job_id=job.id, queue=job.to or self._adapter.queue)
        return self._refusal(outcome.name, outcome.condition, job)

    def _hand_over(self, payload: bytes, address: str) -> asyncio.Future[Any] | None:
        """The usual case, with no wait: the sender is open and has room. None otherwise."""
        sender = self._senders.get(address)
        if sender is None or not sender.alive or not sender.has_room:
            return None
        self._check_size(sender, payload, address)
        return sender.send(payload)

    async def _send_one(self, payload: bytes, address: str) -> asyncio.Future[Any]:
        """Hand ``payload`` to the sender for ``address``; its future resolves with the outcome.
        Waits out a reconnect (the facade's push timeout bounds the wait)."""
        while True:
            try:
                sender = await self.sender(address)
                self._check_size(sender, payload, address)
                await sender.wait_for_room()
                return sender.send(payload)
            except ConnectionLost as exc:  # noqa: PERF203 - the retry loop itself
                if not self._supervisor.may_resend(exc):
                    raise

    def _check_size(self, sender: Sender, payload: bytes, address: str) -> None:
        limit = sender.max_message_size
        if limit and len(payload) > limit:
            raise JobTooLarge(
                f"the job encodes to {len(payload)} bytes; "
                f"the broker takes at most {limit} on this link",
                queue=self._adapter.queue,
                address=address,
            )

    async def _outcome(self, future: asyncio.Future[Any], payload: bytes, address: str) -> Any:
        """The broker's outcome; if the connection died first, the same bytes (same
        message-id) go again once it is back -- at-least-once, as the policy allows."""
        while True:
            try:
                return await future
            except ConnectionLost as exc:  # noqa: PERF203 - the retry loop itself
                if not self._supervisor.may_resend(exc):
                    raise
                future = await self._send_one(payload, address)

    async def republish(
        self, job: Job, queue: str, *, attempt: int, extra_properties: Mapping[str, Any]
    ) -> None:
        """Publish ``job`` to ``queue`` (a retry or a dead-letter) and wait for acceptance."""
        address = self._adapter.profile.queue_address(queue)
        payload, address = self._encode(
            job, job.priority or 0, address, attempt=attempt, extra=extra_properties
        )
        sender = await self.sender(address)
        await sender.wait_for_room()
        outcome = await sender.send(payload)
        if not outcome.accepted:
            raise self._refusal(outcome.name, outcome.condition, job)

    async def send_reply(self, address: str, payload: bytes, correlation_id: str) -> None:
        """Send an encoded reply to ``address`` (a caller's reply-to) and wait for acceptance.

        Each caller's reply node has a sender link of its own here; the links of the callers
        answered longest ago are detached beyond :data:`REPLY_SENDERS` (a worker serving many
        short-lived callers would otherwise hold a link for each, their nodes long gone)."""
        sender = await self.sender(address)
        self._reply_addresses.pop(address, None)
        self._reply_addresses[address] = None
        if len(self._reply_addresses) > REPLY_SENDERS:
            self._forget_reply_senders()
        await sender.wait_for_room()
        outcome = await sender.send(payload)
        if not outcome.accepted:
            condition = outcome.condition
            raise JobRejected(
                f"the broker answered {outcome.name} to a reply",
                outcome=outcome.name,
                queue=self._adapter.queue,
                address=address,
                job_id=correlation_id,
                condition=condition.name if condition else None,
                description=condition.description if condition else None,
            )

    def _forget_reply_senders(self) -> None:
        """Detach the idle reply senders answered longest ago, down to the bound."""
        own = self.push_address()
        for address in list(self._reply_addresses):
            if len(self._reply_addresses) <= REPLY_SENDERS:
                return
            sender = self._senders.get(address)
            if sender is not None and sender.link.unsettled:
                continue  # a reply is on its way there
            del self._reply_addresses[address]
            if address != own and sender is not None:
                del self._senders[address]
                sender.close()

    async def republish_raw(self, payloads: Sequence[bytes]) -> list[Amqp1qError | None]:
        """Publish received messages again, byte for byte, to the address consumed from (a
        release the broker would not honour); one error or None per payload, in order."""
        address = self._adapter.address
        outcomes: list[asyncio.Future[Any] | Amqp1qError] = []
        try:
            sender = await self.sender(address)
        except Amqp1qError as exc:
            return [exc] * len(payloads)
        for payload in payloads:
            try:
                await sender.wait_for_room()
                outcomes.append(sender.send(payload))
            except Amqp1qError as exc:  # noqa: PERF203 - one error per payload
                outcomes.append(exc)
        errors: list[Amqp1qError | None] = []
        for outcome in outcomes:
            if isinstance(outcome, Amqp1qError):
                errors.append(outcome)
                continue
            try:
                result = await outcome
            except Amqp1qError as exc:
                errors.append(exc)
                continue
            errors.append(
                None
                if result.accepted
                else JobRejected(
                    f"the broker answered {result.name} to a job given back to it",
                    outcome=result.name,
                    queue=self._adapter.queue,
                    address=address,
                )
            )
        return errors

    def push_address(self) -> str:
        """Where pushes go: the queue, or ``exchange``/``routing_key`` where set."""
        options = self._options
        if options.exchange is not None and options.address is None:
            return self._adapter.profile.exchange_address(
                options.exchange, options.routing_key or self._adapter.queue
            )
        return self._adapter.address

    def _encode(
        self,
        job: Job,
        default_priority: int,
        address: str,
        *,
        attempt: int,
        extra: Mapping[str, Any] | None,
    ) -> tuple[bytes, str]:
        priority = default_priority if job.priority is None else job.priority
        extra_properties: dict[str, Any] = dict(extra) if extra else {}
        annotations: dict[Symbol, Any] | None = None
        ttl: int | None = None
        to: str | None = None
        if job.to is not None:  # the anonymous sender, routed by the message's `to`
            to, address = relay_address(self._adapter, job), RELAY
        if job.delay:
            plan = self._adapter.profile.plan_delay(
                job.to or self._adapter.queue, to or address, job.delay, int(time.time() * 1000)
            )
            if to is None:
                address = plan.address
            else:
                to = plan.address
            annotations = _annotations(plan)
            ttl = plan.ttl_ms
            extra_properties.update(plan.properties)
        if job.ttl:
            ttl = expiry_ttl(self._adapter.profile, job, ttl)
        if self._options.wire_format == ROADRUNNER:
            return self._encode_roadrunner(
                job, attempt, extra_properties, annotations, ttl, to
            ), address
        payload = encode_job(
            job,
            priority=min(priority, 255),
            attempt=attempt,
            annotations=annotations,
            to=to,
            extra_properties=extra_properties or None,
            ttl=ttl,
        )
        return payload, address

    def _encode_roadrunner(
        self,
        job: Job,
        attempt: int,
        extra: dict[str, Any],
        annotations: dict[Symbol, Any] | None,
        ttl: int | None,
        to: str | None = None,
    ) -> bytes:
        """The RoadRunner ``amqp1`` driver's envelope (see ``_roadrunner``), durable."""
        properties = envelope_properties(job, attempt=attempt, extra=extra)
        message = Message(
            durable=job.durable,
            ttl=ttl,
            to=to,
            reply_to=job.reply_to,
            correlation_id=job.correlation_id,
            group_id=job.group,
            message_annotations=dict(annotations) if annotations else None,
            application_properties=properties or None,
            body_kind="data",
            body=encode_envelope(job, self._options.pipeline or self._adapter.queue),
        )
        return encode_message(message)

    async def sender(self, address: str) -> Sender:
        """The open sender link for ``address``, attached on first use."""
        sender = self._senders.get(address)
        if sender is not None and sender.alive:
            return sender
        opening = self._opening_senders.get(address)
        if opening is not None:
            return await asyncio.shield(opening)
        future: asyncio.Future[Sender] = asyncio.get_running_loop().create_future()
        self._opening_senders[address] = future
        try:
            connection = await self._supervisor.wait_connected()
            profile = self._adapter.profile
            queue = self._adapter.queue
            if address and profile.probe_queues and address.startswith(profile.queue_prefix):
                # A receiver with no credit takes nothing, but is refused if the queue is missing.
                probe = await connection.attach_receiver(address, queue=queue)
                probe.close()
            link = await connection.attach_sender(
                address or None,
                queue=queue,
                capabilities=self._adapter.capabilities(address),
                own_session=True,  # a queue's pushes in a session of their own (see _engine)
            )
            sender = Sender(link, window=self.window, on_dead=self._sender_died(address))
            self._senders[address] = sender
            future.set_result(sender)
            return sender
        except BaseException as exc:
            future.set_exception(exc if isinstance(exc, Exception) else ConnectionLost("cancelled"))
            future.exception()
            raise
        finally:
            del self._opening_senders[address]

    def _sender_died(self, address: str) -> Any:
        def error(condition: Condition | None) -> Amqp1qError:
            connection = self._supervisor.current
            if connection is not None and connection.failure is not None:
                return connection.failure
            return link_error(
                condition,
                queue=self._adapter.queue,
                address=address,
                what="sender",
                hint=self._adapter.not_found_hint(address),
            )

        return error

    def _refusal(self, outcome: str, condition: Condition | None, job: Job) -> JobRejected:
        hint = ""
        if outcome == "released" and self._adapter.profile.name.startswith("rabbitmq"):
            hint = " (RabbitMQ releases a message no queue would take: does the queue exist?)"
        return JobRejected(
            f"the broker answered {outcome}{hint}",
            outcome=outcome,
            queue=self._adapter.queue,
            address=self._adapter.address,
            job_id=job.id,
            condition=condition.name if condition else None,
            description=condition.description if condition else None,
        )


def _annotations(plan: DelayPlan) -> dict[Symbol, Any] | None:
    if not plan.annotations:
        return None
    out: dict[Symbol, Any] = {}
    for key, (kind, value) in plan.annotations.items():
        out[Symbol(key)] = Timestamp(value) if kind == "timestamp" else int(value)
    return out


def _push_error(exc: Amqp1qError, job: Job) -> Amqp1qError:
    if exc.job_id is None:
        exc.job_id = job.id
    return exc
