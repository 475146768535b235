"""Token buckets, per-tenant limits and the AIMD concurrency limiter, on fake clocks."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from consumers.resilience.ratelimit import AimdLimiter, TenantLimiter, TokenBucket
from switchboard.core.classify import Failure
from switchboard.core.errors import ErrorClass
from tests.support import FakeClock, most_at_once

WALL = 1_700_000_000.0


# --- TokenBucket ----------------------------------------------------------------------------

# (id, rate, burst, steps of (advance_s, n, expected wait))
BUCKET_CASES: list[tuple[str, float, int, list[tuple[float, int, float]]]] = [
    ("burst then empty", 10.0, 3, [(0, 1, 0.0), (0, 1, 0.0), (0, 1, 0.0), (0, 1, 0.1)]),
    ("refills at the rate", 10.0, 2, [(0, 2, 0.0), (0.1, 1, 0.0), (0, 1, 0.1)]),
    ("exactly 1/rate buys a token", 3.0, 1, [(0, 1, 0.0), (1 / 3, 1, 0.0), (0, 1, 1 / 3)]),
    ("never above the burst", 10.0, 2, [(60, 2, 0.0), (0, 1, 0.1)]),
    ("n tokens at once", 2.0, 4, [(0, 3, 0.0), (0, 2, 0.5), (0.5, 2, 0.0)]),
    ("a refused call takes nothing", 1.0, 2, [(0, 2, 0.0), (0.5, 1, 0.5), (0.5, 1, 0.0)]),
]


@pytest.mark.parametrize(
    ("rate", "burst", "steps"),
    [case[1:] for case in BUCKET_CASES],
    ids=[case[0] for case in BUCKET_CASES],
)
def test_token_bucket(rate: float, burst: int, steps: list[tuple[float, int, float]]) -> None:
    clock = FakeClock(100.0)
    bucket = TokenBucket(rate, burst, clock)
    for advance_s, n, wait in steps:
        clock.advance(advance_s)
        assert bucket.try_acquire(n) == pytest.approx(wait)


def test_token_bucket_rejects_impossible_requests() -> None:
    bucket = TokenBucket(1.0, 2, FakeClock(100.0))
    for n in (0, 3):
        with pytest.raises(ValueError):
            bucket.try_acquire(n)
    for rate, burst in ((0.0, 1), (1.0, 0)):
        with pytest.raises(ValueError):
            TokenBucket(rate, burst)


# --- TenantLimiter --------------------------------------------------------------------------


def test_tenants_have_their_own_buckets_and_overrides() -> None:
    clock = FakeClock(100.0)
    limiter = TenantLimiter(
        default_rate=2.0, default_burst=2, overrides={"vip": (100.0, 5)}, clock=clock
    )
    assert [limiter.check("a") for _ in range(3)] == [0.0, 0.0, 0.5]
    assert limiter.check("b") == 0.0  # a's debt is not b's
    assert [limiter.check("vip") for _ in range(6)] == [0.0] * 5 + [pytest.approx(0.01)]
    clock.advance(0.5)
    assert limiter.check("a") == 0.0


def test_default_shape_is_1000_per_second() -> None:
    limiter = TenantLimiter(clock=FakeClock(100.0))
    assert all(limiter.check("t") == 0.0 for _ in range(1000))
    assert limiter.check("t") == pytest.approx(0.001)


def test_least_recently_seen_tenants_are_forgotten() -> None:
    limiter = TenantLimiter(
        default_rate=1.0, default_burst=1, max_tenants=2, clock=FakeClock(100.0)
    )
    assert limiter.check("a") == 0.0
    assert limiter.check("b") == 0.0
    assert limiter.check("a") > 0  # a is now the most recently seen
    assert limiter.check("c") == 0.0  # evicts b, not a
    assert len(limiter) == 2
    assert limiter.check("a") > 0  # a was kept, still in debt
    assert limiter.check("b") == 0.0  # b was forgotten: a fresh bucket


def test_impossible_tenant_shapes_fail_at_construction() -> None:
    with pytest.raises(ValueError):
        TenantLimiter(overrides={"x": (0.0, 1)})


# --- AimdLimiter ----------------------------------------------------------------------------

OVERLOAD = Failure(ErrorClass.TRANSIENT, "overloaded", "529", "OverloadedError", overload=True)
NEUTRAL = Failure(ErrorClass.PERMANENT, "invalid_request", "400", "BadRequestError")


def aimd(clock: FakeClock, **kwargs: int | float) -> AimdLimiter:
    options: dict[str, int | float] = {"maximum": 20}
    options.update(kwargs)
    initial = int(options.pop("initial", 4))
    return AimdLimiter(initial, clock=clock, wall_clock=lambda: WALL, **options)  # type: ignore[arg-type]


def test_additive_increase_once_per_window_of_successes_up_to_maximum() -> None:
    limiter = aimd(FakeClock(100.0), initial=4, maximum=6)
    limits = []
    for _ in range(20):
        limiter.record_success()
        limits.append(limiter.limit)
    # 4 successes to reach 5, then 5 more to reach 6, then capped.
    assert limits == [4, 4, 4, 5, 5, 5, 5, 5, 6] + [6] * 11


def test_multiplicative_decrease_at_most_once_per_cooldown_floored_at_minimum() -> None:
    clock = FakeClock(100.0)
    limiter = aimd(clock, initial=16, minimum=3, cooldown_s=1.0)
    limiter.record_failure(OVERLOAD)
    assert limiter.limit == 8
    limiter.record_overload()  # the same burst of failures: ignored
    limiter.record_failure(NEUTRAL)  # not an overload: ignored
    assert limiter.limit == 8
    clock.advance(1.0)
    limiter.record_overload()
    assert limiter.limit == 4
    clock.advance(1.0)
    limiter.record_overload()
    assert limiter.limit == 3


def test_in_flight_never_exceeds_the_limit() -> None:
    limiter = aimd(FakeClock(100.0), initial=3)

    def within_the_limit(_call: int) -> None:
        assert limiter.in_flight <= limiter.limit

    async def scenario() -> int:
        async with asyncio.timeout(2):
            return await most_at_once(limiter, 25, inside=within_the_limit)

    assert asyncio.run(scenario()) == 3
    assert (limiter.high_water, limiter.in_flight) == (3, 0)


def test_after_a_decrease_no_call_starts_until_in_flight_is_below_the_new_limit() -> None:
    clock = FakeClock(100.0)
    limiter = aimd(clock, initial=4)

    async def scenario() -> list[int]:
        started: list[int] = []
        gates = [asyncio.Event() for _ in range(4)]

        async def holder(i: int) -> None:
            async with limiter:
                await gates[i].wait()

        async def newcomer() -> None:
            async with limiter:
                started.append(limiter.in_flight)

        async with asyncio.timeout(2):
            holders = [asyncio.create_task(holder(i)) for i in range(4)]
            await asyncio.sleep(0)
            assert limiter.in_flight == 4
            limiter.record_overload()  # limit 4 -> 2 with 4 in flight
            late = asyncio.create_task(newcomer())
            for i in range(3):  # 4 -> 3 -> 2 -> 1 in flight
                gates[i].set()
                await asyncio.sleep(0)
                await asyncio.sleep(0)
                assert started == ([] if i < 2 else [2])
            gates[3].set()
            await asyncio.gather(*holders, late)
        return started

    assert asyncio.run(scenario()) == [2]
    assert limiter.high_water == 4


def test_waiters_are_served_in_arrival_order() -> None:
    limiter = aimd(FakeClock(100.0), initial=1)

    async def scenario() -> list[int]:
        order: list[int] = []

        async def call(i: int) -> None:
            async with limiter:
                order.append(i)
                await asyncio.sleep(0)

        async with asyncio.timeout(2):
            await asyncio.gather(*(call(i) for i in range(6)))
        return order

    assert asyncio.run(scenario()) == list(range(6))


def test_a_cancelled_waiter_does_not_leak_a_slot() -> None:
    limiter = aimd(FakeClock(100.0), initial=1)

    async def scenario() -> None:
        async with asyncio.timeout(2):
            await limiter.acquire()
            waiter = asyncio.create_task(limiter.acquire())
            await asyncio.sleep(0)
            waiter.cancel()  # cancelled while waiting
            with pytest.raises(asyncio.CancelledError):
                await waiter
            granted = asyncio.create_task(limiter.acquire())
            await asyncio.sleep(0)
            limiter.release()  # hands the slot to `granted`...
            granted.cancel()  # ...which is cancelled before it runs: the slot comes back
            with pytest.raises(asyncio.CancelledError):
                await granted
            assert limiter.in_flight == 0 and limiter.waiting == 0
            async with limiter:
                assert limiter.in_flight == 1

    asyncio.run(scenario())


def _headers(
    requests: int | None = None, tokens: int | None = None, reset_in_s: float | None = None
) -> dict[str, str]:
    headers: dict[str, str] = {}
    reset = (
        datetime.fromtimestamp(WALL + reset_in_s, UTC).isoformat().replace("+00:00", "Z")
        if reset_in_s is not None
        else None
    )
    if requests is not None:
        headers["Anthropic-RateLimit-Requests-Remaining"] = str(requests)
        if reset:
            headers["anthropic-ratelimit-requests-reset"] = reset
    if tokens is not None:
        headers["anthropic-ratelimit-tokens-remaining"] = str(tokens)
        if reset:
            headers["anthropic-ratelimit-tokens-reset"] = reset
    return headers


# (id, limiter options, headers, expected limit right after)
HEADER_CASES: list[tuple[str, dict[str, int], dict[str, str], int]] = [
    ("plenty remaining: no cap", {}, _headers(requests=500), 8),
    ("few requests remaining caps", {}, _headers(requests=3), 3),
    ("never below the minimum", {"minimum": 2}, _headers(requests=0), 2),
    ("tokens ignored without a per-call estimate", {}, _headers(tokens=10), 8),
    ("tokens in calls' worth", {"tokens_per_request": 1000}, _headers(tokens=5500), 5),
    ("the tighter of the two", {"tokens_per_request": 100}, _headers(requests=6, tokens=400), 4),
    ("unreadable values ignored", {}, {"anthropic-ratelimit-requests-remaining": "lots"}, 8),
]


@pytest.mark.parametrize(
    ("options", "headers", "expected"),
    [case[1:] for case in HEADER_CASES],
    ids=[case[0] for case in HEADER_CASES],
)
def test_observe_headers_caps_the_limit(
    options: dict[str, int], headers: dict[str, str], expected: int
) -> None:
    limiter = aimd(FakeClock(100.0), initial=8, **options)
    limiter.observe_headers(headers)
    assert limiter.limit == expected


def test_a_header_cap_lasts_until_the_reset_or_fresher_headers() -> None:
    clock = FakeClock(100.0)
    limiter = aimd(clock, initial=8)
    limiter.observe_headers(_headers(requests=2, reset_in_s=10.0))
    assert limiter.limit == 2
    clock.advance(9.9)
    assert limiter.limit == 2
    clock.advance(0.1)
    assert limiter.limit == 8  # the window reset
    limiter.observe_headers(_headers(requests=1))  # no reset given: until fresher headers
    clock.advance(3600)
    assert limiter.limit == 1
    limiter.observe_headers(_headers(requests=900))
    assert limiter.limit == 8


def test_fresher_headers_wake_waiters() -> None:
    limiter = aimd(FakeClock(100.0), initial=4)

    async def scenario() -> None:
        async with asyncio.timeout(2):
            limiter.observe_headers(_headers(requests=1))
            await limiter.acquire()
            waiter = asyncio.create_task(limiter.acquire())
            await asyncio.sleep(0)
            assert not waiter.done()
            limiter.observe_headers(_headers(requests=50))
            await waiter
            assert limiter.in_flight == 2

    asyncio.run(scenario())


@pytest.mark.parametrize(
    "make",
    [
        lambda: AimdLimiter(0, maximum=4),
        lambda: AimdLimiter(5, maximum=4),
        lambda: AimdLimiter(2, minimum=3, maximum=4),
        lambda: AimdLimiter(2, maximum=4, decrease_factor=1.0),
        lambda: AimdLimiter(2, maximum=4, tokens_per_request=0),
    ],
)
def test_impossible_limiters_are_rejected(make: Callable[[], AimdLimiter]) -> None:
    with pytest.raises(ValueError):
        make()


def test_release_without_acquire_is_a_bug() -> None:
    with pytest.raises(RuntimeError):
        aimd(FakeClock(100.0)).release()
