"""Typed payloads: each kind checked and built from a received job (memory backend), and pushed
as JSON; the handler signatures that declare them."""

from __future__ import annotations

import dataclasses
import datetime
import enum
import functools
import json
import re
import subprocess
import sys
import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, NewType, Optional, TypedDict

import attrs
import pydantic
import pytest
from typing_extensions import NotRequired, Required

from amqp1q import (
    InvalidSetting,
    Job,
    JobQueue,
    PayloadError,
    PayloadValidationError,
    ReceivedJob,
)
from amqp1q._signature import Signature

if TYPE_CHECKING:  # a handler's job annotation may name a type checkers alone can see
    from amqp1q import ReceivedJob as OnlyForTypeCheckers

pytestmark = pytest.mark.anyio


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


@attrs.frozen
class Item:
    sku: str
    qty: int = 1


@attrs.frozen
class Order:
    id: int
    items: list[Item]
    color: Color
    note: str | None = None
    _secret: str = "x"  # a private attrs field: passed as `secret=`
    amount: float = attrs.field(default=0.0, converter=float)  # the converter gets raw JSON


@attrs.frozen
class Positive:
    n: int = attrs.field()

    @n.validator
    def _check(self, attribute: object, value: int) -> None:
        if value <= 0:
            raise ValueError("n must be positive")


@dataclasses.dataclass
class Point:
    x: float
    y: float
    tags: dict[str, int] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.x < 0:
            raise ValueError("x must be >= 0")


class Email(TypedDict):
    to: str
    cc: NotRequired[list[str]]


class Partial(TypedDict, total=False):
    name: Required[str]
    age: int


class Signup(pydantic.BaseModel):
    email: str
    plan: Literal["free", "pro"] = "free"
    referrer: str | None = pydantic.Field(default=None, alias="ref")


@attrs.frozen
class Node:
    value: int
    children: list[Node] = attrs.Factory(list)


@attrs.frozen
class Stamped:
    when: datetime.datetime  # not a JSON type: use pydantic, or an attrs converter


UserId = NewType("UserId", int)


async def received(*jobs: Job) -> list[ReceivedJob]:
    """Push ``jobs`` to a fresh memory queue and receive them (acked)."""
    async with JobQueue.from_url(f"memory://{uuid.uuid4().hex}/typed") as queue:
        await queue.push_many(jobs)
        async with queue.consume(prefetch=len(jobs)) as consumer:
            got = []
            for _ in jobs:
                job = await consumer.receive(timeout=5)
                assert job is not None
                await job.ack()
                got.append(job)
    return got


async def one(payload: Any, **options: Any) -> ReceivedJob:
    return (await received(Job("typed", payload, **options)))[0]


def problems(info: pytest.ExceptionInfo[PayloadValidationError]) -> tuple[str, ...]:
    return info.value.errors


# -- attrs --------------------------------------------------------------------------------------


async def test_attrs_round_trip_with_nested_classes_enums_and_defaults() -> None:
    order = Order(7, [Item("a", 2), Item("b")], Color.GREEN, secret="s", amount=2)
    job = await one(order)
    assert job.content_type == "application/json"
    assert json.loads(job.body) == {
        "id": 7,
        "items": [{"sku": "a", "qty": 2}, {"sku": "b", "qty": 1}],
        "color": "green",
        "note": None,
        "_secret": "s",
        "amount": 2.0,
    }
    assert job.payload_as(Order) == order


async def test_attrs_collects_every_problem_with_its_path() -> None:
    job = await one({"id": "7", "items": [{"qty": True}, "x"], "color": "blue", "extra": 1})
    with pytest.raises(PayloadValidationError) as info:
        job.payload_as(Order)
    assert problems(info) == (
        "id: expected int, got str",
        "items[0].sku: missing",
        "items[0].qty: expected int, got bool",
        "items[1]: expected an object (Item), got str",
        "color: 'blue' is not a valid Color",
    )
    assert info.value.payload_type == "Order"
    assert (info.value.queue, info.value.job_id) == (job.queue, job.id)
    assert isinstance(info.value, PayloadError)
    assert info.value.message.startswith("the payload is not a valid Order: id: expected int")


async def test_attrs_converters_get_raw_values_and_validators_run() -> None:
    job = await one({"id": 1, "items": [], "color": "red", "amount": "2.5"})
    assert job.payload_as(Order).amount == 2.5
    refused = await one({"n": -1})
    with pytest.raises(PayloadValidationError) as info:
        refused.payload_as(Positive)
    assert problems(info) == ("ValueError: n must be positive",)


async def test_recursive_classes() -> None:
    tree = Node(1, [Node(2, [Node(3)]), Node(4)])
    assert (await one(tree)).payload_as(Node) == tree
    with pytest.raises(PayloadValidationError) as info:
        (await one({"value": 1, "children": [{"value": "2"}]})).payload_as(Node)
    assert problems(info) == ("children[0].value: expected int, got str",)


# -- dataclasses --------------------------------------------------------------------------------


async def test_dataclass_round_trip_and_post_init() -> None:
    point = Point(1, 2.5, {"a": 1})
    assert (await one(point)).payload_as(Point) == point
    assert (await one({"x": 1, "y": 2})).payload_as(Point) == Point(1.0, 2.0)
    with pytest.raises(PayloadValidationError) as info:
        (await one({"x": -1, "y": 0})).payload_as(Point)
    assert problems(info) == ("ValueError: x must be >= 0",)
    with pytest.raises(PayloadValidationError) as info:
        (await one({"x": 1, "tags": {"a": "1"}})).payload_as(Point)
    assert problems(info) == ("y: missing", "tags.a: expected int, got str")


# -- TypedDict ----------------------------------------------------------------------------------


async def test_typeddict_checks_required_keys_and_types_and_drops_unknown_keys() -> None:
    assert (await one({"to": "a@b.c", "spam": 1})).payload_as(Email) == {"to": "a@b.c"}
    assert (await one({"to": "a", "cc": ["b"]})).payload_as(Email) == {"to": "a", "cc": ["b"]}
    with pytest.raises(PayloadValidationError) as info:
        (await one({"cc": ["b", 3]})).payload_as(Email)
    assert problems(info) == ("to: missing", "cc[1]: expected str, got int")
    assert (await one({"name": "n"})).payload_as(Partial) == {"name": "n"}
    with pytest.raises(PayloadValidationError) as info:
        (await one({"age": 3})).payload_as(Partial)
    assert problems(info) == ("name: missing",)
    with pytest.raises(PayloadValidationError) as info:
        (await one(["to"])).payload_as(Email)
    assert problems(info) == ("expected an object (Email), got list",)


# -- pydantic -----------------------------------------------------------------------------------


async def test_pydantic_model_round_trip_with_aliases() -> None:
    signup = Signup(email="a@b.c", plan="pro", ref="x")
    job = await one(signup)
    assert json.loads(job.body) == {"email": "a@b.c", "plan": "pro", "ref": "x"}
    assert job.payload_as(Signup) == signup


async def test_pydantic_errors_keep_their_locations() -> None:
    with pytest.raises(PayloadValidationError) as info:
        (await one({"plan": "gold"})).payload_as(Signup)
    assert info.value.errors[0] == "email: Field required"
    assert info.value.errors[1].startswith("plan: Input should be 'free' or 'pro'")
    with pytest.raises(PayloadValidationError) as info:
        (await one({"items": [{"email": 1}]})).payload_as(dict[str, list[Signup]])
    assert info.value.errors == ("items[0].email: Input should be a valid string",)


def test_amqp1q_never_imports_pydantic_itself() -> None:
    code = "import amqp1q, amqp1q.worker, amqp1q._typed, sys; print('pydantic' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# -- JSON types ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "tp", "expected"),
    [
        ([1, 2], list[int], [1, 2]),
        ([1, 2], tuple[int, ...], (1, 2)),
        ([1, 2], Sequence[float], [1.0, 2.0]),
        ({"a": 1.5}, Mapping[str, float], {"a": 1.5}),
        ({"a": None}, dict[str, Optional[int]], {"a": None}),  # noqa: UP045  # typing.Union
        ("red", Color, Color.RED),
        ("pro", Literal["free", "pro"], "pro"),
        (3, int | str, 3),
        ("3", int | str, "3"),
        (5, UserId, 5),
        (None, None, None),
        ({"any": [1, "x"]}, Any, {"any": [1, "x"]}),
        ([1, "x"], list, [1, "x"]),
    ],
)
async def test_json_types(payload: Any, tp: Any, expected: Any) -> None:
    got = (await one(payload)).payload_as(tp)
    assert got == expected
    assert type(got) is type(expected)


@pytest.mark.parametrize(
    ("payload", "tp", "problem"),
    [
        (True, int, "expected int, got bool"),
        (1.5, int, "expected int, got float"),
        ("1", float, "expected float, got str"),
        (1, str, "expected str, got int"),
        ({"a": 1}, list[int], "expected an array, got dict"),
        ([1], dict[str, int], "expected an object, got list"),
        ("gold", Literal["free", "pro"], "expected one of ['free', 'pro'], got 'gold'"),
        (1.5, int | str, "expected int | str, got float"),
        (1, None, "expected null, got int"),
    ],
)
async def test_json_type_mismatches(payload: Any, tp: Any, problem: str) -> None:
    with pytest.raises(PayloadValidationError) as info:
        (await one(payload)).payload_as(tp)
    assert problems(info) == (problem,)


async def test_bytes_is_the_raw_body_and_undecodable_json_is_invalid() -> None:
    raw = await one(b"\x00raw")
    assert raw.payload_as(bytes) == b"\x00raw"
    broken = await one(b"{not json", content_type="application/json")
    with pytest.raises(PayloadValidationError, match="the payload is not a valid Email: the body"):
        broken.payload_as(Email)


async def test_many_problems_are_listed_up_to_ten_in_the_message() -> None:
    with pytest.raises(PayloadValidationError) as info:
        (await one(["x"] * 25)).payload_as(list[int])
    assert len(info.value.errors) == 25
    assert info.value.message.endswith("; and 15 more")


@pytest.mark.parametrize(
    ("tp", "named"),
    [
        (set[int], "amqp1q cannot check a payload of type set[int]: it checks attrs classes"),
        (Stamped, "Stamped.when: amqp1q cannot check a payload of type datetime"),
        (complex, "amqp1q cannot check a payload of type complex"),
    ],
)
async def test_types_amqp1q_cannot_check_are_refused(tp: Any, named: str) -> None:
    job = await one({})
    with pytest.raises(InvalidSetting, match=re.escape(named)):
        job.payload_as(tp)


async def test_dict_keys_must_be_strings() -> None:
    with pytest.raises(InvalidSetting, match="JSON object keys are str"):
        (await one({})).payload_as(dict[int, str])


def test_models_that_cannot_be_json_are_refused_when_the_job_is_made() -> None:
    @dataclasses.dataclass
    class Holder:
        value: object

    with pytest.raises(PayloadError, match="cannot be serialised as JSON"):
        Job("x", Holder({1, 2}))


# -- handler signatures -------------------------------------------------------------------------


async def _legacy(job: ReceivedJob) -> None: ...


async def _typed(job: OnlyForTypeCheckers, payload: Email) -> None: ...


async def _untyped(job, payload):  # type: ignore[no-untyped-def]
    ...


async def _any(job: ReceivedJob, payload: Any) -> None: ...


async def _optional_second(job: ReceivedJob, payload: Email | None = None) -> None: ...


async def _raw(job: ReceivedJob, payload: bytes) -> None: ...


async def _three(job: ReceivedJob, payload: Email, more: int) -> None: ...


async def _keyword(job: ReceivedJob, *, must: int) -> None: ...


async def _nothing() -> None: ...


async def _unknown(job: ReceivedJob, payload: NoSuchType) -> None: ...  # type: ignore[name-defined]  # noqa: F821


async def _unsupported(job: ReceivedJob, payload: set[int]) -> None: ...


class _Callable:
    async def __call__(self, job: ReceivedJob, payload: Point) -> None: ...


async def test_signatures_choose_job_alone_or_job_and_typed_payload() -> None:
    job = await one({"to": "a", "x": 1})
    assert Signature.of(_legacy).arguments(job) == (job,)
    assert Signature.of(_optional_second).arguments(job) == (job,)
    assert Signature.of(_typed).arguments(job) == (job, {"to": "a"})
    assert Signature.of(_untyped).arguments(job) == (job, {"to": "a", "x": 1})
    assert Signature.of(_any).arguments(job) == (job, {"to": "a", "x": 1})
    assert Signature.of(_raw).arguments(job) == (job, job.body)
    assert repr(Signature.of(_typed)) == "Signature(job, payload: Email)"
    point = await one(Point(1, 2))
    assert Signature.of(_Callable()).arguments(point) == (point, Point(1, 2))
    assert Signature.of(functools.partial(_three, more=1)).arguments(job) == (job, {"to": "a"})
    assert not Signature.of(print).typed  # no signature to read: called with the job


@pytest.mark.parametrize(
    ("func", "message"),
    [
        (_three, r"a handler takes \(job\) or \(job, payload\); _three takes"),
        (_keyword, r"_keyword takes \(job, must\)"),
        (_nothing, r"_nothing takes \(\)"),
        (_unknown, r"cannot resolve the payload annotation 'NoSuchType' of _unknown"),
        (_unsupported, r"cannot check a payload of type set\[int\]"),
    ],
)
def test_signatures_amqp1q_cannot_call_are_refused(func: Any, message: str) -> None:
    with pytest.raises(InvalidSetting, match=message):
        Signature.of(func)
