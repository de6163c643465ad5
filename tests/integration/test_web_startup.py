"""``JobService`` at startup, in real servers (uvicorn + FastAPI, aiohttp) on the embedded broker
in strict mode: a missing queue fails the app's startup, or, with ``start_degraded=True``, the
app starts degraded and recovers once the queue exists. And its stall watchdog."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from amqp1q import CallNext, Job, JobQueue, Outcome, QueueNotFound, ReceivedJob, Registry
from amqp1q.integrations.web import JobService
from amqp1q.testing import Broker

from ..conftest import unavailable
from .test_web_integrations import APPS, Server, _free_port, _spawn

pytestmark = pytest.mark.anyio

QUEUE = "web-startup"

#: The apps of test_web_integrations, with start_degraded from the environment and a quick
#: re-check of missing queues.
DEGRADABLE = {
    'service = JobService(grace=float(os.environ["GRACE"]), margin=2)': (
        "import amqp1q.integrations.web\n"
        "amqp1q.integrations.web.RECHECK_EVERY = 0.2\n"
        "service = JobService(grace=float(os.environ['GRACE']), margin=2, "
        "start_degraded=os.environ.get('DEGRADED') == '1')"
    )
}


@pytest.fixture
async def strict_broker() -> AsyncIterator[Broker]:
    async with Broker(strict=True) as broker:
        yield broker


def _app(tmp_path: Path, framework: str) -> Path:
    module, extra, source = APPS[framework]
    for name in (module, extra):
        if name is not None and importlib.util.find_spec(name) is None:
            unavailable(f"{name} is not installed (pip install -e '.[test]')")
    for old, new in DEGRADABLE.items():
        assert old in source
        source = source.replace(old, new)
    app = tmp_path / f"{framework}_app.py"
    app.write_text(source)
    (tmp_path / "marks").mkdir(exist_ok=True)
    return app


def _start(tmp_path: Path, framework: str, broker: Broker, *, degraded: bool) -> Server:
    port = _free_port()
    env = dict(
        os.environ,
        AMQP1Q_URL=broker.url,
        QUEUE=QUEUE,
        PORT=str(port),
        MARKS=str(tmp_path / "marks"),
        GRACE="1",
        DEGRADED="1" if degraded else "0",
        PYTHONUNBUFFERED="1",
    )
    log = tmp_path / "server.log"
    proc = _spawn(_app(tmp_path, framework), env, log)
    return Server(proc, f"http://127.0.0.1:{port}", log, tmp_path / "marks")


async def _until_up(server: Server, client: httpx.AsyncClient) -> httpx.Response:
    deadline = time.monotonic() + 30
    while True:
        if server.proc.poll() is not None:
            pytest.fail(f"the server exited:\n{server.output()}")
        try:
            return await client.get("/health")
        except httpx.TransportError:
            if time.monotonic() > deadline:
                pytest.fail(f"the server did not start:\n{server.output()}")
            await asyncio.sleep(0.1)


@pytest.mark.parametrize("framework", ["fastapi", "aiohttp"])
async def test_a_missing_queue_fails_the_app_startup(
    framework: str, tmp_path: Path, strict_broker: Broker
) -> None:
    """Issue 19: the app logged "Application startup complete", then answered 500 to every
    push."""
    server = _start(tmp_path, framework, strict_broker, degraded=False)
    try:
        code = await server.wait_exit(30)
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait(timeout=10)
    output = server.output()
    assert code != 0, output
    assert "QueueNotFound" in output
    assert f"no queue '{QUEUE}'" in output
    assert "Application startup complete" not in output


@pytest.mark.parametrize("framework", ["fastapi", "aiohttp"])
async def test_start_degraded_serves_reports_and_recovers_once_the_queue_exists(
    framework: str, tmp_path: Path, strict_broker: Broker
) -> None:
    server = _start(tmp_path, framework, strict_broker, degraded=True)
    try:
        # No keep-alive: a server may close the connection after answering 500.
        limits = httpx.Limits(max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=server.base, timeout=10, limits=limits) as client:
            health = await _until_up(server, client)
            assert health.status_code == 503
            assert health.json() == {
                "status": "degraded",
                "queues": {"jobs": "missing"},
                "workers": {"jobs": ["waiting"]},
            }
            refused = await client.post("/jobs/record", json={"key": "k", "value": 1})
            assert refused.status_code == 500  # QueueNotFound, unhandled by the app

            strict_broker.declare(QUEUE)
            deadline = time.monotonic() + 15
            while (health := await client.get("/health")).status_code != 200:
                if time.monotonic() > deadline:
                    pytest.fail(f"still degraded: {health.json()}\n{server.output()}")
                await asyncio.sleep(0.1)
            assert health.json()["workers"] == {"jobs": ["running"]}
            pushed = await client.post("/jobs/record", json={"key": "k", "value": 1})
            assert pushed.status_code == 200, pushed.text
            while (await client.get("/seen")).json() != {"k": 1}:
                if time.monotonic() > deadline:
                    pytest.fail(f"the worker never ran the job:\n{server.output()}")
                await asyncio.sleep(0.05)
    finally:
        if server.proc.poll() is None:
            server.proc.terminate()
        await server.wait_exit(30)
    log = server.log.read_text()
    assert f"queue 'jobs' is missing (the broker has no node at '{QUEUE}'" in log
    assert "starting degraded" in log


async def test_running_fails_naming_the_missing_queue_and_closes_the_others(
    strict_broker: Broker,
) -> None:
    strict_broker.declare("present")
    service = JobService(margin=1)
    present = service.add_queue("present", JobQueue.from_url(strict_broker.url, queue="present"))
    service.add_queue("absent", JobQueue.from_url(strict_broker.url, queue=QUEUE))
    with pytest.raises(QueueNotFound) as caught:
        async with service.running():
            pytest.fail("the service started without its queue")
    assert caught.value.queue == QUEUE
    assert present.health() == "closed"


async def test_the_service_watchdog_names_a_stalling_job_or_says_none_was_in_hand(
    broker_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    done = asyncio.Event()
    registry = Registry()

    @registry.handler("blocking")
    async def blocking(job: ReceivedJob) -> None:
        time.sleep(0.6)  # noqa: ASYNC251 - the blocking the watchdog names
        done.set()

    service = JobService(grace=1, margin=1, stall_warning=0.3)
    service.add_queue("jobs", JobQueue.from_url(broker_url, queue="stalls"))
    service.add_worker("jobs", registry)
    with caplog.at_level(logging.WARNING, logger="amqp1q.worker"):
        async with service.running():
            await service.get("jobs").push(Job("blocking", id="blocking-1"))
            await asyncio.wait_for(done.wait(), 10)
            await asyncio.sleep(0.2)
            time.sleep(0.6)  # noqa: ASYNC251 - a request handler blocking the loop
            await asyncio.sleep(0.2)
    stalls = [r.getMessage() for r in caplog.records if "event loop was blocked" in r.getMessage()]
    assert len(stalls) == 2, stalls
    assert "with job blocking-1 ('blocking') in hand" in stalls[0]
    assert "with no job in hand" in stalls[1]


@pytest.fixture
async def broker_url() -> AsyncIterator[str]:
    async with Broker() as broker:
        yield broker.url


async def test_a_degraded_service_starts_its_workers_with_its_middleware(
    strict_broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """start_degraded (issue 19's papercuts) and middleware (its handler API) together: the
    workers started late, once the queue exists, run the service's middleware too."""
    monkeypatch.setattr("amqp1q.integrations.web.RECHECK_EVERY", 0.2)
    seen: list[tuple[str, Outcome]] = []
    registry = Registry()

    @registry.handler("record")
    def record(job: ReceivedJob, value: int) -> None:  # a sync handler with a typed payload
        assert value == 7

    async def observe(job: ReceivedJob, call_next: CallNext) -> None:
        seen.append((job.name, (await call_next()).outcome))

    service = JobService(grace=1, margin=1, middleware=[observe], start_degraded=True)
    service.add_queue("jobs", JobQueue.from_url(strict_broker.url, queue=QUEUE))
    service.add_worker("jobs", registry)
    async with service.running():
        assert service.health() == {
            "status": "degraded",
            "queues": {"jobs": "missing"},
            "workers": {"jobs": ["waiting"]},
        }
        strict_broker.declare(QUEUE)
        deadline = time.monotonic() + 10
        while service.health()["status"] != "ok":
            assert time.monotonic() < deadline, service.health()
            await asyncio.sleep(0.05)
        await service.get("jobs").push(Job("record", 7))
        while not seen:
            assert time.monotonic() < deadline, "the worker never ran the job"
            await asyncio.sleep(0.05)
    assert seen == [("record", Outcome.ACK)]
