"""A worker: jobs dispatched by name to handlers in a :class:`Registry`, with a graceful drain.

::

    registry = Registry()

    @registry.handler("send_email")
    async def send_email(job: ReceivedJob) -> None:
        ...

    @registry.handler("welcome")              # a typed payload: checked, then built
    async def welcome(job: ReceivedJob, payload: Welcome) -> None:
        ...

    async with JobQueue.from_url(url) as queue:
        await run_worker(registry, queue, concurrency=32, job_timeout=60)

Each job runs in its own task inside ``async with job.process():`` — acked when its handler
returns, retried (or dead-lettered after the queue's ``RetryPolicy.max_attempts``) when it raises
or overruns ``job_timeout``, released when it is cancelled. A job whose name has no handler (and
no :meth:`Registry.default`) is dead-lettered with the reason ``"no handler"``; one whose
payload is not its handler's declared type, with ``"invalid payload"``. Middleware
(:meth:`Registry.add_middleware`) runs around every job, the first registered outermost.

A handler may be a plain ``def``: it then runs in a worker thread (see ``_sync_handlers`` for
what cancellation and ``job_timeout`` do to a thread). A handler that blocks the event loop
instead is named in a warning by the stall watchdog (``stall_warning``, ``_watchdog``).

Stopping (``stop.set()``; the ``amqp1q worker`` command does it on SIGTERM/SIGINT): no new jobs
are taken and those buffered are released; running handlers get ``grace`` seconds to finish,
then are cancelled (their jobs released, never lost); the queue is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from . import _middleware
from ._consumer import Consumer
from ._errors import ConfigurationError, InvalidSetting
from ._middleware import Middleware, check_middleware
from ._queue import JobQueue
from ._received import ReceivedJob
from ._registry import AsyncHandler, Handler, Registry, SyncHandler
from ._settings import check_positive_int, check_seconds
from ._sync_handlers import ThreadedHandlers
from ._watchdog import DEFAULT_STALL_WARNING, JobsInHand, StallWatchdog
from ._workerconfig import WorkerConfig

__all__ = [
    "NO_HANDLER",
    "AsyncHandler",
    "Handler",
    "Registry",
    "SyncHandler",
    "WorkerConfig",
    "load_registry",
    "run_worker",
    "serve",
]

log = logging.getLogger("amqp1q.worker")

_MISSING = object()
NO_HANDLER = "no handler"
"""The dead-letter reason of a job whose name has no handler (and no default handler)."""


def load_registry(spec: str) -> Registry:
    """Import ``"package.module:attr"`` and return the :class:`Registry` it names.

    The current directory is put on ``sys.path`` first, so ``myapp.jobs:registry`` works from a
    project directory. Raises :class:`~amqp1q.ConfigurationError` with a readable message.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigurationError(f"expected MODULE:ATTR (like myapp.jobs:registry), got {spec!r}")
    if "" not in sys.path:
        sys.path.insert(0, "")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"cannot import {module_name!r}: {exc}") from exc
    target: object = module
    for part in attr.split("."):
        target = getattr(target, part, _MISSING)
        if target is _MISSING:
            raise ConfigurationError(f"{module_name!r} has no attribute {attr!r}")
    if not isinstance(target, Registry):
        raise ConfigurationError(f"{spec} is a {type(target).__name__}, not an amqp1q.Registry")
    return target


async def run_worker(
    registry: Registry,
    queue: JobQueue,
    *,
    concurrency: int = 32,
    job_timeout: float | None = None,
    stop: asyncio.Event | None = None,
    grace: float = 30.0,
    prefetch: int | None = None,
    middleware: Iterable[Middleware] = (),
    stall_warning: float | None = DEFAULT_STALL_WARNING,
    _in_hand: JobsInHand | None = None,
) -> int:
    """Consume ``queue`` and run each job's handler, ``concurrency`` at most at once.

    ``prefetch`` (default ``concurrency``) is the consumer's credit. ``stall_warning``
    (0.5 s; ``None`` or 0: off) logs a warning naming the jobs in hand when the event loop is
    blocked that long (a handler doing blocking work in ``async def``). Opens ``queue`` if it is
    not open, and always closes it before returning. Runs until ``stop`` is set, then drains
    (see the module docstring) and returns 0; returns 1 if the consumer ended without being
    asked to. A broker failure (say, the connection is lost and reconnecting gave up)
    propagates as an :class:`~amqp1q.Amqp1qError` after the same drain. Cancelling it cancels
    running handlers at once (their jobs released) and closes the queue.

    ``middleware`` runs around every job, outside the registry's own (``JobService`` passes
    its own here).
    """
    if not isinstance(registry, Registry):
        raise InvalidSetting(f"registry must be a Registry, not {type(registry).__name__}")
    concurrency = check_positive_int("concurrency", concurrency)
    prefetch = concurrency if prefetch is None else check_positive_int("prefetch", prefetch)
    timeout = None if job_timeout is None else check_seconds("job_timeout", job_timeout)
    grace = check_seconds("grace", grace, allow_zero=True)
    stall = check_stall_warning(stall_warning)
    stop = asyncio.Event() if stop is None else stop
    around = (*check_middleware(middleware), *registry.middleware)
    watchdog = None
    if _in_hand is None and stall is not None:
        _in_hand = JobsInHand()
        watchdog = StallWatchdog(stall, _in_hand)
        watchdog.start()
    runner = _Runner(registry, concurrency, timeout, around, _in_hand)
    requested = False
    try:
        if not queue.is_open:
            await queue.open()
        async with queue.consume(prefetch=prefetch) as consumer:
            cancelled = False
            try:
                requested = await runner.dispatch(consumer, stop)
            except asyncio.CancelledError:
                cancelled = True
                raise
            finally:
                await runner.drain(consumer, 0 if cancelled else grace)
    finally:
        try:
            await runner.cancel_all()
            await queue.close(grace=0)
        finally:
            if watchdog is not None:
                watchdog.stop()
            runner.note_threads_left()
    return 0 if requested else 1


def check_stall_warning(value: float | None) -> float | None:
    """``stall_warning`` checked: seconds > 0, or ``None`` (``None`` or 0: no watchdog)."""
    if value is None:
        return None
    seconds = check_seconds("stall_warning", value, allow_zero=True)
    return seconds or None


async def serve(
    spec: str,
    url: str,
    *,
    queue: str | None = None,
    concurrency: int = 32,
    job_timeout: float | None = None,
    grace: float = 30.0,
    prefetch: int | None = None,
    options: Mapping[str, Any] | None = None,
    stall_warning: float | None = DEFAULT_STALL_WARNING,
) -> int:
    """The ``amqp1q worker`` command: load ``spec``, run until SIGTERM/SIGINT, drain, exit code.

    ``options`` are more keyword arguments for ``JobQueue.from_url`` (say, from
    :meth:`WorkerConfig.queue_options`). 0 after a clean drain; 2 if ``spec`` cannot be loaded;
    130 on a second signal (running handlers cancelled at once, their jobs released); 1 for a
    consumer that ended by itself. Other :class:`~amqp1q.Amqp1qError` propagate (the command
    prints them and exits 1).
    """
    try:
        registry = load_registry(spec)
    except ConfigurationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    queue_options = dict(options or {})
    if queue is not None:
        queue_options["queue"] = queue
    job_queue = JobQueue.from_url(url, **queue_options)
    stop = asyncio.Event()
    interrupted = False
    worker = asyncio.ensure_future(
        run_worker(
            registry,
            job_queue,
            concurrency=concurrency,
            job_timeout=job_timeout,
            stop=stop,
            grace=grace,
            prefetch=prefetch,
            stall_warning=stall_warning,
        )
    )

    def on_signal(signum: int) -> None:
        nonlocal interrupted
        name = signal.Signals(signum).name
        if not stop.is_set():
            print(
                f"amqp1q worker: {name}: draining (up to {grace:g} s); again to stop at once",
                file=sys.stderr,
                flush=True,
            )
            stop.set()
        else:
            interrupted = True
            worker.cancel()

    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT)
    for signum in signals:
        with contextlib.suppress(NotImplementedError):  # no signal handlers on Windows' loop
            loop.add_signal_handler(signum, on_signal, signum)
    handlers = ", ".join(sorted(registry.handlers)) or "none"
    print(
        f"amqp1q worker: {spec} ({handlers}) on {job_queue.url}, concurrency {concurrency}",
        file=sys.stderr,
        flush=True,
    )
    try:
        return await worker
    except asyncio.CancelledError:
        if interrupted:
            return 130
        raise
    finally:
        for signum in signals:
            with contextlib.suppress(NotImplementedError):
                loop.remove_signal_handler(signum)


class _Runner:
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
            await self._call(handler, job)
        finally:
            if in_hand is not None:
                in_hand.ended(job)

    def _call(self, handler: Handler, job: ReceivedJob) -> Awaitable[None]:
        arguments = self._registry._arguments(job.name, job)  # a typed payload checked here
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

    async def drain(self, consumer: Consumer, grace: float) -> None:
        """No new jobs; running handlers get ``grace`` s, then are cancelled (jobs released)."""
        try:
            await consumer.drain()
        except Exception:
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


async def _within(call: Awaitable[None], seconds: float, name: str) -> None:
    try:
        await asyncio.wait_for(call, seconds)
    except asyncio.TimeoutError:
        raise TimeoutError(f"the handler for {name!r} took longer than {seconds:g} s") from None
