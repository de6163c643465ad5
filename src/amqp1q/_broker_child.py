"""The embedded broker in a child process of its own, for ``amqp1q bench``.

A benchmark that counts its own CPU time must not share its process with the broker. The child
serves until its stdin closes, which happens however the parent ends (even by SIGKILL), so no
broker is left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import sys
import tempfile
from collections.abc import AsyncIterator

__all__ = ["BrokerDidNotStart", "broker_process", "serve_child"]


class BrokerDidNotStart(Exception):
    """The child process did not report a listening broker in time."""


@contextlib.asynccontextmanager
async def broker_process(start_timeout: float = 30.0) -> AsyncIterator[str]:
    """Run the embedded broker in a child process; yield its ``amqp://HOST:PORT``.

    The child serves until its stdin closes, which happens however this process ends (even by
    SIGKILL), so no broker is left behind.
    """
    with tempfile.TemporaryFile() as errors:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            "from amqp1q._broker_child import serve_child; serve_child()",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=errors,
        )
        try:
            assert process.stdout is not None
            try:
                line = await asyncio.wait_for(process.stdout.readline(), start_timeout)
            except asyncio.TimeoutError:
                line = b""
            found = re.search(r"listening on (amqp://\S+)", line.decode("utf-8", "replace"))
            if found is None:
                errors.seek(0)
                detail = errors.read().decode("utf-8", "replace").strip().splitlines()[-5:]
                raise BrokerDidNotStart(
                    "the embedded broker did not start: " + (" ".join(detail) or "no reason given")
                )
            yield found.group(1)
        finally:
            if process.stdin is not None:
                process.stdin.close()
            try:
                await asyncio.wait_for(process.wait(), 10)
            except asyncio.TimeoutError:
                process.kill()
                await process.wait()


def serve_child() -> None:
    """The child of :func:`broker_process`: print the broker's URL, serve until stdin closes."""
    # Ctrl-C reaches the whole process group: let the parent stop first and close our stdin.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    asyncio.run(_serve_child())


async def _serve_child() -> None:
    from .testing import Broker

    stdin = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    async with Broker() as broker:
        print(f"amqp1q broker listening on {broker.url}", flush=True)
        await stdin.read()  # EOF: the parent is done, or gone
