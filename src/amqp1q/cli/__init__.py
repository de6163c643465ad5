"""The ``amqp1q`` command: ``demo``, ``bench``, ``push``, ``consume``, ``worker``, ``broker``,
``stats``, ``peek``, ``replay``, ``purge``, ``dashboard``.

The queue URL comes from ``--url`` or the ``AMQP1Q_URL`` environment variable (better for
connection strings with keys: a command line is visible to every user of the machine).
Exit codes: 0 done, 1 an amqp1q error (printed without secrets), 2 bad usage, 130 interrupted.

A module per command (each declares its arguments and runs them), over the library's public
facade: ``_demo`` (``demo``, ``bench``; the run itself is ``_bench``), ``_push_consume``,
``_worker``, ``_broker`` (``broker``, and ``bench``'s broker process), ``_setup``
(``setup-rabbitmq``), ``_operate`` (``stats``, ``peek``, ``replay``, ``purge``),
``_dashboard``; ``_args`` holds the arguments several take and ``_display`` what the
commands show while they work. Nothing in the library imports this package.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from .. import Amqp1qError, __version__
from .._redact import redact
from ._broker import add_broker_parser
from ._dashboard import add_dashboard_parser
from ._demo import add_bench_parser, add_demo_parser
from ._operate import add_operate_parsers
from ._push_consume import add_consume_parser, add_push_parser
from ._setup import add_setup_parser
from ._worker import add_worker_parser

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # (the worker pool's children)
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
    for add in (
        add_demo_parser,
        add_bench_parser,
        add_push_parser,
        add_consume_parser,
        add_worker_parser,
        add_broker_parser,
        add_setup_parser,
        add_operate_parsers,
        add_dashboard_parser,
    ):
        add(commands)
    return parser


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
