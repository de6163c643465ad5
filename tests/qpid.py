"""Qpid Proton's example brokers as test peers: started on a free port, killed afterwards.

``scripts/brokers/qpid.sh`` builds them into ``.brokers/qpid/`` (git ignores it). A missing
binary skips the test with the command to run -- or, under ``CI=true``, fails it.

- ``c``: ``broker.c`` -- SASL ANONYMOUS only, queues made on first use, every delivery sent
  pre-settled (at most once) whatever the consumer asked for, no drain.
- ``cpp``: ``broker.cpp`` -- queues made on first use, deliveries unsettled, but anything not
  ``accepted`` (and anything unsettled when a consumer's link or connection ends) is dropped,
  no drain.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

from .conftest import unavailable

ROOT = Path(__file__).resolve().parent.parent
QPID_DIR = Path(os.environ.get("AMQP1Q_QPID_DIR", ROOT / ".brokers" / "qpid"))
KINDS = ("c", "cpp")
#: Brokers still running: killed when the test process exits, whatever happened to the tests.
_RUNNING: set[subprocess.Popen[bytes]] = set()


@atexit.register
def _kill_leftovers() -> None:
    for process in list(_RUNNING):
        if process.poll() is None:
            process.kill()


def binary(kind: str) -> Path:
    path = QPID_DIR / f"broker-{kind}"
    if not os.access(path, os.X_OK):
        unavailable(
            f"Qpid Proton's {kind.upper()} example broker is not built ({path}): "
            "run bash scripts/brokers/qpid.sh"
        )
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class QpidBroker:
    """One example broker process on 127.0.0.1; ``url`` once started."""

    def __init__(self, kind: str) -> None:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
        self.kind = kind
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"amqp://127.0.0.1:{self.port}"

    @property
    def name(self) -> str:
        return f"Qpid Proton {self.kind.upper()} example broker"

    async def start(self) -> None:
        path = binary(self.kind)
        for _ in range(5):  # a free port can be taken between the probe and the bind
            self.port = free_port()
            args = (
                [str(path), "127.0.0.1", str(self.port)]
                if self.kind == "c"
                else [str(path), "-a", f"127.0.0.1:{self.port}"]
            )
            self._process = subprocess.Popen(  # noqa: ASYNC220 - returns at once
                args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            _RUNNING.add(self._process)
            if await self._listening(5.0):
                return
            self.stop()
        raise RuntimeError(f"the {self.name} did not start listening")

    async def _listening(self, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        process = self._process
        assert process is not None
        while time.monotonic() < deadline:
            if process.poll() is not None:
                return False
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                await asyncio.sleep(0.02)
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return True
        return False

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.kill()
        process.wait(timeout=5)
        _RUNNING.discard(process)


@contextlib.asynccontextmanager
async def qpid_broker(kind: str) -> AsyncIterator[QpidBroker]:
    broker = QpidBroker(kind)
    await broker.start()
    try:
        yield broker
    finally:
        broker.stop()
