"""What the command shows: status lines, counts and tables, as pure text; no terminal needed."""

from __future__ import annotations

import asyncio
import io

import pytest

from amqp1q.cli._bench import Phase, done_line, results_table
from amqp1q.cli._display import (
    RateMeter,
    StatusLine,
    Style,
    bar,
    counts_line,
    duration,
    plain_progress,
    progress_line,
    running_counts,
    table,
    ticking,
    visible_length,
)

PLAIN = Style()  # a log: not live, no colour, ASCII
TERMINAL = Style(live=True, color=True, unicode=True, width=100)


class FakeTerminal(io.StringIO):
    def __init__(self, encoding: str = "utf-8") -> None:
        super().__init__()
        self._encoding = encoding

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self._encoding

    def isatty(self) -> bool:
        return True


def test_style_of_a_pipe_is_plain() -> None:
    style = Style.detect(io.StringIO(), {})
    assert (style.live, style.color) == (False, False)


def test_style_of_a_terminal_is_live_and_coloured_unless_no_color_or_dumb() -> None:
    assert Style.detect(FakeTerminal(), {"TERM": "xterm"}).color
    no_color = Style.detect(FakeTerminal(), {"NO_COLOR": "1"})
    assert no_color.live
    assert not no_color.color
    assert not Style.detect(FakeTerminal(), {"TERM": "dumb"}).color
    # NO_COLOR set but empty does not count (no-color.org)
    assert Style.detect(FakeTerminal(), {"NO_COLOR": ""}).color
    assert Style.detect(FakeTerminal("utf-8"), {}).unicode
    assert not Style.detect(FakeTerminal("ascii"), {}).unicode


def test_duration() -> None:
    assert duration(0) == "0:00"
    assert duration(61.4) == "1:01"
    assert duration(3725) == "1:02:05"
    assert duration(None) == "--:--"
    assert duration(float("nan")) == "--:--"


def test_bar_fills_its_fraction() -> None:
    assert bar(0.5, 10, PLAIN) == "[#####-----]"
    assert bar(1.5, 4, PLAIN) == "[####]"
    assert bar(0.25, 4, Style(unicode=True)) == "█░░░"
    coloured = bar(0.5, 10, TERMINAL)
    assert "\x1b[32m" in coloured
    assert visible_length(coloured) == 10


def test_progress_line_shows_counts_percent_rate_and_eta() -> None:
    line = progress_line("push", 6_000, 10_000, 2.0, TERMINAL)
    assert "6,000/10,000" in line
    assert " 60%" in line
    assert "3,000 jobs/s" in line
    assert "ETA 0:01" in line  # 4,000 left at 3,000/s
    assert visible_length(line) <= TERMINAL.width - 1
    assert line.startswith("push ")


def test_progress_line_without_colour_has_no_escape_codes() -> None:
    for style in (PLAIN, Style(live=True, unicode=True, width=100)):
        line = progress_line("consume", 10, 100, 1.0, style)
        assert "\x1b" not in line
        assert "10/100" in line


@pytest.mark.parametrize("width", [20, 40, 60, 80, 200])
def test_progress_line_fits_the_terminal(width: int) -> None:
    style = Style(live=True, color=True, unicode=True, width=width)
    line = progress_line("consume 2/3", 123_456, 1_000_000, 7.5, style)
    assert visible_length(line) <= width - 1
    assert ("░" in line) == (width >= 80)  # a bar only where there is room for one


def test_plain_progress_is_one_readable_line() -> None:
    assert plain_progress("push", 6_000, 10_000, 2.0) == (
        "push: 6,000/10,000 jobs (60%), 3,000 jobs/s, ETA 0:01"
    )
    assert plain_progress("push", 0, 10, 0.0).endswith("0 jobs/s, ETA --:--")


def test_counts_line() -> None:
    assert counts_line(1_234, "acked", 1_230, 812.4, 12.0) == (
        "received 1,234  acked 1,230  812 jobs/s  0:12"
    )


def test_done_line() -> None:
    assert done_line("pushed", 2_000, 0.25) == "pushed 2,000 jobs in 0.25 s (8,000 jobs/s)"


def test_table_is_aligned_markdown() -> None:
    text = table(["name", "n"], [["a", "1"], ["longer", "1,000"]], right=[False, True])
    lines = text.splitlines()
    assert lines == [
        "| name   |     n |",
        "|--------|------:|",
        "| a      |     1 |",
        "| longer | 1,000 |",
    ]


def test_rate_meter_reports_the_recent_rate() -> None:
    meter = RateMeter(window=5.0)
    assert meter.add(0.0, 0) == 0.0
    assert meter.add(1.0, 100) == 100.0
    for second in range(2, 11):
        meter.add(float(second), 100)  # nothing for nine seconds
    assert meter.add(11.0, 100) == 0.0  # the burst at second 1 has left the window


def test_results_table_has_a_row_per_phase_and_medians() -> None:
    phases = [
        Phase("push", 1, 1_000, 0.5, 0.05, (0.010, 0.020, 0.030, 0.040)),
        Phase("consume", 1, 1_000, 0.25, 0.1),
        Phase("push", 2, 1_000, 1.0, 0.07, (0.050,)),
        Phase("consume", 2, 1_000, 0.75, 0.1),
    ]
    rows = [line.split("|")[1:-1] for line in results_table(phases).splitlines()]
    cells = [[cell.strip() for cell in row] for row in rows]
    assert cells[0] == ["phase", "jobs", "s", "jobs/s", "CPU µs/job", "call p50 ms", "call p99 ms"]
    by_phase = {row[0]: row for row in cells[2:]}
    assert list(by_phase) == [
        "push 1",
        "consume 1",
        "push 2",
        "consume 2",
        "push median",
        "consume median",
    ]
    assert by_phase["push 1"] == ["push 1", "1,000", "0.50", "2,000", "50.0", "20.0", "40.0"]
    assert by_phase["consume 1"][5:] == ["-", "-"]
    assert by_phase["push median"][2:5] == ["0.75", "1,333", "60.0"]
    assert by_phase["push median"][5:] == ["30.0", "50.0"]  # over all five calls
    assert "CPU us/job" in results_table(phases, unicode=False)


def test_one_round_names_phases_plainly() -> None:
    text = results_table([Phase("push", 1, 10, 1.0, 0.0), Phase("consume", 1, 10, 1.0, 0.0)])
    assert "| push " in text
    assert "median" not in text


def test_status_line_in_a_log_writes_whole_lines_without_escapes() -> None:
    stream = io.StringIO()
    status = StatusLine(stream, PLAIN)
    status.show("push: 1/2")
    status.show("push: 2/2")
    status.finish("push: 2 jobs in 1.00 s")
    assert stream.getvalue() == "push: 1/2\npush: 2/2\npush: 2 jobs in 1.00 s\n"


def test_status_line_on_a_terminal_redraws_in_place() -> None:
    stream = FakeTerminal()
    status = StatusLine(stream, Style(live=True, unicode=True))
    status.show("received 10")
    status.show("rec 11")
    assert stream.getvalue() == "\rreceived 10\rrec 11     "  # padded over the longer line
    status.finish()
    assert stream.getvalue().endswith("\r" + " " * 6 + "\r")
    assert "\x1b" not in stream.getvalue()  # \r and spaces only: no cursor codes


@pytest.mark.anyio
async def test_running_counts_in_a_log_end_with_the_totals() -> None:
    stream, output = io.StringIO(), io.StringIO()
    seen = [0, 0]
    async with running_counts(
        lambda: (seen[0], seen[1]), "acked", stream=stream, output=output
    ) as before_output:
        seen[:] = [3, 2]
        before_output()  # nothing to clear in a log
    assert stream.getvalue().startswith("received 3  acked 2  ")
    assert stream.getvalue().count("\n") == 1
    assert output.getvalue() == ""


@pytest.mark.anyio
async def test_running_counts_quiet_shows_nothing() -> None:
    stream = io.StringIO()
    async with running_counts(lambda: (1, 1), "acked", quiet=True, stream=stream):
        pass
    assert stream.getvalue() == ""


@pytest.mark.anyio
async def test_ticking_calls_until_the_block_ends() -> None:
    ticks: list[int] = []
    async with ticking(lambda: ticks.append(1), 0.01):
        await asyncio.sleep(0.1)
    count = len(ticks)
    await asyncio.sleep(0.05)
    assert count >= 3
    assert len(ticks) == count  # stopped with the block
