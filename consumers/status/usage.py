"""Model usage counted by a worker (``UsageTotals``) and its last hour (``UsageWindow``).

A worker only adds to running totals (one dict update per answer, no clock); the status
publisher keeps dated snapshots of them and reports the difference over the window, so the
hot path never prunes anything.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final

#: Token counters as the Messages API names them (and ``Answer.usage`` carries them).
TOKEN_KEYS: Final = (
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
)
#: The window ``switchboard status`` reports model calls, tokens and cost over.
USAGE_WINDOW_S: Final = 3600.0


@dataclass
class UsageTotals:
    """Answers, tokens and cost a worker has counted since it started."""

    answers: int = 0
    cost_micro_usd: int = 0
    tokens: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TOKEN_KEYS, 0))

    def add(self, usage: Mapping[str, int] | None, cost_micro_usd: int) -> None:
        self.answers += 1
        self.cost_micro_usd += cost_micro_usd
        if usage:
            for key in TOKEN_KEYS:
                self.tokens[key] += int(usage.get(key) or 0)

    def as_counts(self, model_calls: int) -> dict[str, int]:
        """A flat snapshot: model calls (from the worker), answers, tokens, cost."""
        return {
            "model_calls": model_calls,
            "answers": self.answers,
            **self.tokens,
            "cost_micro_usd": self.cost_micro_usd,
        }


class UsageWindow:
    """Dated snapshots of running counts; ``over_window`` is their growth over the window.

    One snapshot older than the window is kept as the baseline, so the figure covers the whole
    window (to within one snapshot interval) once the process is older than it.
    """

    def __init__(
        self, window_s: float = USAGE_WINDOW_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.window_s = window_s
        self._clock = clock
        self._started = clock()
        self._snapshots: deque[tuple[float, dict[str, int]]] = deque()

    def over_window(self, counts: dict[str, int]) -> tuple[dict[str, int], float]:
        """Record ``counts`` now; return their growth over the window and the seconds covered."""
        now = self._clock()
        cutoff = now - self.window_s
        self._snapshots.append((now, dict(counts)))
        while len(self._snapshots) > 1 and self._snapshots[1][0] <= cutoff:
            self._snapshots.popleft()
        base_t, base = self._snapshots[0]
        if base_t > cutoff:  # younger than the window: everything since the start counts
            base_t, base = self._started, {}
        growth = {key: value - base.get(key, 0) for key, value in counts.items()}
        return growth, min(self.window_s, now - base_t)
