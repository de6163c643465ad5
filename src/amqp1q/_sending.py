"""Sending from a queue: ``push()``, ``push_many()`` and ``call()`` -- the facade's side.

:class:`SendingMixin` gives :class:`~amqp1q.JobQueue` these methods. A push returns only once
the broker has accepted the job (the :class:`~amqp1q._push.Pusher` pipelines and bounds it);
the receipts of delayed jobs are made cancellable. ``call()`` pushes a request with
``reply-to`` and ``correlation-id`` set and waits, bounded, for its reply on the connection's
reply link (:mod:`._calls`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

from . import _calls
from ._errors import Amqp1qError, CallTimeout
from ._job import Job, Receipt
from ._settings import check_seconds
from ._shield import deadline

if TYPE_CHECKING:
    from ._queue import JobQueue

__all__ = ["SendingMixin"]

T = TypeVar("T")


class SendingMixin:
    """``JobQueue``'s sending methods (see the module docstring)."""

    async def push(  # type: ignore[misc]
        self: JobQueue, job: Job, *, timeout: float | None = None
    ) -> Receipt:
        """Send ``job``; return once the broker has accepted it (at-least-once).

        Raises :class:`~amqp1q.JobRejected`, :class:`~amqp1q.JobTooLarge`,
        :class:`~amqp1q.PushTimeout` (after ``timeout``, default ``push_timeout``) or a
        connection error; never returns without the broker's acceptance.
        """
        self._check_open()
        results = await self._pusher.send([job], timeout)
        if job.delay:
            self._bind_receipts((job,), results)
        result = results[0]
        if isinstance(result, Amqp1qError):
            raise result
        return result

    @overload
    async def push_many(  # type: ignore[misc]
        self: JobQueue,
        jobs: Iterable[Job],
        *,
        return_exceptions: Literal[False] = ...,
        timeout: float | None = ...,
    ) -> list[Receipt]: ...

    @overload
    async def push_many(  # type: ignore[misc]
        self: JobQueue,
        jobs: Iterable[Job],
        *,
        return_exceptions: Literal[True],
        timeout: float | None = ...,
    ) -> list[Receipt | Amqp1qError]: ...

    async def push_many(  # type: ignore[misc]
        self: JobQueue,
        jobs: Iterable[Job],
        *,
        return_exceptions: bool = False,
        timeout: float | None = None,
    ) -> list[Receipt] | list[Receipt | Amqp1qError]:
        """Send many jobs, pipelined; return their receipts in order once all have outcomes.

        If any job fails, raises the first failure — unless ``return_exceptions=True``, which
        returns each job's :class:`Receipt` or error (an :class:`~amqp1q.Amqp1qError`) in place.
        """
        self._check_open()
        jobs = list(jobs)
        results = await self._pusher.send(jobs, timeout)
        self._bind_receipts(jobs, results)
        if return_exceptions:
            return results
        receipts: list[Receipt] = []
        for result in results:
            if isinstance(result, Amqp1qError):
                raise result
            receipts.append(result)
        return receipts

    # -- request and reply ----------------------------------------------------------------------

    @overload
    async def call(  # type: ignore[misc]
        self: JobQueue, job: Job, *, timeout: float = ..., result_type: None = ...
    ) -> Any: ...
    @overload
    async def call(  # type: ignore[misc]
        self: JobQueue, job: Job, *, timeout: float = ..., result_type: type[T]
    ) -> T: ...

    async def call(  # type: ignore[misc]
        self: JobQueue, job: Job, *, timeout: float = 30.0, result_type: type[Any] | None = None
    ) -> Any:
        """Send ``job`` as a request and return its handler's return value.

        The job goes with ``reply-to`` (the connection's reply link) and ``correlation-id``
        (its id); the worker sends what the handler returns back. The value is decoded JSON
        (or ``bytes``), or with ``result_type`` checked and built as that type (as a handler's
        typed payload is). Raises :class:`~amqp1q.JobFailed` when the handler failed after its
        last attempt (the remote error's type and message), :class:`~amqp1q.CallTimeout` when
        no reply came within ``timeout`` seconds (the push included). Cancelling the call
        stops the wait; a reply that comes later is dropped. See docs/request-reply.md.
        """
        self._check_open()
        timeout = check_seconds("timeout", timeout)
        adapter = self._adapter
        try:
            async with deadline(timeout):
                router = await _calls.router_for(adapter)
                link = router.link
                waiting = router.expect(job.id)
                try:
                    request = job.evolve(reply_to=link.address, correlation_id=job.id)
                    await self.push(request)
                    incoming = await waiting
                finally:
                    router.forget(job.id)
        except TimeoutError:
            raise CallTimeout(
                f"no reply within {timeout:g} s", queue=self.name, job_id=job.id
            ) from None
        return _calls.read_reply(incoming, result_type, self.name, job.id)
