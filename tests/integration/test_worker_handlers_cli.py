"""``amqp1q worker`` as a user runs it: sync handlers in threads, the stall watchdog's warning."""

from __future__ import annotations

import asyncio
import os
import signal
import textwrap
from pathlib import Path

import pytest

from amqp1q import Job, JobQueue
from amqp1q.testing import Broker

from ..cli import start_cli

pytestmark = pytest.mark.anyio

_MODULE = """
import pathlib
import time

from amqp1q import ReceivedJob, Registry

HERE = pathlib.Path(__file__).parent
registry = Registry()


@registry.handler("send_email")
def send_email(job: ReceivedJob) -> None:  # a plain def: run in a thread
    with (HERE / "sent.txt").open("a") as out:
        out.write(f"{job.payload['to']} {job.attempt}\\n")


@registry.handler("resize_image")
async def resize_image(job: ReceivedJob) -> None:
    time.sleep(1.0)  # blocking work in an async def: the watchdog names it
    (HERE / "resized.txt").write_text(job.id)
"""


def _text(path: Path) -> str:
    return path.read_text() if path.exists() else ""


async def _until_file(path: Path, timeout: float = 20.0) -> str:
    for _ in range(int(timeout / 0.05)):
        if text := _text(path):
            return text
        await asyncio.sleep(0.05)
    raise AssertionError(f"{path.name} was not written within {timeout:g} s")


async def test_the_worker_command_runs_sync_handlers_and_names_a_stalling_job(
    tmp_path: Path,
) -> None:
    (tmp_path / "hw_jobs.py").write_text(textwrap.dedent(_MODULE))
    env = {k: v for k, v in os.environ.items() if k != "AMQP1Q_URL"}
    async with Broker() as broker:
        url = f"{broker.url}/handlers-cli"
        async with JobQueue.from_url(url) as queue:
            await queue.push(Job("send_email", {"to": "a@b.c"}))
            await queue.push(Job("resize_image", None, id="img-42"))
        process = await start_cli(
            "worker",
            "hw_jobs:registry",
            "--url",
            url,
            "--stall-warning",
            "0.3",
            cwd=tmp_path,
            env=env,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            await _until_file(tmp_path / "resized.txt")
            await _until_file(tmp_path / "sent.txt")
            await asyncio.sleep(0.5)  # a retry, if any, would come now
            process.send_signal(signal.SIGTERM)
            _, err = await asyncio.wait_for(process.communicate(), 20)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        assert process.returncode == 0, err.decode()
        stderr = err.decode()
        assert _text(tmp_path / "sent.txt") == "a@b.c 1\n"  # once: acked, not retried
        assert "the event loop was blocked for about 1." in stderr
        assert "(stall warning: 0.3 s), with job img-42 ('resize_image') in hand" in stderr
        assert len(broker.queue("handlers-cli")) == 0
