"""The Job model: validation, serialisation once at construction, headers."""

from __future__ import annotations

import datetime
import math

import pytest

from amqp1q import Headers, InvalidJob, Job, PayloadError
from amqp1q._payload import decode_payload, encode_payload


def test_defaults() -> None:
    job = Job("send_email", {"to": "a@b.c"})
    assert job.headers == {}
    assert job.priority is None
    assert job.delay is None
    assert job.durable
    assert len(job.id) == 36
    assert job.body == b'{"to":"a@b.c"}'
    assert job.content_type == "application/json"


def test_ids_are_unique() -> None:
    assert len({Job("x").id for _ in range(1000)}) == 1000


def test_bytes_travel_as_they_are() -> None:
    job = Job("raw", b"\x00\xff")
    assert (job.body, job.content_type) == (b"\x00\xff", "application/octet-stream")
    typed = Job("raw", bytearray(b"<x/>"), content_type="application/xml")
    assert (typed.body, typed.content_type) == (b"<x/>", "application/xml")


def test_json_is_utf8_and_compact() -> None:
    assert Job("t", {"a": "é", "b": [1, 2]}).body == '{"a":"é","b":[1,2]}'.encode()


@pytest.mark.parametrize(
    "payload", [{1, 2}, object(), {"x": float("nan")}, {"t": datetime.date.today()}]
)
def test_unserialisable_payload_raises_payload_error(payload: object) -> None:
    with pytest.raises(PayloadError, match="cannot be serialised as JSON"):
        Job("bad", payload)


def test_non_json_content_type_needs_bytes() -> None:
    with pytest.raises(PayloadError, match="needs a bytes payload"):
        Job("bad", {"a": 1}, content_type="text/plain")


def test_circular_payload_raises_payload_error() -> None:
    loop: list[object] = []
    loop.append(loop)
    with pytest.raises(PayloadError):
        Job("bad", loop)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": ""}, "non-empty str"),
        ({"name": 5}, "non-empty str"),
        ({"id": ""}, "job id"),
        ({"id": "x" * 129}, "job id"),
        ({"priority": -1}, "priority"),
        ({"priority": 256}, "priority"),
        ({"priority": True}, "priority"),
        ({"delay": -1}, "delay"),
        ({"delay": math.inf}, "delay"),
        ({"delay": "5"}, "delay"),
        ({"durable": 1}, "durable"),
        ({"headers": {"k": 1}}, "values must be str"),
        ({"headers": {"": "v"}}, "non-empty str"),
        ({"headers": {"x-amqp1q-attempt": "2"}}, "reserved"),
        ({"headers": ["k", "v"]}, "mapping"),
    ],
)
def test_invalid_jobs(kwargs: dict[str, object], match: str) -> None:
    fields: dict[str, object] = {"name": "ok", **kwargs}
    name = fields.pop("name")
    with pytest.raises(InvalidJob, match=match):
        Job(name, **fields)  # type: ignore[arg-type]


def test_delay_accepts_timedelta() -> None:
    assert Job("x", delay=datetime.timedelta(minutes=1)).delay == 60.0


def test_repr_hides_the_payload() -> None:
    job = Job("login", {"password": "hunter2"}, priority=3, delay=2)
    assert "hunter2" not in repr(job)
    assert "login" in repr(job)
    assert "priority=3" in repr(job)


def test_evolve_reserialises_a_new_payload() -> None:
    job = Job("a", b"raw")
    other = job.evolve(payload={"k": 1})
    assert (other.id, other.body, other.content_type) == (job.id, b'{"k":1}', "application/json")


def test_jobs_compare_by_value() -> None:
    job = Job("a", {"k": 1}, id="same")
    assert job == Job("a", {"k": 1}, id="same")
    assert hash(job) == hash(Job("a", {"k": 1}, id="same"))


def test_headers_mapping() -> None:
    headers = Headers({"a": "1"}, b="2")
    assert dict(headers) == {"a": "1", "b": "2"}
    assert headers == Headers({"b": "2", "a": "1"})
    assert hash(headers) == hash(Headers({"b": "2", "a": "1"}))
    assert headers.with_(c="3")["c"] == "3"
    assert "c" not in headers
    assert Headers.of(None) == {}
    assert Headers.of(headers) is headers


def test_decode_payload() -> None:
    assert decode_payload(b'{"a":1}', "application/json; charset=utf-8") == {"a": 1}
    assert decode_payload(b"[1]", "application/vnd.x+json") == [1]
    assert decode_payload(b"raw", None) == b"raw"
    assert decode_payload(b"raw", "text/plain") == b"raw"
    with pytest.raises(PayloadError, match="not valid JSON"):
        decode_payload(b"{nope", "application/json")
    assert encode_payload(b"x", None) == (b"x", "application/octet-stream")


def test_a_group_is_an_ordering_key_of_1_to_128_characters() -> None:
    assert Job("n").group is None
    job = Job("n", group="customer-42")
    assert job.group == "customer-42"
    assert "group='customer-42'" in repr(job)
    assert Job("n", group="g" * 128).group == "g" * 128
    for bad in ("", "g" * 129, 42, "\ud800"):
        with pytest.raises(InvalidJob, match="group"):
            Job("n", group=bad)  # type: ignore[arg-type]
