"""The per-group sequencer behind ``consume(groups=N)``, without a broker."""

from __future__ import annotations

import asyncio

import pytest

from amqp1q import Headers, InvalidSetting, JobQueue
from amqp1q._adapter import Incoming
from amqp1q._groups import REMEMBERED, Sequencer

pytestmark = pytest.mark.anyio


def incoming(name: str, group: str | None) -> Incoming:
    return Incoming(name, name, b"", None, Headers(), 1, group=group)


def names(sequencer: Sequencer) -> list[str]:
    out = []
    while (job := sequencer.take()) is not None:
        out.append(job.name)
    return out


async def test_one_job_per_group_in_hand_and_at_most_the_limit_of_groups() -> None:
    sequencer = Sequencer(2, lambda _: False)
    jobs = {name: incoming(name, name[0]) for name in ("a1", "b1", "a2", "c1", "b2")}
    for job in jobs.values():
        sequencer.add(job)
    assert sequencer.held == 5
    assert names(sequencer) == ["a1", "b1"]  # c waits: two groups in hand
    sequencer.done(jobs["a1"])
    assert names(sequencer) == ["c1"]  # a2 became ready after c, which was waiting first
    sequencer.done(jobs["b1"])
    assert names(sequencer) == ["a2"]
    assert sequencer.held == 1


async def test_a_put_back_job_goes_first_in_its_group_after_its_delay() -> None:
    sequencer = Sequencer(4, lambda _: False)
    first, second = incoming("a1", "a"), incoming("a2", "a")
    sequencer.add(first)
    sequencer.add(second)
    assert names(sequencer) == ["a1"]
    sequencer.put_back(first, 0.05)
    assert names(sequencer) == []  # the group waits for it
    await asyncio.sleep(0.08)
    assert names(sequencer) == ["a1"]
    sequencer.done(first)
    assert names(sequencer) == ["a2"]


async def test_jobs_without_a_group_are_groups_of_their_own() -> None:
    sequencer = Sequencer(3, lambda _: False)
    for name in ("x", "y", "z"):
        sequencer.add(incoming(name, None))
    assert names(sequencer) == ["x", "y", "z"]


async def test_stale_jobs_are_dropped_and_fresh_ones_kept() -> None:
    stale: set[str] = {"a1", "a2"}
    sequencer = Sequencer(4, lambda job: job.name in stale)
    for name in ("a1", "a2", "a3"):
        sequencer.add(incoming(name, "a"))
    assert names(sequencer) == ["a3"]
    assert sequencer.held == 0


async def test_take_all_gives_back_what_is_held_and_not_stale() -> None:
    sequencer = Sequencer(1, lambda job: job.name == "b1")
    for name, group in (("a1", "a"), ("a2", "a"), ("b1", "b"), ("b2", "b")):
        sequencer.add(incoming(name, group))
    first = sequencer.take()
    assert first is not None
    sequencer.put_back(first, 10)
    assert [job.name for job in sequencer.take_all()] == ["a1", "a2", "b2"]
    assert sequencer.held == 0


async def test_groups_need_settling_by_hand() -> None:
    async with JobQueue.from_url("memory://test-groups/jobs") as queue:
        with pytest.raises(InvalidSetting, match="auto_ack=False"):
            queue.consume(groups=2, auto_ack=True)
        with pytest.raises(InvalidSetting, match="groups"):
            queue.consume(groups=0)
        assert "groups=3" in repr(queue.consume(groups=3))


async def test_it_remembers_the_last_jobs_acked_and_only_those() -> None:
    sequencer = Sequencer(1, lambda _: False)
    first = incoming("first", "a")
    sequencer.acked(first)
    assert sequencer.seen(incoming("first", "a"))
    assert not sequencer.seen(incoming("other", "a"))
    sequencer.acked(incoming("", "a"))  # a foreign message without an id: never remembered
    assert not sequencer.seen(incoming("", "a"))
    for n in range(REMEMBERED):
        sequencer.acked(incoming(f"job-{n}", None))
    assert not sequencer.seen(first)  # the oldest is forgotten
    assert sequencer.seen(incoming(f"job-{REMEMBERED - 1}", None))
