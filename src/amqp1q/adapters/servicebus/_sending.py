"""Pushing: one writer per sender, coalescing concurrent pushes into batches.

:class:`_Outbox` queues messages from every concurrent ``send`` and one task sends them in
``ServiceBusMessageBatch`` es under the link's size limit; each message's future is resolved
when its batch is sent, or failed with the mapped error.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import Any

from ..._errors import ConnectionLost, JobTooLarge
from ._errors import _copy_error, _push_error
from ._sdk import (
    _CLOSE_TIMEOUT,
    ServiceBusMessage,
    ServiceBusMessageBatch,
    ServiceBusSender,
    sb_errors,
)


class _Outbox:
    """Messages waiting to be sent; one task sends them in batches under the size limit."""

    def __init__(self, sender: ServiceBusSender, queue: str) -> None:
        self._sender = sender
        self._queue = queue
        self._pending: deque[tuple[ServiceBusMessage, asyncio.Future[None]]] = deque()
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

    def _batch_limit(self) -> int | None:
        # The SDK sizes batches by the vendor batch limit, which may exceed the link's
        # max-message-size (a broker with a small limit would refuse the whole batch).
        sender: Any = self._sender
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
        pending = self._pending
        try:
            batch: ServiceBusMessageBatch = await self._sender.create_message_batch(
                self._batch_limit()
            )
        except Exception as exc:
            self._fail_all(exc)
            return
        taken: list[asyncio.Future[None]] = []
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
            taken.append(future)
        if not taken:
            return
        try:
            await self._sender.send_messages(batch)
        except asyncio.CancelledError:
            for future in taken:
                if not future.done():
                    future.set_exception(
                        ConnectionLost("the queue closed while sending", queue=self._queue)
                    )
            raise
        except Exception as exc:
            error = _push_error(exc, queue=self._queue, job_id=None)
            for future in taken:
                if not future.done():
                    future.set_exception(_copy_error(error))
            return
        for future in taken:
            if not future.done():
                future.set_result(None)

    def _fail_all(self, exc: Exception) -> None:
        error = _push_error(exc, queue=self._queue, job_id=None)
        while self._pending:
            _, future = self._pending.popleft()
            if not future.done():
                future.set_exception(_copy_error(error))

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            if self._pending:  # let what is queued go out, within bounds
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._idle.wait(), _CLOSE_TIMEOUT)
            task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(task, _CLOSE_TIMEOUT)
        while self._pending:
            _, future = self._pending.popleft()
            if not future.done():
                future.set_exception(ConnectionLost("the queue closed", queue=self._queue))
