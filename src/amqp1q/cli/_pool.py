"""``amqp1q worker --processes N``: N worker processes under one supervisor.

Python runs handlers on one core per process, so a CPU-bound worker scales by processes, as
RoadRunner's ``pool.num_workers``, taskiq's ``--workers`` and Celery's prefork pool do. The
supervisor (this module, in the process the command started) runs N children, each the same
``amqp1q worker`` command line with ``--processes 1``: a fresh interpreter that imports the
registry, opens its own connection and consumes as a lone worker would.

Why child processes started with ``asyncio.create_subprocess_exec`` rather than
``multiprocessing``: a child is exactly what ``amqp1q worker`` runs alone (the same settings,
signals and exit codes), so the pool adds no second way to run a worker; nothing is pickled or
forked from a process that has an event loop, sockets or threads; and the supervisor watches
plain PIDs and exit codes, which a SIGKILL cannot fool.

- **Stopping**: each child holds the read end of a pipe whose write end only the supervisor
  has (``AMQP1Q_WORKER_CONTROL_FD``). Closing it asks the child to drain, as a first SIGTERM
  does; and if the supervisor itself dies, even by SIGKILL, the kernel closes it, so no child
  is left behind. A first SIGTERM or SIGINT to the supervisor closes every pipe and waits for
  the children to drain (each within its ``--grace``); a second is passed on as SIGTERM, which
  a draining child takes as "stop at once" (its jobs released). A child that gets the signal
  itself too (Ctrl-C reaches the whole process group) drains once, not twice.
- **Restarting**: a child that exits unasked (killed, crashed, its connection given up) is
  started again after a backoff (0.5 s, doubling to 30 s; back to 0.5 s after a minute up).
  The broker gives back the jobs it held: they are redelivered, to it or its siblings. A child
  that exits with 2 (a usage error: a bad registry or setting) stops the pool: restarting
  cannot help.
- **Exit code**: 0 if every child drained cleanly and none failed on the way; 1 if any child
  failed (exited unasked, or not 0 on its drain); 2 for a usage error; 130 after a second
  signal.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Sequence
from typing import Final

__all__ = ["CONTROL_ENV", "child_argv", "run_pool", "supervised"]

#: The environment variable naming a pool child's control pipe (its read end).
CONTROL_ENV: Final = "AMQP1Q_WORKER_CONTROL_FD"
#: The child's place in the pool (1..N), for its logs.
PROCESS_ENV: Final = "AMQP1Q_WORKER_PROCESS"
_BACKOFF_FIRST: Final = 0.5
_BACKOFF_MAX: Final = 30.0
_HEALTHY_AFTER: Final = 60.0
#: How long past its grace a stopping child may take before it is stopped, then killed.
_LATE: Final = 15.0
_USAGE_ERROR: Final = 2


def supervised() -> asyncio.Event | None:
    """In a pool's child: an event set once the supervisor asks it to stop (its control pipe
    closes, or the supervisor is gone). None in a worker that is not a pool's child."""
    text = os.environ.pop(CONTROL_ENV, None)
    if not text:
        return None
    fd = int(text)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def readable() -> None:
        try:
            data = os.read(fd, 64)
        except OSError:
            data = b""
        if data:
            return
        loop.remove_reader(fd)
        os.close(fd)
        if not stop.is_set():
            print("amqp1q worker: the supervisor asks to stop: draining", file=sys.stderr)
            stop.set()

    loop.add_reader(fd, readable)
    return stop


def child_argv(argv: Sequence[str]) -> list[str]:
    """The command line of a pool's child: ``argv`` with ``--processes 1``."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--processes":
            skip = True
        elif not arg.startswith("--processes="):
            out.append(arg)
    return [*out, "--processes", "1"]


class _Pool:
    def __init__(self, argv: Sequence[str], processes: int, grace: float) -> None:
        self.argv = child_argv(argv)
        self.processes = processes
        self.grace = grace
        self.stopping = asyncio.Event()
        self.interrupted = False
        self.failed = False
        self.usage_error = False
        self.children: dict[int, asyncio.subprocess.Process] = {}
        self.pipes: dict[int, int] = {}  # slot -> write end of its child's control pipe

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        signals = (signal.SIGTERM, signal.SIGINT)
        for signum in signals:
            loop.add_signal_handler(signum, self._on_signal, signum)
        _say(f"pool of {self.processes} processes: {' '.join(self.argv)}")
        overdue = asyncio.ensure_future(self._overdue())
        try:
            await asyncio.gather(*(self._keep(slot) for slot in range(1, self.processes + 1)))
        finally:
            overdue.cancel()
            for signum in signals:
                loop.remove_signal_handler(signum)
            for slot in list(self.pipes):
                self._close_pipe(slot)
        if self.usage_error:
            return _USAGE_ERROR
        if self.interrupted:
            return 130
        return 1 if self.failed else 0

    def _on_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if not self.stopping.is_set():
            _say(f"{name}: draining {len(self.children)} process(es); again to stop at once")
            self.stop()
            return
        self.interrupted = True
        for process in list(self.children.values()):
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)

    async def _overdue(self) -> None:
        """Children still running well past their grace once asked to stop (a sync handler
        that never returns) are stopped at once (SIGTERM after the drain), then killed."""
        await self.stopping.wait()
        for signum, wait in ((signal.SIGTERM, self.grace + _LATE), (signal.SIGKILL, _LATE)):
            await asyncio.sleep(wait)
            for slot, process in list(self.children.items()):
                _say(
                    f"process {slot} (pid {process.pid}) is overdue: {signal.Signals(signum).name}"
                )
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signum)

    def stop(self) -> None:
        """Ask every child to drain (its control pipe closes); start none again."""
        self.stopping.set()
        for slot in list(self.pipes):
            self._close_pipe(slot)

    def _close_pipe(self, slot: int) -> None:
        fd = self.pipes.pop(slot, None)
        if fd is not None:
            os.close(fd)

    async def _keep(self, slot: int) -> None:
        """Keep slot ``slot`` running a child until the pool stops."""
        loop = asyncio.get_running_loop()
        failures = 0
        while not self.stopping.is_set():
            read, write = os.pipe()
            env = {**os.environ, CONTROL_ENV: str(read), PROCESS_ENV: str(slot)}
            try:
                process = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "amqp1q", *self.argv, env=env, pass_fds=(read,)
                )
            finally:
                os.close(read)
            self.pipes[slot] = write
            self.children[slot] = process
            started = loop.time()
            _say(f"process {slot} started (pid {process.pid})")
            code = await process.wait()
            del self.children[slot]
            self._close_pipe(slot)
            if self.stopping.is_set():
                if code != 0:
                    self.failed = True
                    _say(f"process {slot} (pid {process.pid}) stopped with exit code {code}")
                return
            self.failed = True
            if code == _USAGE_ERROR:
                self.usage_error = True
                _say(f"process {slot} (pid {process.pid}) exited with a usage error; stopping")
                self.stop()
                return
            failures = 1 if loop.time() - started >= _HEALTHY_AFTER else failures + 1
            backoff = min(_BACKOFF_FIRST * 2 ** (failures - 1), _BACKOFF_MAX)
            how = f"signal {-code}" if code < 0 else f"exit code {code}"
            _say(
                f"process {slot} (pid {process.pid}) ended with {how}; restarting in {backoff:g} s"
            )
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), backoff)


def _say(text: str) -> None:
    print(f"amqp1q worker: {text}", file=sys.stderr, flush=True)


async def run_pool(argv: Sequence[str], processes: int, *, grace: float) -> int:
    """Run ``processes`` children of the worker command ``argv`` until SIGTERM or SIGINT (see
    the module docstring); the exit code. ``grace`` is each child's own drain bound."""
    return await _Pool(argv, processes, grace).run()
