"""The worker's dispatcher: :class:`Runner`, a task per job, a slot per running handler.

``run_worker`` (:mod:`amqp1q.worker`) makes one per worker: jobs from each consumer go to
their handler (by name, through the registry and its middleware) in tasks that share
``concurrency`` slots, whichever queue they came from; a sync handler runs in a thread
(``_sync_handlers``). Draining stops the consumers, gives running handlers the grace period,
then cancels them (their jobs released, never lost).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from . import _middleware
from ._consumer import Consumer
from ._errors import Amqp1qError, PayloadError
from ._middleware import Middleware
from ._received import ReceivedJob
from ._registry import Handler, Registry
from ._sync_handlers import ThreadedHandlers
from ._watchdog import JobsInHand

__all__ = ["NO_HANDLER", "Runner"]

log = logging.getLogger("amqp1q.worker")

NO_HANDLER = "no handler"
"""The dead-letter reason of a job whose name has no handler (and no default handler)."""


class Runner:
    """The tasks of one worker: a slot per running handler."""

    def __init__(
        self,
        registry: Registry,
        concurrency: int,
        timeout: float | None,
        middleware: tuple[Middleware, ...] = (),
        in_hand: JobsInHand | None = None,
    ) -> None:
        self._registry = registry
        self._middleware = middleware
        self._slots = asyncio.Semaphore(concurrency)
        self._timeout = timeout
        self._tasks: set[asyncio.Task[None]] = set()
        self._threads = ThreadedHandlers(concurrency)
        self._in_hand = in_hand

    async def dispatch_all(self, consumers: list[Consumer], stop: asyncio.Event) -> bool:
        """:meth:`dispatch` for each consumer at once, the handler slots shared: True once
        ``stop`` is set; False once a consumer ends by itself (the others then stop too). A
        consumer's failure stops the others, then propagates."""
        if len(consumers) == 1:
            return await self.dispatch(consumers[0], stop)
        halt = asyncio.Event()  # stop, or one consumer ended: every dispatch returns
        watching = asyncio.ensure_future(stop.wait())
        watching.add_done_callback(lambda _: halt.set())
        tasks = [asyncio.ensure_future(self.dispatch(c, halt)) for c in consumers]
        try:
            while True:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                if any(t.exception() is not None or not t.result() for t in done):
                    halt.set()
                if halt.is_set():
                    results = await asyncio.gather(*tasks)  # a failure propagates from here
                    return stop.is_set() or all(results)
                tasks = [t for t in tasks if t not in done]  # pragma: no cover - (done: halt)
        finally:
            watching.cancel()
            for task in tasks:
                task.cancel()

    async def dispatch(self, consumer: Consumer, stop: asyncio.Event) -> bool:
        """Hand jobs to handler tasks until ``stop`` is set (True) or the consumer ends (False)."""
        stopping: asyncio.Future[bool] = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                if not await _first(self._slots.acquire(), stopping, self._slots.release):
                    return True
                receive = asyncio.ensure_future(consumer.receive())
                racing: set[asyncio.Future[Any]] = {receive, stopping}
                await asyncio.wait(racing, return_when=asyncio.FIRST_COMPLETED)
                if not receive.done():
                    # Safe: receivers take a job off their buffer after their last await.
                    receive.cancel()
                    await asyncio.gather(receive, return_exceptions=True)
                job: ReceivedJob | None = None
                if not receive.cancelled():
                    failure = receive.exception()
                    if failure is not None:
                        self._slots.release()
                        raise failure
                    job = receive.result()
                if job is None or stop.is_set():
                    self._slots.release()
                    if job is not None:
                        await job.release()
                    if stop.is_set():
                        return True
                    log.warning("the consumer of %r ended; the worker stops", consumer.queue_name)
                    return False
                task = asyncio.create_task(self._run(job), name=f"amqp1q job {job.id}")
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            return True
        finally:
            stopping.cancel()

    async def _run(self, job: ReceivedJob) -> None:
        try:
            if self._middleware:  # settles the job in job.process(), inside the middleware
                await _middleware.run(job, self._middleware, lambda: self._handle(job))
            else:
                async with job.process():
                    await self._handle(job)
        except Exception:
            # process() swallows handler errors; this is settlement failing (say, a lost link).
            log.warning("settling job %s failed", job.id, exc_info=True, extra={"job_id": job.id})
        finally:
            self._slots.release()

    async def _handle(self, job: ReceivedJob) -> None:
        """Run ``job``'s handler (inside ``job.process()``); raise what it raises."""
        handler = self._registry.resolve(job.name)
        if handler is None:
            log.warning(
                "no handler for job %s named %r; dead-lettered",
                job.id,
                job.name,
                extra={"queue": job.queue, "job_id": job.id},
            )
            await job.reject(NO_HANDLER, f"no handler for job name {job.name!r}")
            return
        # Jobs whose handler runs on the loop are in hand for the stall watchdog; a sync
        # handler's thread cannot stall the loop.
        in_hand = self._in_hand if self._threads.is_async(handler) else None
        if in_hand is not None:
            in_hand.started(job)
        try:
            result = await self._call(handler, job)
        finally:
            if in_hand is not None:
                in_hand.ended(job)
        if job.wants_reply:  # a request: its caller gets the return value
            await _reply(job, result)

    def _call(self, handler: Handler, job: ReceivedJob) -> Awaitable[Any]:
        arguments = self._registry.arguments(job.name, job)  # a typed payload checked here
        if not self._threads.is_async(handler):
            return self._threads.run(lambda _: handler(*arguments), job, self._timeout)
        if self._timeout is None:
            return handler(*arguments)
        return _within(handler(*arguments), self._timeout, job.name)

    def note_threads_left(self) -> None:
        left = self._threads.abandoned
        if left:
            log.warning(
                "%d cancelled sync handler(s) still running in their threads: the process "
                "cannot exit before they return",
                left,
            )

    async def drain(self, consumers: list[Consumer], grace: float) -> None:
        """No new jobs; running handlers get ``grace`` s, then are cancelled (jobs released)."""
        for consumer in consumers:
            try:
                await consumer.drain()
            except Exception:  # noqa: PERF203 - one consumer's failure stops no other drain
                log.debug("draining the consumer failed", exc_info=True)
        try:
            if self._tasks and grace > 0:
                log.info("waiting up to %g s for %d running job(s)", grace, len(self._tasks))
                await asyncio.wait(set(self._tasks), timeout=grace)
        finally:  # cancelled while waiting too: handlers go first, their jobs released
            await self.cancel_all()

    async def cancel_all(self) -> None:
        tasks = set(self._tasks)
        if not tasks:
            return
        log.warning("cancelling %d job(s) still running; they are released", len(tasks))
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _first(
    action: Awaitable[object], stopping: asyncio.Future[bool], undo: Callable[[], None]
) -> bool:
    """Await ``action`` unless ``stopping`` finishes first; False (``action`` undone) if it did."""
    task = asyncio.ensure_future(action)
    racing: set[asyncio.Future[Any]] = {task, stopping}
    await asyncio.wait(racing, return_when=asyncio.FIRST_COMPLETED)
    if task.done() and not task.cancelled() and not stopping.done():
        return True
    if not task.done():
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    if task.done() and not task.cancelled():
        undo()
    return False


async def _reply(job: ReceivedJob, result: Any) -> None:
    """Send the handler's return value to its caller. A reply that cannot go (its caller has
    gone, and with it its reply node) is logged: the job did its work, and is not run again
    for it. A value JSON cannot hold fails the job, as a handler's error would."""
    try:
        await job.reply(result)
    except PayloadError:
        raise
    except Amqp1qError as exc:
        log.warning(
            "could not send the reply to job %s: %s",
            job.id,
            exc,
            extra={"queue": job.queue, "job_id": job.id},
        )


async def _within(call: Awaitable[Any], seconds: float, name: str) -> Any:
    try:
        return await asyncio.wait_for(call, seconds)
    except asyncio.TimeoutError:
        raise TimeoutError(f"the handler for {name!r} took longer than {seconds:g} s") from None
