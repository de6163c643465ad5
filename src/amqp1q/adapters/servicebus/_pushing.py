"""What one :class:`~.adapter.ServiceBusAdapter` pushes: :class:`Pusher`.

Jobs become messages here (amqp1q's format or RoadRunner's envelope, a request carrying the
client's reply session), a job asking for a priority Service Bus lacks is refused, re-sent
copies of received jobs (a release, a retry with delay) and replies are built; all of them go
out through the adapter's :class:`~._outboxes.Outboxes`, whose senders are opened here.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..._adapter import Entity, Incoming, SendResult
from ..._errors import Amqp1qError, UnsupportedFeature
from ..._job import Job, new_job_id
from ..._properties import job_properties
from ..._replies import Reply
from ..._roadrunner import ROADRUNNER
from ._entities import entity_path, push_refusal
from ._mapping import message_for, reply_message, to_message, to_roadrunner_message
from ._outboxes import Outboxes
from ._reconnect import open_fresh
from ._replies import session_of
from ._sdk import ServiceBusMessage, ServiceBusSender
from ._shared_client import SharedClient

if TYPE_CHECKING:
    from .adapter import ServiceBusAdapter

__all__ = ["Pusher"]


class Pusher:
    """The pushes of one adapter (to ``node``, or none for a dead-letter queue), on the SDK
    client it shares."""

    def __init__(
        self, adapter: ServiceBusAdapter, shared: SharedClient, node: Entity, *, dead_letters: bool
    ) -> None:
        self._adapter = adapter
        self._shared = shared
        self._entity = entity_path(node)
        self.outboxes = Outboxes(
            self._entity, adapter.queue, supervisor=adapter.supervisor, connect=self.connect
        )
        self.outboxes.refusal = push_refusal(node, dead_letters=dead_letters)

    async def connect(self, entity: str | None = None) -> ServiceBusSender:
        """A fresh, open SDK sender to this entity (or ``entity``: a job's ``to``); raise the
        mapped error, having closed it, if it fails. A topic's sender is a queue's on the wire
        (a link to the entity's path)."""
        adapter = self._adapter
        sender = self._shared.client.get_queue_sender(
            entity or self._entity, socket_timeout=adapter.socket_timeout
        )
        return await open_fresh(sender, queue=entity or adapter.queue, display=adapter.display)

    async def send(self, jobs: Sequence[Job], default_priority: int) -> list[SendResult]:
        outgoing: list[tuple[Job, ServiceBusMessage]] = []
        refused: dict[int, SendResult] = {}
        for index, job in enumerate(jobs):
            refusal = self._check(job, default_priority)
            if refusal is not None:
                refused[index] = refusal
            else:
                outgoing.append((job, self._to_message(job)))
        sent = iter(await self.outboxes.push(outgoing))
        return [refused[i] if i in refused else next(sent) for i in range(len(jobs))]

    def _to_message(self, job: Job, attempt: int = 1) -> ServiceBusMessage:
        adapter = self._adapter
        if adapter.wire_format == ROADRUNNER:
            message = to_roadrunner_message(job, adapter.pipeline, attempt=attempt)
        else:
            message = to_message(job, attempt=attempt)
        if job.reply_to is not None:  # a request to the client's own session of its reply queue
            session = session_of(self._shared.current_reply_link, job.reply_to)
            if session is not None:
                message.reply_to_session_id = session
        return message

    def _check(self, job: Job, default_priority: int) -> Amqp1qError | None:
        adapter = self._adapter
        if adapter.wire_format == ROADRUNNER and job.priority is not None:
            return None  # it travels in the envelope (rr_priority), as on the Proton adapter
        priority = default_priority if job.priority is None else job.priority
        if priority and not adapter.ignore_priority:
            return UnsupportedFeature(
                f"Azure Service Bus has no message priority (the job asks for {priority}); "
                "push without one, or pass ignore_priority=True to JobQueue.from_url to drop it",
                queue=adapter.queue,
                job_id=job.id,
            )
        return None

    async def resend(self, incoming: Incoming, *, attempt: int, delay: float | None) -> None:
        """Push a copy of a received job (a release, or a retry with delay); raises on failure."""
        scheduled_at = None
        if delay:
            scheduled_at = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(
                seconds=delay
            )
        if self._adapter.wire_format == ROADRUNNER:  # readable by RoadRunner's workers too
            message = self._to_message(incoming.copy_as_job(delay), attempt)
        else:
            message = message_for(
                incoming.name,
                incoming.body,
                incoming.id or new_job_id(),
                incoming.content_type,
                job_properties(incoming.headers, attempt=attempt),
                None,
            )
            if incoming.reply_to is not None:  # a request's copy is still a request
                message.reply_to = incoming.reply_to
                message.correlation_id = incoming.correlation_id
                message.reply_to_session_id = incoming.reply_to_session_id
        await self.outboxes.resend(message, scheduled_at, incoming.id)

    async def send_reply(self, address: str, reply: Reply) -> None:
        """Send a reply to the queue ``address`` (with the caller's session id, if any)."""
        await self.outboxes.get(address).submit([reply_message(reply)])[0]
