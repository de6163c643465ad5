"""Where one adapter's pushes go: :class:`Outboxes`, its entity's outbox and one per ``to``.

The entity's own :class:`~._sending.Outbox` is opened with the adapter (``from_url``: its
sender connects at once, so a missing queue fails the open) or on the first push (a client's
queue or topic). A job with ``to`` (``Job(to="other")``) goes through an outbox of that entity,
made on first use, its sender opened then, on the same SDK client: Service Bus routes by the
link a message is sent on, so each destination has its own.
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Awaitable, Callable, Sequence

from ..._adapter import SendResult
from ..._errors import Amqp1qError, QueueStateError, UnsupportedFeature
from ..._job import Job, Receipt
from ._reconnect import Supervisor
from ._sdk import ServiceBusMessage, ServiceBusSender
from ._sending import Outbox

__all__ = ["Outboxes"]

Connect = Callable[[str | None], Awaitable[ServiceBusSender]]


class Outboxes:
    """The outboxes of one adapter. ``refusal``: why its entity takes no pushes (a dead-letter
    queue, a subscription), or None."""

    def __init__(
        self, entity: str, queue: str, *, supervisor: Supervisor, connect: Connect
    ) -> None:
        self._entity = entity
        self._queue = queue
        self._supervisor = supervisor
        self._connect = connect
        self._own: Outbox | None = None
        self._routes: dict[str, Outbox] = {}
        self.refusal: str | None = None

    def open(self, sender: ServiceBusSender | None) -> None:
        """The entity's outbox, with its sender (None: opened on the first push)."""
        self._own = Outbox(
            sender, self._entity, supervisor=self._supervisor, connect=lambda: self._connect(None)
        )

    @property
    def senders(self) -> int:
        """Open SDK senders (each its own AMQP connection)."""
        outboxes = [self._own, *self._routes.values()]
        return sum(1 for o in outboxes if o is not None and o.sender is not None)

    def get(self, to: str | None = None) -> Outbox:
        """The outbox of the entity, or of ``to`` (a job routed elsewhere)."""
        if to is None or to == self._entity:
            if self.refusal is not None:
                raise UnsupportedFeature(self.refusal, queue=self._queue)
            if self._own is None:
                raise QueueStateError("the queue is not open", queue=self._queue)
            return self._own
        if self._own is None and self.refusal is None:
            raise QueueStateError("the queue is not open", queue=self._queue)
        route = self._routes.get(to)
        if route is None:
            route = self._routes[to] = Outbox(
                None, to, supervisor=self._supervisor, connect=lambda: self._connect(to)
            )
        return route

    async def push(self, outgoing: Sequence[tuple[Job, ServiceBusMessage]]) -> list[SendResult]:
        """Send each job's message (to its ``to``, else the entity; scheduled when it has a
        delay); its Receipt or its error, in order. Immediate messages to one place share
        batches; delayed ones due at the same time are scheduled together."""
        now = datetime.datetime.now(datetime.timezone.utc)
        results: list[SendResult | None] = [None] * len(outgoing)
        immediate: dict[str | None, list[int]] = {}
        scheduled: dict[tuple[str | None, datetime.datetime], list[int]] = {}
        for index, (job, _) in enumerate(outgoing):
            if job.delay:
                due = now + datetime.timedelta(seconds=job.delay)
                scheduled.setdefault((job.to, due), []).append(index)
            else:
                immediate.setdefault(job.to, []).append(index)
        waiting: list[tuple[int, asyncio.Future[None]]] = []
        for to, indexes in immediate.items():
            futures = self.get(to).submit([outgoing[i][1] for i in indexes])
            waiting += zip(indexes, futures, strict=True)
        for (to, due), indexes in scheduled.items():
            messages = [outgoing[i][1] for i in indexes]
            numbers = await self.get(to).schedule(messages, due, outgoing[indexes[0]][0].id)
            for index, number in zip(indexes, numbers, strict=True):
                job = outgoing[index][0]
                results[index] = (
                    number
                    if isinstance(number, Amqp1qError)
                    else Receipt(job.id, to or self._queue, sequence_number=number)
                )
        for index, future in waiting:
            job = outgoing[index][0]
            try:
                await future
            except Amqp1qError as exc:
                exc.job_id = exc.job_id or job.id
                results[index] = exc
            else:
                results[index] = Receipt(job.id, job.to or self._queue)
        done: list[SendResult] = []
        for result in results:
            assert result is not None, "every job has a result by now"
            done.append(result)
        return done

    async def resend(
        self, message: ServiceBusMessage, due: datetime.datetime | None, job_id: str | None
    ) -> None:
        """Push a copy of a received job to the entity (scheduled for ``due``, if given);
        raise on failure."""
        if due is not None:
            [result] = await self.get().schedule([message], due, job_id)
            if isinstance(result, Amqp1qError):
                raise result
            return
        await self.get().submit([message])[0]

    async def close(self) -> None:
        outboxes = [self._own, *self._routes.values()]
        self._own, self._routes = None, {}
        for outbox in outboxes:
            if outbox is not None:
                await outbox.close()
