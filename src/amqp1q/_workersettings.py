"""The settings a worker file may give, each with its check, and the record of one file read.

:class:`WorkerFile` collects checked settings (``registry``, ``url`` or ``url_env``, ``queue``,
``concurrency``, ``groups``, ..., the ``retry``, ``reconnect`` and ``tls`` tables, and ``queues``)
with the file and key each came from, and what was ignored. :func:`known_key` refuses an unknown
key with a close match as a hint. Reading the file is :mod:`._workerfile`'s job; RoadRunner's
``.rr.yaml`` shape is mapped onto these settings by :mod:`._rrconfig`.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs

from ._errors import InvalidSetting
from ._policy import ReconnectPolicy, RetryPolicy, exceptions_named
from ._redact import Secret
from ._roadrunner import check_wire_format
from ._settings import TLSConfig, check_bool, check_positive_int, check_priority, check_seconds
from ._workerqueues import QueueSpec

__all__ = ["QUEUE_KEYS", "WorkerFile", "as_table", "known_key"]

# -- checks: (dotted key, value) -> value, or InvalidSetting -------------------------------------


def _text(name: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidSetting(f"{name} must be a non-empty string, got {value!r}")
    return value


def _url(name: str, value: object) -> Secret:
    if not isinstance(value, str) or not value:  # never echoed: it may hold a password
        raise InvalidSetting(f"{name} must be a non-empty string, not {type(value).__name__}")
    return Secret(value)


def _policy(cls: type[Any]) -> Callable[[str, object], Any]:
    def check(name: str, value: object) -> Any:
        if cls is ReconnectPolicy and isinstance(value, bool):
            return value
        table = as_table(name, value)
        fields = [f.name for f in attrs.fields(cls)]
        for key in table:
            known_key(f"{name}.{key}", key, fields)
            if key in ("retry_on", "dead_letter_on"):  # exception names, in a file
                table[key] = exceptions_named(table[key], f"{name}.{key}")
        return cls(**table)

    return check


def _tls(name: str, value: object) -> TLSConfig | None:
    if isinstance(value, bool):
        return TLSConfig.of(value)
    table = as_table(name, value)
    for key in table:
        known_key(f"{name}.{key}", key, [f.name for f in attrs.fields(TLSConfig)])
    return TLSConfig.of(table)


_SETTINGS: dict[str, Callable[[str, object], Any]] = {
    "registry": _text,
    "url": _url,
    "url_env": _text,
    "queue": _text,
    "address": _text,
    "concurrency": check_positive_int,
    "prefetch": check_positive_int,
    "groups": check_positive_int,
    "job_timeout": check_seconds,
    "grace": lambda name, value: check_seconds(name, value, allow_zero=True),
    "stall_warning": lambda name, value: check_seconds(name, value, allow_zero=True),
    "wire_format": check_wire_format,
    "auto_ack": check_bool,
    "requeue_on_fail": check_bool,
    "priority": check_priority,
    "exchange": _text,
    "routing_key": _text,
    "container_id": _text,
    "broker": _text,
    "vhost": _text,
    "tls": _tls,
    "retry": _policy(RetryPolicy),
    "reconnect": _policy(ReconnectPolicy),
    "processes": check_positive_int,
}

#: What a queue of ``queues`` may set for itself.
QUEUE_KEYS = frozenset(
    {"queue", "address", "prefetch", "priority", "auto_ack", "requeue_on_fail", "exchange"}
) | {"routing_key"}


def _queues(name: str, value: object) -> tuple[QueueSpec, ...]:
    """``queues``: names, or tables of a queue's own settings (``queue`` or ``address``)."""
    if not isinstance(value, list) or not value:
        raise InvalidSetting(f"{name} must be a non-empty list of queue names or tables")
    specs = []
    for index, item in enumerate(value):
        where = f"{name}[{index}]"
        if isinstance(item, str) and item:
            specs.append(QueueSpec(queue=item))
            continue
        checked = {
            key: _SETTINGS[known_key(f"{where}.{key}", key, QUEUE_KEYS)](f"{where}.{key}", v)
            for key, v in as_table(where, item).items()
        }
        if "queue" not in checked and "address" not in checked:
            raise InvalidSetting(f"{where}: no queue (set queue, or address)")
        specs.append(QueueSpec(**checked))
    return tuple(specs)


_SETTINGS["queues"] = _queues


class WorkerFile:
    """One file read: the settings found (checked), where each came from, what was ignored,
    and, for a RoadRunner file, the pipeline read."""

    def __init__(self, path: Path) -> None:
        self.name = str(path)
        self.values: dict[str, Any] = {}
        self.keys: dict[str, str] = {}
        self.ignored: list[str] = []
        self.pipeline: str | None = None
        self.roadrunner = False

    def set(self, setting: str, where: str, value: object) -> None:
        try:
            self.values[setting] = _SETTINGS[setting](where, value)
        except (InvalidSetting, TypeError) as exc:
            message = getattr(exc, "message", str(exc))
            raise InvalidSetting(
                message if message.startswith(where) else f"{where}: {message}"
            ) from None
        self.keys[setting] = f"{self.name}: {where}"

    def settings(self, table: Mapping[str, Any], prefix: str = "") -> None:
        if "url" in table and "url_env" in table:
            raise InvalidSetting(f"give {prefix}url or {prefix}url_env, not both")
        for key, other in (("url", "url_env"), ("url_env", "url")):
            if key in table:  # over amqp1.addr, in a RoadRunner file
                self.values.pop(other, None)
        for key, value in table.items():
            self.set(known_key(f"{prefix}{key}", key, _SETTINGS), f"{prefix}{key}", value)


def known_key(where: str, key: object, known: Any) -> str:
    if isinstance(key, str) and key in known:
        return key
    close = difflib.get_close_matches(str(key), list(known), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise InvalidSetting(f"unknown setting {where!r}{hint}")


def as_table(where: str, value: object) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidSetting(f"{where} must be a table (mapping), not {type(value).__name__}")
    return dict(value)
