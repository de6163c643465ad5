"""What the command shows while it works: a status line, running counts, and tables.

On a terminal a :class:`StatusLine` redraws one line in place (``\\r`` and padding, never a
cursor-movement code), with a coloured bar unless ``NO_COLOR`` is set or ``TERM`` is ``dumb``. In
a log or a pipe it writes whole plain lines instead, with no escape sequence at all. The text
itself comes from pure functions (numbers in, a string out), so it is tested without a terminal.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import os
import re
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import TextIO

import attrs

__all__ = [
    "StatusLine",
    "Style",
    "bar",
    "counts_line",
    "duration",
    "plain_progress",
    "progress_line",
    "running_counts",
    "table",
    "ticking",
    "visible_length",
]

#: Seconds between redraws on a terminal, and between plain lines in a log.
LIVE_EVERY = 0.1
PLAIN_EVERY = 2.0

_SGR = re.compile(r"\x1b\[[0-9;]*m")
_GREEN, _DIM, _RESET = "\x1b[32m", "\x1b[2m", "\x1b[0m"


@attrs.frozen
class Style:
    """How a stream may be written to: redrawn in place, coloured, in Unicode, how wide."""

    live: bool = False
    color: bool = False
    unicode: bool = False
    width: int = 80

    @classmethod
    def detect(cls, stream: TextIO, environ: Mapping[str, str] | None = None) -> Style:
        env = os.environ if environ is None else environ
        try:
            live = stream.isatty()
        except (AttributeError, ValueError):  # no isatty, or closed
            live = False
        width = 80
        if live:
            with contextlib.suppress(AttributeError, OSError, ValueError):
                width = os.get_terminal_size(stream.fileno()).columns or 80
        return cls(
            live=live,
            color=live and not env.get("NO_COLOR") and env.get("TERM") != "dumb",
            unicode=_is_utf8(getattr(stream, "encoding", None)),
            width=max(width, 20),
        )


def _is_utf8(encoding: str | None) -> bool:
    try:
        return codecs.lookup(encoding or "ascii").name == "utf-8"
    except LookupError:
        return False


# -- text (pure) ---------------------------------------------------------------------------------


def visible_length(text: str) -> int:
    """Columns ``text`` takes on a terminal: its length without colour codes."""
    return len(_SGR.sub("", text))


def duration(seconds: float | None) -> str:
    """``m:ss`` or ``h:mm:ss``; ``--:--`` when unknown."""
    if seconds is None or seconds != seconds or seconds < 0 or seconds > 360_000:
        return "--:--"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def bar(fraction: float, width: int, style: Style) -> str:
    """A bar ``width`` columns wide, ``fraction`` (0..1) of it filled."""
    fraction = min(max(fraction, 0.0), 1.0)
    filled = int(fraction * width)
    full, empty = ("█", "░") if style.unicode else ("#", "-")
    done, left = full * filled, empty * (width - filled)
    if style.color:
        return f"{_GREEN}{done}{_RESET}{_DIM}{left}{_RESET}"
    return done + left if style.unicode else f"[{done}{left}]"


def _rate(done: int, elapsed: float) -> float:
    return done / elapsed if elapsed > 0 else 0.0


def _eta(done: int, total: int, elapsed: float) -> float | None:
    rate = _rate(done, elapsed)
    return (total - done) / rate if rate > 0 else None


def progress_line(label: str, done: int, total: int, elapsed: float, style: Style) -> str:
    """The live line: ``push ██████░░░░ 6,000/10,000  60%  8,512 jobs/s  ETA 0:01``."""
    fraction = done / total if total else 1.0
    facts = (
        f"{done:,}/{total:,} {fraction:4.0%}  {_rate(done, elapsed):,.0f} jobs/s  "
        f"ETA {duration(_eta(done, total, elapsed))}"
    )
    room = style.width - 1 - len(label) - len(facts) - 2
    width = min(room - (0 if style.unicode else 2), 30)
    if width < 8:  # too narrow for a bar: the facts alone, cut to fit
        return f"{label} {facts}"[: style.width - 1]
    return f"{label} {bar(fraction, width, style)} {facts}"


def plain_progress(label: str, done: int, total: int, elapsed: float) -> str:
    """A log line: ``push: 6,000/10,000 jobs (60%), 8,512 jobs/s, ETA 0:01``."""
    fraction = done / total if total else 1.0
    return (
        f"{label}: {done:,}/{total:,} jobs ({fraction:.0%}), {_rate(done, elapsed):,.0f} jobs/s, "
        f"ETA {duration(_eta(done, total, elapsed))}"
    )


def counts_line(received: int, settled_as: str, settled: int, rate: float, elapsed: float) -> str:
    """``amqp1q consume``'s counts: ``received 1,234  acked 1,230  812 jobs/s  0:12``."""
    return (
        f"received {received:,}  {settled_as} {settled:,}  {rate:,.0f} jobs/s  {duration(elapsed)}"
    )


def table(header: Sequence[str], rows: Sequence[Sequence[str]], *, right: Sequence[bool]) -> str:
    """A Markdown table with padded columns: aligned on a terminal, pasteable into a document."""
    cells = [list(header), *(list(row) for row in rows)]
    widths = [max(3, *(len(row[i]) for row in cells)) for i in range(len(header))]

    def line(row: Sequence[str]) -> str:
        padded = (
            cell.rjust(width) if flush else cell.ljust(width)
            for cell, width, flush in zip(row, widths, right, strict=True)
        )
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join(
        "-" * (width + 1) + ":" if flush else "-" * (width + 2)
        for width, flush in zip(widths, right, strict=True)
    )
    return "\n".join([line(cells[0]), rule + "|", *(line(row) for row in cells[1:])])


class RateMeter:
    """The rate over roughly the last ``window`` seconds, from (time, count) samples."""

    def __init__(self, window: float = 5.0) -> None:
        self.window = window
        self._samples: deque[tuple[float, int]] = deque()

    def add(self, now: float, count: int) -> float:
        samples = self._samples
        samples.append((now, count))
        while len(samples) > 2 and now - samples[1][0] >= self.window:
            samples.popleft()
        first_time, first_count = samples[0]
        return (count - first_count) / (now - first_time) if now > first_time else 0.0


# -- output --------------------------------------------------------------------------------------


class StatusLine:
    """One line of status on ``stream``: redrawn in place when live, whole lines otherwise."""

    def __init__(self, stream: TextIO, style: Style | None = None) -> None:
        self.stream = stream
        self.style = Style.detect(stream) if style is None else style
        self._shown = 0  # columns of the live line now on screen

    @property
    def live(self) -> bool:
        return self.style.live

    @property
    def every(self) -> float:
        """Seconds between updates worth showing: fast in place, slow in a log."""
        return LIVE_EVERY if self.live else PLAIN_EVERY

    def show(self, text: str) -> None:
        if self.live:
            width = visible_length(text)
            self.stream.write("\r" + text + " " * max(0, self._shown - width))
            self._shown = width
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def clear(self) -> None:
        """Take the live line off the screen (before other output, or at the end)."""
        if self._shown:
            self.stream.write("\r" + " " * self._shown + "\r")
            self.stream.flush()
            self._shown = 0

    def finish(self, text: str | None = None) -> None:
        """Clear the live line; then write ``text``, if any, as a line of its own."""
        self.clear()
        if text is not None:
            self.stream.write(text + "\n")
            self.stream.flush()


@contextlib.asynccontextmanager
async def ticking(tick: Callable[[], None], every: float) -> AsyncIterator[None]:
    """Call ``tick()`` every ``every`` seconds while the block runs (from a task of its own)."""

    async def loop() -> None:
        while True:
            await asyncio.sleep(every)
            tick()

    task = asyncio.get_running_loop().create_task(loop())
    try:
        yield
    finally:
        task.cancel()
        # Let it end without awaiting it: awaiting could swallow a cancellation meant for us.


@contextlib.asynccontextmanager
async def running_counts(
    sample: Callable[[], tuple[int, int]],
    settled_as: str,
    *,
    quiet: bool = False,
    stream: TextIO | None = None,
    output: TextIO | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> AsyncIterator[Callable[[], None]]:
    """Show ``sample()``'s (received, settled) counts on ``stream`` (stderr) while the block runs.

    Yields a function to call before each write to ``output`` (stdout): it takes the live line
    off the screen when both share a terminal, so the two never mix on one line. In a log, a
    line is written every :data:`PLAIN_EVERY` seconds while the counts change. The last counts
    are written when the block ends. With ``quiet``, nothing is shown.
    """
    if quiet:
        yield _nothing
        return
    status = StatusLine(sys.stderr if stream is None else stream)
    output = sys.stdout if output is None else output
    started = clock()
    meter = RateMeter()
    meter.add(started, sample()[0])
    last = (-1, -1)

    def tick() -> None:
        nonlocal last
        now = clock()
        received, settled = sample()
        rate = meter.add(now, received)
        if status.live or (received, settled) != last:
            status.show(counts_line(received, settled_as, settled, rate, now - started))
        last = (received, settled)

    shares_terminal = status.live and Style.detect(output).live
    try:
        async with ticking(tick, status.every):
            yield status.clear if shares_terminal else _nothing
    finally:
        received, settled = sample()
        elapsed = clock() - started
        status.finish(counts_line(received, settled_as, settled, _rate(received, elapsed), elapsed))


def _nothing() -> None:
    pass
