"""``amqp1q._properties``: the one application-property mapping, both ways, without a wire.

tests/integration/test_property_table.py runs a table of values through both adapters over the
embedded broker; these are the rules' edges.
"""

from __future__ import annotations

from amqp1q import Job
from amqp1q._properties import (
    ATTEMPT,
    DEAD_LETTER_DESCRIPTION,
    DEAD_LETTER_REASON,
    NOT_BEFORE,
    dead_letter_properties,
    job_properties,
    read_group,
    read_properties,
    text_of,
)
from amqp1q._roadrunner import envelope_properties


def test_a_job_goes_out_with_its_headers_and_an_attempt_only_above_one() -> None:
    assert job_properties({"k": "v"}) == {"k": "v"}
    assert job_properties({}, attempt=1) == {}
    assert job_properties({"k": "v"}, attempt=2, extra={"x": 1}) == {"k": "v", ATTEMPT: 2, "x": 1}


def test_a_dead_letter_carries_its_reason_and_a_description_if_any() -> None:
    assert dead_letter_properties(None, None) == {DEAD_LETTER_REASON: "rejected"}
    assert dead_letter_properties("r", "d") == {
        DEAD_LETTER_REASON: "r",
        DEAD_LETTER_DESCRIPTION: "d",
    }


def test_the_roadrunner_envelope_properties_add_x_delay_and_the_attempt() -> None:
    job = Job("j", b"", headers={"k": "v"}, delay=1.5)
    assert envelope_properties(job, attempt=3) == {"k": "v", ATTEMPT: 3, "x-delay": 1500}
    assert envelope_properties(Job("j", b"")) == {}


def test_what_was_written_reads_back() -> None:
    written = job_properties({"k": "v"}, attempt=4, extra=dead_letter_properties("r", "d"))
    facts = read_properties(written)
    assert (facts.headers, facts.attempt, facts.error) == ({"k": "v"}, 4, None)
    assert (facts.dead_letter_reason, facts.dead_letter_description) == ("r", "d")


def test_names_and_values_as_the_azure_sdk_hands_them_over() -> None:
    facts = read_properties({b"k": b"v", ATTEMPT.encode(): b"2", NOT_BEFORE.encode(): 10})
    assert (facts.headers, facts.attempt, facts.not_before, facts.error) == (
        {"k": "v"},
        2,
        10,
        None,
    )


def test_the_first_problem_is_the_one_reported_and_the_rest_still_read() -> None:
    facts = read_properties({1: "x", "a": None, "b": "ok", ATTEMPT: "no"})
    assert facts.error == "an application property name is not text: 1"
    assert (facts.headers, facts.attempt) == ({"b": "ok"}, 1)


def test_no_properties_read_as_no_headers() -> None:
    for empty in (None, {}):
        facts = read_properties(empty)
        assert (facts.headers, facts.attempt, facts.error, facts.not_before) == ({}, 1, None, None)


def test_text_of_each_kind() -> None:
    assert [text_of(v) for v in ("s", b"b", True, 3, 2.5)] == ["s", "b", "true", "3", "2.5"]
    assert [text_of(v) for v in (None, b"\xff", [1], {})] == [None, None, None, None]


def test_a_group_id_reads_as_text_or_is_reported() -> None:
    assert read_group(None) == (None, None)
    assert read_group("customer-42") == ("customer-42", None)
    assert read_group(b"customer-42") == ("customer-42", None)
    assert read_group(b"\xff") == (None, "the group-id is binary, not UTF-8 text")
    assert read_group(7) == (None, "the group-id is a int, not text")
