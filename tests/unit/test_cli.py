"""The ``amqp1q`` command, run in-process on memory queues."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from amqp1q.cli import main

from ..cli import run_cli


def test_demo_reports_throughput(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--url", "memory://demo/jobs", "--jobs", "2000", "--size", "64"]) == 0
    out = capsys.readouterr().out
    assert "2,000 jobs of 64 bytes" in out
    assert "pushed 2,000 jobs" in out
    assert "consumed 2,000 jobs" in out
    assert "jobs/s" in out


def test_push_then_consume_in_one_process(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # memory:// queues live in one process, so run push and consume against the same broker
    # by running both through main() here.
    assert (
        main(
            [
                "push",
                "--url",
                "memory://cli/q",
                "--name",
                "mail",
                "--payload",
                '{"to": "x"}',
                "--header",
                "tenant=a",
                "--count",
                "2",
            ]
        )
        == 0
    )
    ids = capsys.readouterr().out.split()
    assert len(ids) == 2
    assert main(["consume", "--url", "memory://cli/q", "--count", "2"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["id"] for line in lines] == ids
    assert lines[0] == {
        "id": ids[0],
        "name": "mail",
        "attempt": 1,
        "headers": {"tenant": "a"},
        "payload": {"to": "x"},
    }
    file = tmp_path / "body.bin"
    file.write_bytes(b"raw\x00")
    assert (
        main(["push", "--url", "memory://cli/q", "--name", "f", "--payload-file", str(file)]) == 0
    )
    capsys.readouterr()
    assert main(["consume", "--url", "memory://cli/q", "--timeout", "0.2"]) == 0
    assert json.loads(capsys.readouterr().out)["payload"] == "raw\x00"


def test_errors_exit_1_without_secrets(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["push", "--url", "amqp://user:hunter2@host:nope/q", "--name", "x"]) == 1
    err = capsys.readouterr().err
    assert "InvalidURL" in err
    assert "hunter2" not in err


def test_usage_errors_exit_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AMQP1Q_URL", raising=False)
    with pytest.raises(SystemExit) as info:
        main(["push", "--name", "x"])
    assert info.value.code == 2
    with pytest.raises(SystemExit) as info:
        main(["push", "--url", "memory://q", "--name", "x", "--payload", "{bad"])
    assert info.value.code == 2
    assert main([]) == 2


def test_python_dash_m_runs_the_cli() -> None:
    result = run_cli("demo", "--url", "memory://d/jobs", "--jobs", "100")
    assert result.returncode == 0, result.stderr
    assert "consumed 100 jobs" in result.stdout
