"""A worker's several queues and processes, as configured: ``--queue a --queue b``,
``queues`` in amqp1q's file, a RoadRunner file's ``jobs.consume`` and ``jobs.pool``, and the
pool's child command line (no network)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from amqp1q.cli import main
from amqp1q.cli._pool import child_argv
from amqp1q.worker import QueueSpec, WorkerConfig

from .test_workerconfig import _captured_serve

RR_YAML = """
amqp1:
  addr: "amqp://rabbit:5672/"
jobs:
  pool:
    num_workers: 3
    destroy_timeout: 45s
    max_jobs: 100
  consume: ["emails", "reports"]
  pipelines:
    emails:
      driver: amqp1
      config: {queue: emails, prefetch: 20, priority: 5}
    reports:
      driver: amqp1
      queue: reports
      prefetch: 2
    unused:
      driver: amqp1
      queue: unused
amqp1q:
  registry: app.jobs:registry
"""


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_a_roadrunner_file_consumes_every_pipeline_it_lists(tmp_path: Path) -> None:
    config = WorkerConfig.load(_write(tmp_path, ".rr.yaml", RR_YAML))
    assert config.queue_specs() == (
        QueueSpec(queue="emails", prefetch=20, priority=5, pipeline="emails"),
        QueueSpec(queue="reports", prefetch=2, pipeline="reports"),
    )
    assert config.resolve_url() == "amqp://rabbit:5672/"
    assert (config.processes, config.grace) == (3, 45.0)
    assert "jobs.pool.max_jobs" in config.ignored
    one = WorkerConfig.load(_write(tmp_path, ".rr.yaml", RR_YAML), pipeline="reports")
    assert one.queue_specs() == (QueueSpec(queue="reports", prefetch=2),)


def test_amqp1q_s_own_file_lists_queues(tmp_path: Path) -> None:
    text = 'queues = ["a", {queue = "b", prefetch = 3, auto_ack = true}]\nprocesses = 2\n'
    config = WorkerConfig.load(_write(tmp_path, "w.toml", text))
    assert config.queue_specs() == (
        QueueSpec(queue="a"),
        QueueSpec(queue="b", prefetch=3, auto_ack=True),
    )
    assert config.processes == 2
    assert WorkerConfig(queue="q", prefetch=4).queue_specs() == (QueueSpec(queue="q", prefetch=4),)


def test_a_queue_s_own_settings_go_over_the_worker_s() -> None:
    worker = {"wire_format": "roadrunner", "priority": 1, "auto_ack": False}
    spec = QueueSpec(queue="emails", priority=5, prefetch=9, pipeline="emails")
    assert spec.settings(worker) == {
        "wire_format": "roadrunner",
        "priority": 5,
        "auto_ack": False,
        "queue": "emails",
        "pipeline": "emails",
    }
    assert "pipeline" not in spec.settings({"wire_format": "amqp1q"})


def test_queue_flags_name_the_queues(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _captured_serve(monkeypatch)
    argv = ["worker", "app:registry", "--url", "memory://", "--queue", "a", "--queue", "b"]
    assert main(argv) == 0
    assert seen["queues"] == (QueueSpec(queue="a"), QueueSpec(queue="b"))
    assert main(["worker", "app:registry", "--url", "memory://", "--queue", "a"]) == 0
    assert seen["options"]["queue"] == "a"


def test_the_flag_beats_the_file_s_queues(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _captured_serve(monkeypatch)
    path = _write(tmp_path, ".rr.yaml", RR_YAML.replace("num_workers: 3", "num_workers: 1"))
    assert main(["worker", "--config", str(path)]) == 0
    assert [spec.queue for spec in seen["queues"]] == ["emails", "reports"]
    seen.clear()
    assert main(["worker", "--config", str(path), "--queue", "other"]) == 0
    assert "queues" not in seen
    assert seen["options"]["queue"] == "other"


def test_a_pool_s_children_run_one_process_each() -> None:
    argv = ["worker", "app:registry", "--processes", "4", "--queue", "a"]
    assert child_argv(argv) == ["worker", "app:registry", "--queue", "a", "--processes", "1"]
    assert child_argv(["worker", "--processes=2"]) == ["worker", "--processes", "1"]
