"""RetryPolicy: exponential backoff, cap, jitter bounds, validation."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from amqp1q import InvalidSetting, PayloadError, RetryPolicy
from amqp1q.worker import WorkerConfig


def test_exponential_without_jitter() -> None:
    policy = RetryPolicy(initial_delay=1, multiplier=2, max_delay=10, jitter=False)
    assert [policy.backoff(n) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]


def test_jitter_stays_within_half_to_full_step() -> None:
    policy = RetryPolicy(initial_delay=1, multiplier=3, max_delay=100)
    rng = random.Random(7)
    for attempt in range(1, 6):
        step = min(100, 3 ** (attempt - 1))
        values = [policy.backoff(attempt, rng=rng) for _ in range(200)]
        assert all(step / 2 <= v <= step for v in values)
        assert max(values) - min(values) > step / 10  # it really varies


def test_huge_attempts_do_not_overflow() -> None:
    assert RetryPolicy(max_delay=60, jitter=False).backoff(10_000) == 60


def test_exhausted() -> None:
    policy = RetryPolicy(max_attempts=3)
    assert [policy.exhausted(n) for n in (1, 2, 3, 4)] == [False, False, True, True]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_attempts": 0},
        {"max_attempts": 2.5},
        {"initial_delay": -1},
        {"max_delay": float("inf")},
        {"multiplier": 0.5},
    ],
)
def test_invalid_policies(kwargs: dict[str, float]) -> None:
    with pytest.raises(InvalidSetting, match="RetryPolicy"):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


# -- retry_on / dead_letter_on ------------------------------------------------------------------


class _Transient(ConnectionError):
    pass


class _Both(KeyError, TimeoutError):
    """Matches classes from both lists, neither a subclass of the other."""


def test_by_default_every_exception_is_retried() -> None:
    policy = RetryPolicy()
    assert (policy.retry_on, policy.dead_letter_on) == ((Exception,), ())
    for exc in (ValueError("x"), KeyError("k"), _Transient(), TimeoutError()):
        assert policy.dead_letters(exc) is None


def test_dead_letter_on_matches_subclasses_as_except_does() -> None:
    policy = RetryPolicy(dead_letter_on=(ValueError,))
    assert policy.dead_letters(ValueError("bad")) == "ValueError is in dead_letter_on"
    decode_error = json.JSONDecodeError("bad", "{", 0)
    assert policy.dead_letters(decode_error) == (
        "JSONDecodeError is in dead_letter_on (as ValueError)"
    )
    assert policy.dead_letters(RuntimeError()) is None  # retry_on=(Exception,) still matches


def test_retry_on_is_an_allow_list() -> None:
    policy = RetryPolicy(retry_on=(ConnectionError, TimeoutError))
    assert policy.dead_letters(_Transient()) is None
    assert policy.dead_letters(TimeoutError()) is None
    assert policy.dead_letters(KeyError("k")) == "KeyError is not in retry_on"


def test_when_both_match_the_more_specific_class_wins() -> None:
    retry_specific = RetryPolicy(retry_on=(ConnectionResetError,), dead_letter_on=(OSError,))
    assert retry_specific.dead_letters(ConnectionResetError()) is None
    assert retry_specific.dead_letters(FileNotFoundError()) == (
        "FileNotFoundError is in dead_letter_on (as OSError)"
    )
    dead_specific = RetryPolicy(retry_on=(OSError,), dead_letter_on=(FileNotFoundError,))
    assert dead_specific.dead_letters(ConnectionResetError()) is None
    assert dead_specific.dead_letters(FileNotFoundError()) == (
        "FileNotFoundError is in dead_letter_on"
    )


def test_a_retry_on_class_must_be_below_every_dead_letter_on_match() -> None:
    # ConnectionResetError is below OSError but not below _Marker: dead_letter_on wins.
    class _Marker(Exception):
        pass

    class _Reset(ConnectionResetError, _Marker):
        pass

    policy = RetryPolicy(retry_on=(ConnectionResetError,), dead_letter_on=(OSError, _Marker))
    assert policy.dead_letters(_Reset()) == "_Reset is in dead_letter_on (as OSError)"


def test_unrelated_matches_in_both_lists_dead_letter() -> None:
    policy = RetryPolicy(retry_on=(TimeoutError,), dead_letter_on=(KeyError,))
    assert policy.dead_letters(_Both()) == "_Both is in dead_letter_on (as KeyError)"


def test_exception_lists_accept_a_list_or_one_class() -> None:
    assert RetryPolicy(retry_on=[ValueError, KeyError]).retry_on == (ValueError, KeyError)
    assert RetryPolicy(dead_letter_on=ValueError).dead_letter_on == (ValueError,)
    assert RetryPolicy(retry_on=()).dead_letters(ValueError()) == "ValueError is not in retry_on"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"retry_on": "ValueError"}, r"retry_on must be a tuple of exception classes"),
        ({"retry_on": ("ValueError",)}, r"got 'ValueError' \(pass the class itself"),
        ({"dead_letter_on": (ValueError, 3)}, r"dead_letter_on must hold Exception subclasses"),
        ({"dead_letter_on": (KeyboardInterrupt,)}, r"got <class 'KeyboardInterrupt'>"),
        ({"dead_letter_on": {ValueError}}, r"must be a tuple"),
        ({"dead_letter_on": None}, r"must be a tuple"),
        (
            {"retry_on": (ValueError, KeyError), "dead_letter_on": (KeyError,)},
            r"KeyError cannot be in both retry_on and dead_letter_on",
        ),
    ],
)
def test_invalid_exception_lists(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidSetting, match=message):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_policies_with_exception_lists_are_values() -> None:
    one = RetryPolicy(retry_on=[ValueError], dead_letter_on=KeyError)
    two = RetryPolicy(retry_on=(ValueError,), dead_letter_on=(KeyError,))
    assert one == two
    assert hash(one) == hash(two)
    assert "dead_letter_on=(<class 'KeyError'>,)" in repr(one)


# -- exception names in a worker config file ----------------------------------------------------


def test_a_config_file_names_exceptions(tmp_path: Path) -> None:
    path = tmp_path / "worker.toml"
    path.write_text(
        "[retry]\n"
        'retry_on = ["ConnectionError", "asyncio.TimeoutError"]\n'
        'dead_letter_on = ["json:JSONDecodeError", "amqp1q.PayloadError"]\n'
    )
    policy = WorkerConfig.load(path).retry
    assert policy is not None
    assert policy.retry_on == (ConnectionError, TimeoutError)
    assert policy.dead_letter_on == (json.JSONDecodeError, PayloadError)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('retry_on = ["NoSuchError"]', r"retry.retry_on: cannot import the exception 'NoSuchE"),
        ('retry_on = ["nosuchmodule:Error"]', r"No module named 'nosuchmodule'"),
        ('dead_letter_on = ["json.dumps"]', r"retry.dead_letter_on: 'json.dumps' is not an Exc"),
        ("dead_letter_on = 3", r"RetryPolicy.dead_letter_on must be a tuple of exception classes"),
    ],
)
def test_bad_exception_names_in_a_config_file(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "worker.toml"
    path.write_text(f"[retry]\n{line}\n")
    with pytest.raises(InvalidSetting, match=message) as info:
        WorkerConfig.load(path)
    assert str(path) in str(info.value)
