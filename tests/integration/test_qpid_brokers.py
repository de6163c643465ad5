"""Qpid Proton's C and C++ example brokers (scripts/brokers/qpid.sh): what docs/brokers/qpid.md
shows runs on them, and what they refuse is said clearly. The queue semantics themselves run on
both in tests/semantics; rhea's interop in test_interop_rhea.py."""

from __future__ import annotations

import contextlib
import io
import os
import re
from typing import Any

import pytest

from amqp1q import AuthenticationFailed, Job, JobQueue

from ..docs.snippets import delegated_to
from ..qpid import QPID_DIR, ROOT, qpid_broker

pytestmark = pytest.mark.anyio

DOC = ROOT / "docs" / "brokers" / "qpid.md"
DOC_URL = "amqp://127.0.0.1:5672"


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)


@pytest.mark.parametrize("kind", ["c", "cpp"])
async def test_the_docs_python_runs_on_the_broker(kind: str) -> None:
    # The docs harness (tests/docs) hands the page's blocks to this test: they need the brokers.
    blocks = delegated_to(DOC, "test_the_docs_python_runs_on_the_broker")
    assert len(blocks) == 2
    async with qpid_broker(kind) as broker:
        namespace: dict[str, Any] = {}
        for block in blocks:
            assert DOC_URL in block.code
            code = block.code.replace(DOC_URL, broker.url)
            exec(compile(code, block.where, "exec"), namespace)
        assert isinstance(namespace["queue"], JobQueue)  # the first block only makes one
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            await namespace["main"]()
    assert printed.getvalue().strip() == ("at-most-once" if kind == "c" else "connected")


def test_the_docs_shell_names_what_the_script_builds() -> None:
    (block,) = _blocks("sh")
    assert "bash scripts/brokers/qpid.sh" in block
    assert (ROOT / "scripts" / "brokers" / "qpid.sh").is_file()
    binaries = re.findall(r"^\.brokers/qpid/(broker-\w+)", block, re.M)
    assert binaries == ["broker-c", "broker-cpp"]
    if "AMQP1Q_QPID_DIR" not in os.environ:  # where the script and tests/qpid.py put them
        assert QPID_DIR == ROOT / ".brokers" / "qpid"
    assert ".brokers/" in (ROOT / ".gitignore").read_text().splitlines()


@pytest.mark.parametrize("kind", ["c", "cpp"])
async def test_a_password_to_an_anonymous_only_broker_says_so(kind: str) -> None:
    async with qpid_broker(kind) as broker:
        url = broker.url.replace("amqp://", "amqp://guest:secret@")
        with pytest.raises(AuthenticationFailed, match="ANONYMOUS only") as info:
            async with JobQueue.from_url(url, queue="q"):
                pass
        assert "secret" not in str(info.value)


@pytest.mark.parametrize("kind", ["c", "cpp"])
async def test_the_broker_is_taken_for_a_generic_one(kind: str) -> None:
    async with qpid_broker(kind) as broker, JobQueue.from_url(broker.url, queue="q") as queue:
        profile = queue.adapter.profile  # type: ignore[attr-defined]
        assert profile.name == "generic"
        assert (profile.honours, profile.supports_drain) == (frozenset(), False)
        await queue.push(Job("x", delay=0.2))  # the consumer will hold it: no UnsupportedFeature
        async with queue.consume() as consumer:
            job = await consumer.receive(timeout=5)
            assert job is not None
            await job.ack()
