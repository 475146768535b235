"""ProviderBudget: the provider's per-minute limits mirrored from its headers (no sockets)."""

from __future__ import annotations

import asyncio
import time

import pytest

from consumers.resilience.ratelimit import CallCost, ProviderBudget, Reservation
from consumers.specialists.backends import TokenEstimate, provider_budget


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def headers(family: str, limit: int, remaining: int) -> dict[str, str]:
    return {
        f"anthropic-ratelimit-{family}-limit": str(limit),
        f"anthropic-ratelimit-{family}-remaining": str(remaining),
        f"anthropic-ratelimit-{family}-reset": "2030-01-01T00:00:00Z",
    }


def started(*told: dict[str, str]) -> tuple[ProviderBudget, Clock]:
    """A budget on a fake clock, told these headers first."""
    clock = Clock()
    budget = ProviderBudget(clock)
    for sent in told:
        budget.observe(sent)
    return budget, clock


def reserved(budget: ProviderBudget, cost: CallCost) -> Reservation:
    taken = budget.try_reserve(cost)
    assert isinstance(taken, Reservation), f"expected a reservation, had to wait {taken}s"
    return taken


def test_before_any_header_nothing_is_followed_and_calls_go() -> None:
    budget = ProviderBudget(Clock())
    assert budget.families == ()
    for _ in range(1000):
        reserved(budget, CallCost(50_000, 4096))


def test_a_call_that_would_exceed_the_remaining_tokens_waits_for_the_refill() -> None:
    budget, clock = started(headers("input-tokens", 6000, 360))  # 6,000 a minute: 100 a second
    assert budget.families == ("input-tokens",)
    reserved(budget, CallCost(200, 0))
    assert budget.level("input-tokens") == pytest.approx(160)
    # 300 more and the 1% headroom (60): 200 short, at 100 a second.
    assert budget.try_reserve(CallCost(300, 0)) == pytest.approx(2.0)
    clock.now += 1.0
    assert budget.try_reserve(CallCost(300, 0)) == pytest.approx(1.0)
    clock.now += 1.0
    reserved(budget, CallCost(300, 0))
    assert budget.level("input-tokens") == pytest.approx(60)  # the headroom is never spent


def test_every_known_limit_must_hold_the_call() -> None:
    budget, clock = started(
        {**headers("requests", 60, 0), **headers("input-tokens", 600_000, 600_000)}
    )
    # One request a second; the call and one request of headroom: two seconds.
    assert budget.try_reserve(CallCost(10, 0)) == pytest.approx(2.0)
    clock.now += 2.0
    reserved(budget, CallCost(10, 0))


def test_the_combined_tokens_limit_is_followed_only_when_no_specific_one_is_named() -> None:
    budget = ProviderBudget(Clock())
    budget.observe(headers("tokens", 1000, 0))
    assert budget.families == ("tokens",)
    # A (real API) response naming input and output limits: those are followed instead.
    budget.observe({**headers("tokens", 1000, 0), **headers("input-tokens", 6000, 6000)})
    assert budget.families == ("input-tokens",)
    reserved(budget, CallCost(5000, 0))


def test_output_tokens_are_reserved_as_max_tokens_then_settled_to_the_actual_count() -> None:
    budget, _clock = started(headers("output-tokens", 60_000, 5000))
    call = reserved(budget, CallCost(100, 4000))
    assert budget.level("output-tokens") == pytest.approx(1000)  # below 4,000 + headroom
    assert isinstance(budget.try_reserve(CallCost(100, 4000)), float)
    budget.settle(call, CallCost(100, 250))  # the answer used 250 of the 4,000 reserved
    assert budget.level("output-tokens") == pytest.approx(4750)
    reserved(budget, CallCost(100, 4000))


def test_headers_are_read_against_the_calls_sent_after_and_the_refill_since() -> None:
    budget, clock = started(headers("input-tokens", 6000, 6000))
    first = reserved(budget, CallCost(1000, 0))
    clock.now += 0.5
    reserved(budget, CallCost(2000, 0))  # sent after the first, not yet counted in its headers
    clock.now += 0.5
    # The provider counted the first call only: 5,000 left when it admitted it, 1 s ago.
    budget.observe(headers("input-tokens", 6000, 5000), first)
    assert budget.level("input-tokens") == pytest.approx(5000 + 100 - 2000)


def test_the_providers_count_wins_over_ours_so_other_processes_calls_are_seen() -> None:
    budget, _clock = started(headers("input-tokens", 6000, 6000))
    call = reserved(budget, CallCost(100, 0))
    assert budget.level("input-tokens") == pytest.approx(5900)
    # Another process on the same key spent 3,000 meanwhile: the headers say so.
    budget.observe(headers("input-tokens", 6000, 2900), call)
    assert budget.level("input-tokens") == pytest.approx(2900)


def test_a_refused_call_takes_nothing_and_an_overcounted_estimate_is_given_back() -> None:
    budget, _clock = started(
        {**headers("requests", 600, 20), **headers("input-tokens", 6000, 1000)}
    )
    refused = reserved(budget, CallCost(800, 0))
    budget.refund(refused)  # a 429: the provider took neither the request nor the tokens
    assert budget.level("requests") == pytest.approx(20)
    assert budget.level("input-tokens") == pytest.approx(1000)
    answered = reserved(budget, CallCost(800, 0))
    budget.settle(answered, CallCost(300, 0))
    assert budget.level("input-tokens") == pytest.approx(700)


def test_a_call_larger_than_the_limit_waits_for_a_full_bucket_not_forever() -> None:
    budget, clock = started(headers("input-tokens", 600, 0))
    assert budget.try_reserve(CallCost(10_000, 0)) == pytest.approx(60.0)
    clock.now += 60.0
    reserved(budget, CallCost(10_000, 0))


def test_acquire_sleeps_until_the_call_fits_and_serves_waiters_in_order() -> None:
    async def scenario() -> tuple[list[str], float]:
        budget = ProviderBudget()
        budget.observe(headers("input-tokens", 6000, 0))  # empty; 100 tokens a second
        order: list[str] = []

        async def call(name: str, tokens: int) -> None:
            await budget.acquire(CallCost(tokens, 0))
            order.append(name)

        began = time.monotonic()
        big = asyncio.create_task(call("big", 20))
        await asyncio.sleep(0)
        small = [asyncio.create_task(call(f"small{i}", 1)) for i in range(3)]
        await asyncio.gather(big, *small)
        return order, time.monotonic() - began

    order, took = asyncio.run(scenario())
    assert order == ["big", "small0", "small1", "small2"]  # the small ones never overtook
    assert 0.2 <= took < 5.0  # 23 tokens at 100 a second, with room for a loaded machine


def test_an_abandoned_wait_takes_nothing_and_passes_its_turn_on() -> None:
    async def scenario() -> float | None:
        budget, _clock = started(headers("input-tokens", 6000, 70))  # a clock that stands still
        waiting = asyncio.create_task(budget.acquire(CallCost(6000, 0)))  # never fits here
        queued = asyncio.create_task(budget.acquire(CallCost(5, 0)))
        await asyncio.sleep(0.01)
        waiting.cancel()
        await asyncio.wait_for(queued, 5.0)
        return budget.level("input-tokens")

    # Only the queued call's 5 tokens were taken; the headroom (60) is left.
    assert asyncio.run(scenario()) == pytest.approx(65)


def test_the_estimate_learns_what_the_provider_counts_and_when_the_persona_is_cached() -> None:
    estimate = TokenEstimate()
    persona, prompt = "p" * 4000, "q" * 400
    # Four characters a token at first, the persona counted (its cache entry is cold).
    assert estimate.input_tokens(persona, prompt, key="backend", now=0.0) == 1100
    written = {"input_tokens": 120, "cache_creation_input_tokens": 900}
    estimate.learn(prompt, written, key="backend", now=0.0)
    # The persona is cached now: only the question counts, at the learnt rate.
    assert estimate.input_tokens(persona, prompt, key="backend", now=10.0) == pytest.approx(
        110, abs=1
    )
    for _ in range(10):
        estimate.learn(
            prompt, {"input_tokens": 120, "cache_read_input_tokens": 900}, key="backend", now=10.0
        )
    assert estimate.input_tokens(persona, prompt, key="backend", now=20.0) == pytest.approx(
        120, abs=1
    )
    # Another specialist's persona is not cached; five idle minutes later, nor is this one.
    assert estimate.input_tokens(persona, prompt, key="security", now=20.0) > 1000
    assert estimate.input_tokens(persona, prompt, key="backend", now=400.0) == pytest.approx(
        120 + 900, abs=1
    )


def test_one_budget_per_provider_and_key_in_a_process() -> None:
    a = provider_budget("http://127.0.0.1:1", "sk-one")
    assert provider_budget("http://127.0.0.1:1", "sk-one") is a
    assert provider_budget("http://127.0.0.1:1", "sk-two") is not a
    assert provider_budget("http://127.0.0.1:2", "sk-one") is not a


def test_only_the_rate_limit_headers_are_read_whatever_their_case() -> None:
    import httpx2

    from consumers.specialists.backends import ratelimit_headers

    sent = [
        ("Content-Type", "application/json"),
        ("Anthropic-RateLimit-Input-Tokens-Limit", "6000"),
        ("anthropic-ratelimit-input-tokens-remaining", "10"),
        ("request-id", "req_1"),
    ]
    wanted = {
        "anthropic-ratelimit-input-tokens-limit": "6000",
        "anthropic-ratelimit-input-tokens-remaining": "10",
    }
    assert ratelimit_headers(httpx2.Headers(sent)) == wanted
    assert ratelimit_headers(dict(sent)) == wanted
    assert ratelimit_headers(httpx2.Headers([("request-id", "req_2")])) == {}


def test_a_call_is_not_held_for_the_limits_past_its_requests_deadline() -> None:
    from typing import Any

    from consumers.specialists.backends import ClaudeBackend
    from switchboard.core.classify import classify
    from switchboard.core.errors import TransientError

    client: Any = None  # never reached: the call waits for the budget first
    backend = ClaudeBackend(client, {"backend": "claude-sonnet-5-5"}, budget=ProviderBudget())
    assert backend.budget is not None
    backend.budget.observe(headers("input-tokens", 6000, 0))  # empty: 100 tokens a second

    async def scenario() -> float:
        began = time.monotonic()
        deadline_ms = int((time.time() + 0.2) * 1000)
        with pytest.raises(TransientError) as raised:
            await backend._reserve("backend", "p" * 4000, "q" * 400, deadline_ms)
        assert classify(raised.value).code == "rate_limit_wait"
        return time.monotonic() - began

    waited = asyncio.run(scenario())
    assert 0.15 <= waited < 3.0  # the deadline, not the ~11 s the tokens would take
    assert backend.budget.level("input-tokens") == pytest.approx(0, abs=100)  # nothing taken
