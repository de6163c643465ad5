"""``amqp1q push`` and ``amqp1q consume``: jobs into a queue, and out of it as JSON lines.

Both take ``--url`` (or ``$AMQP1Q_URL``) and ``--queue`` (default: the URL's), as ``stats``,
``peek``, ``replay`` and ``purge`` do. ``push`` prints each pushed job's id; ``consume`` prints a
JSON object per job on stdout (its payload decoded, or the reason it could not be) and settles it
as ``--settle`` says, with running counts on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Coroutine
from typing import Any

from .. import Amqp1qError, Job
from ._args import open_queue, positive, queue_argument, require_url, url_argument
from ._display import running_counts

__all__ = ["add_consume_parser", "add_push_parser"]


def add_push_parser(commands: Any) -> None:
    """``amqp1q push``'s arguments (``commands``: the subparsers of the ``amqp1q`` parser)."""
    push = commands.add_parser("push", help="push jobs to a queue")
    url_argument(push)
    queue_argument(push)
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
    push.add_argument("--count", type=positive, default=1, help="push this many copies")
    push.set_defaults(run=_push)


def add_consume_parser(commands: Any) -> None:
    """``amqp1q consume``'s arguments."""
    consume = commands.add_parser("consume", help="print jobs from a queue as JSON lines")
    url_argument(consume)
    queue_argument(consume)
    consume.add_argument("--count", type=positive, default=None, help="stop after this many")
    consume.add_argument("--timeout", type=float, default=None, help="stop after idle seconds")
    consume.add_argument(
        "--prefetch", type=positive, default=10, help="jobs held unsettled at once (10)"
    )
    consume.add_argument(
        "--settle",
        choices=("ack", "release", "reject"),
        default="ack",
        help="what to do with each job once printed (ack)",
    )
    consume.add_argument("--quiet", "-q", action="store_true", help="no running counts on stderr")
    consume.set_defaults(run=_consume)


# -- push ----------------------------------------------------------------------------------------


def _push(args: argparse.Namespace) -> Coroutine[Any, Any, int]:
    """Read the payload before the event loop starts, then push."""
    require_url(args)  # (a usage error before the payload is read)
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
    return _push_jobs(args, jobs)


async def _push_jobs(args: argparse.Namespace, jobs: list[Job]) -> int:
    async with open_queue(args) as queue:
        receipts = await queue.push_many(jobs)
    for receipt in receipts:
        print(receipt.job_id)
    return 0


def _header(item: str) -> tuple[str, str]:
    key, eq, value = item.partition("=")
    if not eq or not key:
        print(f"error: --header takes K=V, got {item!r}", file=sys.stderr)
        raise SystemExit(2)
    return key, value


# -- consume -------------------------------------------------------------------------------------


async def _consume(args: argparse.Namespace) -> int:
    seen = 0
    settled_as = {"ack": "acked", "release": "released", "reject": "rejected"}[args.settle]
    async with open_queue(args, prefetch=args.prefetch) as queue:

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
