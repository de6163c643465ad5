"""Unit tests refuse the network: any TCP/UDP connect fails loudly."""

from __future__ import annotations

import socket
from typing import Any

import pytest


class NetworkUsedInUnitTest(RuntimeError):
    pass


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    original = socket.socket.connect

    def guarded(self: socket.socket, address: Any) -> None:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            raise NetworkUsedInUnitTest(f"unit tests must not connect to {address!r}")
        original(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)
    monkeypatch.setattr(socket.socket, "connect_ex", guarded)
