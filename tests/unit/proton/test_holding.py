"""The consumer's clock for held jobs (``_holding.HeldJobs``): due in order, one timer, and
everything handed back at once when the consumer closes."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from amqp1q.adapters.proton._holding import Held, HeldJobs

pytestmark = pytest.mark.anyio


def _held(name: str) -> Held:
    incoming: Any = name  # (the clock never looks inside)
    return Held(delivery=None, payload=name.encode(), incoming=incoming, retry=False)  # type: ignore[arg-type]


async def test_jobs_come_due_in_time_order_not_hold_order() -> None:
    due: list[str] = []
    clock = HeldJobs(lambda held: due.append(held.incoming))
    clock.hold(_held("late"), 0.15)
    clock.hold(_held("early"), 0.05)
    clock.hold(_held("now"), 0)
    assert len(clock) == 3
    await asyncio.sleep(0.02)
    assert due == ["now"]
    await asyncio.sleep(0.2)
    assert due == ["now", "early", "late"]
    assert len(clock) == 0


async def test_take_all_stops_the_clock_and_returns_earliest_first() -> None:
    due: list[str] = []
    clock = HeldJobs(lambda held: due.append(held.incoming))
    clock.hold(_held("b"), 0.2)
    clock.hold(_held("a"), 0.1)
    taken = clock.take_all()
    assert [held.incoming for held in taken] == ["a", "b"]
    await asyncio.sleep(0.3)
    assert due == []  # nothing fires once taken
    assert len(clock) == 0
