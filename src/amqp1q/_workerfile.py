"""Worker settings read from a TOML or YAML file: amqp1q's own keys, or a RoadRunner ``.rr.yaml``.

:func:`read_worker_file` reads the file (TOML, or YAML with PyYAML), tells the two shapes apart,
and names the file in any error. amqp1q's shape is flat (``registry``, ``url`` or ``url_env``,
``queue``, ``concurrency``, ``groups``, ..., with ``retry``, ``reconnect`` and ``tls`` tables,
and ``queues``: several queues, by name or as tables of their own settings); the settings and
their checks are :mod:`._workersettings`'s. A file with a ``jobs`` or ``amqp1`` section is read
as RoadRunner's, by :mod:`._rrconfig` (RoadRunner has no ordered consuming: ``groups`` goes in
its optional ``amqp1q`` section). An unknown key is an :class:`~amqp1q.InvalidSetting` naming
the file and the key.

:class:`~amqp1q.worker.WorkerConfig` (in :mod:`._workerconfig`) is the value built from the
settings read.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from ._errors import ConfigurationError, InvalidSetting, MissingDependency
from ._rrconfig import read_roadrunner
from ._workersettings import WorkerFile, as_table

__all__ = ["WorkerFile", "read_worker_file"]

log = logging.getLogger("amqp1q.worker")


def read_worker_file(path: Path, pipeline: str | None) -> WorkerFile:
    """Read and check ``path``; ``pipeline`` picks one of a RoadRunner file's pipelines.

    Raises :class:`~amqp1q.InvalidSetting` naming the file and the key, or
    :class:`~amqp1q.MissingDependency` for YAML without PyYAML installed.
    """
    file = WorkerFile(path)
    try:
        data = as_table("the file", _read(path))
        file.roadrunner = "jobs" in data or "amqp1" in data
        if file.roadrunner:
            file.pipeline = read_roadrunner(file, data, pipeline)
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
