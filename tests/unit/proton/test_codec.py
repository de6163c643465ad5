"""The AMQP type codec and the job codec, checked against python-qpid-proton's own encoder."""

from __future__ import annotations

import datetime
import uuid
from typing import Any

import proton
import pytest

from amqp1q import Job
from amqp1q.adapters.proton._codec import (
    Message,
    decode_message,
    encode_job,
    encode_message,
    split_sections,
)
from amqp1q.adapters.proton._types import (
    AMQPDecodeError,
    Array,
    Byte,
    Char,
    Described,
    Float,
    Int,
    Short,
    Symbol,
    Timestamp,
    UByte,
    UInt,
    ULong,
    UShort,
    decode,
    decode_all,
    encode,
)

VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    127,
    128,
    -(2**63),
    2**63 - 1,
    2**64 - 1,
    UByte(200),
    UShort(65535),
    UInt(0),
    UInt(7),
    UInt(2**32 - 1),
    ULong(0),
    ULong(9),
    ULong(2**64 - 1),
    Byte(-5),
    Short(-300),
    Int(-7),
    Int(2**31 - 1),
    Float(1.5),
    2.25,
    Char("é"),
    Timestamp(1_700_000_000_123),
    uuid.UUID("12345678-1234-5678-1234-567812345678"),
    b"",
    b"\x00\xff" * 200,
    "",
    "héllo",
    "x" * 300,
    Symbol("amqp:not-found"),
    Symbol("s" * 260),
    [],
    [1, "a", [None, b"b"]],
    list(range(300)),
    {},
    {"a": 1, Symbol("b"): [True]},
    {str(i): i for i in range(100)},
    Described(ULong(0x70), [True]),
    Described(Symbol("com.example:x"), "v"),
    Array(0xA3, (Symbol("PLAIN"), Symbol("ANONYMOUS"))),
    Array(0x71, (1, -2, 3)),
]


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_values_round_trip_with_their_types(value: Any) -> None:
    data = encode(value)
    decoded, end = decode(data)
    assert end == len(data)
    assert decoded == value
    if type(value) is int and value > 2**63 - 1:
        assert isinstance(decoded, ULong)  # too big for a long: sent as ulong
    elif value is not None and not isinstance(value, (list, dict)):
        assert type(decoded) is type(value)


@pytest.mark.parametrize(
    "value",
    [v for v in VALUES if not isinstance(v, (Described, Array, Char, Float))],
    ids=repr,
)
def test_proton_decodes_what_we_encode(value: Any) -> None:
    data = proton.Data()
    data.decode(encode(value))
    theirs = data.get_object()
    if isinstance(value, bytes):
        assert bytes(theirs) == value
    elif isinstance(value, dict):
        assert {str(k): v for k, v in theirs.items()} == {str(k): v for k, v in value.items()}
    else:
        assert theirs == value


def test_we_decode_what_proton_encodes() -> None:
    data = proton.Data()
    data.put_object(
        {
            proton.symbol("k"): [proton.ubyte(1), proton.timestamp(5), proton.char("c")],
            "u": uuid.UUID(int=7),
        }
    )
    value, _ = decode(data.encode())
    assert value == {"k": [UByte(1), Timestamp(5), Char("c")], "u": uuid.UUID(int=7)}
    assert isinstance(next(iter(value)), Symbol)


def test_datetime_encodes_as_timestamp() -> None:
    moment = datetime.datetime(2026, 1, 2, 3, 4, 5, 6000, tzinfo=datetime.timezone.utc)
    decoded, _ = decode(encode(moment))
    assert isinstance(decoded, Timestamp)
    assert decoded.to_datetime() == moment


@pytest.mark.parametrize(
    "data",
    [b"\xa1\x05abc", b"\xc0\x05\x02\x41", b"\xff", b"\xa1\x02\xff\xfe", b"\x81\x00"],
    ids=["short-string", "short-list", "unknown-code", "bad-utf8", "short-long"],
)
def test_malformed_input_is_a_decode_error(data: bytes) -> None:
    with pytest.raises(AMQPDecodeError):
        decode(data)


def test_unencodable_value_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="no AMQP encoding"):
        encode(object())


def test_decode_all_reads_back_to_back_values() -> None:
    assert decode_all(encode(1) + encode("a") + encode(None)) == [1, "a", None]


# -- the job codec -----------------------------------------------------------------------------


def test_job_message_as_proton_reads_it() -> None:
    job = Job(
        "email.send",
        b"payload",
        headers={"tenant": "acme"},
        priority=7,
        content_type="application/json",
    )
    data = encode_job(
        job,
        attempt=3,
        ttl=1500,
        annotations={Symbol("x-opt-delivery-time"): Timestamp(99)},
        extra_properties={"x-amqp1q-dead-letter-reason": "boom"},
        creation_time=1234,
    )
    message = proton.Message()
    message.decode(data)
    assert message.durable is True
    assert message.priority == 7
    assert message.ttl == 1.5
    assert message.id == job.id
    assert message.subject == "email.send"
    assert message.content_type == "application/json"
    assert message.creation_time == 1.234
    assert message.properties == {
        "tenant": "acme",
        "x-amqp1q-attempt": 3,
        "x-amqp1q-dead-letter-reason": "boom",
    }
    assert message.annotations == {"x-opt-delivery-time": 99}
    assert bytes(message.body) == b"payload"


def test_minimal_job_message_round_trips() -> None:
    job = Job("n", b"", durable=False)
    decoded = decode_message(encode_job(job))
    assert decoded.durable is False
    assert decoded.priority is None
    assert decoded.application_properties is None
    assert decoded.body_kind == "data"
    assert decoded.body == b""
    assert decoded.message_id == job.id


def test_large_body_and_many_headers() -> None:
    job = Job("big", b"z" * 100_000, headers={f"h{i}": "v" * 20 for i in range(50)})
    decoded = decode_message(encode_job(job))
    assert decoded.body == job.body
    assert decoded.application_properties == dict(job.headers)


@pytest.mark.parametrize(
    ("body", "inferred", "kind"),
    [("text", False, "value"), ([1, 2], True, "sequence"), (b"raw", True, "data")],
)
def test_messages_from_proton_decode_with_their_body_kind(
    body: Any, inferred: bool, kind: str
) -> None:
    message = proton.Message(
        id=uuid.UUID(int=1),
        subject="s",
        body=body,
        properties={"x": 1.5},
        priority=2,
        annotations={"x-opt-a": 5},
        correlation_id=b"c",
    )
    message.inferred = inferred
    decoded = decode_message(message.encode())
    assert decoded.body_kind == kind
    assert decoded.body == body
    assert decoded.message_id == uuid.UUID(int=1)
    assert decoded.application_properties == {"x": 1.5}
    assert decoded.message_annotations == {"x-opt-a": 5}
    assert decode_message(encode_message(decoded)) == decoded


def test_encode_message_is_readable_by_proton() -> None:
    original = Message(
        durable=True,
        priority=4,
        delivery_count=2,
        message_id="id-1",
        to="q",
        subject="s",
        content_type="text/plain",
        creation_time=5000,
        application_properties={"a": "b"},
        body_kind="data",
        body=b"hello",
        footer={Symbol("f"): 1},
    )
    message = proton.Message()
    message.decode(encode_message(original))
    assert (message.priority, message.delivery_count, message.id) == (4, 2, "id-1")
    assert bytes(message.body) == b"hello"


def test_split_sections_finds_each_section() -> None:
    data = encode_job(Job("n", b"b", headers={"a": "b"}), annotations={Symbol("x"): 1})
    codes = [code for code, _, _ in split_sections(data)]
    assert codes == [0x70, 0x72, 0x73, 0x74, 0x75]
    spans = split_sections(data)
    assert spans[0][1] == 0
    assert spans[-1][2] == len(data)


@pytest.mark.parametrize(
    "data",
    [b"\x01", b"\x00\x53\x75\x41", b"\x00\x53\x99\x40", b"\x00\x53\x75\xa0\x09ab"],
    ids=["not-described", "data-not-binary", "unknown-section", "truncated-data"],
)
def test_malformed_messages_are_decode_errors(data: bytes) -> None:
    with pytest.raises(AMQPDecodeError):
        decode_message(data)


def test_a_group_is_the_group_id_proton_reads() -> None:
    job = Job("n", b"x", group="customer-42")
    message = proton.Message()
    message.decode(encode_job(job))
    assert message.group_id == "customer-42"
    assert decode_message(encode_job(job)).group_id == "customer-42"
    assert decode_message(encode_job(Job("n"))).group_id is None
    big = Job("n", b"x", group="g" * 128, headers={"h": "v" * 200})
    assert decode_message(encode_job(big)).group_id == "g" * 128
