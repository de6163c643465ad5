"""The ``amqp1q`` command, run in-process on memory queues."""

from __future__ import annotations

import argparse
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from amqp1q.cli import _parser, main

from ..cli import AMQP1Q, run_cli


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
    # --queue, as stats/peek/replay/purge take it: another queue of the same namespace
    assert main(["push", "--url", "memory://cli/q", "--queue", "other", "--name", "o"]) == 0
    (other_id,) = capsys.readouterr().out.split()
    assert main(["consume", "--url", "memory://cli/q", "--timeout", "0.2"]) == 0
    assert capsys.readouterr().out == ""  # not in q
    assert main(["consume", "--url", "memory://cli/", "--queue", "other", "--count", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["id"] == other_id


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


def _options(parser: argparse.ArgumentParser, path: str = "amqp1q") -> Iterator[tuple[str, Any]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _options(sub, f"{path} {name}")
        elif not isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
            yield path, action


def test_every_option_of_every_command_has_help() -> None:
    missing = [
        f"{path} {'/'.join(action.option_strings) or action.dest}"
        for path, action in _options(_parser())
        if not action.help
    ]
    assert missing == []


def test_repeatable_options_say_so(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["push", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--header K=V a header (repeat for more" in help_text
    assert "--priority PRIORITY 0-255" in help_text


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["consume", "--prefetch", "abc"], "--prefetch: expected a whole number >= 1, got 'abc'"),
        (["consume", "--count", "0"], "--count: expected a whole number >= 1, got '0'"),
        (["worker", "--grace", "soon"], "--grace: expected a number of seconds >= 0, got 'soon'"),
        (["worker", "--job-timeout", "nan"], "expected a number of seconds >= 0, got 'nan'"),
    ],
)
def test_bad_numbers_say_what_is_expected(
    argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main([*argv, "--url", "memory://q"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert expected in err
    assert "_positive" not in err
    assert "_seconds" not in err


def test_demo_prints_its_result_once_with_stderr_on_stdout() -> None:
    """``amqp1q demo 2>&1``: one line per phase, not one from stdout and one from stderr."""
    result = subprocess.run(
        [*AMQP1Q, "demo", "--url", "memory://d/once", "--jobs", "300"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout
    results = [line for line in result.stdout.splitlines() if " jobs in " in line]
    assert len(results) == 2, result.stdout
    assert "pushed 300 jobs in " in results[0]
    assert "consumed 300 jobs in " in results[1]
