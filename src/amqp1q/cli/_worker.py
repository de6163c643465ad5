"""``amqp1q worker``: run a Registry's handlers on queues' jobs until SIGTERM or SIGINT.

Settings come from ``--config`` (a :class:`~amqp1q.worker.WorkerConfig` file: amqp1q's TOML or
YAML, or a RoadRunner ``.rr.yaml``), then the flags, which win; the library's
:func:`amqp1q.worker.serve` runs it. ``--queue a --queue b`` consumes several queues on one
connection; ``--processes N`` runs N worker processes under a supervisor (:mod:`._pool`). A bad
setting is a usage error (exit code 2), printed without secrets.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .. import ConfigurationError
from .._redact import redact
from .._workerqueues import QueueSpec
from ._args import URL_ENV, positive, seconds, url_argument
from ._pool import supervised

__all__ = ["add_worker_parser"]


def add_worker_parser(commands: Any) -> None:
    """``amqp1q worker``'s arguments (``commands``: the subparsers of the ``amqp1q`` parser)."""
    worker = commands.add_parser("worker", help="run a Registry's handlers on a queue's jobs")
    worker.add_argument(
        "registry",
        metavar="MODULE:ATTR",
        nargs="?",
        default=None,
        help="e.g. myapp.jobs:registry (or `registry` in the --config file)",
    )
    worker.add_argument(
        "--config",
        default=None,
        metavar="FILE",
        help="settings from a .toml, .yaml or RoadRunner .rr.yaml file; flags override it",
    )
    worker.add_argument(
        "--pipeline", default=None, help="the RoadRunner pipeline to run, when there are several"
    )
    url_argument(worker)
    worker.add_argument(
        "--queue",
        action="append",
        default=None,
        help="a queue to consume (repeatable: several on one connection; default: the URL's path)",
    )
    worker.add_argument("--concurrency", type=positive, default=None, help="handlers at once (32)")
    worker.add_argument("--job-timeout", type=seconds, default=None, help="seconds per job")
    worker.add_argument("--grace", type=seconds, default=None, help="drain seconds on stop (30)")
    worker.add_argument(
        "--prefetch", type=positive, default=None, help="each consumer's credit (--concurrency)"
    )
    worker.add_argument(
        "--groups",
        type=positive,
        default=None,
        metavar="N",
        help="in order per job group, N groups at once (docs/ordering.md)",
    )
    worker.add_argument(
        "--processes",
        type=positive,
        default=None,
        help="worker processes under one supervisor (1; RoadRunner's jobs.pool.num_workers)",
    )
    worker.add_argument(
        "--stall-warning",
        type=seconds,
        default=None,
        metavar="S",
        help="warn, naming the jobs in hand, when the event loop is blocked S seconds (0.5; "
        "0: off)",
    )
    worker.add_argument(
        "--wire-format",
        choices=("amqp1q", "roadrunner"),
        default=None,
        help="how retried jobs are written (amqp1q; roadrunner for a RoadRunner file)",
    )
    worker.set_defaults(run=_worker)


async def _worker(args: argparse.Namespace) -> int:
    # The worker is imported when this command runs, not when the command line is parsed.
    from .. import worker
    from .._watchdog import DEFAULT_STALL_WARNING

    try:
        if args.config is not None:
            config = worker.WorkerConfig.load(args.config, pipeline=args.pipeline)
        elif args.pipeline is not None:
            raise ConfigurationError("--pipeline needs --config (a RoadRunner .rr.yaml)")
        else:
            config = worker.WorkerConfig()
        queues = args.queue or []
        config = config.override(  # flags (and $AMQP1Q_URL, the --url default) win
            registry=args.registry,
            url=args.url,
            queue=queues[0] if len(queues) == 1 else None,
            queues=tuple(QueueSpec(queue=name) for name in queues) if queues else None,
            processes=args.processes,
            concurrency=args.concurrency,
            job_timeout=args.job_timeout,
            grace=args.grace,
            prefetch=args.prefetch,
            groups=args.groups,
            wire_format=args.wire_format,
            stall_warning=args.stall_warning,
        )
        url = config.resolve_url()
        if url is None:
            where = " or url in the --config file" if args.config else ""
            raise ConfigurationError(f"give --url{where}, or set {URL_ENV}")
        if config.registry is None:
            raise ConfigurationError("give MODULE:ATTR, or registry in the --config file")
        options = config.queue_options(url)
    except ConfigurationError as exc:
        print(f"error: {redact(str(exc))}", file=sys.stderr)
        return 2
    if config.ignored:
        ignored = ", ".join(config.ignored)
        note = f"amqp1q worker: {config.source}: ignored (RoadRunner only): {ignored}"
        print(note, file=sys.stderr)
    grace = 30.0 if config.grace is None else config.grace
    if (config.processes or 1) > 1:
        from ._pool import run_pool

        return await run_pool(args.argv, config.processes or 1, grace=grace)
    several: dict[str, Any] = {"queues": config.queues} if len(config.queues) > 1 else {}
    return await worker.serve(
        config.registry,
        url,
        concurrency=32 if config.concurrency is None else config.concurrency,
        job_timeout=config.job_timeout,
        grace=grace,
        prefetch=config.prefetch,
        groups=config.groups,
        options=options,
        stall_warning=(
            DEFAULT_STALL_WARNING if config.stall_warning is None else config.stall_warning
        ),
        stop=supervised(),
        **several,
    )
