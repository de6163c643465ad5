"""``import amqp1q`` loads the library, not the worker runner, the CLI or any backend."""

from __future__ import annotations

import json
import subprocess
import sys

#: Modules ``import amqp1q`` must not load (prefixes): the worker runner and what only it
#: needs (threads for sync handlers, the stall watchdog), the command line, the web helpers, the
#: backends (loaded by ``from_url`` for the URL given) and the embedded broker.
NOT_ON_IMPORT = (
    "amqp1q.worker",
    "amqp1q.cli",
    "amqp1q._bench",
    "amqp1q._display",
    "amqp1q._broker_child",
    "amqp1q._cli_broker",
    "amqp1q._workerconfig",
    "amqp1q._sync_handlers",
    "amqp1q._watchdog",
    "amqp1q.integrations",
    "amqp1q.adapters",
    "amqp1q.testing",
    "anyio.to_thread",
    "proton",
    "azure",
    "httpx",
)


def _loaded_after(code: str) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport json, sys; print(json.dumps(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    loaded: list[str] = json.loads(out)
    return loaded


def test_import_amqp1q_loads_no_worker_cli_or_backend() -> None:
    loaded = _loaded_after("import amqp1q")
    heavy = [
        name
        for name in loaded
        if any(name == prefix or name.startswith(prefix + ".") for prefix in NOT_ON_IMPORT)
    ]
    assert heavy == []
    assert "amqp1q._registry" in loaded  # Registry is handler registration: cheap, and public


def test_registry_is_the_workers_registry() -> None:
    loaded = _loaded_after(
        "import amqp1q, amqp1q.worker; assert amqp1q.Registry is amqp1q.worker.Registry"
    )
    assert "amqp1q.worker" in loaded
