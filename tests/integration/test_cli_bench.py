"""``amqp1q bench`` and ``amqp1q consume`` as real processes on the embedded broker."""

from __future__ import annotations

import json

import pytest

from amqp1q import Job, JobQueue
from amqp1q.testing import Broker

from ..cli import run_cli, run_cli_async


def _table(out: str) -> dict[str, list[str]]:
    rows = [line.split("|")[1:-1] for line in out.splitlines() if line.startswith("| ")]
    return {cells[0].strip(): [cell.strip() for cell in cells] for cells in rows[1:]}


def test_bench_runs_on_the_embedded_broker_by_default() -> None:
    result = run_cli("bench", "--jobs", "500")
    assert result.returncode == 0, result.stderr
    assert "the embedded broker on 127.0.0.1:" in result.stdout
    assert "in its own process" in result.stdout
    rows = _table(result.stdout)
    assert list(rows) == ["push", "consume"]
    for row in rows.values():
        assert row[1] == "500"
        assert float(row[2]) > 0
        assert float(row[3].replace(",", "")) > 0
        assert float(row[4]) > 0  # CPU per job
    assert float(rows["push"][5]) <= float(rows["push"][6])  # p50 <= p99
    # stderr is a pipe: plain lines, no escape codes
    assert "push: 500 jobs in " in result.stderr
    assert "consume: 500 jobs in " in result.stderr
    assert "\x1b" not in result.stderr
    assert "\r" not in result.stderr


@pytest.mark.anyio
async def test_bench_consumes_every_job_it_pushed() -> None:
    async with Broker() as broker:
        code, out, err = await run_cli_async(
            "bench",
            "--url",
            f"{broker.url}/bench-q",
            "--jobs",
            "500",
            "--producers",
            "2",
            "--consumers",
            "2",
            "--batch",
            "100",
        )
        assert code == 0, err
        assert [row[1] for row in _table(out).values()] == ["500", "500"]
        assert broker.stats_received == 500
        assert len(broker.queue("bench-q")) == 0  # all acked: nothing ready, nothing unsettled


@pytest.mark.anyio
async def test_consume_stdout_is_json_lines_and_stderr_has_counts() -> None:
    async with Broker() as broker:
        url = f"{broker.url}/cli-counts"
        async with JobQueue.from_url(url) as queue:
            receipts = await queue.push_many([Job("mail", {"n": n}) for n in range(3)])
        code, out, err = await run_cli_async("consume", "--url", url, "--count", "3")
        assert code == 0, err
        records = [json.loads(line) for line in out.splitlines()]
        assert [record["id"] for record in records] == [receipt.job_id for receipt in receipts]
        assert [record["payload"] for record in records] == [{"n": 0}, {"n": 1}, {"n": 2}]
        assert err.startswith("received 3  acked 3  ")
        assert "\x1b" not in err
        assert len(broker.queue("cli-counts")) == 0

        async with JobQueue.from_url(url) as queue:
            await queue.push(Job("mail", None))
        code, out, err = await run_cli_async("consume", "--url", url, "--count", "1", "--quiet")
        assert code == 0, err
        assert json.loads(out)["name"] == "mail"
        assert err == ""
