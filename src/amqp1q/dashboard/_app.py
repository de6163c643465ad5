"""The dashboard's aiohttp application: routes, the token check, and the queues it serves."""

from __future__ import annotations

import hmac
import secrets
import urllib.parse
from typing import Any, Final

from aiohttp import web

from .._queue import JobQueue
from . import _page
from ._sampler import Sampler

__all__ = ["Dashboard", "make_app"]

PEEK_LIMIT: Final = 100


class Dashboard:
    """The state one dashboard serves: open queues, their sampler, the token and a nonce."""

    def __init__(
        self, queues: list[JobQueue], *, token: str | None = None, interval: float = 2.0
    ) -> None:
        self.queues = {queue.name: queue for queue in queues}
        self.sampler = Sampler(queues, interval=interval)
        self.token = token
        #: Required with every POST (the confirm form carries it): a form elsewhere cannot act.
        self.nonce = secrets.token_urlsafe(16)

    def queue(self, request: web.Request, name: str | None) -> JobQueue:
        queue = self.queues.get(name or "")
        if queue is None:
            raise web.HTTPNotFound(text=f"no queue {name!r} on this dashboard")
        return queue


DASHBOARD: Final[web.AppKey[Dashboard]] = web.AppKey("dashboard", Dashboard)


def make_app(dashboard: Dashboard) -> web.Application:
    """The application (start the sampler with ``dashboard.sampler.start()``)."""
    app = web.Application(middlewares=[_token_check(dashboard.token)])
    app[DASHBOARD] = dashboard
    app.add_routes(
        [
            web.get("/", _index),
            web.get("/rows", _rows),
            web.get("/dead-letters", _dead_letters),
            web.get("/confirm", _confirm),
            web.post("/replay", _act),
            web.post("/purge", _act),
        ]
    )
    return app


def _token_check(token: str | None) -> Any:
    @web.middleware
    async def check(request: web.Request, handler: Any) -> web.StreamResponse:
        if token is not None:
            given = request.query.get("token", "")
            if not hmac.compare_digest(given.encode(), token.encode()):
                raise web.HTTPUnauthorized(text="a token is required: open the URL it printed")
        response: web.StreamResponse = await handler(request)
        return response

    return check


def _html(text: str) -> web.Response:
    return web.Response(text=text, content_type="text/html", charset="utf-8")


async def _index(request: web.Request) -> web.Response:
    dashboard = request.app[DASHBOARD]
    refresh = int(dashboard.sampler.interval * 1000)
    return _html(_page.index_page(dashboard.sampler, dashboard.token, refresh))


async def _rows(request: web.Request) -> web.Response:
    dashboard = request.app[DASHBOARD]
    return _html(_page.rows(dashboard.sampler, dashboard.token))


async def _dead_letters(request: web.Request) -> web.Response:
    dashboard = request.app[DASHBOARD]
    queue = dashboard.queue(request, request.query.get("queue"))
    jobs = await queue.peek(PEEK_LIMIT, dead_letter=True)
    message = request.query.get("done")
    return _html(_page.dead_letter_page(queue.name, jobs, dashboard.token, message))


async def _confirm(request: web.Request) -> web.Response:
    dashboard = request.app[DASHBOARD]
    action = request.query.get("action", "")
    if action not in ("replay", "purge"):
        raise web.HTTPBadRequest(text="action must be replay or purge")
    queue = dashboard.queue(request, request.query.get("queue"))
    latest = dashboard.sampler.latest(queue.name)
    count = latest.depth.dead_lettered if latest is not None and latest.depth else None
    return _html(_page.confirm_page(action, queue.name, count, dashboard.token, dashboard.nonce))


async def _act(request: web.Request) -> web.Response:
    dashboard = request.app[DASHBOARD]
    form = await request.post()
    if not hmac.compare_digest(str(form.get("nonce", "")).encode(), dashboard.nonce.encode()):
        raise web.HTTPForbidden(text="confirm from the dashboard's own page")
    queue = dashboard.queue(request, str(form.get("queue", "")))
    if request.path == "/replay":
        count = await queue.replay_dead_letters()
        done = f"replayed {count} job(s)"
    else:
        count = await queue.purge_dead_letters()
        done = f"purged {count} job(s)"
    await dashboard.sampler.sample_once()
    query = {"queue": queue.name, "done": done}
    if dashboard.token:
        query["token"] = dashboard.token
    raise web.HTTPSeeOther("/dead-letters?" + urllib.parse.urlencode(query))
