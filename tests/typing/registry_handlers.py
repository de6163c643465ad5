"""Checked by mypy --strict (tests/unit/test_typing.py), never run: what a Registry takes.

Each ``# type: ignore[code]`` marks a line mypy must refuse: under --strict an ignore that is
not needed is itself an error, so a change that lets a wrong handler through fails the test.
"""

from __future__ import annotations

from typing import assert_type

import attrs

from amqp1q import ReceivedJob, Registry

registry = Registry()


@registry.handler("async")
async def send_email(job: ReceivedJob) -> None: ...


@registry.handler("sync")
def resize_image(job: ReceivedJob) -> None: ...


@registry.default
def fallback(job: ReceivedJob) -> None: ...


@attrs.frozen
class Email:
    to: str


# A typed payload: (job, payload: T), async or sync.
@registry.handler("typed-async")
async def send_typed(job: ReceivedJob, email: Email) -> None: ...


@registry.handler("typed-sync")
def send_typed_sync(job: ReceivedJob, email: Email) -> None: ...


# The decorators give back the function as it was: still callable, still awaitable.
async def _uses(job: ReceivedJob) -> None:
    assert_type(await send_email(job), None)
    assert_type(resize_image(job), None)
    assert_type(fallback(job), None)
    assert_type(await send_typed(job, Email("a@b.c")), None)
    assert_type(send_typed_sync(job, Email("a@b.c")), None)


class Mailer:
    async def __call__(self, job: ReceivedJob) -> None: ...


registry.add("object", Mailer())
registry.add("lambda", lambda job: None)


async def _coroutine(job: ReceivedJob) -> None: ...


registry.add("async-by-add", _coroutine)
registry.add("typed-lambda", lambda job, payload: None)


# A handler may return a value: the reply to a request (queue.call()).
def returns_a_value(job: ReceivedJob) -> int:
    return 1


async def returns_a_model(job: ReceivedJob, email: Email) -> Email:
    return email


registry.add("returns", returns_a_value)
registry.add("returns-a-model", returns_a_model)


# Wrong handlers are refused: mypy names the handler type expected.
@registry.handler("wrong-argument")  # type: ignore[type-var]
async def takes_an_int(job: int) -> None: ...


registry.add("no-argument", lambda: None)  # type: ignore[arg-type]


@registry.handler("three-arguments")  # type: ignore[type-var]
async def takes_three(job: ReceivedJob, email: Email, extra: int) -> None: ...


@registry.handler("sync-three-arguments")  # type: ignore[type-var]
def sync_takes_three(job: ReceivedJob, email: Email, extra: int) -> None: ...
