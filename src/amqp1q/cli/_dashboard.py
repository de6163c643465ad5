"""``amqp1q dashboard``: serve the dashboard (:mod:`amqp1q.dashboard`) for one or more queues
until interrupted. It listens on 127.0.0.1 by default; ``--token`` (or ``$AMQP1Q_DASHBOARD_TOKEN``)
makes every request carry ``?token=...``, and the URL printed at start has it."""

from __future__ import annotations

import argparse
import asyncio
import os
from contextlib import AsyncExitStack
from typing import Any

from .. import JobQueue
from ._args import positive, queue_argument, require_url, url_argument

__all__ = ["add_dashboard_parser", "serve"]

TOKEN_ENV = "AMQP1Q_DASHBOARD_TOKEN"


def add_dashboard_parser(commands: Any) -> None:
    dashboard = commands.add_parser("dashboard", help="a local web page to operate queues")
    url_argument(dashboard)
    queue_argument(dashboard, many=True)
    dashboard.add_argument("--host", default="127.0.0.1", help="listen here (127.0.0.1)")
    dashboard.add_argument("--port", type=int, default=8089, help="listen on this port (8089)")
    dashboard.add_argument(
        "--token",
        default=os.environ.get(TOKEN_ENV),
        help=f"require ?token=TOKEN on every request (default: ${TOKEN_ENV}, none)",
    )
    dashboard.add_argument(
        "--interval", type=positive, default=2, help="seconds between samples (2)"
    )
    dashboard.set_defaults(run=_run)


async def serve(
    url: str,
    queues: list[str | None],
    *,
    host: str = "127.0.0.1",
    port: int = 8089,
    token: str | None = None,
    interval: float = 2.0,
    started: asyncio.Future[str] | None = None,
) -> None:
    """Serve until cancelled; ``started`` gets the page's URL once listening."""
    from aiohttp import web

    from ..dashboard import Dashboard, make_app

    async with AsyncExitStack() as stack:
        opened = [
            await stack.enter_async_context(JobQueue.from_url(url, queue=name)) for name in queues
        ]
        dashboard = Dashboard(opened, token=token, interval=interval)
        await dashboard.sampler.sample_once()
        dashboard.sampler.start()
        stack.push_async_callback(dashboard.sampler.stop)
        runner = web.AppRunner(make_app(dashboard), access_log=None)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = runner.addresses[0][1] if runner.addresses else port
        page = f"http://{host}:{bound}/" + (f"?token={token}" if token else "")
        if started is not None:
            started.set_result(page)
        else:
            print(f"amqp1q dashboard on {page} (Ctrl-C stops it)", flush=True)
        await asyncio.Event().wait()


async def _run(args: argparse.Namespace) -> int:
    await serve(
        require_url(args),
        args.queue or [None],
        host=args.host,
        port=args.port,
        token=args.token,
        interval=float(args.interval),
    )
    return 0
