"""Job <-> ServiceBusMessage mapping of the Service Bus adapter, without a network."""

from __future__ import annotations

import datetime
import json
import subprocess
import sys
import uuid

import pytest

pytest.importorskip("azure.servicebus")

from azure.servicebus import ServiceBusMessage

from amqp1q import InvalidSetting, Job, JobQueue, UnsupportedFeature
from amqp1q._roadrunner import encode_envelope
from amqp1q.adapters.servicebus import (
    ATTEMPT_PROPERTY,
    ServiceBusAdapter,
    to_incoming,
    to_message,
)
from amqp1q.adapters.servicebus._mapping import to_roadrunner_message

CONNECTION_STRING = (
    "Endpoint=sb://127.0.0.1:5672;SharedAccessKeyName=Root;SharedAccessKey=s3cret;"
    "UseDevelopmentEmulator=true;EntityPath=jobs"
)


def test_a_job_becomes_a_message_with_id_subject_and_properties() -> None:
    job = Job("resize", {"w": 640}, headers={"tenant": "acme", "traceparent": "00-ab-cd-01"})
    message = to_message(job)
    assert message.message_id == job.id
    assert message.subject == "resize"
    assert message.content_type == "application/json"
    # trace context named in bytes, as the SDK's own tracing looks it up (and then keeps it)
    assert message.application_properties == {"tenant": "acme", b"traceparent": "00-ab-cd-01"}
    assert b"".join(message.body) == b'{"w":640}'
    assert message.scheduled_enqueue_time_utc is None


def test_attempt_rides_in_a_reserved_property_only_after_the_first() -> None:
    assert to_message(Job("x")).application_properties is None
    message = to_message(Job("x"), attempt=3)
    assert message.application_properties == {ATTEMPT_PROPERTY: 3}


def test_a_scheduled_message_carries_its_enqueue_time() -> None:
    due = datetime.datetime(2030, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    assert to_message(Job("x"), scheduled_at=due).scheduled_enqueue_time_utc == due


def test_round_trip_keeps_name_id_body_headers_and_counts_the_attempt() -> None:
    job = Job("send", b"\x00raw\xff", headers={"k": "v", "Diagnostic-Id": "00-1-2-01"})
    incoming = to_incoming(to_message(job, attempt=2))
    assert (incoming.id, incoming.name, incoming.body) == (job.id, "send", b"\x00raw\xff")
    assert dict(incoming.headers) == {"k": "v", "Diagnostic-Id": "00-1-2-01"}
    assert incoming.attempt == 2
    assert incoming.decode_error is None


def test_sdk_bytes_are_decoded_to_text_and_broker_fields_taken_out() -> None:
    token = uuid.uuid4()
    message = ServiceBusMessage(
        b"body",
        message_id="m-1",
        subject="job",
        application_properties={
            b"tenant": b"acme",
            b"count": 7,
            b"flag": True,
            b"id": token,
            b"DeadLetterReason": b"bad",
            b"DeadLetterErrorDescription": b"field x",
            ATTEMPT_PROPERTY.encode(): 4,
            b"x-amqp1q-other": b"ignored",
        },
    )
    incoming = to_incoming(message)
    assert dict(incoming.headers) == {
        "tenant": "acme",
        "count": "7",
        "flag": "true",
        "id": str(token),
    }
    assert (incoming.dead_letter_reason, incoming.dead_letter_description) == ("bad", "field x")
    assert incoming.attempt == 4
    assert incoming.priority is None


def test_a_property_with_no_text_form_is_reported_not_dropped_silently() -> None:
    message = ServiceBusMessage(b"x", application_properties={b"blob": b"\xff\xfe"})
    incoming = to_incoming(message)
    assert "blob" not in incoming.headers
    assert incoming.decode_error is not None
    assert "blob" in incoming.decode_error


# -- RoadRunner's envelope (wire_format="roadrunner") ----------------------------------------------


def test_a_roadrunner_message_is_the_envelope_with_the_headers_beside_it() -> None:
    job = Job("app.Jobs.SendEmail", b'{"to":"a@b.c"}', headers={"tenant": "acme"}, priority=3)
    message = to_roadrunner_message(job, "emails")
    assert b"".join(message.body) == encode_envelope(job, "emails")
    assert json.loads(encode_envelope(job, "emails"))["header"]["rr_pipeline"] == "emails"
    # as RoadRunner writes it: no message-id, subject or content type
    assert (message.message_id, message.subject, message.content_type) == (None, None, None)
    assert message.application_properties == {"tenant": "acme"}


def test_a_delayed_roadrunner_message_carries_x_delay_and_the_job_id_to_schedule_by() -> None:
    job = Job("later", b"x", delay=1.5)
    message = to_roadrunner_message(job, "q", attempt=2)
    assert message.message_id == job.id  # Service Bus schedules a message by its id
    assert message.application_properties == {"x-delay": 1500, ATTEMPT_PROPERTY: 2}


def test_a_roadrunner_message_reads_back_as_its_job() -> None:
    job = Job("app.Jobs.Report", b"text", headers={"k": "v"}, priority=7, delay=2)
    incoming = to_incoming(to_roadrunner_message(job, "q", attempt=3))
    assert (incoming.name, incoming.id, incoming.body) == ("app.Jobs.Report", job.id, b"text")
    assert dict(incoming.headers) == {"k": "v"}  # x-delay is the push's, not a header
    assert (incoming.priority, incoming.attempt, incoming.content_type) == (7, 3, None)
    assert incoming.decode_error is None


def test_a_roadrunner_envelope_from_another_client_is_read_with_or_without_a_message_id() -> None:
    document = {
        "header": {"job": "old.Job", "id": "rr-9", "headers": {"t": ["a", "b"]}, "priority": 2},
        "body": "payload",
    }
    for message_id in (None, "assigned-by-the-service"):
        message = ServiceBusMessage(json.dumps(document), message_id=message_id)
        if message_id is None:
            message.message_id = None
        incoming = to_incoming(message)
        assert (incoming.name, incoming.id, incoming.body) == ("old.Job", "rr-9", b"payload")
        assert (dict(incoming.headers), incoming.priority) == ({"t": "a"}, 2)


def test_an_amqp1q_job_whose_payload_looks_like_an_envelope_stays_itself() -> None:
    body = {"header": {"rr_job": "not.me", "rr_id": "x"}, "body": "b"}
    incoming = to_incoming(to_message(Job("mine", body)))
    assert incoming.name == "mine"
    assert json.loads(incoming.body) == body


def test_from_url_passes_the_wire_format_and_pipeline_to_service_bus() -> None:
    adapter = JobQueue.from_url(CONNECTION_STRING, wire_format="roadrunner").adapter
    assert isinstance(adapter, ServiceBusAdapter)
    assert (adapter.wire_format, adapter.pipeline) == ("roadrunner", "jobs")
    named = JobQueue.from_url(CONNECTION_STRING, wire_format="roadrunner", pipeline="emails")
    assert isinstance(named.adapter, ServiceBusAdapter)
    assert named.adapter.pipeline == "emails"


def test_bad_wire_format_combinations_on_service_bus_are_refused() -> None:
    with pytest.raises(InvalidSetting, match='wire_format must be "amqp1q" or "roadrunner"'):
        JobQueue.from_url(CONNECTION_STRING, wire_format="protobuf")
    with pytest.raises(InvalidSetting, match="wire_format"):
        ServiceBusAdapter.from_connection_string(CONNECTION_STRING, wire_format="json")
    with pytest.raises(UnsupportedFeature, match="exchange"):
        JobQueue.from_url(CONNECTION_STRING, wire_format="roadrunner", exchange="x")


def test_from_url_picks_the_service_bus_adapter_and_hides_the_key() -> None:
    queue = JobQueue.from_url(CONNECTION_STRING)
    assert isinstance(queue.adapter, ServiceBusAdapter)
    assert queue.name == "jobs"
    assert "s3cret" not in queue.url
    assert "s3cret" not in repr(queue)
    assert JobQueue.from_url(CONNECTION_STRING, queue="other").name == "other"


def test_network_settings_that_mean_nothing_to_service_bus_are_refused() -> None:
    with pytest.raises(UnsupportedFeature, match="exchange"):
        JobQueue.from_url(CONNECTION_STRING, exchange="x")


def test_the_adapter_needs_a_queue_and_a_way_to_connect() -> None:
    with pytest.raises(InvalidSetting):
        ServiceBusAdapter()
    with pytest.raises(InvalidSetting, match="queue"):
        ServiceBusAdapter.from_connection_string(CONNECTION_STRING.replace(";EntityPath=jobs", ""))
    with pytest.raises(InvalidSetting, match="credential"):
        ServiceBusAdapter.from_credential("ns.servicebus.windows.net", object(), "jobs")


def test_importing_without_the_extra_names_it() -> None:
    code = (
        "import sys; sys.modules['azure.servicebus'] = None\n"
        "try:\n"
        "    import amqp1q.adapters.servicebus\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    assert 'pip install "amqp1q[azure]"' in out


def test_a_group_is_the_session_id_both_ways() -> None:
    job = Job("send", b"x", group="customer-42")
    message = to_message(job)
    assert message.session_id == "customer-42"
    assert to_incoming(message).group == "customer-42"
    assert to_roadrunner_message(job, "p").session_id == "customer-42"
    assert to_incoming(to_message(Job("send"))).group is None
