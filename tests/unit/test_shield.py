"""``shielded``: cleanup survives cancellation, and a timeout bounds it."""

from __future__ import annotations

import asyncio

import anyio
import pytest

from amqp1q._shield import CleanupTimeout, shielded

pytestmark = pytest.mark.anyio


async def test_cleanup_finishes_although_the_caller_is_cancelled_twice() -> None:
    log: list[str] = []

    async def cleanup() -> int:
        await asyncio.sleep(0.2)
        log.append("cleaned")
        return 1

    async def caller() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            log.append(f"result {await shielded(cleanup(), 5)}")
            raise

    task = asyncio.create_task(caller())
    await asyncio.sleep(0.05)
    task.cancel()
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert log == ["cleaned"]  # the second cancel arrived during cleanup: re-raised after it


async def test_cleanup_finishes_under_an_anyio_cancel_scope() -> None:
    done = anyio.Event()

    async def cleanup() -> None:
        await asyncio.sleep(0.1)
        done.set()

    with anyio.move_on_after(0.05):
        try:
            await anyio.sleep(10)
        finally:
            await shielded(cleanup(), 5)
    assert done.is_set()


async def test_a_hung_cleanup_is_abandoned_after_its_timeout() -> None:
    with anyio.fail_after(3), pytest.raises(CleanupTimeout):
        await shielded(anyio.sleep_forever(), 0.1, "hanging cleanup")


async def test_errors_and_results_pass_through() -> None:
    async def fails() -> None:
        raise KeyError("x")

    async def value() -> str:
        return "ok"

    with pytest.raises(KeyError):
        await shielded(fails(), 1)
    assert await shielded(value(), 1) == "ok"
