"""Rate and concurrency limits: a token bucket, one bucket per tenant, and an AIMD limiter.

- ``TokenBucket``: ``rate_per_s`` sustained, ``burst`` at once; says how long to wait rather
  than waiting, so the caller decides (reject with a retry-after, or pause a partition).
- ``TenantLimiter``: a bucket per tenant (1000 requests/s with a burst of 1000 by default),
  overridable per tenant, the least recently seen tenants forgotten past ``max_tenants``. With
  ``partitions=P`` it keeps one bucket per tenant and requests-topic partition, each with
  ``rate / P`` (and ``ceil(burst / P)``): a partition has one owner in the router group, so
  the group together allows the tenant's rate however many routers share the partitions (a
  router holding k of P allows k/P of it). See docs/security.md, "Rates across routers".
- ``AimdLimiter``: how many provider calls may run at once, learnt like TCP's congestion
  window: one more after a window of successes, halved on an overload signal (429/529/5xx),
  and capped while the provider's ``anthropic-ratelimit-*-remaining`` headers run low.
- ``ProviderBudget``: the provider's requests- and tokens-per-minute buckets, mirrored from
  its ``anthropic-ratelimit-*`` headers and the usage of each answer, so a call that would
  exceed what remains waits before it is sent instead of earning a 429.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Final

from consumers.runtime.waiters import FifoWaiters
from switchboard.core.settings import DEFAULTS

if TYPE_CHECKING:
    from switchboard.core.classify import Failure

__all__ = [
    "AimdLimiter",
    "CallCost",
    "ProviderBudget",
    "Reservation",
    "TenantLimiter",
    "TokenBucket",
]

#: Float slack when comparing refilled tokens: 1/rate seconds must buy exactly one token.
_EPSILON: Final = 1e-9
#: Tenants whose buckets a ``TenantLimiter`` keeps (the least recently seen go first).
MAX_TENANTS: Final = 10_000


class TokenBucket:
    """``rate_per_s`` tokens a second, holding at most ``burst``; starts full."""

    def __init__(
        self, rate_per_s: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if not rate_per_s > 0 or burst < 1:
            raise ValueError(f"need rate_per_s > 0 and burst >= 1, got {rate_per_s} and {burst}")
        self.rate_per_s = float(rate_per_s)
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._updated = clock()

    @property
    def tokens(self) -> float:
        """Tokens available now."""
        self._refill()
        return self._tokens

    def try_acquire(self, n: int = 1) -> float:
        """Take ``n`` tokens: 0.0 if granted, else the seconds until they would be (none taken)."""
        if not 1 <= n <= self.burst:
            raise ValueError(f"n must be between 1 and the burst ({self.burst}), not {n}")
        self._refill()
        if self._tokens + _EPSILON >= n:
            self._tokens = max(0.0, self._tokens - n)
            return 0.0
        return (n - self._tokens) / self.rate_per_s

    def _refill(self) -> None:
        now = self._clock()
        elapsed = now - self._updated
        if elapsed > 0:
            self._tokens = min(float(self.burst), self._tokens + elapsed * self.rate_per_s)
        self._updated = now


class TenantLimiter:
    """One token bucket per tenant, kept for the ``max_tenants`` most recently seen tenants.

    Forgetting a tenant refills its bucket; only the longest-idle tenants are forgotten, and
    their buckets have had the longest to refill anyway.
    """

    def __init__(
        self,
        default_rate: float = DEFAULTS.tenant_rate_per_s,
        default_burst: int = DEFAULTS.tenant_burst,
        overrides: Mapping[str, tuple[float, int]] | None = None,
        max_tenants: int = MAX_TENANTS,
        clock: Callable[[], float] = time.monotonic,
        partitions: int = 1,
    ) -> None:
        if max_tenants < 1:
            raise ValueError(f"max_tenants must be at least 1, not {max_tenants}")
        if partitions < 1:
            raise ValueError(f"partitions must be at least 1, not {partitions}")
        self.partitions = partitions
        self._shapes = dict(overrides or {})
        self._default = (default_rate, default_burst)
        # Fail at start-up, not on a tenant's first request, if a shape is impossible.
        for rate, burst in (self._default, *self._shapes.values()):
            TokenBucket(rate, burst, clock)
        self.max_tenants = max_tenants
        self._clock = clock
        self._buckets: OrderedDict[tuple[str, int], TokenBucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def reshape(self, overrides: Mapping[str, tuple[float, int]]) -> None:
        """New per-tenant shapes (a reloaded tenants file): a tenant whose shape changed starts
        a fresh bucket; the others keep theirs. Raises ValueError on an impossible shape."""
        for rate, burst in overrides.values():
            TokenBucket(rate, burst, self._clock)
        changed = {
            t for t in set(self._shapes) | set(overrides) if self._shapes.get(t) != overrides.get(t)
        }
        self._shapes = dict(overrides)
        for key in [k for k in self._buckets if k[0] in changed]:
            del self._buckets[key]

    def set_partitions(self, partitions: int) -> None:
        """The requests topic's partition count (read again on each assignment): a new count
        re-splits every tenant's rate, so every bucket starts afresh."""
        if partitions < 1:
            raise ValueError(f"partitions must be at least 1, not {partitions}")
        if partitions != self.partitions:
            self.partitions = partitions
            self._buckets.clear()

    def share(self, tenant: str) -> tuple[float, int]:
        """The (rate, burst) of one partition's bucket of ``tenant``."""
        rate, burst = self._shapes.get(tenant, self._default)
        return rate / self.partitions, max(1, math.ceil(burst / self.partitions))

    def check(self, tenant: str, n: int = 1, *, partition: int = 0) -> float:
        """0.0 if ``tenant`` may make ``n`` more requests now through ``partition`` of the
        requests topic, else the retry-after in seconds."""
        key = (tenant, partition % self.partitions)
        bucket = self._buckets.get(key)
        if bucket is None:
            rate, burst = self.share(tenant)
            bucket = self._buckets[key] = TokenBucket(rate, burst, self._clock)
            if len(self._buckets) > self.max_tenants:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        return bucket.try_acquire(n)


#: The provider's rate-limit headers read by ``AimdLimiter.observe_headers``: (remaining, reset).
_RATELIMIT_HEADERS: Final = {
    "requests": (
        "anthropic-ratelimit-requests-remaining",
        "anthropic-ratelimit-requests-reset",
    ),
    "tokens": ("anthropic-ratelimit-tokens-remaining", "anthropic-ratelimit-tokens-reset"),
}


class AimdLimiter:
    """An async concurrency limit, additive increase and multiplicative decrease.

    ``async with limiter:`` waits (first come, first served) until fewer than ``limit`` calls
    are in flight. A call is only ever admitted while ``in_flight < limit``; when the limit
    drops, calls already running finish and none starts until ``in_flight`` is below it again.
    One event loop; every state change happens without awaiting, so no lock is needed.
    """

    def __init__(
        self,
        initial: int,
        *,
        maximum: int,
        minimum: int = 1,
        increase: int = 1,
        decrease_factor: float = 0.5,
        cooldown_s: float = 1.0,
        tokens_per_request: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        """``tokens_per_request``: the typical tokens of one call, to turn a remaining-tokens
        header into a number of calls (without it, that header is ignored: the workers leave
        it unset, as their ``ProviderBudget`` paces calls by the token limits themselves)."""
        if not 1 <= minimum <= initial <= maximum:
            raise ValueError(
                f"need 1 <= minimum <= initial <= maximum, got {minimum}, {initial}, {maximum}"
            )
        if increase < 1 or not 0 < decrease_factor < 1 or cooldown_s < 0:
            raise ValueError("need increase >= 1, 0 < decrease_factor < 1 and cooldown_s >= 0")
        if tokens_per_request is not None and tokens_per_request < 1:
            raise ValueError("tokens_per_request must be at least 1")
        self.minimum = minimum
        self.maximum = maximum
        self.increase = increase
        self.decrease_factor = decrease_factor
        self.cooldown_s = cooldown_s
        self.tokens_per_request = tokens_per_request
        self._clock = clock
        self._wall_clock = wall_clock

        self._window_limit = initial  # the AIMD window, before any header cap
        self._successes = 0  # since the window last grew or shrank
        self._last_decrease: float | None = None
        self._caps: dict[str, tuple[int, float]] = {}  # header -> (calls, monotonic expiry)
        self._in_flight = 0
        self._high_water = 0
        self._waiters = FifoWaiters()

    # --- reading ---------------------------------------------------------------------------

    @property
    def limit(self) -> int:
        """How many calls may be in flight now: the AIMD window under any header cap."""
        now = self._clock()
        limit = self._window_limit
        for name, (calls, until) in list(self._caps.items()):
            if now >= until:
                del self._caps[name]
            else:
                limit = min(limit, calls)
        return max(self.minimum, limit)

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def high_water(self) -> int:
        """The most calls ever in flight at once."""
        return self._high_water

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    # --- admitting -------------------------------------------------------------------------

    async def acquire(self) -> None:
        """Wait for a slot (cancellable: wrap in ``asyncio.timeout`` to bound the wait)."""
        if not self._waiters and self._in_flight < self.limit:
            self._admit()
            return
        # Granted (the slot taken on its behalf), then cancelled before it could run: hand back.
        await self._waiters.wait(self.release)

    def release(self) -> None:
        """A call admitted by ``acquire`` ended (``async with`` does this itself)."""
        if self._in_flight <= 0:
            raise RuntimeError("release() without a matching acquire()")
        self._in_flight -= 1
        self._wake()

    async def __aenter__(self) -> AimdLimiter:
        await self.acquire()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        self.release()

    def _admit(self) -> None:
        self._in_flight += 1
        self._high_water = max(self._high_water, self._in_flight)

    def _wake(self) -> None:
        """Hand free slots to waiters in arrival order; the slot is taken on their behalf."""
        limit = self.limit
        while self._in_flight < limit and self._waiters.wake_next():
            self._admit()

    # --- signals ---------------------------------------------------------------------------

    def record_success(self) -> None:
        """A call succeeded: after a window of ``limit`` successes, allow ``increase`` more."""
        self._successes += 1
        if self._successes >= self._window_limit:
            self._successes = 0
            self._window_limit = min(self.maximum, self._window_limit + self.increase)
            self._wake()

    def record_overload(self) -> None:
        """The provider is shedding load: shrink the window, at most once per cooldown (the
        calls in flight when it started failing all fail alike; that is one signal, not many)."""
        now = self._clock()
        if self._last_decrease is not None and now - self._last_decrease < self.cooldown_s:
            return
        self._last_decrease = now
        self._successes = 0
        self._window_limit = max(
            self.minimum, math.floor(self._window_limit * self.decrease_factor)
        )

    def record_failure(self, failure: Failure) -> None:
        """A call failed: only an overload moves the limit."""
        if failure.overload:
            self.record_overload()

    def observe_headers(self, headers: Mapping[str, str]) -> None:
        """Read ``anthropic-ratelimit-{requests,tokens}-{remaining,reset}`` of a response.

        With N requests (or N calls' worth of tokens) left before the reset, more than N calls
        at once can only earn 429s, so the limit is capped at N until the reset time (until the
        next response says otherwise, when no reset is given). Never below ``minimum``, so the
        calls that run keep bringing fresh headers.
        """
        lowered = {k.lower(): v for k, v in headers.items()}
        for name, (remaining_header, reset_header) in _RATELIMIT_HEADERS.items():
            remaining = _int_or_none(lowered.get(remaining_header))
            if remaining is None:
                continue
            if name == "tokens":
                if self.tokens_per_request is None:
                    continue
                remaining //= self.tokens_per_request
            until = self._reset_deadline(lowered.get(reset_header))
            self._caps[name] = (max(self.minimum, remaining), until)
        self._wake()  # a cap lifted by fresher headers may free slots

    def _reset_deadline(self, value: str | None) -> float:
        """The monotonic time of an RFC 3339 reset, or forever if absent or unreadable."""
        if value is None:
            return math.inf
        try:
            reset = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return math.inf
        if reset.tzinfo is None:
            return math.inf  # a naive time is ambiguous: keep the cap until fresher headers
        return self._clock() + max(0.0, reset.timestamp() - self._wall_clock())


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _int_or_none(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return max(0, int(value))
    except ValueError:
        return None


#: The provider's per-minute limits that its ``anthropic-ratelimit-{family}-*`` headers report.
#: ``tokens`` is the most restrictive of the token limits: followed only when a response names
#: neither ``input-tokens`` nor ``output-tokens`` (the API names them; a proxy may not).
BUDGET_FAMILIES: Final = ("requests", "input-tokens", "output-tokens", "tokens")
_SPECIFIC_TOKENS: Final = ("input-tokens", "output-tokens")
#: The share of each limit left unspent: the provider's bucket and ours refill on two clocks a
#: network hop apart, and a call sent on the last token of ours may find the provider's a few
#: tokens short. A constant offset of the level, it costs no throughput.
BUDGET_HEADROOM: Final = 0.01
#: A level below this many minutes' worth of overspend is not believed (a garbled header).
_MAX_DEBT_MINUTES: Final = 1.0


class CallCost:
    """What one model call takes from the provider's limits: one request, its input tokens that
    the limit counts (uncached input and cache writes; cache reads are free) and its output
    tokens (reserved as ``max_tokens`` up front, as the API does, then the actual count)."""

    __slots__ = ("input_tokens", "output_tokens", "requests")

    def __init__(self, input_tokens: int, output_tokens: int, requests: int = 1) -> None:
        self.input_tokens = max(0, int(input_tokens))
        self.output_tokens = max(0, int(output_tokens))
        self.requests = requests

    def of(self, family: str) -> int:
        if family == "requests":
            return self.requests
        if family == "input-tokens":
            return self.input_tokens
        if family == "output-tokens":
            return self.output_tokens
        return self.input_tokens + self.output_tokens

    def __repr__(self) -> str:
        return (
            f"CallCost(input_tokens={self.input_tokens}, output_tokens={self.output_tokens}, "
            f"requests={self.requests})"
        )


class _MinuteBucket:
    """One per-minute limit as the provider's headers describe it: ``limit`` a minute,
    replenished continuously (``limit / 60`` a second) up to ``limit``."""

    __slots__ = ("level", "limit", "updated")

    def __init__(self, limit: int, level: float, now: float) -> None:
        self.limit = limit
        self.level = level
        self.updated = now

    @property
    def rate(self) -> float:
        return self.limit / 60.0

    def refill(self, now: float) -> None:
        if now > self.updated:
            self.level = min(float(self.limit), self.level + (now - self.updated) * self.rate)
        self.updated = now

    def wait_for(self, amount: int) -> float:
        """Seconds until ``amount`` fits with the headroom left over (more than the limit
        waits for a full bucket)."""
        need = min(amount + max(1.0, self.limit * BUDGET_HEADROOM), self.limit)
        return 0.0 if self.level + _EPSILON >= need else (need - self.level) / self.rate


class Reservation:
    """A call's place in a ``ProviderBudget``: what it took, when, and how much every limit
    had handed out in all once it took its share (``marks``), so a response's headers can be
    read against the calls sent after it (at their estimates: a correction of a later call
    is not seen there, which errs by the estimates' error, not by their size)."""

    __slots__ = ("charged", "cost", "marks", "sent")

    def __init__(
        self, cost: CallCost, sent: float, marks: dict[str, float], charged: frozenset[str]
    ) -> None:
        self.cost = cost
        self.sent = sent
        self.marks = marks
        #: The buckets it was taken from (a limit learnt later never held it).
        self.charged = charged


class ProviderBudget:
    """The provider's request and token limits, mirrored from its rate-limit headers, so a call
    that would exceed what remains waits here instead of earning a 429.

    - Sized from the headers: ``anthropic-ratelimit-{family}-limit`` is the bucket (a minute's
      worth, refilled at ``limit / 60`` a second), ``-remaining`` its level when the provider
      admitted that call; ``-reset`` (when it is full again) follows from those two.
    - ``acquire(cost)`` waits, first come first served, until every known bucket holds the
      call's cost, and takes it. Before any header there is nothing to follow: calls go.
    - ``observe(headers, reservation)`` re-reads the level from a response: ``remaining`` at
      the call's admission, plus the refill since it was sent, minus what the calls sent after
      it took; the provider's count wins over ours, so other processes' calls on the same key
      and any error of the estimates are corrected on every response.
    - ``settle(reservation, actual)`` books the difference between the estimate and the usage
      the response reports; ``refund(reservation)`` gives back a call the provider refused.

    One event loop; every state change happens without awaiting.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, _MinuteBucket] = {}
        #: What each limit has handed out in all, as estimated when each call was sent.
        self._spent: dict[str, float] = dict.fromkeys(BUDGET_FAMILIES, 0.0)
        self._waiters = FifoWaiters()
        #: A caller is waiting for its cost to fit; the others queue behind it.
        self._turn_taken = False
        self._woken: asyncio.Future[None] | None = None
        #: How often, and how long in all, callers slept for the limits (for reports).
        self.waits = 0
        self.waited_s = 0.0

    # --- reading ---------------------------------------------------------------------------

    @property
    def families(self) -> tuple[str, ...]:
        """The limits followed now (none before the first header)."""
        return tuple(self._buckets)

    def level(self, family: str) -> float | None:
        """What ``family``'s bucket holds now, as this budget reckons it; None if unknown."""
        bucket = self._buckets.get(family)
        if bucket is None:
            return None
        bucket.refill(self._clock())
        return bucket.level

    def limit(self, family: str) -> int | None:
        bucket = self._buckets.get(family)
        return None if bucket is None else bucket.limit

    # --- taking ----------------------------------------------------------------------------

    def try_reserve(self, cost: CallCost) -> Reservation | float:
        """Take ``cost`` now (a ``Reservation``), or say how many seconds until it would fit."""
        now = self._clock()
        wait = 0.0
        for family, bucket in self._buckets.items():
            bucket.refill(now)
            wait = max(wait, bucket.wait_for(cost.of(family)))
        if wait > 0.0:
            return wait
        marks: dict[str, float] = {}
        for family in BUDGET_FAMILIES:
            amount = cost.of(family)
            self._spent[family] += amount
            marks[family] = self._spent[family]
            held = self._buckets.get(family)
            if held is not None:
                held.level -= min(amount, held.limit)
        return Reservation(cost, now, marks, frozenset(self._buckets))

    async def acquire(self, cost: CallCost | Callable[[], CallCost]) -> Reservation:
        """Wait until the call's cost fits, then take it. Callers that must wait are served in
        arrival order, one at a time, so a large call is not starved by small ones
        (cancellable: an abandoned wait takes nothing). ``cost`` may be a function, asked again
        on every try: an estimate learnt while a caller waits counts at once."""
        cost_now = cost if callable(cost) else (lambda: cost)
        if not self._turn_taken:
            taken = self.try_reserve(cost_now())
            if isinstance(taken, Reservation):
                return taken
            self._turn_taken = True
        else:
            await self._waiters.wait(self._pass_turn)  # handed the turn by the caller before
        try:
            while True:
                taken = self.try_reserve(cost_now())
                if isinstance(taken, Reservation):
                    return taken
                self.waits += 1
                self.waited_s += await self._sleep(taken)
        finally:
            self._pass_turn()

    def _pass_turn(self) -> None:
        if not self._waiters.wake_next():
            self._turn_taken = False

    async def _sleep(self, seconds: float) -> float:
        """Sleep ``seconds``, or less if an answer gives tokens back (``_nudge``); how long."""
        loop = asyncio.get_running_loop()
        began = loop.time()
        woken: asyncio.Future[None] = loop.create_future()
        self._woken = woken
        timer = loop.call_later(seconds, _resolve, woken)
        try:
            await woken
        finally:
            timer.cancel()
            self._woken = None
        return loop.time() - began

    def _nudge(self) -> None:
        """The levels rose (an answer took less than reserved, or fresh headers): the caller
        sleeping for tokens looks again."""
        woken = self._woken
        if woken is not None:
            _resolve(woken)

    # --- learning --------------------------------------------------------------------------

    def observe(self, headers: Mapping[str, str], reservation: Reservation | None = None) -> None:
        """Read the ``anthropic-ratelimit-*`` headers of the response to ``reservation``'s call
        (None: a response to no call of this budget, taken as fresh)."""
        lowered = {k.lower(): v for k, v in headers.items()}
        if not lowered:
            return
        seen = [
            family for family in BUDGET_FAMILIES if f"anthropic-ratelimit-{family}-limit" in lowered
        ]
        if any(family in seen for family in _SPECIFIC_TOKENS) and "tokens" in seen:
            seen.remove("tokens")
            self._buckets.pop("tokens", None)
        now = self._clock()
        for family in seen:
            limit = _int_or_none(lowered.get(f"anthropic-ratelimit-{family}-limit"))
            remaining = _int_or_none(lowered.get(f"anthropic-ratelimit-{family}-remaining"))
            if not limit or remaining is None:
                continue
            level = float(min(remaining, limit))
            bucket = self._buckets.get(family)
            if reservation is not None:
                # Refilled since the provider counted this call; taken by the calls sent after.
                later = self._spent[family] - reservation.marks[family]
                level += max(0.0, now - reservation.sent) * (limit / 60.0) - later
            level = max(-limit * _MAX_DEBT_MINUTES, min(float(limit), level))
            if bucket is None:
                self._buckets[family] = _MinuteBucket(limit, level, now)
            else:
                bucket.refill(now)
                bucket.limit, bucket.level = limit, level
        self._nudge()

    def settle(self, reservation: Reservation, actual: CallCost) -> None:
        """The call ended with ``actual`` usage: book the difference from its estimate."""
        for family in BUDGET_FAMILIES:
            delta = actual.of(family) - reservation.cost.of(family)
            if delta == 0:
                continue
            # Not booked in ``_spent``: that counts what calls took when they were sent, and a
            # correction booked there would look, to the calls sent before this one, like a
            # call sent after them.
            bucket = self._buckets.get(family)
            if bucket is not None and family in reservation.charged:
                bucket.level = min(float(bucket.limit), bucket.level - delta)
        reservation.cost = actual
        self._nudge()

    def refund(self, reservation: Reservation) -> None:
        """The provider refused the call (a 429): it took nothing, so give its share back."""
        self.settle(reservation, CallCost(0, 0, requests=0))
