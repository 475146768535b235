"""Recent latency of a worker group, for its status report and the readers that merge them.

The worker already measures every response's stage latencies into the process's histograms
(``switchboard.core.metrics.STAGE_SECONDS`` and ``E2E_SECONDS``, per specialist). The status
publisher reads their bucket counts at each report (no lock: it runs on the event loop that
observes them) and keeps dated snapshots, so a report carries, per stage, the bucket counts of
the last minute and since the publisher started; nothing is added per record.

Readers merge processes of one group by adding their bucket counts (same bounds), then take
quantiles of the sum: quantiles themselves cannot be averaged. A quantile is estimated as
Prometheus' ``histogram_quantile`` does: linear within the bucket that holds the rank; a rank in
the +Inf bucket reads as the largest finite bound.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass
from typing import Any, Final

from switchboard.core import metrics
from switchboard.core.metrics import LoopHistogram

#: The window a report's (and ``switchboard status``'s) latency figures cover.
LATENCY_WINDOW_S: Final = 60.0
#: Stages as ``stage_latency_ms`` names them; "total" is end to end (request created to
#: response written).
STAGES: Final = ("total", "route", "queue", "model", "worker")
#: The quantiles reported, as (key, q).
QUANTILES: Final = (("p50_ms", 0.5), ("p99_ms", 0.99))

Counts = list[int]


def quantile(bounds_ms: Sequence[float], counts: Sequence[int], q: float) -> float | None:
    """The ``q`` quantile of per-bucket ``counts`` (one more than ``bounds_ms``, +Inf last);
    None when there is nothing counted."""
    total = sum(counts)
    if total <= 0 or len(counts) != len(bounds_ms) + 1:
        return None
    rank = q * total
    below = 0
    for i, n in enumerate(counts):
        if n and below + n >= rank:
            if i == len(bounds_ms):  # +Inf: the largest bound is all that is known
                return float(bounds_ms[-1])
            lower = float(bounds_ms[i - 1]) if i else 0.0
            return lower + (float(bounds_ms[i]) - lower) * (rank - below) / n
        below += n
    return float(bounds_ms[-1])


def summary(bounds_ms: Sequence[float], counts: Sequence[int]) -> dict[str, Any]:
    """Count, p50 and p99 (ms, one decimal; None when empty) of per-bucket ``counts``."""
    out: dict[str, Any] = {"count": sum(counts)}
    for key, q in QUANTILES:
        value = quantile(bounds_ms, counts, q)
        out[key] = None if value is None else round(value, 1)
    return out


def bounds_ms(histogram: LoopHistogram) -> list[float]:
    return [round(b * 1000, 3) for b in histogram.bounds]


@dataclass(eq=False)
class LatencyWindow:
    """One specialist's stage latencies over the last ``window_s``, from the histograms.

    The baseline is taken at construction, so the figures count what this process measured
    since its publisher started (the histograms are the process's, and may hold earlier
    observations in a test process). One snapshot older than the window is kept as the base,
    so the window is covered to within one report interval; snapshots are one per report,
    so at most ``window_s / interval + 2`` are kept.
    """

    specialist: str
    _: KW_ONLY
    window_s: float = LATENCY_WINDOW_S
    clock: Callable[[], float] = time.monotonic
    stages: LoopHistogram = metrics.STAGE_SECONDS
    e2e: LoopHistogram = metrics.E2E_SECONDS

    def __post_init__(self) -> None:
        self._bounds = bounds_ms(self.e2e)
        self._start = self._read()
        self._snapshots: deque[tuple[float, dict[str, Counts]]] = deque(
            [(self.clock(), self._start)]
        )

    def _read(self) -> dict[str, Counts]:
        return {
            stage: (
                self.e2e.counts_of(self.specialist)
                if stage == "total"
                else self.stages.counts_of(stage, self.specialist)
            )
            for stage in STAGES
        }

    def report(self) -> dict[str, Any]:
        """Per stage: count, p50 and p99 over the window, with the window's bucket counts
        (``window``, for readers to merge) and those since the start (``cumulative``, for
        readers that difference their own samples, as the console does)."""
        now = self.clock()
        counts = self._read()
        self._snapshots.append((now, counts))
        cutoff = now - self.window_s
        while len(self._snapshots) > 1 and self._snapshots[1][0] <= cutoff:
            self._snapshots.popleft()
        base_t, base = self._snapshots[0]
        stages = {}
        for stage in STAGES:
            window = _minus(counts[stage], base[stage])
            stages[stage] = {
                **summary(self._bounds, window),
                "window": window,
                "cumulative": _minus(counts[stage], self._start[stage]),
            }
        return {
            "window_s": round(min(self.window_s, now - base_t), 1),
            "bounds_ms": self._bounds,
            "stages": stages,
        }


def merge(entries: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The ``latency`` entries of one group's live consumers as one: window bucket counts
    added per stage (an entry with other bounds than the first is left out), then count, p50
    and p99 of the sum. Empty when no entry has latency."""
    bounds: list[float] | None = None
    window_s = 0.0
    sums: dict[str, Counts] = {}
    for entry in entries:
        entry_bounds = entry.get("bounds_ms")
        stages = entry.get("stages")
        if not isinstance(entry_bounds, list) or not isinstance(stages, dict):
            continue
        if bounds is None:
            bounds = entry_bounds
        elif entry_bounds != bounds:
            continue  # another version's buckets: adding them would be wrong
        window_s = max(window_s, float(entry.get("window_s") or 0.0))
        for stage, figures in stages.items():
            counts = figures.get("window") if isinstance(figures, dict) else None
            if isinstance(counts, list) and len(counts) == len(bounds) + 1:
                sums[stage] = _plus(sums.get(stage), counts)
    if bounds is None:
        return {}
    return {
        "window_s": window_s,
        "stages": {s: summary(bounds, sums[s]) for s in STAGES if s in sums},
    }


def _minus(now: Counts, base: Counts) -> Counts:
    return [max(0, a - b) for a, b in zip(now, base, strict=True)]


def _plus(total: Counts | None, counts: Sequence[Any]) -> Counts:
    values = [int(c) if isinstance(c, int) else 0 for c in counts]
    return values if total is None else [a + b for a, b in zip(total, values, strict=True)]
