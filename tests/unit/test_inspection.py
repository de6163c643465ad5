"""QueueDepth, PeekedJob's JSON form, Job(ttl=...) checks, and the RabbitMQ message rebuild:
pure functions, no network."""

from __future__ import annotations

import base64
import datetime

import pytest

from amqp1q import InvalidJob, Job, PeekedJob, QueueDepth
from amqp1q._inspection import body_for_display
from amqp1q.adapters.proton._codec import encode_job
from amqp1q.adapters.proton._inspect import peeked
from amqp1q.adapters.proton._rabbitmq_inspect import rebuild_message


def test_a_binary_body_is_base64_never_escaped_text() -> None:
    assert body_for_display(b"\x00\xffab", "application/octet-stream") == {"base64": "AP9hYg=="}
    assert body_for_display(b'{"a": 1}', "application/json") == {"json": {"a": 1}}
    assert body_for_display(b"hello", "text/plain; charset=utf-8") == {"text": "hello"}
    assert body_for_display(b"\xff", "text/plain") == {"base64": "/w=="}
    assert body_for_display(b"{not json", "application/json") == {"base64": "e25vdCBqc29u"}


def test_depth_totals_and_age() -> None:
    then = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
    depth = QueueDepth("q", ready=3, scheduled=None, in_flight=2, oldest_enqueued_at=then)
    assert depth.total == 5
    assert depth.oldest_age(then + datetime.timedelta(seconds=90)) == 90
    assert depth.to_dict()["oldest_enqueued_at"] == "2026-01-01T00:00:00+00:00"


def test_ttl_is_checked_at_construction() -> None:
    assert Job("a", ttl=datetime.timedelta(minutes=1)).ttl == 60
    for bad in (0, -1, float("inf"), True, "5"):
        with pytest.raises(InvalidJob):
            Job("a", ttl=bad)


def test_a_message_rabbitmq_kept_in_headers_is_put_back_together() -> None:
    job = Job("send", b"\x00\x01", headers={"tenant": "a"})
    encoded = encode_job(job)
    original = peeked(encoded, dead_letter=False)
    # what the management API's get shows for it: the sections before the data, as headers
    data_at = encoded.rindex(b"\x00\x53\x75")
    sections = encoded[:data_at]
    props_at = sections.index(b"\x00\x53\x73")
    app_at = sections.index(b"\x00\x53\x74")
    entry = {
        "payload": base64.b64encode(b"\x00\x01").decode(),
        "payload_encoding": "base64",
        "properties": {
            "headers": {
                "x-amqp-1.0-properties": "Not UTF-8, base64 is: "
                + base64.b64encode(sections[props_at:app_at]).decode(),
                "x-amqp-1.0-app-properties": "Not UTF-8, base64 is: "
                + base64.b64encode(sections[app_at:]).decode(),
            }
        },
    }
    rebuilt: PeekedJob = peeked(rebuild_message(entry), dead_letter=False)
    assert (rebuilt.id, rebuilt.name, rebuilt.body, rebuilt.headers) == (
        original.id,
        "send",
        b"\x00\x01",
        {"tenant": "a"},
    )
