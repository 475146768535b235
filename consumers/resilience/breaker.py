"""A circuit breaker per specialist model: stop calling a provider that is shedding load.

CLOSED lets every call through and counts consecutive overload failures (429, 529, 5xx); at
``failure_threshold`` of them, or at once on a systemic failure (bad key, spend limit, unknown
model), it goes OPEN. OPEN lets nothing through for a cooldown that doubles on each re-open up
to ``max_open_s`` (and is never shorter than a ``retry-after`` the provider gave). Then
HALF_OPEN admits exactly ``half_open_probes`` calls: a success closes the breaker, an overload
or systemic failure re-opens it.

A systemic failure re-opens for a fixed ``open_s`` (or its ``retry-after``): probing a bad key or
a spend limit costs nothing, and noticing it cleared early is worth it.

Only health signals move the breaker. A failure that is neither overload nor systemic (a 400,
a decode error) says nothing about the provider's health: it is neutral, and in HALF_OPEN it
frees its probe slot for another call.

Every ``acquire()`` (or ``try_acquire()`` that returned True) must be followed by exactly one
``record_success``, ``record_failure`` or ``release`` (cancelled, no outcome), or a probe slot
stays taken. A success that arrives while HALF_OPEN closes the breaker even if its call was
admitted before the breaker opened: it is fresh evidence that the provider answers. Results
arriving while OPEN are ignored. One event loop; no locks, since no method awaits while deciding.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import TYPE_CHECKING, Final

from switchboard.core.settings import DEFAULTS

if TYPE_CHECKING:
    from switchboard.core.classify import Failure

__all__ = ["MAX_OPEN_S", "BreakerState", "CircuitBreaker"]

#: The longest an overload keeps a breaker open between probes, however often it re-opens.
MAX_OPEN_S: Final = 300.0
#: Past this many re-opens the cooldown is at its cap anyway; keeps 2**n a sane size.
_MAX_EXPONENT: Final = 62


class BreakerState(StrEnum):
    """A circuit breaker's state; ``gauge_value`` is its number on a Prometheus gauge."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"

    @property
    def gauge_value(self) -> int:
        """0 closed, 1 open, 2 half-open."""
        return _GAUGE_VALUES[self]


_GAUGE_VALUES: Final = {BreakerState.CLOSED: 0, BreakerState.OPEN: 1, BreakerState.HALF_OPEN: 2}


class CircuitBreaker:
    """Closed, open or half-open, for one named dependency (a specialist's model)."""

    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int = DEFAULTS.breaker_failure_threshold,
        open_s: float = DEFAULTS.breaker_open_s,
        max_open_s: float = MAX_OPEN_S,
        half_open_probes: int = 1,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        on_state_change: Callable[[str, BreakerState], None] | None = None,
    ) -> None:
        if failure_threshold < 1 or half_open_probes < 1:
            raise ValueError("failure_threshold and half_open_probes must be at least 1")
        if not 0 < open_s <= max_open_s:
            raise ValueError(f"need 0 < open_s <= max_open_s, got {open_s} and {max_open_s}")
        self.name = name
        self.failure_threshold = failure_threshold
        self.open_s = open_s
        self.max_open_s = max_open_s
        self.half_open_probes = half_open_probes
        self._clock = clock
        self._sleep = sleep
        self._on_state_change = on_state_change

        self._state = BreakerState.CLOSED
        self._consecutive_failures = 0
        self._reopens = 0  # opens since the breaker last closed: the cooldown's exponent
        self._reopen_at = 0.0
        self._probes_admitted = 0
        self._opened_count = 0
        self._calls_while_open = 0
        # Replaced (after being set) on every change, so each waiter waits on one generation.
        self._changed = asyncio.Event()

    # --- reading ---------------------------------------------------------------------------

    @property
    def state(self) -> BreakerState:
        """The state now (an OPEN breaker whose cooldown has ended reads HALF_OPEN)."""
        self._refresh()
        return self._state

    @property
    def opened_count(self) -> int:
        """How many times the breaker has gone OPEN."""
        return self._opened_count

    @property
    def calls_while_open(self) -> int:
        """Calls admitted while OPEN: 0 by construction, exported to prove it."""
        return self._calls_while_open

    @property
    def reopen_in_s(self) -> float:
        """Seconds until an OPEN breaker admits a probe (0 when not OPEN)."""
        self._refresh()
        if self._state is not BreakerState.OPEN:
            return 0.0
        return max(0.0, self._reopen_at - self._clock())

    def allows_call(self) -> bool:
        """Whether a call would be admitted now (claims nothing: use ``acquire`` to call)."""
        self._refresh()
        if self._state is BreakerState.CLOSED:
            return True
        if self._state is BreakerState.HALF_OPEN:
            return self._probes_admitted < self.half_open_probes
        return False

    # --- admitting -------------------------------------------------------------------------

    def try_acquire(self) -> bool:
        """Admit one call now if allowed (taking a probe slot when HALF_OPEN); never waits."""
        if not self.allows_call():
            return False
        if self._state is BreakerState.OPEN:  # unreachable by allows_call(); counted if not
            self._calls_while_open += 1
        if self._state is BreakerState.HALF_OPEN:
            self._probes_admitted += 1
        return True

    async def acquire(self) -> None:
        """Wait until a call may proceed, then admit it. Wrap in ``asyncio.timeout`` to bound.

        Waits on a change of state, or (when OPEN) until the cooldown ends, with no polling.
        """
        while not self.try_acquire():
            changed = self._changed
            wait_s = self.reopen_in_s if self._state is BreakerState.OPEN else None
            await self._wait(changed, wait_s)

    async def _wait(self, changed: asyncio.Event, timeout_s: float | None) -> None:
        if timeout_s is None:
            await changed.wait()
            return
        waiter = asyncio.ensure_future(changed.wait())
        timer = asyncio.ensure_future(self._sleep(timeout_s))
        try:
            await asyncio.wait((waiter, timer), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (waiter, timer):
                task.cancel()
            for task in (waiter, timer):
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    # --- outcomes --------------------------------------------------------------------------

    def record_success(self) -> None:
        """An admitted call succeeded: the provider answers (closes a HALF_OPEN breaker)."""
        self._refresh()
        if self._state is BreakerState.OPEN:
            return  # a call admitted before the breaker opened: too stale to close it
        self._consecutive_failures = 0
        if self._state is BreakerState.HALF_OPEN:
            self._reopens = 0
            self._set_state(BreakerState.CLOSED)

    def record_failure(self, failure: Failure) -> None:
        """An admitted call failed; only overload and systemic failures count against health."""
        self._refresh()
        if self._state is BreakerState.OPEN:
            return  # already open; a late result from a call admitted before
        if failure.systemic:
            # Probing a systemic failure (bad key, spend limit) costs nothing, and the sooner a
            # probe sees it cleared the better: a fixed cooldown, not a growing one.
            self._open_for(max(self.open_s, failure.retry_after_s or 0.0))
            return
        if not failure.overload:
            self.release()  # says nothing about the provider's health
            return
        self._consecutive_failures += 1
        if (
            self._state is BreakerState.HALF_OPEN
            or self._consecutive_failures >= self.failure_threshold
        ):
            self._open_for(self._overload_cooldown_s(failure.retry_after_s))
            self._reopens += 1

    def release(self) -> None:
        """An admitted call ended with no health signal (cancelled, or a neutral failure)."""
        self._refresh()
        if self._state is BreakerState.HALF_OPEN and self._probes_admitted > 0:
            self._probes_admitted -= 1
            self._notify()

    def force_open(self, for_s: float) -> None:
        """Open now for at least ``for_s`` seconds (a fatal halt, e.g. a spend limit), then probe.

        Never shortens an open period already running. A probe that meets the same systemic
        failure re-opens the breaker for ``open_s``: a limit still in force is probed every
        ``open_s`` until it clears.
        """
        self._refresh()
        until = self._clock() + max(0.0, for_s)
        if self._state is BreakerState.OPEN:
            if until > self._reopen_at:
                self._reopen_at = until
                self._notify()  # waiters recompute their wake-up time
            return
        self._open_for(max(0.0, for_s))

    # --- transitions -----------------------------------------------------------------------

    def _overload_cooldown_s(self, retry_after_s: float | None) -> float:
        exponent = min(self._reopens, _MAX_EXPONENT)
        cooldown = min(self.open_s * 2.0**exponent, self.max_open_s)
        # Never probe before the provider said to; its word beats our cap.
        return max(cooldown, retry_after_s or 0.0)

    def _open_for(self, cooldown_s: float) -> None:
        """Go OPEN (from CLOSED or HALF_OPEN) until ``cooldown_s`` from now."""
        self._reopen_at = self._clock() + cooldown_s
        self._consecutive_failures = 0
        self._probes_admitted = 0
        self._opened_count += 1
        self._set_state(BreakerState.OPEN)

    def _refresh(self) -> None:
        """Move OPEN to HALF_OPEN once the cooldown has ended (time is read, not scheduled)."""
        if self._state is BreakerState.OPEN and self._clock() >= self._reopen_at:
            self._probes_admitted = 0
            self._set_state(BreakerState.HALF_OPEN)

    def _set_state(self, state: BreakerState) -> None:
        self._state = state
        if state is BreakerState.CLOSED:
            self._probes_admitted = 0
        self._notify()
        if self._on_state_change is not None:
            self._on_state_change(self.name, state)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()
