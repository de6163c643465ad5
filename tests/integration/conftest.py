"""Integration tests: real peers over real sockets (RabbitMQ, Node's rhea, the embedded broker)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from amqp1q import ConnectFailed
from amqp1q.adapters.proton.rabbitmq_setup import RabbitMQManagement

from ..conftest import RABBITMQ_MANAGEMENT_URL, unavailable


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    """A certificate authority made for the test module (trustme)."""
    return trustme.CA()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> Path:
    """``ca``'s certificate as a PEM file: what ``TLSConfig(root_ca=...)`` takes."""
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


@pytest.fixture
def rabbitmq() -> RabbitMQManagement:
    management = RabbitMQManagement(RABBITMQ_MANAGEMENT_URL)
    try:
        management.overview()
    except ConnectFailed as exc:
        unavailable(f"RabbitMQ is not reachable: {exc} (run scripts/brokers/rabbitmq.sh)")
    return management


@pytest.fixture
def rabbitmq_queue(rabbitmq: RabbitMQManagement) -> Iterator[str]:
    """A fresh job queue (with its .dlq) on RabbitMQ, deleted afterwards."""
    name = f"amqp1q-it-{uuid.uuid4().hex[:12]}"
    rabbitmq.setup_job_queue(name)
    yield name
    rabbitmq.delete_queue(name)
    rabbitmq.delete_queue(f"{name}.dlq")
