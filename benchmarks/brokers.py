"""The brokers benchmarks/run.py measures against, one class each (imported as ``brokers``).

Every broker gives each client run a :class:`Target`: a URL, a queue nobody else has used, the
address a plain AMQP 1.0 client attaches to, and the broker's process id where it is on this
machine (for its CPU time per job). What "fresh" means differs:

- ``rabbitmq``: the RabbitMQ the project's scripts run (scripts/brokers/rabbitmq.sh); a durable
  queue declared through the management HTTP API before the run and deleted after it;
  plain AMQP 1.0 clients attach to ``/amq/queue/NAME``. Its process (``beam.smp``) is found in
  /proc when the URL's host is this machine.
- ``qpid-cpp``: Qpid Proton's C++ example broker (``broker.cpp``, built by
  scripts/brokers/qpid.sh into .brokers/qpid/), started for each run on a free port and killed
  after it, so no run sees another's queues or memory. Queues are made on first use, by name.
- ``embedded``: amqp1q's own broker (``amqp1q broker --port 0``), in a process of its own,
  started once for the whole benchmark; a new queue name for each run.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import common

__all__ = ["BROKERS", "TITLES", "Broker", "BrokerUnavailable", "Management", "Target", "make"]


class BrokerUnavailable(RuntimeError):
    """The broker cannot be used for this benchmark (not running, not built)."""


@dataclass(frozen=True)
class Target:
    """What one client run is given."""

    url: str
    queue: str
    address: str  # what a plain AMQP 1.0 client (the reactor, rhea) attaches to
    pid: int | None  # the broker's process on this machine, if known


def process_cpu(pid: int | None) -> float | None:
    """User+sys CPU seconds of a running process (Linux /proc), or None."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_listening(process: subprocess.Popen[Any], port: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            time.sleep(0.02)
    return False


class Broker:
    """One kind of broker: started once (:meth:`start`), a :class:`Target` per run."""

    key = ""
    title = ""  # the table's column heading
    #: Speaks AMQP 0.9.1 too (aio-pika runs only there).
    amqp091 = False

    def start(self) -> None:
        """Raise BrokerUnavailable if it cannot be used."""

    def stop(self) -> None:
        pass

    @contextlib.contextmanager
    def target(self, queue: str) -> Iterator[Target]:
        raise NotImplementedError
        yield  # pragma: no cover

    def facts(self) -> str:
        """One line for the report's header: what it is, which version."""
        return self.title


# -- RabbitMQ -----------------------------------------------------------------------------------


class Management:
    """The few RabbitMQ management HTTP API calls the benchmarks need (urllib only)."""

    def __init__(self, url: str, vhost: str) -> None:
        parts = urlsplit(url)
        user, password = parts.username or "guest", parts.password or "guest"
        self.base = f"{parts.scheme}://{parts.hostname}:{parts.port or 15672}{parts.path}".rstrip(
            "/"
        )
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        self.headers = {"Authorization": f"Basic {token}", "Content-Type": "application/json"}
        self.vhost = quote(vhost, safe="")

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.base + path, data=data, method=method, headers=self.headers
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            raw = response.read()
        return json.loads(raw) if raw else None

    def overview(self) -> dict[str, Any]:
        return self.call("GET", "/api/overview")  # type: ignore[no-any-return]

    def declare_queue(self, name: str) -> None:
        self.delete_queue(name)
        body = {"durable": True, "auto_delete": False, "arguments": {}}
        self.call("PUT", f"/api/queues/{self.vhost}/{quote(name, safe='')}", body)

    def delete_queue(self, name: str) -> None:
        try:
            self.call("DELETE", f"/api/queues/{self.vhost}/{quote(name, safe='')}")
        except urllib.error.HTTPError as e:
            if e.code != 404:
                raise


def find_process(command: str) -> int | None:
    """The pid of the (first) process whose command name is ``command`` (Linux /proc)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() == command:
                return int(entry.name)
        except OSError:
            continue
    return None


class RabbitMQ(Broker):
    key = "rabbitmq"
    title = "RabbitMQ"
    amqp091 = True

    def __init__(self, url: str, management: str, vhost: str) -> None:
        self.url = url
        self.mgmt = Management(management, vhost)
        self.overview: dict[str, Any] = {}
        self.pid: int | None = None

    def start(self) -> None:
        try:
            self.overview = self.mgmt.overview()
        except (OSError, urllib.error.URLError) as e:
            raise BrokerUnavailable(
                f"RabbitMQ's management API is unreachable at {self.mgmt.base} ({e}); "
                "start it with bash scripts/brokers/rabbitmq.sh"
            ) from e
        host = urlsplit(self.url).hostname or ""
        if host in ("127.0.0.1", "localhost", "::1"):
            self.pid = find_process("beam.smp")

    @contextlib.contextmanager
    def target(self, queue: str) -> Iterator[Target]:
        self.mgmt.declare_queue(queue)
        try:
            yield Target(self.url, queue, f"/amq/queue/{queue}", self.pid)
        finally:
            try:
                self.mgmt.delete_queue(queue)
            except (OSError, urllib.error.URLError) as e:
                print(f"run.py: could not delete queue {queue}: {e}", file=sys.stderr)

    def facts(self) -> str:
        version = self.overview.get("rabbitmq_version", "?")
        erlang = self.overview.get("erlang_version", "?")
        return f"RabbitMQ {version} (Erlang {erlang}) at {urlsplit(self.url).hostname}"


# -- Qpid Proton's C++ example broker -----------------------------------------------------------


def debian_version(package: str) -> str | None:
    try:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", package],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


class QpidCpp(Broker):
    key = "qpid-cpp"
    title = "Qpid C++"

    def __init__(self, directory: Path) -> None:
        self.binary = directory / "broker-cpp"

    def start(self) -> None:
        if not os.access(self.binary, os.X_OK):
            raise BrokerUnavailable(
                f"Qpid Proton's C++ example broker is not built ({self.binary}): "
                "run bash scripts/brokers/qpid.sh"
            )

    @contextlib.contextmanager
    def target(self, queue: str) -> Iterator[Target]:
        process = None
        for _ in range(5):  # a free port can be taken between the probe and the bind
            port = free_port()
            process = subprocess.Popen(
                [str(self.binary), "-a", f"127.0.0.1:{port}"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            if wait_listening(process, port, 5.0):
                break
            process.kill()
            process.wait(timeout=5)
            process = None
        if process is None:
            raise RuntimeError("the Qpid C++ broker did not start listening")
        try:
            yield Target(f"amqp://127.0.0.1:{port}", queue, queue, process.pid)
        finally:
            process.kill()
            process.wait(timeout=5)

    def facts(self) -> str:
        version = debian_version("libqpid-proton-cpp12")
        built = f", Qpid Proton C++ {version}" if version else ""
        return f"Qpid C++: Qpid Proton's example broker.cpp{built}, a fresh process per run"


# -- amqp1q's embedded broker -------------------------------------------------------------------


class Embedded(Broker):
    key = "embedded"
    title = "embedded"

    def __init__(self, python: str) -> None:
        self.python = python
        self.process: subprocess.Popen[str] | None = None
        self.url = ""

    def start(self) -> None:
        """``amqp1q broker --port 0`` in its own process (so it has a core, as RabbitMQ has)."""
        process, line = common.start_broker([self.python, "-m", "amqp1q", "broker", "--port", "0"])
        if "listening on " not in line:
            process.terminate()
            process.wait(timeout=10)
            raise BrokerUnavailable(f"the embedded broker did not start: {line!r}")
        self.process = process
        self.url = line.split("listening on ", 1)[1].split()[0]

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            process.terminate()
            process.wait(timeout=10)

    @contextlib.contextmanager
    def target(self, queue: str) -> Iterator[Target]:
        pid = self.process.pid if self.process is not None else None
        yield Target(self.url, queue, queue, pid)

    def facts(self) -> str:
        return "embedded: amqp1q's broker (`amqp1q broker`), its own process, one for the run"


#: In the order of the table's columns.
BROKERS = ["rabbitmq", "qpid-cpp", "embedded"]
TITLES = {"rabbitmq": RabbitMQ.title, "qpid-cpp": QpidCpp.title, "embedded": Embedded.title}


def make(key: str, args: Any) -> Broker:
    if key == "rabbitmq":
        return RabbitMQ(args.url, args.management, args.vhost)
    if key == "qpid-cpp":
        return QpidCpp(Path(args.qpid_dir))
    if key == "embedded":
        return Embedded(args.python)
    raise ValueError(f"unknown broker {key!r}; choose from {', '.join(BROKERS)}")
