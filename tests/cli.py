"""The ``amqp1q`` command line as a child process, run as a user runs it: ``python -m amqp1q``."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

__all__ = ["AMQP1Q", "run_cli", "run_cli_async", "start_cli"]

#: The command, with the interpreter running the tests.
AMQP1Q = (sys.executable, "-m", "amqp1q")


def run_cli(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``amqp1q ARGV`` to its end; stdout and stderr as text. The exit code is the caller's
    to check."""
    return subprocess.run(
        [*AMQP1Q, *argv], capture_output=True, text=True, timeout=timeout, check=False
    )


async def start_cli(*argv: str, **options: Any) -> asyncio.subprocess.Process:
    """Start ``amqp1q ARGV``; ``options`` as for :func:`asyncio.create_subprocess_exec`."""
    return await asyncio.create_subprocess_exec(*AMQP1Q, *argv, **options)


async def run_cli_async(*argv: str, timeout: float = 60) -> tuple[int, str, str]:
    """Run ``amqp1q ARGV`` to its end without blocking the loop (which may be serving the
    broker it talks to): the exit code, stdout and stderr. Killed if it outlives ``timeout``."""
    process = await start_cli(*argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()
