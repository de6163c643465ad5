"""The pytest plugin, as a user's project uses it (a separate pytest run in a temp dir)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

USER_TEST = """
import pytest
from amqp1q import Job, JobQueue

pytest_plugins = ["amqp1q.testing.pytest_plugin"]


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture
def amqp1q_broker_options():
    return {"strict": True, "queues": ["emails"]}


@pytest.mark.anyio
async def test_send_email_job(amqp1q_broker):
    async with JobQueue.from_url(amqp1q_broker.url, queue="emails") as queue:
        await queue.push(Job("send", {"to": "a@b.c"}))
    assert len(amqp1q_broker.queue("emails")) == 1
"""


def test_users_get_a_broker_fixture(tmp_path: Path) -> None:
    (tmp_path / "test_user.py").write_text(USER_TEST)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout
