"""``amqp1q.integrations.web.JobService`` in real web servers: FastAPI under uvicorn and aiohttp.

Each server runs in a subprocess (its app module written to ``tmp_path``) against the embedded
broker of the test process. A request pushes a job, the app's own worker handles it, a later
request sees the effect; then SIGTERM while a slow job runs: the server exits, and the job either
finished within the grace period or went back to the broker.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from amqp1q import JobQueue
from amqp1q.testing import Broker

from ..conftest import unavailable

pytestmark = pytest.mark.anyio

QUEUE = "web-jobs"

COMMON = """
import asyncio, os, pathlib
from amqp1q import Job, JobQueue, Registry
from amqp1q.integrations.web import JobService

MARKS = pathlib.Path(os.environ["MARKS"])
seen = {}
registry = Registry()


@registry.handler("record")
async def record(job):
    seen[job.payload["key"]] = job.payload["value"]


@registry.handler("slow")
async def slow(job):
    (MARKS / f"started-{job.id}").touch()
    await asyncio.sleep(float(job.payload["seconds"]))
    (MARKS / f"done-{job.id}").touch()


service = JobService(grace=float(os.environ["GRACE"]), margin=2)
service.add_queue("jobs", JobQueue.from_url(os.environ["AMQP1Q_URL"], queue=os.environ["QUEUE"]))
service.add_worker("jobs", registry, concurrency=4)
"""

FASTAPI_APP = (
    COMMON
    + """
import uvicorn
from fastapi import Depends, FastAPI
from fastapi.responses import JSONResponse

app = FastAPI(lifespan=service.lifespan)


@app.post("/jobs/{name}")
async def push(name: str, body: dict, queue: JobQueue = Depends(service.queue("jobs"))):
    receipt = await queue.push(Job(name, body))
    return {"id": receipt.job_id}


@app.get("/seen")
async def get_seen():
    return seen


@app.get("/health")
async def health():
    report = service.health()
    return JSONResponse(report, status_code=200 if report["status"] == "ok" else 503)


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(os.environ["PORT"]), lifespan="on")
"""
)

AIOHTTP_APP = (
    COMMON
    + """
from aiohttp import web

routes = web.RouteTableDef()


@routes.post("/jobs/{name}")
async def push(request):
    queue = service.get("jobs")
    receipt = await queue.push(Job(request.match_info["name"], await request.json()))
    return web.json_response({"id": receipt.job_id})


@routes.get("/seen")
async def get_seen(request):
    return web.json_response(seen)


@routes.get("/health")
async def health(request):
    report = service.health()
    return web.json_response(report, status=200 if report["status"] == "ok" else 503)


app = web.Application()
app.add_routes(routes)
app.cleanup_ctx.append(service.aiohttp_ctx)

if __name__ == "__main__":
    web.run_app(app, host="127.0.0.1", port=int(os.environ["PORT"]), print=None)
"""
)

APPS = {"fastapi": ("fastapi", "uvicorn", FASTAPI_APP), "aiohttp": ("aiohttp", None, AIOHTTP_APP)}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Server:
    def __init__(self, proc: subprocess.Popen[bytes], base: str, log: Path, marks: Path) -> None:
        self.proc = proc
        self.base = base
        self.log = log
        self.marks = marks

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    async def wait_exit(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while (code := self.proc.poll()) is None:
            if time.monotonic() > deadline:
                pytest.fail(f"the server did not exit within {timeout:g} s:\n{self.output()}")
            await asyncio.sleep(0.05)
        return code


def _spawn(app: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, str(app)], env=env, stdout=out, stderr=subprocess.STDOUT
        )


def _exists(path: Path) -> bool:
    return path.exists()


@pytest.fixture
async def broker() -> AsyncIterator[Broker]:
    async with Broker() as b:
        yield b


@pytest.fixture
def start_server(tmp_path: Path, broker: Broker) -> Iterator[Any]:
    procs: list[subprocess.Popen[bytes]] = []

    async def start(framework: str, grace: float) -> Server:
        module, extra, source = APPS[framework]
        for name in (module, extra):
            if name is not None and importlib.util.find_spec(name) is None:
                unavailable(f"{name} is not installed (pip install -e '.[test]')")
        app = tmp_path / f"{framework}_app.py"
        app.write_text(source)
        marks = tmp_path / "marks"
        marks.mkdir()
        port = _free_port()
        env = dict(
            os.environ,
            AMQP1Q_URL=broker.url,
            QUEUE=QUEUE,
            PORT=str(port),
            MARKS=str(marks),
            GRACE=str(grace),
            PYTHONUNBUFFERED="1",
        )
        log = tmp_path / "server.log"
        proc = _spawn(app, env, log)
        procs.append(proc)
        server = Server(proc, f"http://127.0.0.1:{port}", log, marks)
        deadline = time.monotonic() + 30
        async with httpx.AsyncClient(base_url=server.base, timeout=5) as client:
            while True:
                if proc.poll() is not None:
                    pytest.fail(f"the server exited early:\n{server.output()}")
                try:
                    response = await client.get("/health")
                    if response.status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(f"the server did not become healthy:\n{server.output()}")
                await asyncio.sleep(0.1)
        return server

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


async def _wait_for(path: Path, server: Server, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not _exists(path):
        if time.monotonic() > deadline:
            pytest.fail(f"{path.name} did not appear:\n{server.output()}")
        await asyncio.sleep(0.05)


async def _push_and_see(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.base, timeout=10) as client:
        response = await client.post("/jobs/record", json={"key": "greeting", "value": "hi"})
        assert response.status_code == 200, response.text
        deadline = time.monotonic() + 15
        while (await client.get("/seen")).json() != {"greeting": "hi"}:
            if time.monotonic() > deadline:
                pytest.fail(f"the app's worker never handled the job:\n{server.output()}")
            await asyncio.sleep(0.05)
        health = (await client.get("/health")).json()
        assert health["status"] == "ok"
        assert health["queues"] == {"jobs": "connected"}


async def _push_slow(server: Server, seconds: float) -> str:
    async with httpx.AsyncClient(base_url=server.base, timeout=10) as client:
        response = await client.post("/jobs/slow", json={"seconds": seconds})
        assert response.status_code == 200, response.text
        job_id: str = response.json()["id"]
    await _wait_for(server.marks / f"started-{job_id}", server)
    return job_id


EXIT_CODES = {0, -signal.SIGTERM}


@pytest.mark.parametrize("framework", ["fastapi", "aiohttp"])
async def test_a_slow_job_finishes_within_the_grace_on_sigterm(
    framework: str, start_server: Any, broker: Broker
) -> None:
    server: Server = await start_server(framework, grace=15)
    await _push_and_see(server)
    job_id = await _push_slow(server, seconds=1.5)

    server.proc.send_signal(signal.SIGTERM)
    code = await server.wait_exit(30)

    assert code in EXIT_CODES, server.output()
    assert (server.marks / f"done-{job_id}").exists(), server.output()
    assert len(broker.queue(QUEUE)) == 0  # acked: nothing left, nothing redelivered


@pytest.mark.parametrize("framework", ["fastapi", "aiohttp"])
async def test_a_slow_job_past_the_grace_goes_back_to_the_broker_on_sigterm(
    framework: str, start_server: Any, broker: Broker
) -> None:
    server: Server = await start_server(framework, grace=0.5)
    await _push_and_see(server)
    job_id = await _push_slow(server, seconds=300)

    server.proc.send_signal(signal.SIGTERM)
    code = await server.wait_exit(30)

    assert code in EXIT_CODES, server.output()
    assert not (server.marks / f"done-{job_id}").exists()
    async with JobQueue.from_url(broker.url, queue=QUEUE) as queue, queue.consume() as consumer:
        job = await consumer.receive(timeout=10)
        assert job is not None, "the interrupted job was lost"
        assert (job.id, job.name) == (job_id, "slow")
        await job.ack()


async def test_running_in_process_pushes_handles_and_reports_health(broker: Broker) -> None:
    from amqp1q import Job, ReceivedJob, Registry
    from amqp1q.integrations.web import JobService

    handled = asyncio.Event()
    registry = Registry()

    @registry.handler("ping")
    async def ping(job: ReceivedJob) -> None:
        handled.set()

    service = JobService(grace=1, margin=1)
    service.add_queue("jobs", JobQueue.from_url(broker.url, queue=QUEUE))
    service.add_worker("jobs", registry, concurrency=2)
    assert service.health()["status"] == "degraded"  # not started yet
    async with service.running():
        assert service.health() == {
            "status": "ok",
            "queues": {"jobs": "connected"},
            "workers": {"jobs": ["running"]},
        }
        queue = await service.queue("jobs")()
        await queue.push(Job("ping"))
        await asyncio.wait_for(handled.wait(), 10)
    report = service.health()
    assert report["status"] == "degraded"
    assert report["queues"] == {"jobs": "closed"}
    assert report["workers"] == {"jobs": ["stopped"]}
    assert len(broker.queue(QUEUE)) == 0


async def test_a_queue_that_cannot_open_closes_the_others(broker: Broker) -> None:
    from amqp1q import ConnectFailed
    from amqp1q.integrations.web import JobService

    service = JobService()
    good = service.add_queue("good", JobQueue.from_url(broker.url, queue=QUEUE))
    service.add_queue(
        "bad",
        JobQueue.from_url(
            f"amqp://127.0.0.1:{_free_port()}/{QUEUE}", connect_timeout=2, reconnect=False
        ),
    )
    with pytest.raises(ConnectFailed):
        async with service.running():
            pytest.fail("the service started without its queues")
    assert good.health() == "closed"
