"""``amqp1q worker`` on several queues (one connection) and as a pool of processes, run as a
user runs it, against the embedded broker: drained on SIGTERM, a killed process restarted,
nothing lost."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from amqp1q import Job, JobQueue
from amqp1q.testing import Broker

from ..cli import start_cli

pytestmark = pytest.mark.anyio

MODULE = """
import asyncio, os
from amqp1q import Registry

registry = Registry()

@registry.handler("work")
async def work(job):
    await asyncio.sleep(job.payload.get("seconds", 0))
    with open(f"done-{os.getpid()}.txt", "a") as done:
        done.write(f"{job.queue} {job.payload['n']}\\n")
"""


def _project(tmp_path: Path) -> Path:
    (tmp_path / "pool_jobs.py").write_text(textwrap.dedent(MODULE))
    return tmp_path


def _done(project: Path) -> list[str]:
    return [line for path in project.glob("done-*.txt") for line in path.read_text().splitlines()]


async def _until(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not true within {timeout:g} s")


async def _worker(project: Path, *args: str) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if k != "AMQP1Q_URL"}
    return await start_cli(
        "worker", "pool_jobs:registry", *args, cwd=project, env=env, stderr=asyncio.subprocess.PIPE
    )


async def _stop(process: asyncio.subprocess.Process, timeout: float = 30) -> tuple[int, str]:
    try:
        process.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(process.communicate(), timeout)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, err.decode()


async def test_a_worker_drains_three_queues_on_one_connection(tmp_path: Path) -> None:
    project = _project(tmp_path)
    async with Broker() as broker:
        for name in ("a", "b", "c"):
            async with JobQueue.from_url(broker.url, queue=name) as queue:
                await queue.push_many([Job("work", {"n": i}) for i in range(5)])
        args = ["--url", broker.url, "--queue", "a", "--queue", "b", "--queue", "c"]
        process = await _worker(project, *args, "--concurrency", "4", "--prefetch", "2")
        await _until(lambda: len(_done(project)) == 15)
        assert broker.connection_count == 1
        code, err = await _stop(process)
        assert code == 0, err
        assert "(a, b, c), concurrency 4" in err
        assert sorted(_done(project)) == sorted(f"{q} {i}" for q in "abc" for i in range(5))
        assert all(len(broker.queue(name)) == 0 for name in "abc")


async def test_a_killed_pool_process_is_restarted_and_nothing_is_lost(tmp_path: Path) -> None:
    project = _project(tmp_path)
    jobs = 60
    async with Broker() as broker:
        url = f"{broker.url}/pool"
        async with JobQueue.from_url(url) as queue:
            await queue.push_many([Job("work", {"n": i, "seconds": 0.05}) for i in range(jobs)])
        process = await _worker(project, "--url", url, "--processes", "2", "--prefetch", "5")
        assert process.stderr is not None
        seen: list[str] = []

        async def read() -> None:
            assert process.stderr is not None
            async for line in process.stderr:
                seen.append(line.decode())  # noqa: PERF401 - read as it comes

        reading = asyncio.ensure_future(read())
        try:
            await _until(lambda: len(_done(project)) >= 10 and broker.connection_count == 2)
            pids = [int(p) for p in re.findall(r"started \(pid (\d+)\)", "".join(seen))]
            os.kill(pids[0], signal.SIGKILL)  # mid-job: it held up to 5 jobs, unsettled
            await _until(lambda: "restart" in "".join(seen))
            await _until(lambda: len({line for line in _done(project)}) == jobs)
            await _until(lambda: len(re.findall(r"started \(pid", "".join(seen))) == 3)
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.wait(), 30)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
            await asyncio.wait_for(reading, 10)
        err = "".join(seen)
        assert process.returncode == 1, err  # one process failed (it was killed)
        assert f"(pid {pids[0]}) ended with signal 9" in err
        assert {line.split()[1] for line in _done(project)} == {str(i) for i in range(jobs)}
        assert len(broker.queue("pool")) == 0
        assert broker.connection_count == 0
