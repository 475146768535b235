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
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Final

from consumers.runtime.waiters import FifoWaiters
from switchboard.core.settings import DEFAULTS

if TYPE_CHECKING:
    from switchboard.core.classify import Failure

__all__ = ["AimdLimiter", "TenantLimiter", "TokenBucket"]

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
        header into a number of calls (without it, that header is ignored)."""
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

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
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


def _int_or_none(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return max(0, int(value))
    except ValueError:
        return None
