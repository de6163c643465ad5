"""Arguments more than one command takes: the queue URL and ``--queue`` (``push``, ``consume``,
``stats``, ``peek``, ``replay``, ``purge``, ``dashboard`` alike), and numbers checked as they
are parsed.

A number out of range is a usage error (exit code 2) that says what was expected; a missing URL
names both ways to give one.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .. import JobQueue

__all__ = [
    "URL_ENV",
    "open_queue",
    "positive",
    "queue_argument",
    "require_url",
    "seconds",
    "url_argument",
]

#: The variable the queue URL is read from when ``--url`` is not given.
URL_ENV = "AMQP1Q_URL"


def url_argument(parser: argparse.ArgumentParser) -> None:
    """``--url``, defaulting to :data:`URL_ENV` (better for keys: a command line is public)."""
    parser.add_argument(
        "--url", default=os.environ.get(URL_ENV), help=f"queue URL (default: ${URL_ENV})"
    )


def require_url(args: argparse.Namespace) -> str:
    """``args.url``, or exit 2 saying how to give one."""
    if not args.url:
        print(f"error: give --url or set {URL_ENV}", file=sys.stderr)
        raise SystemExit(2)
    return str(args.url)


def queue_argument(parser: argparse.ArgumentParser, *, many: bool = False) -> None:
    """``--queue``: the queue (default: the URL's path or ``EntityPath``)."""
    if many:
        parser.add_argument(
            "--queue",
            action="append",
            default=None,
            help="a queue (repeat for more; default: the URL's)",
        )
    else:
        parser.add_argument("--queue", default=None, help="the queue (default: the URL's)")


def open_queue(args: argparse.Namespace, queue: str | None = None, **settings: Any) -> JobQueue:
    """The queue ``--url`` and ``--queue`` (or ``queue``) name, unopened."""
    from .. import JobQueue

    name = queue or getattr(args, "queue", None)
    return JobQueue.from_url(require_url(args), queue=name, **settings)


def positive(text: str) -> int:
    """An argument type: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def seconds(text: str) -> float:
    """An argument type: a finite number of seconds >= 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 <= value < math.inf:
        raise argparse.ArgumentTypeError(f"expected a number of seconds >= 0, got {text!r}")
    return value
