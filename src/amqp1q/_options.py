"""``AdapterOptions``: the backend settings ``JobQueue.from_url`` takes, checked once.

A value below the adapters: the facade builds it (:func:`adapter_options`), the factory hands it
to the adapter the URL picks, and the adapters read it. Nothing here knows any backend.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import attrs

from ._errors import InvalidSetting
from ._policy import ReconnectPolicy
from ._roadrunner import check_wire_format
from ._settings import TLSConfig, check_positive_int, check_seconds
from ._urls import AmqpEndpoint, Endpoint

__all__ = ["AdapterOptions", "adapter_options"]


@attrs.frozen
class AdapterOptions:
    """Backend settings from ``JobQueue.from_url``'s keyword arguments."""

    queue: str | None = None
    address: str | None = None
    container_id: str | None = None
    tls: TLSConfig | None = None
    exchange: str | None = None
    routing_key: str | None = None
    broker: str | None = None
    #: The broker's virtual host (``vhost=``, or ``?vhost=`` in the URL).
    vhost: str | None = None
    connect_timeout: float = 10.0
    max_message_size: int | None = None
    #: How jobs are written: ``"amqp1q"`` (DESIGN section 3) or ``"roadrunner"`` (the
    #: RoadRunner amqp1 driver's JSON envelope). Both are read whatever this says.
    wire_format: str = "amqp1q"
    #: The pipeline the RoadRunner envelope names (``rr_pipeline``); None: the queue's name.
    pipeline: str | None = None
    #: Send a SASL PLAIN password over plaintext to a host that is not loopback.
    allow_plaintext_password: bool = False
    #: Service Bus has no priority: push prioritised jobs anyway, dropping it.
    ignore_priority: bool = False
    #: The client's reply queue for ``queue.call()`` where the broker makes no dynamic nodes
    #: (RabbitMQ 3.x: ``amqp1q setup-rabbitmq --reply-queue NAME``; Service Bus).
    reply_queue: str | None = None
    #: None: a lost connection is not re-dialled (the queue fails with ConnectionLost).
    reconnect: ReconnectPolicy | None = attrs.field(factory=ReconnectPolicy)

    def given(self) -> list[str]:
        """Names of the network options set (those that mean nothing to ``memory://``)."""
        names = ("container_id", "tls", "exchange", "routing_key", "broker", "vhost")
        return [name for name in names if getattr(self, name) is not None]


def adapter_options(endpoint: Endpoint, **given: Any) -> AdapterOptions:
    """``from_url``'s backend keyword arguments (those of :class:`AdapterOptions`), each
    checked by :data:`_CHECKS` (InvalidSetting names a bad one); ``vhost`` against the URL's."""
    checked: dict[str, Any] = {
        "vhost": _vhost(endpoint, _optional_str("vhost", given.pop("vhost", None)))
    }
    for name, value in given.items():
        checked[name] = _CHECKS[name](name, value)
    return AdapterOptions(**checked)


def _optional_str(name: str, value: object) -> str | None:
    """``value``: None, or a non-empty str (else InvalidSetting naming ``name``)."""
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise InvalidSetting(f"{name} must be a non-empty str, got {value!r}")
    return value


def _vhost(endpoint: Endpoint, given: str | None) -> str | None:
    """``vhost=`` and the URL's ``?vhost=`` agree (or one of them is unset)."""
    in_url = endpoint.vhost if isinstance(endpoint, AmqpEndpoint) else None
    if given is not None and in_url is not None and given != in_url:
        raise InvalidSetting(
            f"vhost={given!r} disagrees with the URL's ?vhost={in_url}; give it once"
        )
    return given if given is not None else in_url


def _reconnect_policy(_: str, value: ReconnectPolicy | bool) -> ReconnectPolicy | None:
    if isinstance(value, ReconnectPolicy):
        return value
    if value is True:
        return ReconnectPolicy()
    if value is False:
        return None
    raise InvalidSetting(f"reconnect must be a ReconnectPolicy, True or False, got {value!r}")


def _tls(_: str, value: TLSConfig | Mapping[str, Any] | bool | None) -> TLSConfig | None:
    return TLSConfig.of(value)


def _optional_positive_int(name: str, value: object) -> int | None:
    return None if value is None else check_positive_int(name, value)


def _flag(_: str, value: object) -> bool:
    return bool(value)


#: How each of ``from_url``'s backend settings is checked (and made its type).
_CHECKS: dict[str, Callable[[str, Any], Any]] = {
    "queue": _optional_str,
    "address": _optional_str,
    "container_id": _optional_str,
    "tls": _tls,
    "exchange": _optional_str,
    "routing_key": _optional_str,
    "broker": _optional_str,
    "connect_timeout": check_seconds,
    "max_message_size": _optional_positive_int,
    "reconnect": _reconnect_policy,
    "ignore_priority": _flag,
    "allow_plaintext_password": _flag,
    "wire_format": check_wire_format,
    "pipeline": _optional_str,
    "reply_queue": _optional_str,
}
