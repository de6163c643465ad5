"""``amqp1q bench`` and ``consume``'s running counts, in-process on memory queues."""

from __future__ import annotations

import json

import pytest

from amqp1q import Job, JobQueue
from amqp1q.cli import main
from amqp1q.cli._bench import BenchAborted, Plan, run


def _table(out: str) -> dict[str, list[str]]:
    rows = [line.split("|")[1:-1] for line in out.splitlines() if line.startswith("| ")]
    return {cells[0].strip(): [cell.strip() for cell in cells] for cells in rows[1:]}


def test_bench_prints_a_table_per_round_and_medians(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["bench", "--url", "memory://bench/q", "--jobs", "300", "--batch", "100"]
    argv += ["--rounds", "2", "--producers", "2", "--consumers", "3", "--size", "16"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    rows = _table(captured.out)
    assert list(rows) == [
        "push 1",
        "consume 1",
        "push 2",
        "consume 2",
        "push median",
        "consume median",
    ]
    for name, row in rows.items():
        assert row[1] == "300", name
        assert float(row[3].replace(",", "")) > 0, name
    assert rows["push 1"][5] != "-"  # push calls were timed
    assert rows["consume 1"][5] == "-"
    assert "2 producers; 3 consumers with prefetch 100; 2 rounds" in captured.out
    # stderr is not a terminal here: whole lines, no escape codes, no carriage returns
    assert "push 1/2: 300 jobs in " in captured.err
    assert "consume 2/2: 300 jobs in " in captured.err
    assert "\x1b" not in captured.err
    assert "\r" not in captured.err
    # every job came back: the queue is empty now
    assert main(["consume", "--url", "memory://bench/q", "--timeout", "0.1", "-q"]) == 0
    assert capsys.readouterr().out == ""


def test_bench_refuses_a_queue_that_is_not_empty(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["push", "--url", "memory://bench/busy", "--name", "real-work"]) == 0
    job_id = capsys.readouterr().out.strip()
    assert main(["bench", "--url", "memory://bench/busy", "--jobs", "10"]) == 1
    captured = capsys.readouterr()
    assert "is not empty" in captured.err
    assert "| push" not in captured.out
    # the job that was there is still there, and no bench job was left behind
    assert main(["consume", "--url", "memory://bench/busy", "--timeout", "0.1", "-q"]) == 0
    assert [json.loads(line)["id"] for line in capsys.readouterr().out.splitlines()] == [job_id]


def test_consume_keeps_stdout_pure_json_and_counts_on_stderr(
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = "memory://counts/q"
    assert main(["push", "--url", url, "--name", "mail", "--payload", "1", "--count", "3"]) == 0
    ids = capsys.readouterr().out.split()
    assert main(["consume", "--url", url, "--count", "3"]) == 0
    captured = capsys.readouterr()
    assert [json.loads(line)["id"] for line in captured.out.splitlines()] == ids
    assert captured.err.startswith("received 3  acked 3  ")
    assert "\x1b" not in captured.err

    assert main(["push", "--url", url, "--name", "mail", "--count", "2"]) == 0
    capsys.readouterr()
    assert main(["consume", "--url", url, "--settle", "release", "--count", "2"]) == 0
    assert capsys.readouterr().err.startswith("received 2  released 2  ")
    assert main(["consume", "--url", url, "--count", "2", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 2
    assert captured.err == ""


@pytest.mark.anyio
async def test_a_foreign_job_met_while_consuming_stops_the_run_and_is_kept() -> None:
    async with JobQueue.from_url("memory://bench/foreign") as queue:
        await queue.push(Job("someone-else", b"x", id="not-a-bench-job"))
        with pytest.raises(BenchAborted, match="not-a-bench-job"):
            await run(queue, Plan(jobs=5, batch=2), check_empty=False)
        async with queue.consume() as consumer:
            kept = await consumer.receive(timeout=1)
            assert kept is not None
            assert kept.id == "not-a-bench-job"
            assert kept.attempt == 1  # released, not failed
            await kept.ack()
