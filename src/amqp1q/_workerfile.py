"""Worker settings read from a TOML or YAML file: amqp1q's own keys, or a RoadRunner ``.rr.yaml``.

amqp1q's shape is flat (``registry``, ``url`` or ``url_env``, ``queue``, ``concurrency``,
``groups``, ...,
with ``retry``, ``reconnect`` and ``tls`` tables, and ``queues``: several queues, by name or
as tables of their own settings). A file with a ``jobs`` or ``amqp1`` section is read as
RoadRunner's: the connection from ``amqp1``, the ``driver: amqp1`` pipelines of
``jobs.pipelines`` that ``jobs.consume`` lists (one, or several consumed on one connection;
their keys inline or under ``config``), ``jobs.pool.num_workers`` as ``processes`` and its
``destroy_timeout`` as ``grace``, and an optional ``amqp1q`` section in amqp1q's shape on top
(RoadRunner has no ordered consuming: ``groups`` goes there).
``${VAR}`` and ``${VAR:-default}`` are expanded there, as RoadRunner does.
Sections and keys meaningful only to RoadRunner are ignored (listed in ``ignored`` and logged);
any other unknown key is an :class:`~amqp1q.InvalidSetting` naming the file and the key.

:func:`read_worker_file` gives the checked settings; :class:`~amqp1q.worker.WorkerConfig` (in
:mod:`._workerconfig`) is the value built from them.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
import sys
import urllib.parse
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs

from ._errors import ConfigurationError, InvalidSetting, MissingDependency
from ._policy import ReconnectPolicy, RetryPolicy, exceptions_named
from ._redact import Secret
from ._roadrunner import check_wire_format
from ._settings import TLSConfig, check_bool, check_positive_int, check_priority, check_seconds
from ._urls import AmqpEndpoint, parse_url
from ._workerqueues import QueueSpec

__all__ = ["WorkerFile", "read_worker_file"]

log = logging.getLogger("amqp1q.worker")


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
        table = _table(name, value)
        fields = [f.name for f in attrs.fields(cls)]
        for key in table:
            _known(f"{name}.{key}", key, fields)
            if key in ("retry_on", "dead_letter_on"):  # exception names, in a file
                table[key] = exceptions_named(table[key], f"{name}.{key}")
        return cls(**table)

    return check


def _tls(name: str, value: object) -> TLSConfig | None:
    if isinstance(value, bool):
        return TLSConfig.of(value)
    table = _table(name, value)
    for key in table:
        _known(f"{name}.{key}", key, [f.name for f in attrs.fields(TLSConfig)])
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
_QUEUE_KEYS = frozenset(
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
            key: _SETTINGS[_known(f"{where}.{key}", key, _QUEUE_KEYS)](f"{where}.{key}", v)
            for key, v in _table(where, item).items()
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
            self.set(_known(f"{prefix}{key}", key, _SETTINGS), f"{prefix}{key}", value)


def _known(where: str, key: object, known: Any) -> str:
    if isinstance(key, str) and key in known:
        return key
    close = difflib.get_close_matches(str(key), list(known), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise InvalidSetting(f"unknown setting {where!r}{hint}")


def _table(where: str, value: object) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidSetting(f"{where} must be a table (mapping), not {type(value).__name__}")
    return dict(value)


def read_worker_file(path: Path, pipeline: str | None) -> WorkerFile:
    """Read and check ``path``; ``pipeline`` picks one of a RoadRunner file's pipelines.

    Raises :class:`~amqp1q.InvalidSetting` naming the file and the key, or
    :class:`~amqp1q.MissingDependency` for YAML without PyYAML installed.
    """
    file = WorkerFile(path)
    try:
        data = _table("the file", _read(path))
        file.roadrunner = "jobs" in data or "amqp1" in data
        if file.roadrunner:
            file.pipeline = _roadrunner(file, data, pipeline)
        elif pipeline is not None:
            raise InvalidSetting("pipelines are read from RoadRunner files (jobs.pipelines) only")
        else:
            file.settings(data)
    except ConfigurationError as exc:
        raise type(exc)(f"{file.name}: {exc.message}") from None
    if file.ignored:
        log.info("%s: ignored (RoadRunner only): %s", file.name, ", ".join(file.ignored))
    return file


def _read(path: Path) -> object:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InvalidSetting(f"cannot read the worker configuration: {exc.strerror}") from None
    suffix = path.suffix.lower()
    if suffix == ".toml":
        if sys.version_info >= (3, 11):
            import tomllib
        else:  # pragma: no cover - exercised on Python 3.10
            import tomli as tomllib
        try:
            return tomllib.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise InvalidSetting(f"not valid TOML: {exc}") from None
    if suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise MissingDependency(
                'reading YAML needs PyYAML: pip install "amqp1q[yaml]" (or use a .toml file)'
            ) from None
        try:
            return yaml.safe_load(raw)
        except yaml.YAMLError as exc:  # the problem only: PyYAML's snippet may show a password
            mark = getattr(exc, "problem_mark", None)
            at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise InvalidSetting(f"not valid YAML{at}: {getattr(exc, 'problem', '')}") from None
    raise InvalidSetting(f"unknown file type {suffix!r}: use .toml, .yaml or .yml")


# -- RoadRunner's .rr.yaml ------------------------------------------------------------------------

#: Pipeline keys amqp1q reads (``addr`` and the connection's keys may be set per pipeline).
_RR_PIPELINE = {"queue", "address", "prefetch", "priority", "auto_ack", "requeue_on_fail"}
_RR_PIPELINE |= {"exchange", "routing_key", "addr", "connection_string", "container_id"}
_RR_CONNECTION = {"addr", "connection_string", "container_id", "tls", "username", "password"}
#: Keys meaningful only to RoadRunner, or declarations made on the broker: read and ignored.
_RR_ONLY_PIPELINE = {"exchange_type", "durable", "exclusive", "multiple_ack", "redial_timeout"}
_RR_ONLY_PIPELINE |= {"exchange_durable", "exchange_auto_delete", "queue_auto_delete"}
_RR_ONLY_PIPELINE |= {"queue_headers", "delete_queue_on_stop", "consumer_id"}
_RR_ONLY_JOBS = {"num_pollers", "pipeline_size", "timeout"}
#: ``jobs.pool`` keys amqp1q reads (the rest are RoadRunner's own: read and ignored).
_RR_POOL = {"num_workers": "processes", "destroy_timeout": "grace"}
_RR_SECTIONS = {"version", "rr", "server", "rpc", "http", "logs", "metrics", "status", "reload"}
_RR_SECTIONS |= {"otel", "grpc", "kv", "service", "temporal", "centrifuge", "tcp", "fileserver"}
_RR_SECTIONS |= {"endure", "informer", "resetter", "lock", "redis", "memcached", "boltdb", "amqp"}
_RR_SECTIONS |= {"kafka", "nats", "sqs", "beanstalk", "google_pub_sub", "broadcast", "websockets"}
_RR_SECTIONS |= {"headers", "gzip", "static", "sendremotefile", "proxy_ip_parser", "include"}

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _expand(where: str, value: object) -> Any:
    """RoadRunner's ``${VAR}`` and ``${VAR:-default}``, in every string, recursively."""
    if isinstance(value, str):

        def variable(match: re.Match[str]) -> str:
            found = os.environ.get(match.group(1), match.group(2))
            if found is None:
                raise InvalidSetting(f"{where}: the environment variable {match.group(1)} is unset")
            return found

        return _VAR.sub(variable, value)
    if isinstance(value, Mapping):
        return {k: _expand(f"{where}.{k}", v) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(f"{where}[{i}]", v) for i, v in enumerate(value)]
    return value


def _roadrunner(file: WorkerFile, data: Mapping[str, Any], choice: str | None) -> str | None:
    for key in data:
        if key in _RR_SECTIONS:
            file.ignored.append(str(key))
        elif key not in ("jobs", "amqp1", "amqp1q"):
            _known(str(key), key, {"jobs", "amqp1", "amqp1q", *_RR_SECTIONS})
    connection: dict[str, tuple[str, object]] = {}
    for key, value in _table("amqp1", _expand("amqp1", data.get("amqp1"))).items():
        if key == "redial_timeout":
            file.ignored.append("amqp1.redial_timeout")
        else:
            connection[_known(f"amqp1.{key}", key, _RR_CONNECTION | {"redial_timeout"})] = (
                f"amqp1.{key}",
                value,
            )
    jobs = _table("jobs", _expand("jobs", data.get("jobs")))
    for key in jobs:
        if key in _RR_ONLY_JOBS:
            file.ignored.append(f"jobs.{key}")
        else:
            _known(f"jobs.{key}", key, {"pipelines", "consume", "pool", *_RR_ONLY_JOBS})
    _pool(file, _table("jobs.pool", jobs.get("pool")))
    pipelines = _table("jobs.pipelines", jobs.get("pipelines"))
    names = _choose(pipelines, jobs.get("consume"), choice)
    if len(names) == 1:
        prefix = f"jobs.pipelines.{names[0]}"
        given = _pipeline(file, prefix, pipelines[names[0]])
        _pipeline_settings(file, prefix, {**connection, **given})  # a pipeline's own addr wins
    else:
        _pipelines(file, {n: pipelines[n] for n in names}, connection)
    file.settings(_table("amqp1q", _expand("amqp1q", data.get("amqp1q"))), "amqp1q.")
    return names[0] if len(names) == 1 else None


def _pipeline(file: WorkerFile, prefix: str, value: object) -> dict[str, tuple[str, object]]:
    """One pipeline's keys (inline or under ``config``), each with where it was read."""
    entry = _table(prefix, value)
    if entry.get("driver") != "amqp1":
        raise InvalidSetting(f"{prefix}.driver is {entry.get('driver')!r}, not 'amqp1'")
    given = {k: (f"{prefix}.{k}", v) for k, v in entry.items() if k not in ("driver", "config")}
    for key, item in _table(f"{prefix}.config", entry.get("config")).items():
        if key in given:
            raise InvalidSetting(f"{prefix}: {key!r} is given both inline and under config")
        given[key] = (f"{prefix}.config.{key}", item)
    for key, (where, _) in given.items():
        if key in _RR_ONLY_PIPELINE:
            file.ignored.append(where)
        else:
            _known(where, key, _RR_PIPELINE | _RR_ONLY_PIPELINE)
    return given


def _pipelines(
    file: WorkerFile, pipelines: Mapping[str, object], connection: dict[str, tuple[str, object]]
) -> None:
    """Several pipelines, consumed on one connection: a queue each; their connection
    settings (``addr``, ``container_id``, ``tls``) must agree."""
    specs = []
    for name, value in pipelines.items():
        prefix = f"jobs.pipelines.{name}"
        one = WorkerFile(Path(file.name))
        _pipeline_settings(one, prefix, {**connection, **_pipeline(file, prefix, value)})
        file.ignored += one.ignored
        for key in ("url", "container_id", "tls"):
            if key not in one.values:
                continue
            if key in file.values and file.values[key] != one.values[key]:
                raise InvalidSetting(
                    f"{prefix}: its {'addr' if key == 'url' else key} differs from another "
                    "pipeline's; a worker consumes on one connection (run one per connection)"
                )
            file.values[key], file.keys[key] = one.values[key], one.keys[key]
        fields = {k: v for k, v in one.values.items() if k in _QUEUE_KEYS}
        specs.append(QueueSpec(pipeline=name, **fields))
    file.values["queues"] = tuple(specs)
    file.keys["queues"] = f"{file.name}: jobs.consume"


def _pool(file: WorkerFile, pool: Mapping[str, Any]) -> None:
    """``jobs.pool``: ``num_workers`` is the worker's processes, ``destroy_timeout`` (how long
    RoadRunner lets a worker stop) its grace; the rest is RoadRunner's own."""
    for key, value in pool.items():
        setting = _RR_POOL.get(key)
        if setting is None:
            file.ignored.append(f"jobs.pool.{key}")
        else:
            seconds = value if setting == "processes" else _seconds(value)
            file.set(setting, f"jobs.pool.{key}", seconds)


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)$")


def _seconds(value: object) -> object:
    """A Go duration (``60s``, ``500ms``, ``1m``) in seconds; anything else as it is."""
    match = _DURATION.match(value) if isinstance(value, str) else None
    if match is None:
        return value
    scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[match.group(2)]
    return float(match.group(1)) * scale


def _choose(pipelines: Mapping[str, Any], consume: object, choice: str | None) -> list[str]:
    ours = [
        n for n, p in pipelines.items() if isinstance(p, Mapping) and p.get("driver") == "amqp1"
    ]
    if choice is not None:
        if choice not in pipelines:
            raise InvalidSetting(f"no pipeline {choice!r} in jobs.pipelines (amqp1 ones: {ours})")
        return [choice]
    if consume is not None and not (
        isinstance(consume, list) and all(isinstance(c, str) for c in consume)
    ):
        raise InvalidSetting(f"jobs.consume must be a list of pipeline names, got {consume!r}")
    candidates = [n for n in ours if consume is None or n in consume] or ours
    if not candidates:
        raise InvalidSetting("jobs.pipelines has no pipeline with driver: amqp1")
    return [str(name) for name in candidates]


def _pipeline_settings(file: WorkerFile, prefix: str, given: dict[str, tuple[str, object]]) -> None:
    addr = given.get("addr") or given.get("connection_string")
    if addr is not None:
        file.set("url", *addr)
        file.values["url"] = _with_login(addr[0], file.values["url"], given)
    elif "username" in given or "password" in given:
        raise InvalidSetting("amqp1: username and password need amqp1.addr")
    for key in ("queue", "address", "prefetch", "priority", "auto_ack", "requeue_on_fail"):
        if key in given:
            file.set(key, *given[key])
    if "container_id" in given:
        file.set("container_id", *given["container_id"])
    if "tls" in given:
        where, value = given["tls"]
        tls = _table(where, value)
        if "client_auth_type" in tls:  # a RoadRunner server-side option
            file.ignored.append(f"{where}.client_auth_type")
            del tls["client_auth_type"]
        file.set("tls", where, tls)
    exchange = given.get("exchange")
    routing_key = given.get("routing_key")
    if exchange is not None and exchange[1] != "":
        file.set("exchange", *exchange)
        if routing_key is not None and routing_key[1] != "":
            file.set("routing_key", *routing_key)
    elif routing_key is not None:  # the default exchange routes by queue name
        if "queue" not in file.values and routing_key[1] != "":
            file.set("queue", *routing_key)
        else:
            file.ignored.append(f"{routing_key[0]} (no exchange: jobs go to the queue)")
    if "queue" not in file.values and "address" not in file.values:
        raise InvalidSetting(f"{prefix}: no queue (set queue, or address)")


def _with_login(where: str, url: Secret, given: Mapping[str, tuple[str, object]]) -> Secret:
    """``amqp1.username`` and ``password`` put into the URL, percent-encoded."""
    login = {k: given[k] for k in ("username", "password") if k in given}
    if not login:
        return url
    for key_where, value in login.values():
        if not isinstance(value, str):  # never echoed
            raise InvalidSetting(f"{key_where} must be a string, not {type(value).__name__}")
    endpoint = parse_url(url.reveal())
    if not isinstance(endpoint, AmqpEndpoint) or endpoint.username is not None:
        raise InvalidSetting(f"{where}: username/password need an amqp(s):// URL without a login")
    text = urllib.parse.quote(str(login.get("username", ("", ""))[1]), safe="")
    if "password" in login:
        text += ":" + urllib.parse.quote(str(login["password"][1]), safe="")
    scheme, _, rest = url.reveal().partition("://")
    return Secret(f"{scheme}://{text}@{rest}")
