"""The circuit breaker's state machine, on a fake clock; its async wait, on a fake sleep."""

from __future__ import annotations

import asyncio
import random

import pytest

from consumers.resilience.breaker import BreakerState, CircuitBreaker
from switchboard.core.classify import Failure
from switchboard.core.errors import ErrorClass
from tests.support import FakeClock

CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN

OVERLOAD = Failure(ErrorClass.TRANSIENT, "overloaded", "529", "OverloadedError", overload=True)
SYSTEMIC = Failure(ErrorClass.FATAL, "authentication", "401", "AuthenticationError", systemic=True)
NEUTRAL = Failure(ErrorClass.PERMANENT, "invalid_request", "400", "BadRequestError")


def make(clock: FakeClock, **kwargs: object) -> tuple[CircuitBreaker, list[tuple[str, int]]]:
    changes: list[tuple[str, int]] = []
    options: dict[str, object] = {"failure_threshold": 3, "open_s": 5.0, "max_open_s": 40.0}
    options.update(kwargs)
    breaker = CircuitBreaker(
        "api",
        clock=clock,
        sleep=clock.sleep,
        on_state_change=lambda name, state: changes.append((name, state.gauge_value)),
        **options,  # type: ignore[arg-type]
    )
    return breaker, changes


def test_gauge_values() -> None:
    assert [s.gauge_value for s in (CLOSED, OPEN, HALF_OPEN)] == [0, 1, 2]
    assert str(HALF_OPEN) == "half_open"


# (id, failures fed in order, expected state after them)
THRESHOLD_CASES = [
    ("below the threshold", [OVERLOAD, OVERLOAD], CLOSED),
    ("at the threshold", [OVERLOAD, OVERLOAD, OVERLOAD], OPEN),
    ("a success resets the count", [OVERLOAD, OVERLOAD, None, OVERLOAD, OVERLOAD], CLOSED),
    ("neutral failures do not count", [OVERLOAD, NEUTRAL, NEUTRAL, OVERLOAD], CLOSED),
    ("neutral failures do not reset either", [OVERLOAD, NEUTRAL, OVERLOAD, OVERLOAD], OPEN),
    ("a systemic failure opens at once", [SYSTEMIC], OPEN),
]


@pytest.mark.parametrize(
    ("outcomes", "expected"),
    [case[1:] for case in THRESHOLD_CASES],
    ids=[case[0] for case in THRESHOLD_CASES],
)
def test_opening(outcomes: list[Failure | None], expected: BreakerState) -> None:
    breaker, _ = make(FakeClock())
    for outcome in outcomes:
        assert breaker.try_acquire()
        if outcome is None:
            breaker.record_success()
        else:
            breaker.record_failure(outcome)
    assert breaker.state is expected
    assert breaker.allows_call() is (expected is CLOSED)


def trip(breaker: CircuitBreaker) -> None:
    for _ in range(breaker.failure_threshold):
        assert breaker.try_acquire()
        breaker.record_failure(OVERLOAD)
    assert breaker.state is OPEN


def test_open_half_open_closed_cycle_and_the_gauge() -> None:
    clock = FakeClock()
    breaker, changes = make(clock)
    trip(breaker)
    assert not breaker.try_acquire()
    clock.advance(4.999)
    assert breaker.state is OPEN and breaker.reopen_in_s == pytest.approx(0.001)
    clock.advance(0.001)
    assert breaker.state is HALF_OPEN
    assert breaker.try_acquire()  # the one probe
    assert not breaker.try_acquire() and not breaker.allows_call()
    breaker.record_success()
    assert breaker.state is CLOSED
    assert changes == [("api", 1), ("api", 2), ("api", 0)]
    assert (breaker.opened_count, breaker.calls_while_open) == (1, 0)


@pytest.mark.parametrize("probes", [1, 2, 3])
def test_half_open_admits_exactly_the_probes(probes: int) -> None:
    clock = FakeClock()
    breaker, _ = make(clock, half_open_probes=probes)
    trip(breaker)
    clock.advance(5.0)
    admitted = sum(breaker.try_acquire() for _ in range(10))
    assert admitted == probes


def test_cooldown_doubles_per_reopen_up_to_the_cap_and_resets_on_close() -> None:
    clock = FakeClock()
    breaker, _ = make(clock)
    trip(breaker)
    cooldowns = []
    for _ in range(5):
        cooldowns.append(breaker.reopen_in_s)
        clock.advance(breaker.reopen_in_s)
        assert breaker.try_acquire()  # the probe fails: re-open
        breaker.record_failure(OVERLOAD)
    assert cooldowns == [5.0, 10.0, 20.0, 40.0, 40.0]
    clock.advance(breaker.reopen_in_s)
    assert breaker.try_acquire()
    breaker.record_success()
    trip(breaker)
    assert breaker.reopen_in_s == 5.0
    assert breaker.opened_count == 7


def test_cooldown_is_never_shorter_than_the_providers_retry_after() -> None:
    clock = FakeClock()
    breaker, _ = make(clock, failure_threshold=1)
    assert breaker.try_acquire()
    breaker.record_failure(
        Failure(
            ErrorClass.TRANSIENT,
            "rate_limited",
            "429",
            "RateLimitError",
            retry_after_s=90.0,
            overload=True,
        )
    )
    assert breaker.reopen_in_s == 90.0  # beyond max_open_s too: the provider's word


def test_systemic_reopens_use_a_fixed_cooldown() -> None:
    clock = FakeClock()
    breaker, _ = make(clock)
    for _ in range(4):
        assert breaker.try_acquire()
        breaker.record_failure(SYSTEMIC)
        assert breaker.reopen_in_s == 5.0
        clock.advance(5.0)


def test_force_open_pauses_then_probes_every_open_s_until_cleared() -> None:
    clock = FakeClock()
    breaker, changes = make(clock)
    breaker.force_open(60.0)
    assert breaker.state is OPEN and breaker.reopen_in_s == 60.0
    breaker.force_open(10.0)  # never shortens a pause already running
    assert breaker.reopen_in_s == 60.0
    breaker.force_open(90.0)  # but may lengthen it
    assert breaker.reopen_in_s == 90.0
    clock.advance(90.0)
    assert breaker.try_acquire()
    breaker.record_failure(SYSTEMIC)  # the spend limit is still in force
    assert breaker.reopen_in_s == 5.0
    clock.advance(5.0)
    assert breaker.try_acquire()
    breaker.record_success()  # cleared
    assert breaker.state is CLOSED
    assert [g for _, g in changes] == [1, 2, 1, 2, 0]


def test_release_frees_a_probe_slot_and_neutral_failures_release() -> None:
    clock = FakeClock()
    breaker, _ = make(clock)
    trip(breaker)
    clock.advance(5.0)
    assert breaker.try_acquire() and not breaker.try_acquire()
    breaker.release()  # the probe was cancelled
    assert breaker.try_acquire()
    breaker.record_failure(NEUTRAL)  # a 400 says nothing about health
    assert breaker.state is HALF_OPEN
    assert breaker.try_acquire()


def test_results_arriving_while_open_are_ignored() -> None:
    clock = FakeClock()
    breaker, _ = make(clock)
    trip(breaker)
    breaker.record_success()
    breaker.record_failure(SYSTEMIC)
    assert breaker.state is OPEN and breaker.reopen_in_s == 5.0 and breaker.opened_count == 1


def test_no_call_is_ever_admitted_while_open() -> None:
    """A random storm of calls and outcomes: every admission happens outside OPEN."""
    clock = FakeClock()
    breaker, _ = make(clock, half_open_probes=2)
    rng = random.Random(3)
    admitted_while_open = 0
    for _ in range(5000):
        clock.advance(rng.choice([0.0, 0.0, 0.5, 3.0]))
        state_before = breaker.state
        if breaker.try_acquire():
            admitted_while_open += state_before is OPEN
            outcome = rng.choice([None, OVERLOAD, OVERLOAD, SYSTEMIC, NEUTRAL])
            if outcome is None:
                breaker.record_success()
            else:
                breaker.record_failure(outcome)
    assert breaker.opened_count > 10
    assert admitted_while_open == 0 and breaker.calls_while_open == 0


def test_impossible_settings_are_rejected() -> None:
    with pytest.raises(ValueError):
        CircuitBreaker("x", failure_threshold=0)
    with pytest.raises(ValueError):
        CircuitBreaker("x", open_s=10.0, max_open_s=5.0)


# --- async ----------------------------------------------------------------------------------


def test_acquire_sleeps_once_until_the_cooldown_ends() -> None:
    clock = FakeClock()
    breaker, _ = make(clock)
    trip(breaker)

    async def scenario() -> None:
        async with asyncio.timeout(2):
            await breaker.acquire()

    asyncio.run(scenario())
    assert clock.sleeps == [5.0]  # one sleep for the whole cooldown: no polling
    assert clock.now == 1005.0
    assert breaker.state is HALF_OPEN and not breaker.allows_call()  # the probe slot is ours


def test_waiters_queue_behind_the_probe_and_go_when_it_closes() -> None:
    clock = FakeClock()
    breaker, _ = make(clock)
    trip(breaker)
    clock.advance(5.0)
    assert breaker.try_acquire()  # the probe is out

    async def scenario() -> list[str]:
        order: list[str] = []

        async def caller(name: str) -> None:
            await breaker.acquire()
            order.append(name)

        async with asyncio.timeout(2):
            tasks = [asyncio.create_task(caller(f"c{i}")) for i in range(3)]
            await asyncio.sleep(0)
            assert order == [] and not any(t.done() for t in tasks)
            breaker.record_success()  # the probe succeeded: closed, everyone goes
            await asyncio.gather(*tasks)
        return order

    assert sorted(asyncio.run(scenario())) == ["c0", "c1", "c2"]
    assert clock.sleeps == []  # nobody slept on the clock: they waited on the state change


def test_waiters_wake_on_reopen_and_sleep_for_the_new_cooldown() -> None:
    clock = FakeClock()
    breaker, _ = make(clock)
    trip(breaker)
    clock.advance(5.0)
    assert breaker.try_acquire()

    async def scenario() -> None:
        async with asyncio.timeout(2):
            waiter = asyncio.create_task(breaker.acquire())
            await asyncio.sleep(0)
            breaker.record_failure(OVERLOAD)  # probe failed: open for 10 s
            await waiter

    asyncio.run(scenario())
    assert clock.sleeps == [10.0]
    assert breaker.state is HALF_OPEN


def test_a_cancelled_acquire_leaves_nothing_behind() -> None:
    breaker = CircuitBreaker("api", failure_threshold=1, open_s=60.0)  # real clock and sleep
    breaker.try_acquire()
    breaker.record_failure(OVERLOAD)

    async def scenario() -> None:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.01):
                await breaker.acquire()
        await asyncio.sleep(0)
        assert asyncio.all_tasks() == {asyncio.current_task()}

    asyncio.run(scenario())
    assert breaker.state is OPEN and breaker.calls_while_open == 0
