"""Per-API-key token buckets for requests and tokens a minute, and the headers that report them."""

from __future__ import annotations

import math
from dataclasses import dataclass

from switchboard.devtools.fake_anthropic.batches import rfc3339


class TokenBucket:
    """Holds up to ``per_minute`` units and refills them evenly over a minute."""

    def __init__(self, per_minute: int, now: float) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.level = self.capacity
        self.updated = now

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
        self.updated = now

    def wait_for(self, amount: int) -> float:
        """Seconds until ``amount`` fits (a request above the capacity waits for a full bucket)."""
        return max(0.0, (min(amount, self.capacity) - self.level) / self.rate)

    def take(self, amount: int) -> None:
        self.level -= min(amount, self.capacity)

    def seconds_to_full(self) -> float:
        return (self.capacity - self.level) / self.rate


@dataclass(frozen=True)
class Admission:
    """Whether a call may proceed, and the ``anthropic-ratelimit-*`` headers to send either way."""

    retry_after_s: float | None
    headers: dict[str, str]
    #: The tokens taken from the tokens bucket (0 when refused or without a tokens limit).
    tokens: int = 0

    @property
    def admitted(self) -> bool:
        return self.retry_after_s is None


class RateLimiter:
    """Requests and tokens a minute per API key. Not thread-safe: the owner holds a lock.

    Tokens are input tokens outside a cache read, as the API's input-tokens limit counts them;
    they are reported under both ``tokens`` and ``input-tokens`` header names.
    """

    def __init__(self, rpm: int | None = None, tpm: int | None = None) -> None:
        self.rpm = rpm
        self.tpm = tpm
        self._buckets: dict[tuple[str, str], TokenBucket] = {}

    @property
    def enabled(self) -> bool:
        return self.rpm is not None or self.tpm is not None

    def clear(self) -> None:
        self._buckets.clear()

    def admit(self, api_key: str, tokens: int, *, now: float, wall: float) -> Admission:
        """Take a request and ``tokens`` from ``api_key``'s buckets, or none if either is short."""
        wanted = [
            (name, limit, amount)
            for name, limit, amount in (("requests", self.rpm, 1), ("tokens", self.tpm, tokens))
            if limit is not None
        ]
        buckets = [(name, self._bucket(api_key, name, limit, now), n) for name, limit, n in wanted]
        wait = max((bucket.wait_for(n) for _, bucket, n in buckets), default=0.0)
        if wait == 0.0:
            for _, bucket, n in buckets:
                bucket.take(n)
        headers: dict[str, str] = {}
        for name, bucket, _ in buckets:
            values = {
                "limit": str(int(bucket.capacity)),
                "remaining": str(max(0, math.floor(bucket.level))),
                "reset": rfc3339(wall + bucket.seconds_to_full()),
            }
            for field, value in values.items():
                headers[f"anthropic-ratelimit-{name}-{field}"] = value
                if name == "tokens":
                    headers[f"anthropic-ratelimit-input-tokens-{field}"] = value
        taken = tokens if wait == 0.0 and self.tpm is not None else 0
        return Admission(wait if wait > 0.0 else None, headers, taken)

    def _bucket(self, api_key: str, name: str, limit: int, now: float) -> TokenBucket:
        bucket = self._buckets.get((api_key, name))
        if bucket is None:
            bucket = self._buckets[api_key, name] = TokenBucket(limit, now)
        bucket.refill(now)
        return bucket
