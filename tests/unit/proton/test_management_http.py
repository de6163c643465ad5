"""The management API's client settings, without a network: the URL a queue's own URL gives
(https on 15671 for amqps), where the credentials go, and the error without httpx."""

from __future__ import annotations

import sys

import pytest

from amqp1q import InvalidSetting, MissingDependency
from amqp1q._urls import AmqpEndpoint, parse_url
from amqp1q.adapters.proton._management_http import ManagementAPI
from amqp1q.adapters.proton._rabbitmq_inspect import management_url
from amqp1q.adapters.proton.rabbitmq_setup import RabbitMQManagement


def _management_url_of(url: str) -> str:
    endpoint = parse_url(url)
    assert isinstance(endpoint, AmqpEndpoint)
    return management_url(endpoint)


def test_the_queues_url_gives_the_management_url() -> None:
    plain = _management_url_of("amqp://app:p%40ss@rabbit.example:5672")
    assert plain == "http://app:p%40ss@rabbit.example:15672"
    assert (
        _management_url_of("amqps://app:pw@rabbit.example") == "https://app:pw@rabbit.example:15671"
    )
    assert _management_url_of("amqp://[::1]:5672") == "http://guest:guest@[::1]:15672"


def test_the_credentials_are_kept_out_of_the_base_url() -> None:
    api = ManagementAPI.from_url("https://ops:s%2Fcret@mgmt.example")
    assert api.base == "https://mgmt.example:15671"
    assert (api.user, api.password.reveal()) == ("ops", "s/cret")
    assert "s/cret" not in repr(api)
    assert "cret" not in api.display
    assert api.https
    assert ManagementAPI.from_url("http://mgmt.example:8080").base == "http://mgmt.example:8080"
    with pytest.raises(InvalidSetting, match="not a management URL"):
        ManagementAPI.from_url("ftp://u:secret@mgmt.example")


def test_a_request_carries_json_only_with_a_body() -> None:
    api = ManagementAPI.from_url("http://127.0.0.1:15672")
    assert api.request("DELETE", "/queues/%2F/q") == {
        "method": "DELETE",
        "url": "/api/queues/%2F/q",
    }
    put = api.request("PUT", "/queues/%2F/q", {"durable": True})
    assert put["content"] == b'{"durable": true}'
    assert put["headers"] == {"Content-Type": "application/json"}


def test_without_httpx_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "httpx", None)  # import httpx -> ImportError
    with pytest.raises(MissingDependency, match=r"amqp1q\[rabbitmq\]"):
        RabbitMQManagement("http://127.0.0.1:15672")
