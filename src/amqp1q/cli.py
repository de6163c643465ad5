"""The ``amqp1q`` command: ``demo``, ``bench``, ``push``, ``consume``, ``worker``, ``broker``.

The queue URL comes from ``--url`` or the ``AMQP1Q_URL`` environment variable (better for
connection strings with keys: a command line is visible to every user of the machine).
Exit codes: 0 done, 1 an amqp1q error (printed without secrets), 2 bad usage, 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from ._cli_broker import add_broker_parser
from ._display import running_counts
from ._errors import Amqp1qError
from ._job import Job
from ._queue import JobQueue
from ._redact import redact
from ._version import __version__

__all__ = ["main"]

_URL_ENV = "AMQP1Q_URL"


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    run: Callable[[argparse.Namespace], Coroutine[Any, Any, int]] = args.run
    try:
        return asyncio.run(run(args))
    except KeyboardInterrupt:
        return 130
    except Amqp1qError as exc:
        print(f"error: {type(exc).__name__}: {redact(str(exc))}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="amqp1q", description="Asyncio job queues over AMQP 1.0.")
    parser.add_argument("--version", action="version", version=f"amqp1q {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = commands.add_parser("demo", help="push and consume jobs, printing throughput")
    demo.add_argument(
        "--url",
        default=None,
        help="queue URL (default: the embedded AMQP 1.0 broker, in-process, over TCP)",
    )
    demo.add_argument("--jobs", type=_positive, default=10_000, help="how many jobs (10000)")
    demo.add_argument("--size", type=_positive, default=1024, help="payload bytes (1024)")
    demo.add_argument("--prefetch", type=_positive, default=100, help="consumer prefetch (100)")
    demo.set_defaults(run=_demo)
    _bench_parser(commands)

    push = commands.add_parser("push", help="push jobs to a queue")
    _url_argument(push)
    push.add_argument("--name", required=True, help="the job name")
    body = push.add_mutually_exclusive_group()
    body.add_argument("--payload", default=None, help="a JSON payload (default: null)")
    body.add_argument("--payload-file", default=None, help="a file sent as raw bytes ('-': stdin)")
    push.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="K=V",
        help="a header (repeat for more: --header tenant=a --header lang=en)",
    )
    push.add_argument(
        "--priority",
        type=int,
        default=None,
        help="0-255, higher first (default: the queue's, 0); Service Bus has none",
    )
    push.add_argument("--delay", type=float, default=None, help="seconds before delivery")
    push.add_argument("--count", type=_positive, default=1, help="push this many copies")
    push.set_defaults(run=_push)

    consume = commands.add_parser("consume", help="print jobs from a queue as JSON lines")
    _url_argument(consume)
    consume.add_argument("--count", type=_positive, default=None, help="stop after this many")
    consume.add_argument("--timeout", type=float, default=None, help="stop after idle seconds")
    consume.add_argument(
        "--prefetch", type=_positive, default=10, help="jobs held unsettled at once (10)"
    )
    consume.add_argument(
        "--settle",
        choices=("ack", "release", "reject"),
        default="ack",
        help="what to do with each job once printed (ack)",
    )
    consume.add_argument("--quiet", "-q", action="store_true", help="no running counts on stderr")
    consume.set_defaults(run=_consume)
    _worker_parser(commands)
    add_broker_parser(commands)
    setup = commands.add_parser(
        "setup-rabbitmq",
        help="declare job queues, their .dlq queues and the delay exchanges on RabbitMQ 3.x",
    )
    setup.add_argument("--queue", action="append", required=True, help="a job queue (repeatable)")
    setup.add_argument(
        "--management-url",
        default=os.environ.get(
            "AMQP1Q_RABBITMQ_MANAGEMENT_URL", "http://guest:guest@127.0.0.1:15672"
        ),
        help="RabbitMQ's management API (default: $AMQP1Q_RABBITMQ_MANAGEMENT_URL, else local)",
    )
    setup.add_argument(
        "--vhost", default="/", help="the virtual host to declare them in (/, the default)"
    )
    setup.add_argument("--max-priority", type=int, default=10, help="x-max-priority (10; 0: none)")
    setup.set_defaults(run=_setup_rabbitmq)
    return parser


def _worker_parser(commands: Any) -> None:
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
    _url_argument(worker)
    worker.add_argument("--queue", default=None, help="the queue (default: the URL's path)")
    worker.add_argument("--concurrency", type=_positive, default=None, help="handlers at once (32)")
    worker.add_argument("--job-timeout", type=_seconds, default=None, help="seconds per job")
    worker.add_argument("--grace", type=_seconds, default=None, help="drain seconds on stop (30)")
    worker.add_argument(
        "--prefetch", type=_positive, default=None, help="consumer credit (--concurrency)"
    )
    worker.add_argument(
        "--stall-warning",
        type=_seconds,
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


def _url_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url", default=os.environ.get(_URL_ENV), help=f"queue URL (default: ${_URL_ENV})"
    )


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 <= value < math.inf:
        raise argparse.ArgumentTypeError(f"expected a number of seconds >= 0, got {text!r}")
    return value


def _require_url(args: argparse.Namespace) -> str:
    if not args.url:
        print(f"error: give --url or set {_URL_ENV}", file=sys.stderr)
        raise SystemExit(2)
    return str(args.url)


# -- demo and bench (amqp1q._bench) -------------------------------------------------------------


def _bench_parser(commands: Any) -> None:
    bench = commands.add_parser(
        "bench",
        help="push then consume jobs with a progress bar; print a table of rates and CPU",
        description="Push --jobs jobs, then consume and ack them, --rounds times: a progress "
        "bar on stderr, a table on stdout. A quick check of one setup; benchmarks/run.py "
        "compares amqp1q with other clients.",
    )
    bench.add_argument(
        "--url",
        default=None,
        help="an empty queue's URL (default: the embedded broker, in a process of its own)",
    )
    bench.add_argument("--jobs", type=_positive, default=10_000, help="jobs per round (10000)")
    bench.add_argument("--size", type=_positive, default=1024, help="payload bytes (1024)")
    bench.add_argument("--prefetch", type=_positive, default=100, help="consumer prefetch (100)")
    bench.add_argument("--rounds", type=_positive, default=1, help="push-then-consume rounds (1)")
    bench.add_argument("--batch", type=_positive, default=500, help="jobs per push_many (500)")
    bench.add_argument("--producers", type=_positive, default=1, help="concurrent pushers (1)")
    bench.add_argument("--consumers", type=_positive, default=1, help="concurrent consumers (1)")
    bench.set_defaults(run=_bench)


async def _demo(args: argparse.Namespace) -> int:
    from ._bench import demo

    return await demo(args)


async def _bench(args: argparse.Namespace) -> int:
    from ._bench import bench

    return await bench(args)


# -- push and consume ---------------------------------------------------------------------------


def _push(args: argparse.Namespace) -> Coroutine[Any, Any, int]:
    """Read the payload before the event loop starts, then push."""
    url = _require_url(args)
    headers = dict(_header(item) for item in args.header)
    payload: Any
    if args.payload_file is not None:
        if args.payload_file == "-":
            payload = sys.stdin.buffer.read()
        else:
            with open(args.payload_file, "rb") as handle:
                payload = handle.read()
    elif args.payload is not None:
        try:
            payload = json.loads(args.payload)
        except ValueError as exc:
            print(f"error: --payload is not JSON: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
    else:
        payload = None
    jobs = [
        Job(args.name, payload, headers=headers, priority=args.priority, delay=args.delay)
        for _ in range(args.count)
    ]
    return _push_jobs(url, jobs)


async def _push_jobs(url: str, jobs: list[Job]) -> int:
    async with JobQueue.from_url(url) as queue:
        receipts = await queue.push_many(jobs)
    for receipt in receipts:
        print(receipt.job_id)
    return 0


async def _worker(args: argparse.Namespace) -> int:
    from ._errors import ConfigurationError
    from ._watchdog import DEFAULT_STALL_WARNING
    from .worker import WorkerConfig, serve

    try:
        if args.config is not None:
            config = WorkerConfig.load(args.config, pipeline=args.pipeline)
        elif args.pipeline is not None:
            raise ConfigurationError("--pipeline needs --config (a RoadRunner .rr.yaml)")
        else:
            config = WorkerConfig()
        config = config.override(  # flags (and $AMQP1Q_URL, the --url default) win
            registry=args.registry,
            url=args.url,
            queue=args.queue,
            concurrency=args.concurrency,
            job_timeout=args.job_timeout,
            grace=args.grace,
            prefetch=args.prefetch,
            wire_format=args.wire_format,
            stall_warning=args.stall_warning,
        )
        url = config.resolve_url()
        if url is None:
            where = " or url in the --config file" if args.config else ""
            raise ConfigurationError(f"give --url{where}, or set {_URL_ENV}")
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
    return await serve(
        config.registry,
        url,
        concurrency=32 if config.concurrency is None else config.concurrency,
        job_timeout=config.job_timeout,
        grace=30.0 if config.grace is None else config.grace,
        prefetch=config.prefetch,
        options=options,
        stall_warning=(
            DEFAULT_STALL_WARNING if config.stall_warning is None else config.stall_warning
        ),
    )


async def _setup_rabbitmq(args: argparse.Namespace) -> int:
    from .adapters.proton.rabbitmq_setup import RabbitMQManagement

    management = RabbitMQManagement(args.management_url, vhost=args.vhost)
    management.setup_delays()
    for queue in args.queue:
        management.setup_job_queue(queue, max_priority=args.max_priority)
        print(f"declared {queue} (x-max-priority {args.max_priority}) and {queue}.dlq")
    print(f"declared the delay exchanges on {management.display}")
    return 0


def _header(item: str) -> tuple[str, str]:
    key, eq, value = item.partition("=")
    if not eq or not key:
        print(f"error: --header takes K=V, got {item!r}", file=sys.stderr)
        raise SystemExit(2)
    return key, value


async def _consume(args: argparse.Namespace) -> int:
    url = _require_url(args)
    seen = 0
    settled_as = {"ack": "acked", "release": "released", "reject": "rejected"}[args.settle]
    async with JobQueue.from_url(url, prefetch=args.prefetch) as queue:

        def counts() -> tuple[int, int]:
            stats = queue.stats()
            return stats.consumed, int(getattr(stats, settled_as))

        async with (
            running_counts(counts, settled_as, quiet=args.quiet) as before_output,
            queue.consume() as consumer,
        ):
            while args.count is None or seen < args.count:
                job = await consumer.receive(timeout=args.timeout)
                if job is None:
                    break
                record: dict[str, Any] = {
                    "id": job.id,
                    "name": job.name,
                    "attempt": job.attempt,
                    "headers": dict(job.headers),
                }
                try:
                    payload = job.payload
                    record["payload"] = (
                        payload
                        if not isinstance(payload, bytes)
                        else payload.decode("utf-8", "backslashreplace")
                    )
                except Amqp1qError as exc:
                    record["decode_error"] = str(exc)
                before_output()
                print(json.dumps(record, ensure_ascii=False), flush=True)
                if args.settle == "ack":
                    await job.ack()
                elif args.settle == "release":
                    await job.release()
                else:
                    await job.reject("rejected from the command line")
                seen += 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
