"""What tracing and metrics share: noticing, cheaply, that the application installed an SDK,
and the messaging attributes every span and measurement carries."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Final

__all__ = ["ProviderWatch", "messaging_attributes"]

#: How often, at most, to look for a provider while there is none (seconds).
RECHECK: Final = 1.0


class ProviderWatch:
    """``active()`` is True once ``get_provider()`` returns something other than the API's
    defaults (``no_sdk``). The API looks the provider up in the environment on every call (near
    a microsecond), so while there is none it is asked at most once a second; once there is
    one, never again (OpenTelemetry lets a provider be set only once)."""

    __slots__ = ("_enabled", "_get_provider", "_next_check", "_no_sdk", "provider")

    def __init__(self, get_provider: Callable[[], object], no_sdk: tuple[type, ...]) -> None:
        self._get_provider = get_provider
        self._no_sdk = no_sdk
        self._enabled = False
        self._next_check = 0.0
        #: The provider found once ``active()`` is True (None before).
        self.provider: object = None

    def active(self) -> bool:
        if self._enabled:
            return True
        now = time.monotonic()
        if now < self._next_check:
            return False
        self._next_check = now + RECHECK
        provider = self._get_provider()
        self._enabled = not isinstance(provider, self._no_sdk)
        if self._enabled:
            self.provider = provider
        return self._enabled


def messaging_attributes(
    system: str, destination: str, server: tuple[str, int] | None
) -> dict[str, Any]:
    """``messaging.system``, ``messaging.destination.name`` and, where known, ``server.*``."""
    attributes: dict[str, Any] = {
        "messaging.system": system,
        "messaging.destination.name": destination,
    }
    if server is not None:
        attributes["server.address"], attributes["server.port"] = server
    return attributes
