"""G13's verdict: an index that did not read every preloaded answer of its partitions fails,
however little memory it used, and says why; a complete catch-up under the line passes.

No broker: ``judge`` is given the measurements a child process reports.
"""

from __future__ import annotations

from typing import Any

from benchmarks.index_memory import FOLLOWED, judge

MB = 2**20


def measured(ends: dict[int, int], reached: dict[int, int]) -> dict[str, Any]:
    """A child's report: a small, flat RSS (well under the target) and the offsets it reached
    in each followed partition (``reached``) against their ends when it started (``ends``)."""
    return {
        "answers": sum(reached.values()),
        "expected": sum(ends.values()),
        "ends": [[p, ends[p]] for p in FOLLOWED],
        "reached": [[p, reached.get(p, 0)] for p in FOLLOWED],
        "catchup_s": 10.0,
        "rss_start": 60 * MB,
        "rss_end": 80 * MB,
        "rss_peak": 85 * MB,
        "rss_slope_bytes_per_answer": 0.05,
        "cache_full_at": 100_000,
        "cache_room_bytes": 0,
        "disk_bytes": 10 * MB,
        "lookup_hit_us": 5.0,
        "lookup_miss_us": 3.0,
        "block_cache_mb": 32.0,
        "dict_bytes_per_answer": 150.0,
        "samples": [],
    }


def test_a_complete_catch_up_under_the_line_passes() -> None:
    ends = {p: 250_000 for p in FOLLOWED}
    result = judge(measured(ends, dict(ends)), 1_000_000, 5.0)
    assert result["passed"], result["detail"]
    assert result["detail"]["catchup_complete"] is True
    assert result["detail"]["failed_because"] == []


def test_an_incomplete_catch_up_fails_with_the_reason_in_detail() -> None:
    """The child stopped 1,000 answers short in partition 1: the RSS is fine, the run is not
    (its memory figures describe fewer answers than the preload)."""
    ends = {p: 250_000 for p in FOLLOWED}
    reached = dict(ends) | {1: 249_000}
    result = judge(measured(ends, reached), 1_000_000, 5.0)
    assert not result["passed"]
    detail = result["detail"]
    assert detail["catchup_complete"] is False
    (reason,) = detail["failed_because"]
    assert "749000 of 750000" in reason and "partition 1 at offset 249000 of 250000" in reason
