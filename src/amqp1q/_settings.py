"""Settings value types and the checks ``JobQueue`` applies to its arguments."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

import attrs

from ._errors import InvalidSetting

__all__ = ["TLSConfig", "check_bool", "check_positive_int", "check_priority", "check_seconds"]


def _path(value: str | os.PathLike[str] | None) -> str | None:
    return None if value is None else os.fspath(value)


@attrs.frozen
class TLSConfig:
    """TLS settings, named as in the RoadRunner ``amqp1`` driver.

    - ``root_ca``: a CA bundle to verify the broker with (default: the system's);
    - ``cert`` and ``key``: a client certificate and its key, for mutual TLS (SASL EXTERNAL);
    - ``insecure_skip_verify``: do not verify the broker's certificate or host name. Off by
      default; turning it on logs a warning each time a connection is made.
    - ``server_hostname``: the name to verify, when it differs from the URL's host.
    """

    cert: str | None = attrs.field(default=None, converter=_path)
    key: str | None = attrs.field(default=None, converter=_path)
    root_ca: str | None = attrs.field(default=None, converter=_path)
    insecure_skip_verify: bool = False
    server_hostname: str | None = None

    def __attrs_post_init__(self) -> None:
        if self.key is not None and self.cert is None:
            raise InvalidSetting("tls: a key needs its cert")

    @classmethod
    def of(cls, value: TLSConfig | Mapping[str, Any] | bool | None) -> TLSConfig | None:
        """Accept a :class:`TLSConfig`, a mapping of its fields, ``True`` (defaults) or ``None``."""
        if value is None or value is False:
            return None
        if value is True:
            return cls()
        if isinstance(value, TLSConfig):
            return value
        if isinstance(value, Mapping):
            unknown = set(value) - {f.name for f in attrs.fields(cls)}
            if unknown:
                raise InvalidSetting(f"tls: unknown setting(s) {sorted(unknown)}")
            return cls(**value)
        raise InvalidSetting(
            f"tls must be a TLSConfig, a mapping or a bool, not {type(value).__name__}"
        )


def check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidSetting(f"{name} must be an int >= 1, got {value!r}")
    return value


def check_priority(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 255:
        raise InvalidSetting(f"{name} must be an int from 0 to 255, got {value!r}")
    return value


def check_seconds(name: str, value: object, *, allow_zero: bool = False) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
        or (value == 0 and not allow_zero)
    ):
        bound = ">= 0" if allow_zero else "> 0"
        raise InvalidSetting(f"{name} must be a number of seconds {bound}, got {value!r}")
    return float(value)


def check_bool(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise InvalidSetting(f"{name} must be a bool, got {value!r}")
    return value
