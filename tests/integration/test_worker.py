"""The worker: ``run_worker`` in-process and ``amqp1q worker`` in a subprocess, on real brokers."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from amqp1q import Job, JobQueue, ReceivedJob, Registry, RetryPolicy
from amqp1q.adapters.proton._codec import decode_message
from amqp1q.testing import Broker
from amqp1q.worker import NO_HANDLER, WorkerConfig, run_worker

from ..cli import start_cli
from ..conftest import RABBITMQ_URL
from .test_roadrunner_wire import _roadrunner_message, _send_raw

pytestmark = pytest.mark.anyio

QUEUE = "work"


async def _push(url: str, *jobs: Job) -> None:
    async with JobQueue.from_url(url) as queue:
        await queue.push_many(jobs)


async def _until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"not true within {timeout:g} s")


async def _dead_letters(url: str, count: int) -> list[ReceivedJob]:
    got: list[ReceivedJob] = []
    async with JobQueue.from_url(url) as queue, queue.dead_letter_queue() as dlq:
        async with dlq.consume() as consumer:
            while len(got) < count:
                job = await consumer.receive(timeout=10)
                assert job is not None, f"only {len(got)} of {count} dead letters"
                await job.ack()
                got.append(job)
    return got


class _Running:
    """``run_worker`` in a task, stopped (and its exit code checked) at the end."""

    def __init__(self, registry: Registry, queue: JobQueue, **options: object) -> None:
        self.stop = asyncio.Event()
        self.task = asyncio.ensure_future(
            run_worker(registry, queue, stop=self.stop, **options)  # type: ignore[arg-type]
        )

    async def finish(self) -> int:
        self.stop.set()
        return await asyncio.wait_for(self.task, 20)


# -- run_worker on the embedded broker ----------------------------------------------------------


async def test_handlers_get_the_jobs_named_for_them() -> None:
    seen: list[tuple[str, object]] = []
    registry = Registry()

    @registry.handler("add")
    async def add(job: ReceivedJob) -> None:
        seen.append(("add", job.payload))

    @registry.handler("mul")
    async def mul(job: ReceivedJob) -> None:
        seen.append(("mul", job.payload))

    assert set(registry.handlers) == {"add", "mul"}
    async with Broker() as broker:
        url = f"{broker.url}/{QUEUE}"
        await _push(url, Job("add", 1), Job("mul", 2), Job("add", 3))
        worker = _Running(registry, JobQueue.from_url(url))
        await _until(lambda: len(seen) == 3)
        assert await worker.finish() == 0
        assert sorted(seen, key=str) == [("add", 1), ("add", 3), ("mul", 2)]
        assert len(broker.queue(QUEUE)) == 0


async def test_a_failing_handler_is_retried_then_dead_lettered() -> None:
    attempts: list[int] = []
    registry = Registry()

    @registry.handler("boom")
    async def boom(job: ReceivedJob) -> None:
        attempts.append(job.attempt)
        raise RuntimeError("boom")

    async with Broker() as broker:
        url = f"{broker.url}/{QUEUE}"
        await _push(url, Job("boom"))
        queue = JobQueue.from_url(url, retry=RetryPolicy(max_attempts=2, initial_delay=0))
        worker = _Running(registry, queue)
        dead = await _dead_letters(url, 1)
        assert await worker.finish() == 0
        assert attempts == [1, 2]
        assert dead[0].dead_letter_reason == "max attempts exceeded"
        assert "RuntimeError: boom" in (dead[0].dead_letter_description or "")


async def test_a_handler_over_the_job_timeout_fails_and_is_retried() -> None:
    attempts: list[int] = []
    registry = Registry()

    @registry.handler("slow-once")
    async def slow_once(job: ReceivedJob) -> None:
        attempts.append(job.attempt)
        if job.attempt == 1:
            await asyncio.sleep(30)

    async with Broker() as broker:
        url = f"{broker.url}/{QUEUE}"
        await _push(url, Job("slow-once"))
        queue = JobQueue.from_url(url, retry=RetryPolicy(max_attempts=2, initial_delay=0))
        worker = _Running(registry, queue, job_timeout=0.2)
        await _until(lambda: len(attempts) == 2)
        assert await worker.finish() == 0
        assert attempts == [1, 2]
        assert len(broker.queue(QUEUE)) == 0


async def test_concurrency_bounds_the_handlers_running_at_once() -> None:
    active = 0
    peak = 0
    done = 0
    registry = Registry()

    @registry.handler("sleep")
    async def sleep(job: ReceivedJob) -> None:
        nonlocal active, peak, done
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.05)
        active -= 1
        done += 1

    async with Broker() as broker:
        url = f"{broker.url}/{QUEUE}"
        await _push(url, *(Job("sleep", i) for i in range(20)))
        # A larger prefetch than concurrency: the slots, not the credit, must bound the handlers.
        worker = _Running(registry, JobQueue.from_url(url), concurrency=3, prefetch=10)
        await _until(lambda: done == 20)
        assert await worker.finish() == 0
    assert peak == 3


async def test_groups_run_in_order_per_group_several_groups_at_once() -> None:
    running: set[str] = set()
    peak = 0
    order: dict[str, list[int]] = {}
    registry = Registry()

    @registry.handler("step")
    async def step(job: ReceivedJob) -> None:
        nonlocal peak
        assert job.group is not None
        assert job.group not in running
        running.add(job.group)
        peak = max(peak, len(running))
        await asyncio.sleep(0.01)
        order.setdefault(job.group, []).append(job.payload)
        running.discard(job.group)

    async with Broker() as broker:
        url = f"{broker.url}/{QUEUE}"
        await _push(url, *(Job("step", i, group=f"g{i % 3}") for i in range(30)))
        worker = _Running(registry, JobQueue.from_url(url), concurrency=8, groups=3)
        await _until(lambda: sum(map(len, order.values())) == 30)
        assert await worker.finish() == 0
    assert order == {f"g{g}": list(range(g, 30, 3)) for g in range(3)}
    assert peak == 3  # every group at once, never two of one group


async def test_cli_worker_groups(tmp_path: Path) -> None:
    project = _project(tmp_path)
    async with Broker() as broker:
        url = f"{broker.url}/{QUEUE}"
        await _push(url, *(Job("fast", i, group=f"g{i % 2}") for i in range(6)))
        process = await _start_worker(project, url, "--groups", "2")
        code, err = await _sigterm_once(process, lambda: len(_lines(project)) == 6, 15)
        assert code == 0, err
        assert sorted(_lines(project)) == [f"fast {i}" for i in range(6)]
        assert len(broker.queue(QUEUE)) == 0


async def test_unknown_names_are_dead_lettered_unless_there_is_a_default() -> None:
    registry = Registry()
    others: list[str] = []

    @registry.handler("known")
    async def known(job: ReceivedJob) -> None:
        pass

    async with Broker() as broker:
        url = f"{broker.url}/{QUEUE}"
        await _push(url, Job("mystery"))
        worker = _Running(registry, JobQueue.from_url(url))
        dead = await _dead_letters(url, 1)
        assert await worker.finish() == 0
        assert dead[0].name == "mystery"
        assert dead[0].dead_letter_reason == NO_HANDLER

        @registry.default
        async def fallback(job: ReceivedJob) -> None:
            others.append(job.name)

        await _push(url, Job("mystery-2"))
        worker = _Running(registry, JobQueue.from_url(url))
        await _until(lambda: others == ["mystery-2"])
        assert await worker.finish() == 0
        assert len(broker.queue(QUEUE)) == 0


async def test_stop_past_the_grace_cancels_handlers_and_releases_their_jobs() -> None:
    started = asyncio.Event()
    registry = Registry()

    @registry.handler("forever")
    async def forever(job: ReceivedJob) -> None:
        started.set()
        await asyncio.sleep(3600)

    async with Broker() as broker:
        url = f"{broker.url}/{QUEUE}"
        await _push(url, Job("forever"), *(Job("forever") for _ in range(3)))
        worker = _Running(registry, JobQueue.from_url(url), concurrency=1, grace=0.2)
        await asyncio.wait_for(started.wait(), 10)
        assert await worker.finish() == 0
        # Released, not retried: every job is back with no attempt counted.
        async with JobQueue.from_url(url) as queue, queue.consume(prefetch=10) as consumer:
            for _ in range(4):
                job = await consumer.receive(timeout=5)
                assert job is not None
                assert job.attempt == 1
                await job.ack()


# -- amqp1q worker in a subprocess --------------------------------------------------------------

_MODULE = """
import asyncio
import pathlib

from amqp1q import Registry

HERE = pathlib.Path(__file__).parent
registry = Registry()


def note(line):
    with (HERE / "done.txt").open("a") as out:
        out.write(line + "\\n")


@registry.handler("fast")
async def fast(job):
    note(f"fast {job.payload}")


@registry.handler("slow")
async def slow(job):
    (HERE / "slow-started").write_text(str(job.attempt))
    await asyncio.sleep(float(job.payload))
    note("slow")
"""


def _project(tmp_path: Path) -> Path:
    (tmp_path / "wk_jobs.py").write_text(textwrap.dedent(_MODULE))
    return tmp_path


def _lines(project: Path) -> list[str]:
    done = project / "done.txt"
    return done.read_text().splitlines() if done.exists() else []


async def _start_worker(project: Path, url: str, *args: str) -> asyncio.subprocess.Process:
    return await _start(project, "wk_jobs:registry", "--url", url, *args)


async def _start(project: Path, *args: str) -> asyncio.subprocess.Process:
    """``amqp1q worker ARGS`` in ``project``, without ``$AMQP1Q_URL``."""
    env = {k: v for k, v in os.environ.items() if k != "AMQP1Q_URL"}
    return await start_cli("worker", *args, cwd=project, env=env, stderr=asyncio.subprocess.PIPE)


async def _exit(process: asyncio.subprocess.Process, timeout: float) -> tuple[int, str]:
    _, err = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode is not None
    return process.returncode, err.decode()


async def _sigterm_once(
    process: asyncio.subprocess.Process, ready: Callable[[], bool], timeout: float
) -> tuple[int, str]:
    """Wait until ``ready()``, send SIGTERM, return the exit code and stderr (kill if stuck)."""
    try:
        await _until(ready)
        process.send_signal(signal.SIGTERM)
        return await _exit(process, timeout)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_cli_worker_processes_jobs_and_drains_on_sigterm(tmp_path: Path) -> None:
    project = _project(tmp_path)
    async with Broker() as broker:
        url = f"{broker.url}/{QUEUE}"
        await _push(url, *(Job("fast", i) for i in range(3)))
        process = await _start_worker(project, url, "--concurrency", "4", "--grace", "15")
        try:
            await _until(lambda: len(_lines(project)) == 3)
            await _push(url, Job("slow", 1.0))
            await _until(lambda: (project / "slow-started").exists())
            process.send_signal(signal.SIGTERM)
            code, err = await _exit(process, 15)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        assert code == 0, err
        assert "SIGTERM: draining" in err
        assert sorted(_lines(project)) == ["fast 0", "fast 1", "fast 2", "slow"]
        assert len(broker.queue(QUEUE)) == 0


async def test_cli_worker_past_the_grace_releases_the_running_job(tmp_path: Path) -> None:
    project = _project(tmp_path)
    async with Broker() as broker:
        url = f"{broker.url}/{QUEUE}"
        await _push(url, Job("slow", 3600))
        process = await _start_worker(project, url, "--grace", "0.5")
        code, err = await _sigterm_once(process, lambda: (project / "slow-started").exists(), 10)
        assert code == 0, err
        async with JobQueue.from_url(url) as queue, queue.consume() as consumer:
            job = await consumer.receive(timeout=5)
            assert job is not None
            assert (job.name, job.attempt) == ("slow", 1)
            await job.ack()


async def test_cli_worker_second_sigint_stops_at_once_with_130(tmp_path: Path) -> None:
    project = _project(tmp_path)
    async with Broker() as broker:
        url = f"{broker.url}/{QUEUE}"
        await _push(url, Job("slow", 3600))
        process = await _start_worker(project, url, "--grace", "60")
        try:
            await _until(lambda: (project / "slow-started").exists())
            process.send_signal(signal.SIGINT)
            await asyncio.sleep(0.3)
            process.send_signal(signal.SIGINT)
            code, err = await _exit(process, 10)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        assert code == 130, err
        async with JobQueue.from_url(url) as queue, queue.consume() as consumer:
            job = await consumer.receive(timeout=5)
            assert job is not None
            assert job.name == "slow"
            await job.ack()


_RR_YAML = """
version: "3"
server:
  command: "php worker.php"
rpc:
  listen: tcp://127.0.0.1:6001
amqp1:
  addr: "{addr}"
jobs:
  num_pollers: 4
  pool:
    num_workers: 2
  consume: ["emails", "reports"]
  pipelines:
    emails:
      driver: amqp1
      config:
        queue: "{queue}"
        prefetch: 4
        durable: true
        exchange_type: direct{extra}
    reports:
      driver: amqp1
      config:
        queue: reports
amqp1q:
  registry: wk_jobs:registry
"""


def _rr_yaml(project: Path, addr: str, queue: str, extra: str = "") -> Path:
    path = project / ".rr.yaml"
    path.write_text(_RR_YAML.format(addr=addr, queue=queue, extra=extra))
    return path


async def test_cli_worker_runs_a_roadrunner_pipeline_from_rr_yaml(tmp_path: Path) -> None:
    project = _project(tmp_path)
    async with Broker() as broker:
        config = WorkerConfig.load(_rr_yaml(project, f"{broker.url}/", QUEUE), pipeline="emails")
        async with config.job_queue() as queue:  # the same file: RoadRunner's envelope
            await queue.push_many([Job("fast", str(i).encode()) for i in range(3)])
        stored = list(broker.queue(QUEUE).messages())
        assert json.loads(decode_message(stored[0].payload).body)["header"]["rr_job"] == "fast"
        process = await _start(project, "--config", ".rr.yaml", "--pipeline", "emails")
        code, err = await _sigterm_once(process, lambda: len(_lines(project)) == 3, 15)
        assert code == 0, err
        assert "ignored (RoadRunner only): version, server, rpc, jobs.num_pollers" in err
        assert sorted(_lines(project)) == ["fast b'0'", "fast b'1'", "fast b'2'"]
        assert len(broker.queue(QUEUE)) == 0


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("wk_jobs", "expected MODULE:ATTR"),
        ("no_such_module_xyz:registry", "cannot import 'no_such_module_xyz'"),
        ("wk_jobs:missing", "has no attribute 'missing'"),
        ("wk_jobs:HERE", "not an amqp1q.Registry"),
    ],
)
async def test_cli_worker_bad_registry_is_a_usage_error(
    tmp_path: Path, spec: str, message: str
) -> None:
    project = _project(tmp_path)
    process = await _start(project, spec, "--url", "amqp://127.0.0.1:1/q")
    code, err = await _exit(process, 30)
    assert code == 2
    assert message in err


# -- RabbitMQ -----------------------------------------------------------------------------------


@pytest.mark.rabbitmq
async def test_cli_worker_on_rabbitmq(tmp_path: Path, rabbitmq_queue: str) -> None:
    project = _project(tmp_path)
    url = f"{RABBITMQ_URL}/{rabbitmq_queue}"
    await _push(url, *(Job("fast", i) for i in range(5)))
    process = await _start_worker(project, url, "--concurrency", "2")
    code, err = await _sigterm_once(process, lambda: len(_lines(project)) == 5, 20)
    assert code == 0, err
    assert sorted(_lines(project)) == [f"fast {i}" for i in range(5)]


@pytest.mark.rabbitmq
async def test_cli_worker_rr_yaml_on_rabbitmq_takes_roadrunner_jobs(
    tmp_path: Path, rabbitmq_queue: str
) -> None:
    project = _project(tmp_path)
    path = _rr_yaml(project, f"{RABBITMQ_URL}/", rabbitmq_queue)
    config = WorkerConfig.load(path, pipeline="emails")
    assert (config.queue, config.prefetch, config.roadrunner) == (rabbitmq_queue, 4, True)
    header = {"rr_id": "rr-1", "rr_job": "fast", "rr_pipeline": "emails", "rr_priority": 10}
    messages = [
        _roadrunner_message({**header, "rr_headers": {"tenant": ["a"]}}, "by-hand"),
        _roadrunner_message({**header, "rr_id": "rr-2"}, "second"),
    ]
    await asyncio.to_thread(_send_raw, RABBITMQ_URL, f"/amq/queue/{rabbitmq_queue}", messages)
    process = await _start(project, "--config", str(path), "--pipeline", "emails")
    code, err = await _sigterm_once(process, lambda: len(_lines(project)) == 2, 20)
    assert code == 0, err
    assert "ignored (RoadRunner only)" in err
    assert sorted(_lines(project)) == ["fast b'by-hand'", "fast b'second'"]


@pytest.mark.rabbitmq
async def test_roadrunner_jobs_pushed_from_the_config_read_back_on_rabbitmq(
    tmp_path: Path, rabbitmq_queue: str
) -> None:
    path = _rr_yaml(tmp_path, f"{RABBITMQ_URL}/", rabbitmq_queue)
    config = WorkerConfig.load(path, pipeline="emails")
    async with config.job_queue() as queue:
        await queue.push(Job("fast", b"pushed"))
        async with queue.consume() as consumer:
            job = await consumer.receive(timeout=10)
            assert job is not None
            await job.release()
    assert (job.name, job.payload) == ("fast", b"pushed")
