"""Pushing: one writer per sender, coalescing concurrent pushes into batches.

:class:`Outbox` queues messages from every concurrent ``send`` and one task sends them in
``ServiceBusMessageBatch`` es under the link's size limit; each message's future is resolved
when its batch is sent, or failed with the mapped error. Delayed jobs are scheduled through
the same sender (:meth:`Outbox.schedule`). When a send fails for a reason a fresh
connection may cure (:func:`~._reconnect.is_transient`), the sender is replaced (see
:mod:`._reconnect`) and the batch sent again, the same message-ids in it (at-least-once: the
queue may then hold a duplicate), unless the reconnect policy says ``resend_pushes=False``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from ..._errors import Amqp1qError, ConnectionLost, JobTooLarge
from ._errors import copy_error, push_error
from ._reconnect import Supervisor, is_transient
from ._sdk import (
    CLOSE_TIMEOUT,
    ServiceBusMessage,
    ServiceBusMessageBatch,
    ServiceBusSender,
    close_quietly,
    sb_errors,
)

__all__ = ["Outbox"]

log = logging.getLogger("amqp1q.servicebus")

_Entry = tuple[ServiceBusMessage, "asyncio.Future[None]"]


class Outbox:
    """Messages waiting to be sent; one task sends them in batches under the size limit."""

    def __init__(
        self,
        sender: ServiceBusSender | None,
        queue: str,
        *,
        supervisor: Supervisor,
        connect: Callable[[], Awaitable[ServiceBusSender]],
    ) -> None:
        self.sender = sender
        self._queue = queue
        self._supervisor = supervisor
        self._connect = connect
        self._replacing = asyncio.Lock()
        self._closing: set[asyncio.Task[None]] = set()
        self._pending: deque[_Entry] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()

    def submit(self, messages: list[ServiceBusMessage]) -> list[asyncio.Future[None]]:
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[None]] = []
        for message in messages:
            future: asyncio.Future[None] = loop.create_future()
            self._pending.append((message, future))
            futures.append(future)
        if messages:
            self._idle.clear()
            if self._task is None:
                self._task = loop.create_task(self._run(), name="amqp1q-servicebus-outbox")
            self._wake.set()
        return futures

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                await self._send_one_batch()
            self._idle.set()

    async def ensure_sender(self) -> ServiceBusSender:
        """The sender, opened on first use when the outbox was made without one (a client's
        queue links up on its first push); raise the mapped error if it cannot open."""
        sender = self.sender
        if sender is None:
            async with self._replacing:
                if self.sender is None:
                    self.sender = await self._connect()
                sender = self.sender
        return sender

    def _batch_limit(self) -> int | None:
        # The SDK sizes batches by the vendor batch limit, which may exceed the link's
        # max-message-size (a broker with a small limit would refuse the whole batch).
        sender: Any = self.sender
        limits = [
            value
            for value in (
                getattr(sender, "_max_batch_size_on_link", 0),
                getattr(sender, "_max_message_size_on_link", 0),
            )
            if isinstance(value, int) and value > 0
        ]
        return min(limits) if limits else None

    async def _send_one_batch(self) -> None:
        """Send the next batch from the queue, again on a fresh sender after a transient
        failure; resolve or fail its messages' futures."""
        taken: list[_Entry] | None = None
        while True:
            try:
                sender = await self.ensure_sender()
            except Amqp1qError as refused:
                _fail([*(taken or []), *self._pending], refused)
                self._pending.clear()
                return
            try:
                batch = await sender.create_message_batch(self._batch_limit())
                if taken is None:
                    taken = self._take(batch)
                else:  # again, after a reconnect: what was given up meanwhile stays out
                    taken = [entry for entry in taken if not entry[1].done()]
                    for message, _ in taken:
                        batch.add_message(message)
                if not taken:
                    return
                await sender.send_messages(batch)
            except asyncio.CancelledError:
                _fail(
                    taken or [], ConnectionLost("the queue closed while sending", queue=self._queue)
                )
                raise
            except Exception as exc:
                error = await self._recover(sender, exc)
                if error is None:
                    continue
                if taken is None:  # no batch could be made: everything waiting fails
                    taken = list(self._pending)
                    self._pending.clear()
                _fail(taken, error)
                return
            for _, future in taken:
                if not future.done():
                    future.set_result(None)
            return

    def _take(self, batch: ServiceBusMessageBatch) -> list[_Entry]:
        """Move waiting messages into ``batch`` while they fit; a message too large for an
        empty batch fails alone."""
        pending = self._pending
        taken: list[_Entry] = []
        while pending:
            message, future = pending[0]
            if future.done():  # the push was given up (timeout, cancellation): not sent
                pending.popleft()
                continue
            try:
                batch.add_message(message)
            except sb_errors.MessageSizeExceededError:
                if taken:
                    break
                pending.popleft()
                future.set_exception(
                    JobTooLarge(
                        f"the job is larger than the {batch.max_size_in_bytes} bytes "
                        "Service Bus takes in one message",
                        queue=self._queue,
                        job_id=message.message_id,
                    )
                )
                continue
            pending.popleft()
            taken.append((message, future))
        return taken

    async def schedule(
        self, messages: list[ServiceBusMessage], due: datetime.datetime, job_id: str | None
    ) -> list[int | Amqp1qError]:
        """Schedule ``messages`` for ``due``: their sequence numbers, or one error each; again
        on a fresh sender after a transient failure."""
        while True:
            try:
                sender = await self.ensure_sender()
            except Amqp1qError as refused:
                return [refused] * len(messages)
            try:
                numbers = await sender.schedule_messages(messages, due)
            except Exception as exc:
                error = await self._recover(sender, exc, job_id if len(messages) == 1 else None)
                if error is None:
                    continue
                return [error] * len(messages)
            return [int(n) for n in numbers]

    async def _recover(
        self, sender: ServiceBusSender, exc: Exception, job_id: str | None = None
    ) -> Amqp1qError | None:
        """After a failed send: None to send it again (on a fresh sender), else the error that
        fails it."""
        error = push_error(exc, queue=self._queue, job_id=job_id)
        if not is_transient(error):
            return error
        try:
            await self.replace(sender, exc)
        except Amqp1qError as final:
            return final
        policy = self._supervisor.policy
        return None if policy is not None and policy.resend_pushes else error

    async def replace(self, failed: ServiceBusSender, cause: Exception) -> ServiceBusSender:
        """A fresh sender in place of ``failed`` (once, however many callers saw it fail)."""
        async with self._replacing:
            if self.sender is failed:
                task = asyncio.get_running_loop().create_task(close_quietly(failed, dead=True))
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)
                what = f"sending to {self._queue!r}"
                self.sender = await self._supervisor.redial(what, self._connect, cause)
            assert self.sender is not None
            return self.sender

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            if self._pending:  # let what is queued go out, within bounds
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._idle.wait(), CLOSE_TIMEOUT)
            task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(task, CLOSE_TIMEOUT)
        _fail(list(self._pending), ConnectionLost("the queue closed", queue=self._queue))
        self._pending.clear()
        if self._closing:
            await asyncio.wait(list(self._closing), timeout=CLOSE_TIMEOUT)
        if self.sender is not None:
            await close_quietly(self.sender)


def _fail(entries: list[_Entry], error: Amqp1qError) -> None:
    """Fail each entry's future not yet done, each with its own copy of ``error``."""
    for _, future in entries:
        if not future.done():
            future.set_exception(copy_error(error))
