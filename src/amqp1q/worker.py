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

    async with amqp1q.connect(url) as client:        # several queues, one connection
        queues = [client.queue("emails", prefetch=20), client.queue("reports", prefetch=2)]
        await run_worker(registry, queues, concurrency=32)

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
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from . import _urls
from ._client import connect
from ._errors import ConfigurationError, InvalidSetting
from ._middleware import Middleware, check_middleware
from ._queue import JobQueue
from ._registry import AsyncHandler, Handler, Registry, SyncHandler
from ._runner import NO_HANDLER, Runner
from ._settings import check_positive_int, check_seconds
from ._watchdog import DEFAULT_STALL_WARNING, JobsInHand, StallWatchdog
from ._workerconfig import WorkerConfig
from ._workerqueues import QueueSpec, split_settings

__all__ = [
    "NO_HANDLER",
    "AsyncHandler",
    "Handler",
    "QueueSpec",
    "Registry",
    "SyncHandler",
    "WorkerConfig",
    "load_registry",
    "run_worker",
    "serve",
]

log = logging.getLogger("amqp1q.worker")

_MISSING = object()


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
    queue: JobQueue | Sequence[JobQueue],
    *,
    concurrency: int = 32,
    job_timeout: float | None = None,
    stop: asyncio.Event | None = None,
    grace: float = 30.0,
    prefetch: int | Mapping[str, int] | None = None,
    groups: int | None = None,
    middleware: Iterable[Middleware] = (),
    stall_warning: float | None = DEFAULT_STALL_WARNING,
    _in_hand: JobsInHand | None = None,
) -> int:
    """Consume ``queue`` (or each of several queues) and run each job's handler,
    ``concurrency`` at most at once, whichever queue it came from.

    ``prefetch`` (default ``concurrency``) is each consumer's credit; a mapping gives it per
    queue name (a queue it does not name: ``concurrency``). ``groups`` consumes each queue
    with ``consume(groups=N)``: in order per group, N groups at once (docs/ordering.md); a
    prefetch of at least N lets N run. ``stall_warning``
    (0.5 s; ``None`` or 0: off) logs a warning naming the jobs in hand when the event loop is
    blocked that long (a handler doing blocking work in ``async def``). Opens each queue that
    is not open, and always closes them before returning. Runs until ``stop`` is set, then
    drains (see the module docstring) and returns 0; returns 1 if a consumer ended without
    being asked to (the others are then drained too). A broker failure (say, the connection is
    lost and reconnecting gave up) propagates as an :class:`~amqp1q.Amqp1qError` after the
    same drain. Cancelling it cancels running handlers at once (their jobs released) and
    closes the queues.

    ``middleware`` runs around every job, outside the registry's own (``JobService`` passes
    its own here).
    """
    if not isinstance(registry, Registry):
        raise InvalidSetting(f"registry must be a Registry, not {type(registry).__name__}")
    concurrency = check_positive_int("concurrency", concurrency)
    queues = [queue] if isinstance(queue, JobQueue) else list(queue)
    if not queues:
        raise InvalidSetting("run_worker needs a queue to consume")
    credits = _prefetches(queues, prefetch, concurrency)
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
    runner = Runner(registry, concurrency, timeout, around, _in_hand)
    requested = False
    try:
        async with contextlib.AsyncExitStack() as consumers:
            for each in queues:
                if not each.is_open:
                    await each.open()
            opened = [
                await consumers.enter_async_context(q.consume(prefetch=credit, groups=groups))
                for q, credit in zip(queues, credits, strict=True)
            ]
            cancelled = False
            try:
                requested = await runner.dispatch_all(opened, stop)
            except asyncio.CancelledError:
                cancelled = True
                raise
            finally:
                await runner.drain(opened, 0 if cancelled else grace)
    finally:
        try:
            await runner.cancel_all()
            for each in queues:
                await each.close(grace=0)
        finally:
            if watchdog is not None:
                watchdog.stop()
            runner.note_threads_left()
    return 0 if requested else 1


def _plan(
    url: str, specs: Sequence[QueueSpec], worker: Mapping[str, Any]
) -> list[tuple[str, dict[str, Any], int | None]]:
    """Each queue to consume: its name (given, else its address, else the URL's path or
    EntityPath), its settings for ``client.queue``, and its own prefetch."""
    plan = []
    for spec in specs:
        settings = spec.settings(worker)
        name = settings.pop("queue", None) or settings.get("address") or _urls.parse_url(url).queue
        if not name:
            raise InvalidSetting(
                "no queue given: pass --queue (or queue in the configuration), or put it in "
                "the URL path (amqp://host/QUEUE, memory://QUEUE) or EntityPath=QUEUE"
            )
        plan.append((name, settings, spec.prefetch))
    return plan


def _prefetches(
    queues: list[JobQueue], prefetch: int | Mapping[str, int] | None, concurrency: int
) -> list[int]:
    if isinstance(prefetch, Mapping):
        return [check_positive_int("prefetch", prefetch.get(q.name, concurrency)) for q in queues]
    credit = concurrency if prefetch is None else check_positive_int("prefetch", prefetch)
    return [credit] * len(queues)


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
    groups: int | None = None,
    options: Mapping[str, Any] | None = None,
    stall_warning: float | None = DEFAULT_STALL_WARNING,
    queues: Sequence[QueueSpec] = (),
    stop: asyncio.Event | None = None,
) -> int:
    """The ``amqp1q worker`` command: load ``spec``, run until SIGTERM/SIGINT, drain, exit code.

    ``options`` are more keyword arguments for ``JobQueue.from_url`` (say, from
    :meth:`WorkerConfig.queue_options`); ``queues`` are several queues to consume on one
    connection (``amqp1q.connect``), each a :class:`QueueSpec` whose own settings (and
    prefetch) go over those; ``groups`` consumes each in order per group (``--groups``).
    ``stop``, set, drains as the first signal does (the process pool's supervisor asks its
    workers so). 0 after a clean drain; 2 if ``spec`` cannot be loaded;
    130 on a second signal (running handlers cancelled at once, their jobs released); 1 for a
    consumer that ended by itself. Other :class:`~amqp1q.Amqp1qError` propagate (the command
    prints them and exits 1).
    """
    try:
        registry = load_registry(spec)
    except ConfigurationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    connection, worker_settings = split_settings(options or {})
    if queue is not None:
        worker_settings["queue"] = queue
    client = connect(url, **connection)
    plan = _plan(url, queues or [QueueSpec()], worker_settings)
    credits = {name: own or prefetch or concurrency for name, _, own in plan}
    stop = asyncio.Event() if stop is None else stop
    interrupted = False

    async def work() -> int:
        async with client:
            job_queues = [client.queue(name, **settings) for name, settings, _ in plan]
            return await run_worker(
                registry,
                job_queues,
                concurrency=concurrency,
                job_timeout=job_timeout,
                stop=stop,
                grace=grace,
                prefetch=credits,
                groups=groups,
                stall_warning=stall_warning,
            )

    worker = asyncio.ensure_future(work())

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
    where = ", ".join(name for name, _, _ in plan)
    print(
        f"amqp1q worker: {spec} ({handlers}) on {client.url} ({where}), concurrency {concurrency}",
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
