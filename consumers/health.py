"""Liveness and readiness of a pipeline process, for ``/healthz`` and ``/readyz``.

The event loop beats (``beat``) about once a second and, on the same turn, evaluates the
readiness checks (``evaluate``): every consumer holds partitions, the broker answered lately,
the answered index has read up to the latest assignment, and no circuit breaker is open. The
HTTP server's thread only reads what the loop left (``health``, ``readiness``): it never
touches the consumers, and a stuck loop shows as a stale heartbeat, which fails both.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

from switchboard.core import metrics

#: How often the loop beats and re-evaluates readiness.
BEAT_INTERVAL_S: Final = 1.0


class _Runtime(Protocol):
    @property
    def assignment(self) -> list[tuple[str, int]]: ...
    @property
    def assigned_at(self) -> float: ...


class _Index(Protocol):
    def synced(self, since: float) -> bool: ...


class _Breaker(Protocol):
    name: str

    @property
    def state(self) -> Any: ...


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    detail: dict[str, Any]


class ProcessHealth:
    """The heartbeat and the last readiness verdict of one process."""

    def __init__(
        self,
        *,
        stale_after_s: float,
        broker_stale_after_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stale_after_s = stale_after_s
        self.broker_stale_after_s = broker_stale_after_s
        self._clock = clock
        # Alive from construction: the start-up probe gives the first beat its time.
        self._beat = clock()
        self._checks: dict[str, CheckResult] = {
            "started": CheckResult(False, {"reason": "the consumers have not started yet"})
        }

    def beat(self) -> None:
        """On the event loop: it turns."""
        self._beat = self._clock()
        metrics.LOOP_HEARTBEAT.set(time.time())

    def evaluate(
        self,
        runtimes: Mapping[str, _Runtime],
        *,
        index: _Index | None,
        breakers: Mapping[str, _Breaker],
        broker_ok_at: float | None,
        broker_error: str | None = None,
    ) -> dict[str, CheckResult]:
        """On the event loop: evaluate and keep every readiness check."""
        now = self._clock()
        unassigned = sorted(role for role, r in runtimes.items() if not r.assignment)
        checks = {
            "assigned": CheckResult(
                bool(runtimes) and not unassigned,
                {"unassigned": unassigned} if runtimes else {"reason": "no consumers"},
            )
        }
        broker_age = None if broker_ok_at is None else round(now - broker_ok_at, 3)
        broker_ok = broker_age is not None and broker_age <= self.broker_stale_after_s
        detail: dict[str, Any] = {"last_ok_age_s": broker_age}
        if broker_error:
            detail["error"] = broker_error
        checks["broker"] = CheckResult(broker_ok, detail)
        behind = []
        if index is not None:
            behind = sorted(
                role
                for role, r in runtimes.items()
                if r.assignment and not index.synced(r.assigned_at)
            )
        checks["index_synced"] = CheckResult(not behind, {"not_synced": behind})
        open_ = sorted(b.name for b in breakers.values() if str(b.state) == "open")
        checks["breakers"] = CheckResult(not open_, {"open": open_})
        self._checks = checks
        return checks

    def health(self) -> tuple[bool, dict[str, Any]]:
        """From any thread: alive iff the loop beat within ``stale_after_s``."""
        age = self._clock() - self._beat
        return age <= self.stale_after_s, {
            "heartbeat_age_s": round(age, 3),
            "stale_after_s": self.stale_after_s,
        }

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """From any thread: ready iff alive and every check of the last evaluation passed."""
        alive, beat = self.health()
        checks = dict(self._checks)
        checks["heartbeat"] = CheckResult(alive, beat)
        failing = sorted(name for name, c in checks.items() if not c.ok)
        return not failing, {
            "failing": failing,
            "checks": {name: {"ok": c.ok, **c.detail} for name, c in checks.items()},
        }
