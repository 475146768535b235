"""Group-wide usage per tenant, summed from the response topic: budgets without a new store.

Every terminal response is written to the responses topic (a reply-topic response as a ledger
copy too) with its tenant, token usage and cost, so every router that reads that topic knows
the whole group's spend within a tail's latency (milliseconds to a second). ``TenantUsage``
is the accumulator and the decisions; ``UsageTail`` feeds it from the start of the current
UTC month (a month is the longest budget period), decoding only responses that can carry
usage (``answered`` and ``refused``, read from the ``sb-status`` header first).

What the router adds itself: the estimate (prompt characters / 4 + the output token cap) of
each request it routed that has no response yet, so a burst cannot all pass before the first
answer shows up. Those reservations are per requests-topic partition: the per-minute token
limit is split into ``1/P`` shares like the request rate (docs/security.md, "Budgets").
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from consumers.runtime.message import Record
from switchboard.core.headers import STATUS, header_value
from switchboard.core.serde import RESPONSE, Codec
from switchboard.core.status import ResponseStatus
from switchboard.core.tail import TopicTail
from switchboard.core.tenants import TenantPolicy

#: Error code of a request refused because its tenant spent its daily or monthly budget.
OVER_BUDGET: Final = "over_budget"
#: Error code of a request whose estimated tokens would pass its tenant's per-minute limit.
OVER_TOKEN_LIMIT: Final = "over_token_limit"
#: The window of ``tokens_per_minute``.
MINUTE_S: Final = 60.0
#: A reservation with no response after this long is dropped (its call failed or was lost;
#: if it does answer later, its real usage is counted then).
RESERVATION_TTL_S: Final = 120.0
#: Statuses whose responses carry usage (the others never called the model for the answer).
_BILLED: Final = frozenset({ResponseStatus.ANSWERED.value, ResponseStatus.REFUSED.value})


@dataclass(frozen=True, slots=True)
class BudgetVerdict:
    """Why a request may not be routed now: ``code`` and a message a person can act on;
    ``wait_s`` is when it could pass (None: not before the budget resets, so never wait)."""

    code: str
    message: str
    wait_s: float | None = None


def _tokens(usage: Mapping[str, Any] | None) -> int:
    if not usage:
        return 0
    return sum(int(v or 0) for v in usage.values())


def _day(at_s: float) -> str:
    return datetime.fromtimestamp(at_s, UTC).strftime("%Y-%m-%d")


def _month(at_s: float) -> str:
    return datetime.fromtimestamp(at_s, UTC).strftime("%Y-%m")


def next_day(at_s: float) -> datetime:
    """Midnight UTC after ``at_s``: when a daily budget resets."""
    now = datetime.fromtimestamp(at_s, UTC)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return datetime.fromtimestamp(midnight.timestamp() + 86_400, UTC)


def next_month(at_s: float) -> datetime:
    """The first of the next month, midnight UTC: when a monthly budget resets."""
    now = datetime.fromtimestamp(at_s, UTC)
    year, month = (now.year + 1, 1) if now.month == 12 else (now.year, now.month + 1)
    return datetime(year, month, 1, tzinfo=UTC)


def month_start_ms(at_s: float) -> int:
    now = datetime.fromtimestamp(at_s, UTC)
    return int(datetime(now.year, now.month, 1, tzinfo=UTC).timestamp() * 1000)


class TenantUsage:
    """Tokens per tenant per UTC day and in the last minute, dollars per UTC month, and this
    router's reservations. ``record`` runs on the tail's thread, the checks on the event
    loop: one lock, held for dictionary updates only."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._day_tokens: dict[tuple[str, str], int] = {}
        self._month_cost: dict[tuple[str, str], int] = {}
        self._minute: dict[str, deque[tuple[float, int]]] = {}
        #: request id -> (tenant, partition, estimated tokens, when reserved)
        self._pending: dict[str, tuple[str, int, int, float]] = {}
        self._pending_by: dict[tuple[str, int], int] = {}
        self._pending_tenant: dict[str, int] = {}
        self.responses = 0
        #: Whether every response that existed at start-up has been counted (always, here:
        #: nothing feeds it but ``record``; ``UsageTail`` sets it once its tail caught up).
        self.ready = True

    async def wait_ready(self) -> None:
        """Until ``ready`` (a tail's first catch-up)."""

    # --- feeding ---------------------------------------------------------------------------

    def record(
        self,
        request_id: str,
        tenant: str,
        usage: Mapping[str, Any] | None,
        cost_micro_usd: int,
        at_ms: int,
    ) -> None:
        """One response read from the ledger (any router's): its spend counts group-wide, and
        the reservation this router made for it (if any) is replaced by the real figure."""
        tokens, at_s = _tokens(usage), at_ms / 1000
        with self._lock:
            self.responses += 1
            self._release(request_id)
            if tokens:
                key = (tenant, _day(at_s))
                self._day_tokens[key] = self._day_tokens.get(key, 0) + tokens
                if at_s > self._clock() - MINUTE_S:
                    self._minute.setdefault(tenant, deque()).append((at_s, tokens))
            if cost_micro_usd:
                key = (tenant, _month(at_s))
                self._month_cost[key] = self._month_cost.get(key, 0) + cost_micro_usd

    def reserve(self, request_id: str, tenant: str, partition: int, tokens: int) -> None:
        """This router routed ``request_id``: count its estimate until its response arrives."""
        now = self._clock()
        with self._lock:
            self._expire(now)
            self._release(request_id)
            self._pending[request_id] = (tenant, partition, tokens, now)
            self._add_pending(tenant, partition, tokens)

    def _add_pending(self, tenant: str, partition: int, tokens: int) -> None:
        self._pending_by[(tenant, partition)] = (
            self._pending_by.get((tenant, partition), 0) + tokens
        )
        self._pending_tenant[tenant] = self._pending_tenant.get(tenant, 0) + tokens

    def _release(self, request_id: str) -> None:
        found = self._pending.pop(request_id, None)
        if found is not None:
            tenant, partition, tokens, _at = found
            self._add_pending(tenant, partition, -tokens)

    def _expire(self, now: float) -> None:
        # Insertion order is reservation order: the oldest are first.
        while self._pending:
            request_id, (_t, _p, _n, at) = next(iter(self._pending.items()))
            if at > now - RESERVATION_TTL_S:
                break
            self._release(request_id)

    # --- reading ---------------------------------------------------------------------------

    def tokens_today(self, tenant: str) -> int:
        return self._day_tokens.get((tenant, _day(self._clock())), 0)

    def cost_this_month(self, tenant: str) -> int:
        """Micro-dollars spent this UTC month."""
        return self._month_cost.get((tenant, _month(self._clock())), 0)

    def tokens_last_minute(self, tenant: str) -> tuple[int, float]:
        """Tokens answered in the last minute, and when the oldest of them leaves the window
        (seconds from now; 0.0 when there are none)."""
        now = self._clock()
        with self._lock:
            window = self._minute.get(tenant)
            if not window:
                return 0, 0.0
            while window and window[0][0] <= now - MINUTE_S:
                window.popleft()
            total = sum(tokens for _at, tokens in window)
            leaves = window[0][0] + MINUTE_S - now if window else 0.0
        return total, leaves

    def pending(self, tenant: str, partition: int | None = None) -> int:
        with self._lock:
            self._expire(self._clock())
            if partition is None:
                return self._pending_tenant.get(tenant, 0)
            return self._pending_by.get((tenant, partition), 0)

    # --- deciding --------------------------------------------------------------------------

    def check(
        self,
        tenant: str,
        policy: TenantPolicy,
        estimate: int,
        *,
        partition: int = 0,
        partitions: int = 1,
    ) -> BudgetVerdict | None:
        """None when a request of ``estimate`` tokens may be routed now through ``partition``
        (of ``partitions``), else why not. Budgets count what the group has spent plus what
        this router has in flight; the per-minute limit is split into per-partition shares
        for what is in flight (each partition has one owner: the shares add up group-wide)."""
        now = self._clock()
        if policy.tokens_per_day is not None:
            used = self.tokens_today(tenant) + self.pending(tenant)
            if used >= policy.tokens_per_day:
                reset = next_day(now)
                return BudgetVerdict(
                    OVER_BUDGET,
                    f"tenant {tenant!r} is over its budget: {used} of {policy.tokens_per_day} "
                    f"tokens used today (UTC, answered and in flight); it resets at "
                    f"{reset.isoformat().replace('+00:00', 'Z')}",
                )
        if policy.dollars_per_month is not None:
            spent = self.cost_this_month(tenant)
            if spent >= policy.dollars_per_month * 1_000_000:
                reset = next_month(now)
                return BudgetVerdict(
                    OVER_BUDGET,
                    f"tenant {tenant!r} is over its budget: ${spent / 1e6:.4f} of "
                    f"${policy.dollars_per_month:.2f} spent this month (UTC); it resets at "
                    f"{reset.isoformat().replace('+00:00', 'Z')}",
                )
        limit = policy.tokens_per_minute
        if limit is None:
            return None
        if estimate > limit:
            return BudgetVerdict(
                OVER_TOKEN_LIMIT,
                f"the request needs about {estimate} tokens (prompt characters / 4 + the output "
                f"cap), more than tenant {tenant!r}'s {limit} tokens a minute: shorten it",
            )
        minute, leaves_s = self.tokens_last_minute(tenant)
        mine = self.pending(tenant, partition % partitions)
        share = limit / partitions
        if (mine == 0 and minute + estimate <= limit) or (
            minute / partitions + mine + estimate <= share
        ):
            return None
        wait_s = min(MINUTE_S, max(1.0, leaves_s))
        return BudgetVerdict(
            OVER_TOKEN_LIMIT,
            f"tenant {tenant!r} is over its {limit} tokens a minute ({minute} answered in the "
            f"last minute, about {mine + estimate} more in flight here with this request): "
            f"retry in {wait_s:.0f}s",
            wait_s,
        )


class UsageTail(TenantUsage):
    """``TenantUsage`` fed by a tail of the responses topic from the start of this UTC month.

    ``ready`` is False until the tail has read every response that existed when it started;
    the router waits for that once (``wait_ready``) before its first budget decision.
    """

    def __init__(
        self,
        config: dict[str, Any],
        responses_topic: str,
        codec: Codec,
    ) -> None:
        super().__init__()
        self._codec = codec
        self._topic = responses_topic
        self.undecodable = 0
        self._tail = TopicTail(
            config,
            responses_topic,
            self._on_response,
            since_ms=month_start_ms(time.time()),
            name="usage-tail",
        )
        self._barrier = self._tail.barrier()
        self.ready = False

    def _on_response(self, msg: Record) -> None:
        status = header_value(msg.headers(), STATUS)
        if status is not None and status not in _BILLED:
            return  # rejected, expired, failed: nothing was billed for the answer
        try:
            body = self._codec.decode(RESPONSE, msg.value() or b"", self._topic)
        except Exception:  # a foreign record on the ledger must not stop the tail: count it
            self.undecodable += 1
            return
        self.record(
            str(body.get("request_id") or ""),
            str(body.get("tenant") or "default"),
            body.get("usage"),
            int(body.get("cost_micro_usd") or 0),
            int(body.get("responded_at_ms") or msg.timestamp()[1]),
        )

    async def wait_ready(self) -> None:
        if self.ready:
            return
        await asyncio.wrap_future(self._barrier)
        self.ready = True

    def close(self) -> None:
        self._tail.stop()
