"""Every Python block of README.md and docs/ is executed, page by page, as a reader would paste
them into one session (a page's blocks share a namespace, in order).

What the harness provides:

- brokers: every ``amqp://``/``amqps://`` URL goes to an embedded broker of the test (same path
  and query), every Service Bus connection string to an embedded broker emulating Service Bus
  (same EntityPath), and every ``memory://`` URL to a namespace of the page's own;
- stand-ins for what a page leaves to the reader: ``send_email``, ``handle``, ``mailer``,
  ``signup``, ``url``, ``log``, ``broker`` (nothing else: a page imports what it uses);
- ``asyncio.run(main())`` runs ``main()`` on the test's loop (the brokers live there);
- after a page: every ``async def test_*`` it defined is run (``amqp1q_broker`` is the broker),
  and pages that build a web app have it served (EXERCISE below).

Each block must finish within BLOCK_SECONDS (a 10 s hang on close fails it), raise nothing, and
leave no coroutine un-awaited. ``runs-forever`` blocks must still be running after
FOREVER_SECONDS; they are then cancelled. ``compile-only`` blocks are left to the static checks,
``checked-by`` blocks to the test they name (test_docs_checked.py checks that it exists).
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import logging
import re
import urllib.parse
import uuid
import warnings
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import httpx
import pytest

import amqp1q._queue
import amqp1q._urls
import amqp1q._workerconfig
from amqp1q import Job, JobQueue
from amqp1q.testing import Broker

from .snippets import NOT_RUN_HERE, Snippet, compile_snippet, pages, snippets

pytestmark = pytest.mark.anyio

BLOCK_SECONDS = 8.0
FOREVER_SECONDS = 1.5
#: The ports of the brokers the docs point at (RabbitMQ's, ``amqp1q broker``'s default).
PORTS = frozenset({5671, 5672, 5673})

RUNNABLE = {
    path: blocks
    for path in pages()
    if (blocks := [s for s in snippets(path) if s.is_python and s.option not in NOT_RUN_HERE])
}


class Brokers:
    """The page's embedded brokers, and the rewriting of every URL the page's code gives."""

    def __init__(self, amqp: Broker, servicebus: Broker) -> None:
        self.amqp = amqp
        self.servicebus = servicebus
        self.memory_prefix = f"docs-{uuid.uuid4().hex[:8]}"

    def rewrite(self, url: str) -> str:
        """A broker's URL as the docs give it (default ports: 5671, 5672, or 5673 for
        ``amqp1q broker``) to the test's broker; others (a page's own ``Broker()``) as they
        are."""
        text = url.strip()
        if text.lower().startswith(("endpoint=", "sharedaccess")):
            endpoint = re.search(r"(?i)(?:^|;)\s*Endpoint=sb://[^;/]*?(?::(\d+))?(?:/|;|$)", text)
            if endpoint is not None and endpoint.group(1) and int(endpoint.group(1)) not in PORTS:
                return url
            entity = re.search(r"(?i)(?:^|;)\s*EntityPath=([^;]*)", text)
            return self.servicebus.servicebus_connection_string(
                entity.group(1).strip() if entity else None
            )
        scheme, sep, rest = text.partition("://")
        if not sep:
            return url
        if scheme.lower() == "memory":
            head, slash, tail = rest.partition("/")
            if not slash:
                return f"memory://{self.memory_prefix}/{head}"
            return f"memory://{self.memory_prefix}-{head}/{tail}"
        if scheme.lower() in ("amqp", "amqps"):
            parts = urllib.parse.urlsplit(text)
            if parts.port is not None and parts.port not in PORTS:
                return url
            login = parts.netloc.rpartition("@")[0]
            netloc = f"{login}@" if login else ""
            netloc += f"{self.amqp.host}:{self.amqp.port}"
            return urllib.parse.urlunsplit(("amqp", netloc, parts.path, parts.query, ""))
        return url


class StandIns:
    """What pages leave to the reader, recording what the page's code did with them."""

    def __init__(self, broker: Broker) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self.broker = broker

    def namespace(self) -> dict[str, Any]:
        calls = self.calls

        async def send_email(*args: Any, **kwargs: Any) -> None:
            calls.append(("send_email", args, kwargs))

        async def handle(*args: Any, **kwargs: Any) -> None:
            calls.append(("handle", args, kwargs))

        class Mailer:
            async def send(self, *args: Any, **kwargs: Any) -> None:
                calls.append(("mailer.send", args, kwargs))

        async def signup(address: str, *, queue: JobQueue) -> None:
            await queue.push(Job("send_email", {"to": address}))

        return {
            "__name__": "docs_snippet",
            "send_email": send_email,
            "handle": handle,
            "mailer": Mailer(),
            "signup": signup,
            "url": "amqp://guest:guest@127.0.0.1:5672/jobs",
            "log": logging.getLogger("docs"),
            "broker": self.broker,
        }


@pytest.fixture
async def brokers(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Brokers]:
    async with Broker() as amqp, Broker(servicebus=True) as servicebus:
        found = Brokers(amqp, servicebus)
        original = amqp1q._urls.parse_url

        def parse_url(url: str) -> Any:
            return original(found.rewrite(url) if isinstance(url, str) else url)

        for module in (amqp1q._urls, amqp1q._queue, amqp1q._workerconfig):
            monkeypatch.setattr(module, "parse_url", parse_url)
        yield found


class Page:
    """One page's blocks, run in order in one namespace."""

    def __init__(self, path: Path, brokers: Brokers, monkeypatch: pytest.MonkeyPatch) -> None:
        self.path = path
        self.brokers = brokers
        self.stand_ins = StandIns(brokers.amqp)
        self.namespace = self.stand_ins.namespace()
        self._deferred: list[asyncio.Task[Any]] = []
        loop = asyncio.get_running_loop()

        def run(main: Coroutine[Any, Any, Any], **_: Any) -> None:
            self._deferred.append(loop.create_task(main))

        monkeypatch.setattr(asyncio, "run", run)

    async def run(self, snippet: Snippet) -> None:
        code = compile_snippet(snippet)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = eval(code, self.namespace)  # the documentation's own code
            work = [result] if inspect.iscoroutine(result) else []
            work += self._deferred
            self._deferred = []
            if work:
                await self._finish(snippet, work)
            gc.collect()
        unawaited = [str(w.message) for w in caught if "was never awaited" in str(w.message)]
        assert unawaited == [], f"{snippet.where}: {unawaited}"

    async def _finish(self, snippet: Snippet, work: list[Any]) -> None:
        tasks = [asyncio.ensure_future(item) for item in work]
        forever = snippet.option == "runs-forever"
        _, pending = await asyncio.wait(
            tasks, timeout=FOREVER_SECONDS if forever else BLOCK_SECONDS
        )
        for task in pending:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for task, result in zip(tasks, results, strict=True):
            if isinstance(result, asyncio.CancelledError) and task in pending:
                continue
            if isinstance(result, BaseException):
                raise AssertionError(f"{snippet.where} failed: {result!r}") from result
        if forever:
            assert pending, f"{snippet.where} is marked runs-forever but ended by itself"
        else:
            assert not pending, f"{snippet.where} did not finish within {BLOCK_SECONDS:g} s"

    async def run_tests(self) -> list[str]:
        """Run the ``async def test_*`` functions the page defined; their names."""
        ran = []
        for name, func in list(self.namespace.items()):
            if name.startswith("test_") and inspect.iscoroutinefunction(func):
                fixtures = {"amqp1q_broker": self.brokers.amqp}
                wanted = inspect.signature(func).parameters
                unknown = set(wanted) - set(fixtures)
                assert not unknown, f"{self.path.name}: {name} wants fixtures {unknown}"
                await asyncio.wait_for(func(**{p: fixtures[p] for p in wanted}), BLOCK_SECONDS)
                ran.append(name)
        return ran


# -- pages that build a web app: serve it and use it ---------------------------------------------


async def _fastapi(page: Page) -> None:
    app = page.namespace["app"]
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app") as client,
    ):
        signup = await client.post("/signup", params={"address": "a@b.c"})
        assert signup.status_code == 200, signup.text
        assert (await client.get("/health")).json()["status"] == "ok"


async def _aiohttp(page: Page) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    async with TestClient(TestServer(page.namespace["app"])) as client:
        signup = await client.post("/signup", json={"to": "a@b.c"})
        assert signup.status == 200, await signup.text()
        assert (await (await client.get("/health")).json())["status"] == "ok"


EXERCISE: dict[str, Callable[[Page], Coroutine[Any, Any, None]]] = {
    "fastapi.md": _fastapi,
    "aiohttp.md": _aiohttp,
}


@pytest.mark.parametrize("path", list(RUNNABLE), ids=lambda path: path.name)
async def test_the_page_runs(path: Path, brokers: Brokers, monkeypatch: pytest.MonkeyPatch) -> None:
    page = Page(path, brokers, monkeypatch)
    for snippet in RUNNABLE[path]:
        await page.run(snippet)
    await page.run_tests()
    exercise = EXERCISE.get(path.name)
    if exercise is not None:
        await exercise(page)
