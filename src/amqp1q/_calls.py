"""``queue.call(job)``: send a request, wait for its reply (see ``_replies`` for the wire).

Each connection has one reply link (the adapter's :meth:`~amqp1q._adapter.Adapter.reply_link`)
and one :class:`CallRouter` reading it: every call of every queue on that connection waits on a
future keyed by its correlation id (the job id), and the router hands each reply to its future.
A reply nobody waits for any more (its call timed out or was cancelled) is dropped quietly.
The router's task ends when the link closes; calls still waiting then fail with
:class:`~amqp1q.ConnectionLost`, and the next call opens a new link.
"""

from __future__ import annotations

import asyncio
import json
import logging
import weakref
from typing import Any

from . import _typed
from ._adapter import Adapter, Incoming
from ._errors import ConnectionLost, InvalidJob, JobFailed, PayloadError
from ._payload import decode_payload, encode_payload
from ._replies import ERROR_TYPE, Reply, ReplyLink

__all__ = [
    "CallRouter",
    "error_reply",
    "read_reply",
    "reap",
    "router_for",
    "value_reply",
]

log = logging.getLogger("amqp1q.calls")

_routers: weakref.WeakKeyDictionary[Any, CallRouter] = weakref.WeakKeyDictionary()


class CallRouter:
    """The calls waiting on one reply link, and the task that reads it."""

    def __init__(self, link: ReplyLink) -> None:
        self.link = link
        self._pending: dict[str, asyncio.Future[Incoming]] = {}
        self._task: asyncio.Task[None] | None = None
        self._ready: asyncio.Future[None] | None = None
        self.closed = False

    @property
    def pending(self) -> int:
        """Calls waiting for their reply now."""
        return len(self._pending)

    @property
    def task(self) -> asyncio.Task[None] | None:
        return self._task

    async def ready(self) -> None:
        """Open the link once (concurrent first calls share the opening) and start reading."""
        if self._ready is None:
            self._ready = asyncio.ensure_future(self._open())
        await asyncio.shield(self._ready)

    async def _open(self) -> None:
        try:
            await self.link.open()
        except BaseException:
            self.closed = True
            raise
        self._task = asyncio.create_task(self._read(), name="amqp1q replies")

    def expect(self, correlation_id: str) -> asyncio.Future[Incoming]:
        """The future the reply with ``correlation_id`` resolves (InvalidJob if a call with
        that id waits already: its replies could not be told apart)."""
        if correlation_id in self._pending:
            raise InvalidJob(
                f"a call of job {correlation_id!r} is waiting already: each call needs a job "
                "id of its own",
                job_id=correlation_id,
            )
        future: asyncio.Future[Incoming] = asyncio.get_running_loop().create_future()
        self._pending[correlation_id] = future
        return future

    def forget(self, correlation_id: str) -> None:
        self._pending.pop(correlation_id, None)

    async def _read(self) -> None:
        try:
            while True:
                incoming = await self.link.receive()
                if incoming is None:
                    return
                key = incoming.correlation_id
                future = self._pending.pop(key, None) if key is not None else None
                if future is None or future.done():
                    log.debug("a reply nobody waits for (correlation-id %r) was dropped", key)
                    continue
                future.set_result(incoming)
        finally:
            self.closed = True
            pending, self._pending = self._pending, {}
            for future in pending.values():
                if not future.done():
                    future.set_exception(ConnectionLost("the reply link closed"))

    async def stop(self) -> None:
        """Close the link (if it is not) and end the reading task: it ends by itself once
        the link is closed; given a moment more, it is cancelled."""
        self.closed = True
        try:
            await self.link.close()
        finally:
            task = self._task
            if task is not None and not task.done():
                done, _ = await asyncio.wait({task}, timeout=1.0)
                if not done:
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)


async def router_for(adapter: Adapter) -> CallRouter:
    """The open router of ``adapter``'s connection (a new one if the last one closed)."""
    link = adapter.reply_link()
    router = _routers.get(link)
    if router is None or router.closed:
        router = _routers[link] = CallRouter(link)
    await router.ready()
    return router


async def reap() -> None:
    """Wait for the readers of reply links that have closed (their connection closed, or
    dropped) to end: a closed queue or client leaves no task behind. Bounded: a reader whose
    link closed ends at once; one that does not is cancelled."""
    for link, router in list(_routers.items()):
        if link.closed:
            del _routers[link]
            await router.stop()


# -- what goes in a reply, and what comes out of one -------------------------------------------


def value_reply(value: Any, correlation_id: str, subject: str | None, session: str | None) -> Reply:
    """The reply carrying a handler's return value (bytes as they are, anything else as JSON;
    raise :class:`~amqp1q.PayloadError` for a value JSON cannot hold)."""
    body, content_type = encode_payload(value, None)
    return Reply(correlation_id, body, content_type, subject=subject, session_id=session)


def error_reply(
    error_type: str,
    message: str,
    correlation_id: str,
    subject: str | None,
    session: str | None,
) -> Reply:
    body = json.dumps({"error": {"type": error_type, "message": message}}).encode("utf-8")
    return Reply(correlation_id, body, ERROR_TYPE, subject=subject, session_id=session)


def read_reply(incoming: Incoming, result_type: object, queue: str, job_id: str) -> Any:
    """A reply's value (JSON decoded, else bytes; with ``result_type``, checked and built as
    that type); raise :class:`~amqp1q.JobFailed` for a failure reply."""
    if incoming.content_type == ERROR_TYPE:
        try:
            error = json.loads(incoming.body)["error"]
            error_type, message = str(error["type"]), str(error["message"])
        except (ValueError, KeyError, TypeError):
            error_type, message = "Exception", incoming.body.decode("utf-8", "replace")
        raise JobFailed(
            f"the job failed: {error_type}: {message}",
            error_type=error_type,
            error_message=message,
            queue=queue,
            job_id=job_id,
        )
    if result_type is bytes:
        return incoming.body
    try:
        value = decode_payload(incoming.body, incoming.content_type)
    except PayloadError as exc:
        raise PayloadError(f"the reply: {exc.message}", queue=queue, job_id=job_id) from None
    if result_type is None:
        return value
    return _typed.check_value(result_type, value, queue=queue, job_id=job_id)
