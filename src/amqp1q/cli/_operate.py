"""``amqp1q stats``, ``peek``, ``replay`` and ``purge``: operating a queue from the shell.

Each takes ``--url`` (or ``$AMQP1Q_URL``) and ``--queue`` as ``push`` and ``consume`` do, and
prints JSON lines on stdout:

- ``stats``: one object per ``--queue`` (repeatable): its depth as the broker counts it
  (``QueueDepth.to_dict()``) and the name of its dead-letter queue;
- ``peek [--dead-letter] [-n N]``: one object per job, read without taking it, with its
  dead-letter reason and description; a payload is ``{"json": ...}``, ``{"text": ...}`` or
  ``{"base64": ...}``, never binary escaped to look like text;
- ``replay [--limit N] [--reason TEXT]``: dead-lettered jobs back to the queue;
  ``{"replayed": N}``;
- ``purge --dead-letter``: empties the dead-letter queue; ``{"purged": N}``.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from .. import ReceivedJob
from ._args import open_queue, positive, queue_argument, url_argument

__all__ = ["add_operate_parsers"]


def add_operate_parsers(commands: Any) -> None:
    """The four commands' arguments (``commands``: the subparsers of the ``amqp1q`` parser)."""
    stats = commands.add_parser("stats", help="how many jobs a queue holds, as JSON lines")
    url_argument(stats)
    queue_argument(stats, many=True)
    stats.set_defaults(run=_stats)

    peek = commands.add_parser("peek", help="jobs at the head of a queue, without taking them")
    url_argument(peek)
    queue_argument(peek)
    peek.add_argument("--dead-letter", action="store_true", help="peek the dead-letter queue")
    peek.add_argument("-n", "--count", type=positive, default=10, help="at most this many (10)")
    peek.set_defaults(run=_peek)

    replay = commands.add_parser("replay", help="move dead-lettered jobs back to the queue")
    url_argument(replay)
    queue_argument(replay)
    replay.add_argument("--limit", type=positive, default=None, help="at most this many")
    replay.add_argument("--reason", default=None, help="only jobs dead-lettered with this reason")
    replay.set_defaults(run=_replay)

    purge = commands.add_parser("purge", help="delete every job in the dead-letter queue")
    url_argument(purge)
    queue_argument(purge)
    purge.add_argument(
        "--dead-letter",
        action="store_true",
        required=True,
        help="the dead-letter queue (required: only it is purged)",
    )
    purge.set_defaults(run=_purge)


def _line(value: dict[str, Any]) -> None:
    print(json.dumps(value, ensure_ascii=False), flush=True)


async def _stats(args: argparse.Namespace) -> int:
    for name in args.queue or [None]:
        async with open_queue(args, name) as queue:
            depth = await queue.depth()
            async with queue.dead_letter_queue() as dead:
                _line({**depth.to_dict(), "dead_letter_queue": dead.name})
    return 0


async def _peek(args: argparse.Namespace) -> int:
    async with open_queue(args) as queue:
        for job in await queue.peek(args.count, dead_letter=args.dead_letter):
            _line(job.to_dict())
    return 0


async def _replay(args: argparse.Namespace) -> int:
    reason = args.reason

    def wanted(job: ReceivedJob) -> bool:
        return bool(job.dead_letter_reason == reason)

    async with open_queue(args) as queue:
        count = await queue.replay_dead_letters(
            limit=args.limit, filter=wanted if reason is not None else None
        )
        _line({"queue": queue.name, "replayed": count})
    return 0


async def _purge(args: argparse.Namespace) -> int:
    async with open_queue(args) as queue:
        _line({"queue": queue.name, "purged": await queue.purge_dead_letters()})
    return 0
