"""Keeping the specialist workers within what the provider and each tenant can take.

``CircuitBreaker`` stops calling a model that is shedding load or cut off; ``AimdLimiter`` learns
how many calls may run at once; ``TokenBucket`` and ``TenantLimiter`` bound request rates. All are
pure state machines with injected clocks: no Kafka, no network.
"""

from consumers.resilience.breaker import BreakerState, CircuitBreaker
from consumers.resilience.ratelimit import AimdLimiter, TenantLimiter, TokenBucket

__all__ = ["AimdLimiter", "BreakerState", "CircuitBreaker", "TenantLimiter", "TokenBucket"]
