"""What the benchmark drivers share: benchmarks/run.py, benchmarks/servicebus.py and
benchmarks/extras.py (imported as ``import common``; the drivers run as scripts, so benchmarks/
is on sys.path).

- the child processes: their environment (this checkout's src/ first on PYTHONPATH), running a
  client to completion and reading its JSON line, starting an embedded broker in its own process,
  and the versions of Python distributions installed for the Python that runs them;
- the results: :class:`Outcome` (one client's runs and errors), medians, the machine details
  every report starts with;
- the markdown: number formatting, ratios, and the results table's header, cells and rows.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CLIENTS_DIR = HERE / "clients"
REPO = HERE.parent

#: What every client run reports (and the columns of the results table, in this order).
METRICS = ["push_per_s", "consume_per_s", "push_cpu_us_per_job", "consume_cpu_us_per_job"]
COLUMNS = ["push/s", "consume/s", "push CPU µs/job", "consume CPU µs/job"]


# -- child processes ---------------------------------------------------------------------------


def child_env() -> dict[str, str]:
    """This checkout's amqp1q first on the path, whatever is installed."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO / "src"), env.get("PYTHONPATH")) if p)
    return env


def last_json_line(returncode: int, stdout: str, stderr: str) -> tuple[dict[str, Any], str]:
    """The JSON object on a finished process's last non-blank line of output, and that line; a
    RuntimeError (with the last line of stderr) if it failed or printed nothing, or if the line
    isn't JSON."""
    lines = [line for line in stdout.splitlines() if line.strip()]
    if returncode != 0 or not lines:
        tail = (stderr.strip().splitlines() or [f"no output, exit {returncode}"])[-1]
        raise RuntimeError(f"exit {returncode}: {tail[:300]}")
    try:
        result: dict[str, Any] = json.loads(lines[-1])
    except json.JSONDecodeError as e:
        raise RuntimeError(f"output is not JSON: {lines[-1][:200]!r}") from e
    return result, lines[-1]


#: What a client prints (a line of its own) once its push phase is timed, before it consumes:
#: the driver reads the broker's CPU time there, to split it between the phases.
PHASE_MARK = "#consume"


def run_client(
    argv: list[str],
    *,
    n: int,
    timeout: float,
    env: dict[str, str] | None,
    on_mark: Callable[[], None] | None = None,
) -> tuple[dict[str, Any], float]:
    """Run one client process (in the checkout) to the end: its JSON result, checked for every
    one of METRICS and for ``n`` jobs, and the wall-clock seconds it took. ``on_mark`` is called
    when the client prints PHASE_MARK. RuntimeError if it timed out (it is killed), failed, or
    printed no complete result; OSError if it could not start."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
    )
    out: list[str] = []
    err: list[str] = []

    def read_stdout() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.strip() == PHASE_MARK:
                if on_mark is not None:
                    on_mark()
                continue
            out.append(line)

    def read_stderr() -> None:
        assert proc.stderr is not None
        err.append(proc.stderr.read())

    readers = [threading.Thread(target=f, daemon=True) for f in (read_stdout, read_stderr)]
    for reader in readers:
        reader.start()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired as e:
        proc.kill()
        proc.wait()
        raise RuntimeError(f"timed out after {timeout:g} s") from e
    finally:
        for reader in readers:
            reader.join(timeout=10)
    took = time.perf_counter() - started
    result, _ = last_json_line(proc.returncode, "".join(out), "".join(err))
    missing = [m for m in METRICS if not isinstance(result.get(m), (int, float))]
    if missing or result.get("n") != n:
        raise RuntimeError(f"incomplete result (missing {missing}, n={result.get('n')})")
    return result, took


def start_broker(argv: list[str]) -> tuple[subprocess.Popen[str], str]:
    """Start an embedded broker, ``argv``, in its own process (so it has a core to itself, as
    RabbitMQ has) with this checkout's amqp1q; the process and the first line it printed (as
    read, or empty if it printed nothing before it ended). Whether that line says it is ready is
    the caller's to judge (and to terminate the process if not)."""
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=child_env())
    assert process.stdout is not None
    return process, process.stdout.readline()


def broker_arguments(parser: argparse.ArgumentParser, default: str) -> None:
    """``--broker rabbitmq|embedded``, ``--url`` (RabbitMQ) and ``--management`` (its API)."""
    parser.add_argument("--broker", choices=("rabbitmq", "embedded"), default=default)
    parser.add_argument("--url", default="amqp://guest:guest@127.0.0.1:5672")
    parser.add_argument("--management", default="http://guest:guest@127.0.0.1:15672")


def broker_url(args: argparse.Namespace) -> tuple[subprocess.Popen[str] | None, str]:
    """Where ``--broker`` is: an embedded broker started in its own process (returned, to
    terminate), or RabbitMQ at ``--url``."""
    if args.broker != "embedded":
        return None, str(args.url)
    broker, line = start_broker([sys.executable, "-m", "amqp1q", "broker", "--port", "0"])
    return broker, line.split("listening on ", 1)[1].split()[0]


def run_mode(
    script: str, mode: str, url: str, names: Sequence[str], management: Any, extra: Sequence[str]
) -> dict[str, Any]:
    """Run ``script --mode MODE`` as a child process on queues ``names`` and return the JSON line
    it printed; the queues are deleted afterwards through ``management`` (RabbitMQ), if given."""
    argv = [sys.executable, script, "--mode", mode, "--url", url, "--queues", ",".join(names)]
    try:
        done = subprocess.run(
            [*argv, *extra], capture_output=True, text=True, env=child_env(), timeout=600
        )
        result, _ = last_json_line(done.returncode, done.stdout, done.stderr)
    finally:
        if management is not None:
            for name in names:
                management.delete_queue(name)
    return result


def alternate(
    modes: Sequence[str], rounds: int, run: Callable[[str], dict[str, Any]]
) -> dict[str, list[dict[str, Any]]]:
    """Each mode once per round, in reverse order every other round (so drift hits them alike);
    each result logged to stderr as it comes."""
    results: dict[str, list[dict[str, Any]]] = {mode: [] for mode in modes}
    width = max(len(mode) for mode in modes)
    for round_no in range(rounds):
        for mode in modes if round_no % 2 == 0 else list(reversed(modes)):
            result = run(mode)
            results[mode].append(result)
            print(f"round {round_no + 1} {mode:{width}} {json.dumps(result)}", file=sys.stderr)
    return results


def dist_versions(python: str, dists: Sequence[str]) -> dict[str, str]:
    """The installed version of each of ``dists`` that ``python`` can see (those it can't are
    left out; all are if the probe fails)."""
    probe = (
        "import json, importlib.metadata as m\n"
        "out = {}\n"
        f"for d in {tuple(dists)!r}:\n"
        "    try: out[d] = m.version(d)\n"
        "    except m.PackageNotFoundError: pass\n"
        "print(json.dumps(out))\n"
    )
    try:
        out = subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=30)
        found: dict[str, str] = json.loads(out.stdout)
    except (OSError, ValueError, subprocess.SubprocessError):
        return {}
    return found


# -- results -----------------------------------------------------------------------------------


def median(runs: list[dict[str, Any]], metric: str) -> float | None:
    """The median of ``metric`` over the runs that have it as a number; None if none has."""
    values = [run[metric] for run in runs if isinstance(run.get(metric), (int, float))]
    return statistics.median(values) if values else None


@dataclass
class Outcome:
    client: str
    runs: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def median(self, metric: str) -> float | None:
        return median(self.runs, metric)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    """When and on what: the first entries of every report's ``meta``."""
    return {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(),
        "cpu": cpu_model(),
        "platform": platform.platform(terse=True),
        "python": platform.python_version(),
    }


def progress(result: dict[str, Any], rate_width: int = 9, cpu_width: int = 7) -> str:
    """A client run's METRICS on one line, for the progress lines on stderr."""
    return (
        f"push {result['push_per_s']:>{rate_width},.0f}/s "
        f"{result['push_cpu_us_per_job']:{cpu_width}.1f} µs/job   "
        f"consume {result['consume_per_s']:>{rate_width},.0f}/s "
        f"{result['consume_cpu_us_per_job']:{cpu_width}.1f} µs/job"
    )


# -- markdown ----------------------------------------------------------------------------------


def fmt(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def ratio(a: float | None, b: float | None) -> str:
    return "n/a" if a is None or b is None or b == 0 else f"{a / b:.2f}x"


def ratios(a: Outcome, b: Outcome) -> list[str]:
    """``a`` ÷ ``b`` for each of METRICS (medians)."""
    return [ratio(a.median(m), b.median(m)) for m in METRICS]


def table_head(first: str, extra: Sequence[str] = ()) -> list[str]:
    """The header and alignment lines of a results table: ``first``, COLUMNS, then ``extra``."""
    columns = [first, *COLUMNS, *extra]
    return ["| " + " | ".join(columns) + " |", "|---|" + "---:|" * (len(columns) - 1)]


def metric_cells(median_of: Callable[[str], float | None]) -> list[str]:
    """The table cells for METRICS: throughputs to the job, CPU times to 0.1 µs."""
    return [
        fmt(median_of("push_per_s"), ",.0f"),
        fmt(median_of("consume_per_s"), ",.0f"),
        fmt(median_of("push_cpu_us_per_job"), ".1f"),
        fmt(median_of("consume_cpu_us_per_job"), ".1f"),
    ]


def outcome_row(o: Outcome, extra: Sequence[str] = ()) -> str:
    """A client's row of the results table: the medians of METRICS, then of the ``extra``
    metrics (µs, to 0.1) — or that it failed, and the last reason why. ``(k/m ok)`` after the
    name when some of its runs failed."""
    if not o.runs:
        why = (o.errors[-1] if o.errors else "no result").replace("|", "/")
        return f"| {o.client} | **failed**: {why} |" + " - |" * (len(METRICS) - 1 + len(extra))
    note = f" ({len(o.runs)}/{len(o.runs) + len(o.errors)} ok)" if o.errors else ""
    cells = metric_cells(o.median) + [fmt(o.median(m), ".1f") for m in extra]
    return f"| {o.client}{note} | " + " | ".join(cells) + " |"
