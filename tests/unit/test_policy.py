"""``RetryPolicy.decide``: one table row per branch, then the properties of jitter."""

from __future__ import annotations

import random

import pytest

from switchboard.core.classify import Failure
from switchboard.core.errors import ErrorClass
from switchboard.core.policy import (
    ATTEMPTS_EXHAUSTED,
    DEADLINE_REACHED,
    DEFAULT_HALT_S,
    Dead,
    Decision,
    Drop,
    Expire,
    Halt,
    Retry,
    RetryPolicy,
)
from switchboard.core.topics import Topics

TOPICS = Topics("t")
NOW_MS = 1_700_000_000_000
POLICY = RetryPolicy(TOPICS, max_attempts=5, base_delay_s=1.0, max_delay_s=600.0, jitter=0.0)


def failure(
    error_class: ErrorClass, code: str = "c", *, retry_after_s: float | None = None
) -> Failure:
    return Failure(error_class, code, "m", "E", retry_after_s=retry_after_s)


T, P, S, F = ErrorClass.TRANSIENT, ErrorClass.PERMANENT, ErrorClass.SKIP, ErrorClass.FATAL

# (id, policy, failure, attempt, deadline_ms, expected decision)
CASES: list[tuple[str, RetryPolicy, Failure, int, int | None, Decision]] = [
    ("skip drops", POLICY, failure(S, "dup"), 1, None, Drop("dup")),
    ("fatal halts 30 s", POLICY, failure(F, "auth"), 1, None, Halt("auth", DEFAULT_HALT_S)),
    (
        "fatal halts for the provider's retry-after",
        POLICY,
        failure(F, "spend", retry_after_s=3600.0),
        1,
        None,
        Halt("spend", 3600.0),
    ),
    ("fatal ignores the deadline", POLICY, failure(F, "auth"), 1, NOW_MS, Halt("auth", 30.0)),
    ("permanent dead-letters", POLICY, failure(P, "bad"), 1, None, Dead("bad")),
    (
        "permanent past the deadline still dead",
        POLICY,
        failure(P, "bad"),
        1,
        NOW_MS - 1,
        Dead("bad"),
    ),
    (
        "transient attempt 1: base delay, 1 s tier",
        POLICY,
        failure(T),
        1,
        None,
        Retry(1.0, "t.retry.1s"),
    ),
    (
        "transient attempt 2: doubled, 10 s tier",
        POLICY,
        failure(T),
        2,
        None,
        Retry(2.0, "t.retry.10s"),
    ),
    ("transient attempt 4: 8 s, 10 s tier", POLICY, failure(T), 4, None, Retry(8.0, "t.retry.10s")),
    (
        "own backoff capped at max_delay_s",
        RetryPolicy(TOPICS, max_attempts=100, max_delay_s=600.0, jitter=0.0),
        failure(T),
        40,
        None,
        Retry(600.0, "t.retry.600s"),
    ),
    (
        "own backoff with a small cap",
        RetryPolicy(TOPICS, max_attempts=10, max_delay_s=30.0, jitter=0.0),
        failure(T),
        8,
        None,
        Retry(30.0, "t.retry.60s"),
    ),
    ("last attempt exhausted", POLICY, failure(T), 5, None, Dead(ATTEMPTS_EXHAUSTED)),
    ("beyond the last attempt", POLICY, failure(T), 9, None, Dead(ATTEMPTS_EXHAUSTED)),
    (
        "exhausted even with a provider delay",
        POLICY,
        failure(T, retry_after_s=1.0),
        5,
        None,
        Dead(ATTEMPTS_EXHAUSTED),
    ),
    (
        "max_attempts 1: no retry at all",
        RetryPolicy(TOPICS, max_attempts=1),
        failure(T),
        1,
        None,
        Dead(ATTEMPTS_EXHAUSTED),
    ),
    (
        "provider delay used as is (not the 1 s backoff)",
        POLICY,
        failure(T, retry_after_s=45.0),
        1,
        None,
        Retry(45.0, "t.retry.60s"),
    ),
    (
        "provider delay shorter than our backoff wins",
        POLICY,
        failure(T, retry_after_s=0.25),
        4,
        None,
        Retry(0.25, "t.retry.1s"),
    ),
    (
        "provider delay beyond the cap and every tier",
        POLICY,
        failure(T, retry_after_s=3600.0),
        1,
        None,
        Retry(3600.0, "t.retry.600s"),
    ),
    (
        "provider delay 0 means no advice: own backoff",
        POLICY,
        failure(T, retry_after_s=0.0),
        2,
        None,
        Retry(2.0, "t.retry.10s"),
    ),
    ("deadline after the retry", POLICY, failure(T), 1, NOW_MS + 1001, Retry(1.0, "t.retry.1s")),
    (
        "deadline exactly at the retry",
        POLICY,
        failure(T),
        1,
        NOW_MS + 1000,
        Expire(DEADLINE_REACHED),
    ),
    ("deadline already passed", POLICY, failure(T), 1, NOW_MS - 5, Expire(DEADLINE_REACHED)),
    (
        "provider delay would miss the deadline",
        POLICY,
        failure(T, retry_after_s=30.0),
        1,
        NOW_MS + 29_000,
        Expire(DEADLINE_REACHED),
    ),
    ("exhaustion beats expiry", POLICY, failure(T), 5, NOW_MS, Dead(ATTEMPTS_EXHAUSTED)),
]


@pytest.mark.parametrize(
    ("policy", "failed", "attempt", "deadline_ms", "expected"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_decide(
    policy: RetryPolicy,
    failed: Failure,
    attempt: int,
    deadline_ms: int | None,
    expected: Decision,
) -> None:
    assert policy.decide(failed, attempt, NOW_MS, deadline_ms, random.Random(7)) == expected


@pytest.mark.parametrize("attempt", [1, 2, 3, 4])
def test_jitter_only_shortens_our_own_backoff(attempt: int) -> None:
    policy = RetryPolicy(TOPICS, max_attempts=10, jitter=0.25)
    full = 1.0 * 2 ** (attempt - 1)
    rng = random.Random(attempt)
    delays = []
    for _ in range(200):
        decision = policy.decide(failure(T), attempt, NOW_MS, None, rng)
        assert isinstance(decision, Retry)
        assert full * 0.75 <= decision.delay_s <= full
        assert decision.topic == TOPICS.retry(TOPICS.tier_for_delay(decision.delay_s))
        delays.append(decision.delay_s)
    assert len(set(delays)) > 100  # it is jittered, not fixed


def test_provider_delay_is_never_jittered() -> None:
    policy = RetryPolicy(TOPICS, jitter=1.0)
    rng = random.Random(1)
    for _ in range(50):
        assert policy.decide(failure(T, retry_after_s=12.5), 1, NOW_MS, None, rng) == Retry(
            12.5, "t.retry.60s"
        )


def test_same_seed_same_decision() -> None:
    policy = RetryPolicy(TOPICS, jitter=0.5)
    first = [policy.decide(failure(T), a, NOW_MS, None, random.Random(42)) for a in (1, 2, 3)]
    again = [policy.decide(failure(T), a, NOW_MS, None, random.Random(42)) for a in (1, 2, 3)]
    assert first == again


def test_attempt_is_one_based() -> None:
    with pytest.raises(ValueError, match="1-based"):
        POLICY.decide(failure(T), 0, NOW_MS, None)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_attempts": 0},
        {"base_delay_s": 0.0},
        {"base_delay_s": 10.0, "max_delay_s": 5.0},
        {"jitter": -0.1},
        {"jitter": 1.5},
    ],
)
def test_impossible_policies_are_rejected(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(TOPICS, **kwargs)  # type: ignore[arg-type]


def test_halt_pause_is_configurable_and_the_provider_reset_wins() -> None:
    policy = RetryPolicy(TOPICS, halt_pause_s=7.0)
    halted = policy.decide(failure(F), 1, NOW_MS, None)
    assert isinstance(halted, Halt) and halted.pause_s == 7.0
    told = policy.decide(failure(F, retry_after_s=42.0), 1, NOW_MS, None)
    assert isinstance(told, Halt) and told.pause_s == 42.0
