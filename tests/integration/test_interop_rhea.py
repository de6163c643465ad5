"""Interop with Node's rhea, an AMQP 1.0 client nobody here wrote: both directions, on
RabbitMQ 3.x, the embedded broker and Qpid Proton's C and C++ example brokers; name, body,
headers and id intact."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from amqp1q import Job, JobQueue
from amqp1q.testing import Broker

from ..conftest import RABBITMQ_URL, unavailable
from ..qpid import qpid_broker

pytestmark = [pytest.mark.anyio, pytest.mark.node]

NODE_DIR = Path(__file__).resolve().parent.parent / "interop" / "node"


class Peer:
    """Where rhea and amqp1q meet: a host, credentials, rhea's address and amqp1q's URL."""

    def __init__(self, url: str, queue: str, rhea_address: str) -> None:
        parts = urllib.parse.urlsplit(url)
        self.url = url
        self.queue = queue
        self.host = parts.hostname or "127.0.0.1"
        self.port = str(parts.port or 5672)
        self.user = urllib.parse.unquote(parts.username or "")
        self.password = urllib.parse.unquote(parts.password or "")
        self.rhea_address = rhea_address

    async def node(self, script: str, *args: str, timeout: float = 30) -> str:
        node = shutil.which("node")
        if node is None or not (NODE_DIR / "node_modules" / "rhea").is_dir():
            unavailable("node and rhea are needed (run scripts/peers/node.sh)")
        process = await asyncio.create_subprocess_exec(
            node,
            str(NODE_DIR / script),
            self.host,
            self.port,
            self.user,
            self.password,
            self.rhea_address,
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), timeout)
        assert process.returncode == 0, f"{script} failed: {err.decode()} {out.decode()}"
        return out.decode()


@pytest.fixture(params=["rabbitmq", "embedded", "qpid-c", "qpid-cpp"])
async def peer(request: pytest.FixtureRequest) -> AsyncIterator[Peer]:
    name = f"amqp1q-rhea-{request.node.name[-40:].strip('[]').replace('[', '-')}"
    if request.param == "rabbitmq":
        queue = request.getfixturevalue("rabbitmq_queue")  # declared, deleted afterwards
        yield Peer(RABBITMQ_URL, queue, f"/amq/queue/{queue}")
    elif request.param.startswith("qpid-"):
        async with qpid_broker(request.param.removeprefix("qpid-")) as qpid:  # ANONYMOUS only
            yield Peer(qpid.url, name, name)
    else:
        async with Broker() as broker:
            yield Peer(broker.url, name, name)


async def test_rhea_pushes_amqp1q_consumes(peer: Peer) -> None:
    summary = json.loads(await peer.node("push.js", "3", "héllo body", "email.send"))
    assert summary["accepted"] == 3
    async with JobQueue.from_url(peer.url, queue=peer.queue) as queue:
        async with queue.consume(prefetch=3) as consumer:
            jobs = [await asyncio.wait_for(consumer.receive(), 10) for _ in range(3)]
            for job in jobs:
                await job.ack()
    assert [job.name for job in jobs] == ["email.send"] * 3
    assert [job.body for job in jobs] == ["héllo body".encode()] * 3
    assert [job.id for job in jobs] == ["push-0", "push-1", "push-2"]
    assert [dict(job.headers) for job in jobs] == [
        {"x-test": "value", "x-index": str(i)} for i in range(3)
    ]
    assert all(job.attempt == 1 for job in jobs)


async def test_amqp1q_pushes_rhea_consumes(peer: Peer) -> None:
    jobs = [
        Job(
            "report.build",
            f"body {i}".encode(),
            headers={"tenant": "acme", "n": str(i)},
            priority=5,
        )
        for i in range(3)
    ]
    async with JobQueue.from_url(peer.url, queue=peer.queue) as queue:
        await queue.push_many(jobs)
    lines = (await peer.node("consume.js", "3", "10000")).splitlines()
    got: list[dict[str, Any]] = [json.loads(line) for line in lines if line.strip()]
    assert len(got) == 3
    for job, message in zip(jobs, got, strict=True):
        assert message["subject"] == "report.build"
        assert message["body_kind"] == "data"
        assert base64.b64decode(message["body_base64"]) == job.body
        assert message["message_id"] == job.id
        assert message["application_properties"] == {"tenant": "acme", "n": job.headers["n"]}
        assert message["priority"] == 5
