"""RoadRunner's ``.rr.yaml`` read as worker settings: :func:`read_roadrunner`.

The connection comes from ``amqp1``; the ``driver: amqp1`` pipelines of ``jobs.pipelines`` that
``jobs.consume`` lists are the queues (one, or several consumed on one connection; their keys
inline or under ``config``); ``jobs.pool.num_workers`` is ``processes`` and its
``destroy_timeout`` is ``grace``; an optional ``amqp1q`` section in amqp1q's shape goes on top.
``${VAR}`` and ``${VAR:-default}`` are expanded, as RoadRunner does. Sections and keys
meaningful only to RoadRunner are ignored (listed in the file's ``ignored``); any other unknown
key is an :class:`~amqp1q.InvalidSetting`.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ._errors import InvalidSetting
from ._redact import Secret
from ._urls import AmqpEndpoint, parse_url
from ._workerqueues import QueueSpec
from ._workersettings import QUEUE_KEYS, WorkerFile, as_table, known_key

__all__ = ["read_roadrunner"]

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


def read_roadrunner(file: WorkerFile, data: Mapping[str, Any], choice: str | None) -> str | None:
    for key in data:
        if key in _RR_SECTIONS:
            file.ignored.append(str(key))
        elif key not in ("jobs", "amqp1", "amqp1q"):
            known_key(str(key), key, {"jobs", "amqp1", "amqp1q", *_RR_SECTIONS})
    connection: dict[str, tuple[str, object]] = {}
    for key, value in as_table("amqp1", _expand("amqp1", data.get("amqp1"))).items():
        if key == "redial_timeout":
            file.ignored.append("amqp1.redial_timeout")
        else:
            connection[known_key(f"amqp1.{key}", key, _RR_CONNECTION | {"redial_timeout"})] = (
                f"amqp1.{key}",
                value,
            )
    jobs = as_table("jobs", _expand("jobs", data.get("jobs")))
    for key in jobs:
        if key in _RR_ONLY_JOBS:
            file.ignored.append(f"jobs.{key}")
        else:
            known_key(f"jobs.{key}", key, {"pipelines", "consume", "pool", *_RR_ONLY_JOBS})
    _pool(file, as_table("jobs.pool", jobs.get("pool")))
    pipelines = as_table("jobs.pipelines", jobs.get("pipelines"))
    names = _choose(pipelines, jobs.get("consume"), choice)
    if len(names) == 1:
        prefix = f"jobs.pipelines.{names[0]}"
        given = _pipeline(file, prefix, pipelines[names[0]])
        _pipeline_settings(file, prefix, {**connection, **given})  # a pipeline's own addr wins
    else:
        _pipelines(file, {n: pipelines[n] for n in names}, connection)
    file.settings(as_table("amqp1q", _expand("amqp1q", data.get("amqp1q"))), "amqp1q.")
    return names[0] if len(names) == 1 else None


def _pipeline(file: WorkerFile, prefix: str, value: object) -> dict[str, tuple[str, object]]:
    """One pipeline's keys (inline or under ``config``), each with where it was read."""
    entry = as_table(prefix, value)
    if entry.get("driver") != "amqp1":
        raise InvalidSetting(f"{prefix}.driver is {entry.get('driver')!r}, not 'amqp1'")
    given = {k: (f"{prefix}.{k}", v) for k, v in entry.items() if k not in ("driver", "config")}
    for key, item in as_table(f"{prefix}.config", entry.get("config")).items():
        if key in given:
            raise InvalidSetting(f"{prefix}: {key!r} is given both inline and under config")
        given[key] = (f"{prefix}.config.{key}", item)
    for key, (where, _) in given.items():
        if key in _RR_ONLY_PIPELINE:
            file.ignored.append(where)
        else:
            known_key(where, key, _RR_PIPELINE | _RR_ONLY_PIPELINE)
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
        fields = {k: v for k, v in one.values.items() if k in QUEUE_KEYS}
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
        tls = as_table(where, value)
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
