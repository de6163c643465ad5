"""``JobService``: named :class:`~amqp1q.JobQueue` objects and background workers for a web app.

::

    service = JobService()
    service.add_queue("emails", JobQueue.from_url(url, queue="emails"))
    service.add_worker("emails", registry, concurrency=8)

    app = FastAPI(lifespan=service.lifespan)                    # FastAPI / Starlette

    @app.post("/signup")
    async def signup(queue: JobQueue = Depends(service.queue("emails"))) -> None:
        await queue.push(Job("send_email", {...}))

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return service.health()

    app = web.Application(); app.cleanup_ctx.append(service.aiohttp_ctx)   # aiohttp

``async with service.running():`` opens every queue, checks that each exists on the broker
(a missing one fails the app's startup, unless ``start_degraded=True``) and starts the workers;
on exit the workers stop taking jobs, running handlers get ``grace`` seconds (then are
cancelled, their jobs released back to the broker), and the queues are closed. A stall
watchdog warns when something blocks the event loop (``stall_warning``). Neither FastAPI nor
aiohttp is imported by this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Any, TypeVar

from .._errors import ConnectFailed, InvalidSetting, QueueNotFound
from .._middleware import Middleware, check_middleware
from .._queue import JobQueue
from .._settings import check_positive_int, check_seconds
from .._shield import deadline
from .._watchdog import DEFAULT_STALL_WARNING, JobsInHand, StallWatchdog
from ..worker import Registry, check_stall_warning, run_worker

__all__ = ["JobService"]

log = logging.getLogger("amqp1q.integrations.web")

#: Queue states a service is ready in. ``at-most-once`` is connected too: the broker's
#: guarantee is a fact to see in the report (and the log), not a reason to stop serving.
_HEALTHY = frozenset({"connected", "at-most-once"})
M = TypeVar("M", bound=Middleware)
#: How a missing queue shows in ``health()`` (with ``start_degraded=True``), and its workers.
MISSING = "missing"
WAITING = "waiting"
#: Seconds between checks of missing queues, with ``start_degraded=True``.
RECHECK_EVERY = 5.0


class _WorkerSpec:
    def __init__(
        self,
        queue: str,
        registry: Registry,
        concurrency: int,
        job_timeout: float | None,
        prefetch: int | None,
    ) -> None:
        self.queue = queue
        self.registry = registry
        self.concurrency = concurrency
        self.job_timeout = job_timeout
        self.prefetch = prefetch
        self.task: asyncio.Task[int] | None = None

    @property
    def label(self) -> str:
        return f"{self.queue}#{id(self):x}"

    def state(self, missing: bool = False) -> str:
        """``idle`` (not started), ``waiting`` (for its missing queue), ``running``,
        ``stopped`` or ``failed``."""
        task = self.task
        if task is None:
            return WAITING if missing else "idle"
        if not task.done():
            return "running"
        if task.cancelled() or task.exception() is not None:
            return "failed"
        return "stopped"


class JobService:
    """Named job queues and the workers consuming them, tied to a web app's lifetime.

    ``grace`` (30 s) is the default time running handlers get to finish when the service stops;
    ``margin`` (5 s) is added on top before stragglers are cancelled outright, so stopping the
    service never hangs. ``middleware`` (or :meth:`add_middleware`) runs around every job of
    every worker, outside each registry's own middleware; the first registered is outermost.

    A worker shares its :class:`~amqp1q.JobQueue` with request handlers that push to it; like
    :func:`~amqp1q.worker.run_worker`, it closes that queue when it ends. Give the worker a
    queue of its own (``add_queue("emails-worker", ...)``) to keep pushing through a worker
    failure.

    A queue the broker does not have fails the start (:class:`~amqp1q.QueueNotFound`, naming
    it), so the app never serves requests it cannot honour. With ``start_degraded=True`` the
    app starts anyway: ``health()`` is ``degraded`` (the queue ``missing``, its workers
    ``waiting``), pushes to it raise ``QueueNotFound``, and the queue is checked again every
    few seconds; once it exists its workers start. A broker that cannot be reached fails the
    start either way.

    ``stall_warning`` (0.5 s; ``None`` or 0: off) logs a warning, naming the jobs in hand, when
    the event loop is blocked that long -- by a handler, or by a request handler.
    """

    def __init__(
        self,
        *,
        grace: float = 30.0,
        margin: float = 5.0,
        middleware: Iterable[Middleware] = (),
        start_degraded: bool = False,
        stall_warning: float | None = DEFAULT_STALL_WARNING,
    ) -> None:
        self.grace = check_seconds("grace", grace, allow_zero=True)
        self.margin = check_seconds("margin", margin, allow_zero=True)
        self._middleware = check_middleware(middleware)
        if not isinstance(start_degraded, bool):
            raise InvalidSetting(f"start_degraded must be a bool, got {start_degraded!r}")
        self.start_degraded = start_degraded
        self.stall_warning = check_stall_warning(stall_warning)
        self._queues: dict[str, JobQueue] = {}
        self._workers: list[_WorkerSpec] = []
        self._missing: set[str] = set()
        self._stop: asyncio.Event | None = None
        self._running = False

    # -- configuration --------------------------------------------------------------------------

    def add_queue(self, name: str, queue: JobQueue) -> JobQueue:
        """Register ``queue`` under ``name`` (unique) and return it."""
        if not isinstance(name, str) or not name:
            raise InvalidSetting(f"a queue's name must be a non-empty str, got {name!r}")
        if not isinstance(queue, JobQueue):
            raise InvalidSetting(f"queue must be a JobQueue, not {type(queue).__name__}")
        if name in self._queues:
            raise InvalidSetting(f"the service already has a queue named {name!r}")
        if self._running:
            raise InvalidSetting("queues are added before the service starts")
        self._queues[name] = queue
        return queue

    def add_worker(
        self,
        name: str,
        registry: Registry,
        *,
        concurrency: int = 32,
        job_timeout: float | None = None,
        prefetch: int | None = None,
    ) -> None:
        """Run a worker (:func:`~amqp1q.worker.run_worker`) on the queue ``name`` while the
        service runs."""
        if name not in self._queues:
            raise InvalidSetting(f"no queue named {name!r}; call add_queue() first")
        if not isinstance(registry, Registry):
            raise InvalidSetting(f"registry must be a Registry, not {type(registry).__name__}")
        if self._running:
            raise InvalidSetting("workers are added before the service starts")
        concurrency = check_positive_int("concurrency", concurrency)
        if prefetch is not None:
            prefetch = check_positive_int("prefetch", prefetch)
        if job_timeout is not None:
            job_timeout = check_seconds("job_timeout", job_timeout)
        self._workers.append(_WorkerSpec(name, registry, concurrency, job_timeout, prefetch))

    @property
    def middleware(self) -> tuple[Middleware, ...]:
        """The middleware run around every job of every worker, outermost first."""
        return self._middleware

    def add_middleware(self, middleware: M) -> M:
        """Run ``middleware`` around every job of every worker (a decorator too)."""
        if self._running:
            raise InvalidSetting("middleware is added before the service starts")
        self._middleware = (*self._middleware, *check_middleware([middleware]))
        return middleware

    # -- access ---------------------------------------------------------------------------------

    @property
    def queues(self) -> Mapping[str, JobQueue]:
        """The queues by name (a copy)."""
        return dict(self._queues)

    def get(self, name: str) -> JobQueue:
        """The queue named ``name``; :class:`KeyError` if there is none."""
        try:
            return self._queues[name]
        except KeyError:
            raise KeyError(f"the service has no queue named {name!r}") from None

    def queue(self, name: str) -> Callable[[], Awaitable[JobQueue]]:
        """A dependency giving the queue ``name``: ``Depends(service.queue("emails"))``."""
        queue = self.get(name)

        async def dependency() -> JobQueue:
            return queue

        dependency.__name__ = f"amqp1q_queue_{name}"
        return dependency

    def health(self) -> dict[str, Any]:
        """``{"status": "ok" | "degraded", "queues": {name: health}, "workers": {...}}``.

        ``ok`` when every queue is ``connected`` (or ``at-most-once``: connected to a broker
        that delivers at most once) and every worker is running. A queue the broker lacks
        (``start_degraded=True``) is ``missing``, and its workers ``waiting``.
        """
        missing = self._missing
        queues = {
            name: MISSING if name in missing else queue.health()
            for name, queue in self._queues.items()
        }
        workers: dict[str, list[str]] = {}
        for spec in self._workers:
            workers.setdefault(spec.queue, []).append(spec.state(spec.queue in missing))
        healthy = all(state in _HEALTHY for state in queues.values()) and all(
            state == "running" for states in workers.values() for state in states
        )
        return {
            "status": "ok" if healthy else "degraded",
            "queues": queues,
            "workers": workers,
        }

    # -- lifetime -------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def running(self, grace: float | None = None) -> AsyncIterator[JobService]:
        """Open every queue and start the workers; on exit drain the workers, close the queues.

        A service runs once at a time. If a queue cannot be opened, or the broker lacks it
        (unless ``start_degraded``), those opened are closed and the error propagates.
        """
        if self._running:
            raise InvalidSetting("the service is already running")
        grace = self.grace if grace is None else check_seconds("grace", grace, allow_zero=True)
        self._running = True
        stop = asyncio.Event()
        self._stop = stop
        opened: list[JobQueue] = []
        watchdog = None
        in_hand = None
        if self.stall_warning is not None:
            in_hand = JobsInHand()
            watchdog = StallWatchdog(self.stall_warning, in_hand)
            watchdog.start()
        recheck: asyncio.Task[None] | None = None
        try:
            for name, queue in self._queues.items():
                if not queue.is_open:
                    await queue.open()
                opened.append(queue)
                await self._check(name, queue)
            for spec in self._workers:
                if spec.queue not in self._missing:
                    self._start(spec, stop, grace, in_hand)
            if self._missing:
                recheck = asyncio.create_task(
                    self._recheck(stop, grace, in_hand), name="amqp1q missing queues"
                )
            log.info(
                "job service started: %d queue(s), %d worker(s)%s",
                len(self._queues),
                len(self._workers),
                f"; degraded, missing: {', '.join(sorted(self._missing))}" if self._missing else "",
            )
            yield self
        finally:
            try:
                if recheck is not None:
                    recheck.cancel()
                    await asyncio.gather(recheck, return_exceptions=True)
                await self._shutdown(stop, grace, opened)
            finally:
                if watchdog is not None:
                    watchdog.stop()
                self._missing.clear()
                self._running = False
                self._stop = None

    async def _check(self, name: str, queue: JobQueue) -> bool:
        """True if the broker has ``queue``; a missing one raises, or is noted as missing
        with ``start_degraded``."""
        try:
            async with deadline(queue.connect_timeout):
                await queue.adapter.verify()  # (returns at once where open() checked already)
        except TimeoutError:
            raise ConnectFailed(
                f"{queue.url} did not answer within {queue.connect_timeout:g} s whether it "
                f"has queue {name!r}",
                queue=queue.name,
            ) from None
        except QueueNotFound as exc:
            if not self.start_degraded:
                raise
            if name not in self._missing:
                self._missing.add(name)
                log.error(
                    "queue %r is missing (%s); starting degraded: pushes to it fail and its "
                    "workers wait for it",
                    name,
                    exc,
                    extra={"queue": queue.name},
                )
            return False
        return True

    def _start(
        self, spec: _WorkerSpec, stop: asyncio.Event, grace: float, in_hand: JobsInHand | None
    ) -> None:
        spec.task = asyncio.create_task(
            run_worker(
                spec.registry,
                self._queues[spec.queue],
                concurrency=spec.concurrency,
                job_timeout=spec.job_timeout,
                stop=stop,
                grace=grace,
                prefetch=spec.prefetch,
                middleware=self._middleware,
                stall_warning=None,  # the service's own watchdog covers the loop
                _in_hand=in_hand,
            ),
            name=f"amqp1q worker {spec.label}",
        )
        spec.task.add_done_callback(self._worker_done(spec, stop))

    async def _recheck(self, stop: asyncio.Event, grace: float, in_hand: JobsInHand | None) -> None:
        """Check the missing queues every few seconds; start the workers of those that appear."""
        while self._missing and not stop.is_set():
            await asyncio.sleep(RECHECK_EVERY)
            for name in sorted(self._missing):
                queue = self._queues[name]
                try:
                    found = await self._check(name, queue)
                except Exception:  # one queue's trouble stops no other check
                    log.debug("checking queue %r failed", name, exc_info=True)
                    continue
                if found and not stop.is_set():
                    self._missing.discard(name)
                    log.warning("queue %r exists now; starting its workers", name)
                    for spec in self._workers:
                        if spec.queue == name:
                            self._start(spec, stop, grace, in_hand)

    def _worker_done(self, spec: _WorkerSpec, stop: asyncio.Event) -> Callable[[Any], None]:
        def done(task: asyncio.Task[int]) -> None:
            if task.cancelled():
                if not stop.is_set():
                    log.warning("the worker on %r was cancelled", spec.queue)
                return
            exc = task.exception()
            if exc is not None:
                log.error("the worker on %r failed", spec.queue, exc_info=exc)
            elif not stop.is_set():
                log.warning("the worker on %r ended by itself (code %d)", spec.queue, task.result())

        return done

    async def _shutdown(self, stop: asyncio.Event, grace: float, opened: list[JobQueue]) -> None:
        stop.set()
        tasks = [spec.task for spec in self._workers if spec.task is not None]
        if tasks:
            log.info("job service stopping: draining %d worker(s), up to %g s", len(tasks), grace)
            _, late = await asyncio.wait(tasks, timeout=grace + self.margin)
            if late:
                log.warning("%d worker(s) did not stop in time; cancelled", len(late))
                for task in late:
                    task.cancel()
                await asyncio.wait(late, timeout=max(self.margin, 1.0))
        results = await asyncio.gather(*(queue.close() for queue in opened), return_exceptions=True)
        for queue, result in zip(opened, results, strict=True):
            if isinstance(result, Exception):
                log.warning("closing %s failed", queue.url, exc_info=result)
        log.info("job service stopped")

    @property
    def stopping(self) -> bool:
        """True once the running service has been asked to stop (or when it is not running)."""
        return self._stop is None or self._stop.is_set()

    # -- frameworks -----------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Any) -> AsyncIterator[None]:
        """For ``FastAPI(lifespan=service.lifespan)`` (or Starlette's ``lifespan=``)."""
        async with self.running():
            yield

    async def aiohttp_ctx(self, app: Any) -> AsyncIterator[None]:
        """For ``app.cleanup_ctx.append(service.aiohttp_ctx)`` (aiohttp)."""
        async with self.running():
            yield
