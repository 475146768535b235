"""Group-wide tenancy without a broker: per-partition rate shares (two routers sharing a
requests topic allow one tenant's rate, not twice it), usage summed from responses, and the
router's budget and tokens-a-minute checks on the in-memory runtime."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime
from typing import Any

import pytest

from consumers.resilience.ratelimit import TenantLimiter
from consumers.router import RouterRules
from consumers.runtime.memory import MemoryRuntime, MemorySink
from consumers.tenancy.usage import (
    OVER_BUDGET,
    OVER_TOKEN_LIMIT,
    TenantUsage,
    next_day,
    next_month,
)
from switchboard.core import headers as h
from switchboard.core.settings import SPECIALISTS
from switchboard.core.tenants import TenantPolicy, TenantsConfig, TenantsSource
from switchboard.core.topics import RETRY_TIERS_S
from tests.support import FakeClock

from .memory_kit import TOPICS, decoded_response, encoded, request, router_runtime

#: 2026-12-15 11:00:00 UTC.
NOW = datetime(2026, 12, 15, 11, 0, tzinfo=UTC).timestamp()


# --- rate shares ------------------------------------------------------------------------------


def _granted(limiters: dict[int, TenantLimiter], clock: FakeClock, seconds: float) -> int:
    """Offer 3x a 60/s rate for ``seconds``, each request on a random partition of 6, to the
    limiter of the router that owns that partition; count what is granted."""
    rng = random.Random(7)
    granted, step = 0, 1 / 180
    for _ in range(int(seconds * 180)):
        clock.now += step
        partition = rng.randrange(6)
        granted += limiters[partition].check("acme", partition=partition) == 0.0
    return granted


def test_two_routers_with_partition_shares_allow_the_rate_not_twice_it() -> None:
    clock = FakeClock(0.0)
    a, b = (TenantLimiter(60.0, 60, clock=clock, partitions=6) for _ in range(2))
    owners = {p: (a if p < 3 else b) for p in range(6)}
    granted = _granted(owners, clock, 10.0)
    assert 600 <= granted <= 600 + 60 + 12  # 10 s at 60/s, plus the burst (6 x 10 at once)
    # The control: the same two routers with a whole bucket each allow about twice the rate.
    clock2 = FakeClock(0.0)
    c, d = (TenantLimiter(60.0, 60, clock=clock2) for _ in range(2))
    whole = _granted({p: (c if p < 3 else d) for p in range(6)}, clock2, 10.0)
    assert whole >= 1150


def test_a_router_holding_every_partition_allows_the_whole_rate() -> None:
    clock = FakeClock(0.0)
    limiter = TenantLimiter(60.0, 60, clock=clock, partitions=6)
    assert 600 <= _granted(dict.fromkeys(range(6), limiter), clock, 10.0) <= 672
    assert limiter.share("acme") == (10.0, 10)


def test_a_one_token_share_per_partition_under_admits() -> None:
    """Why the docs ask for a burst of a few per partition: a full one-token bucket wastes
    its refill time until the next request of that partition arrives (here ~75% of the rate
    is granted, never more than it)."""
    clock = FakeClock(0.0)
    limiter = TenantLimiter(60.0, 6, clock=clock, partitions=6)
    assert 300 <= _granted(dict.fromkeys(range(6), limiter), clock, 10.0) < 600


def test_a_new_partition_count_resplits_the_rate() -> None:
    limiter = TenantLimiter(60.0, 12, clock=FakeClock(0.0), partitions=6)
    assert limiter.share("t") == (10.0, 2)
    limiter.set_partitions(3)
    assert limiter.share("t") == (20.0, 4)
    assert [limiter.check("t", partition=1) for _ in range(5)][-1] > 0  # a fresh 4-token bucket
    with pytest.raises(ValueError):
        limiter.set_partitions(0)


# --- usage ------------------------------------------------------------------------------------


def test_usage_sums_tokens_per_day_and_cost_per_month_and_resets() -> None:
    clock = FakeClock(NOW)
    usage = TenantUsage(clock)
    usage.record("r1", "acme", {"input_tokens": 10, "output_tokens": 5}, 300, int(NOW * 1000))
    yesterday = int((NOW - 86_400) * 1000)
    usage.record("r0", "acme", {"input_tokens": 1000, "output_tokens": 0}, 700, yesterday)
    usage.record("r2", "other", {"input_tokens": 7, "output_tokens": 0}, 1, int(NOW * 1000))
    assert usage.tokens_today("acme") == 15  # yesterday's 1000 are not today's
    assert usage.cost_this_month("acme") == 1000  # but the same month's cost is
    assert usage.tokens_last_minute("acme")[0] == 15
    clock.now += 61
    assert usage.tokens_last_minute("acme") == (0, 0.0)
    assert next_day(NOW) == datetime(2026, 12, 16, tzinfo=UTC)
    assert next_month(NOW) == datetime(2027, 1, 1, tzinfo=UTC)


def test_a_reservation_counts_until_its_response_replaces_it() -> None:
    usage = TenantUsage(FakeClock(NOW))
    usage.reserve("r1", "acme", 2, 500)
    assert (usage.pending("acme"), usage.pending("acme", 2), usage.pending("acme", 1)) == (
        500,
        500,
        0,
    )
    usage.record("r1", "acme", {"input_tokens": 40, "output_tokens": 2}, 0, int(NOW * 1000))
    assert usage.pending("acme") == 0 and usage.tokens_today("acme") == 42


def test_tokens_a_minute_split_into_partition_shares_of_what_is_in_flight() -> None:
    usage = TenantUsage(FakeClock(NOW))
    policy = TenantPolicy(tokens_per_minute=6000)
    assert usage.check("acme", policy, 900, partition=0, partitions=6) is None
    usage.reserve("a", "acme", 0, 900)
    # 900 in flight through partition 0; its share is 1000: another 900 must wait.
    verdict = usage.check("acme", policy, 900, partition=0, partitions=6)
    assert verdict is not None and verdict.code == OVER_TOKEN_LIMIT and verdict.wait_s
    assert usage.check("acme", policy, 900, partition=1, partitions=6) is None
    too_big = usage.check("acme", policy, 7000, partition=1, partitions=6)
    assert too_big is not None and too_big.wait_s is None  # can never fit: no point waiting


# --- the router -------------------------------------------------------------------------------


def _router(
    policy: dict[str, Any], usage: TenantUsage, **rules: Any
) -> tuple[MemoryRuntime, MemorySink]:
    config = TenantsConfig.model_validate({"tenants": {"acme": policy}})
    sink = MemorySink()
    runtime, _ = router_runtime(
        sink,
        rules=RouterRules(max_output_tokens=100, **rules),
        tenants=TenantsSource(config),
        usage=usage,
    )
    return runtime, sink


def _send(runtime: MemoryRuntime, text: str = "/backend size a pool", partition: int = 0) -> str:
    record = request(text, tenant="acme")
    asyncio.run(
        runtime.feed(
            TOPICS.requests,
            encoded(record, TOPICS.requests),
            key=record["request_id"].encode(),
            headers=[(h.REQUEST_ID, record["request_id"].encode())],
            partition=partition,
        )
    )
    return str(record["request_id"])


def _routed(sink: MemorySink) -> int:
    return sum(len(sink.records(TOPICS.tasks(s))) for s in SPECIALISTS)


def test_over_the_daily_token_budget_is_rejected_with_the_reset_time() -> None:
    """One request is routed; once its answer's usage (read from the ledger) passes the
    tenant's 50 tokens a day, the next is `rejected` over_budget, naming tomorrow midnight UTC,
    and nothing more is routed."""
    usage = TenantUsage()
    runtime, sink = _router({"tokens_per_day": 50}, usage)
    first = _send(runtime)
    assert _routed(sink) == 1 and usage.pending("acme") > 0
    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    usage.record(first, "acme", {"input_tokens": 40, "output_tokens": 30}, 0, now_ms)
    assert usage.pending("acme") == 0
    _send(runtime)
    assert _routed(sink) == 1
    [response] = sink.records(TOPICS.responses)
    body = decoded_response(response)
    assert (body["status"], body["error_code"]) == ("rejected", OVER_BUDGET)
    assert "70 of 50 tokens" in body["content"]
    assert next_day(datetime.now(UTC).timestamp()).strftime("%Y-%m-%dT00:00:00Z") in body["content"]


def test_over_the_monthly_dollar_budget_is_rejected() -> None:
    usage = TenantUsage()
    runtime, sink = _router({"dollars_per_month": 0.01}, usage)
    usage.record("old", "acme", None, 10_000, int(datetime.now(UTC).timestamp() * 1000))
    _send(runtime)
    [response] = sink.records(TOPICS.responses)
    body = decoded_response(response)
    assert body["error_code"] == OVER_BUDGET and "this month" in body["content"]
    assert _routed(sink) == 0


def test_over_tokens_a_minute_is_rejected_or_delayed_as_the_tenant_says() -> None:
    """Estimate = prompt chars / 4 + the output cap (100): with 150 tokens a minute one
    request fits, the second does not: rejected for a `reject` tenant, sent to a retry tier
    (to be routed later, not answered) for a `delay` tenant."""
    for mode in ("reject", "delay"):
        usage = TenantUsage()
        runtime, sink = _router({"tokens_per_minute": 150, "over_limit": mode}, usage)
        _send(runtime)
        _send(runtime)
        assert _routed(sink) == 1
        retried = sum(len(sink.records(TOPICS.retry(t))) for t in RETRY_TIERS_S)
        if mode == "reject":
            [response] = sink.records(TOPICS.responses)
            assert decoded_response(response)["error_code"] == OVER_TOKEN_LIMIT
            assert retried == 0
        else:
            assert sink.records(TOPICS.responses) == [] and retried == 1


def test_without_usage_budgets_are_not_enforced() -> None:
    config = TenantsConfig.model_validate({"tenants": {"acme": {"tokens_per_day": 1}}})
    sink = MemorySink()
    runtime, _ = router_runtime(sink, tenants=TenantsSource(config))
    for _ in range(3):
        _send(runtime)
    assert _routed(sink) == 3


def test_a_tenants_over_limit_must_be_reject_or_delay() -> None:
    assert TenantPolicy(over_limit="delay").over_limit == "delay"
    with pytest.raises(ValueError, match="over_limit"):
        TenantPolicy.model_validate({"over_limit": "later"})
