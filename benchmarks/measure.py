"""Measuring: topic counts, record timestamps, rates, percentiles, interleaved repetitions."""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

T = TypeVar("T")


class Watermarks:
    """How many records the given topics hold (sum of high watermarks; no transactions here,
    so offsets count records)."""

    def __init__(self, kafka: dict[str, Any], topics: Iterable[str]) -> None:
        self._consumer = Consumer({**kafka, "group.id": f"bench-wm-{uuid.uuid4().hex[:8]}"})
        meta = self._consumer.list_topics(timeout=10)
        self._parts = [TopicPartition(t, p) for t in topics for p in meta.topics[t].partitions]

    def total(self) -> int:
        return sum(
            self._consumer.get_watermark_offsets(tp, timeout=10, cached=False)[1]
            for tp in self._parts
        )

    def wait_for(
        self,
        n: int,
        timeout_s: float,
        tick_s: float = 0.1,
        on_tick: Callable[[int], None] | None = None,
        alive: Callable[[], bool] | None = None,
    ) -> tuple[int, float]:
        """Wait until at least ``n`` records are there (or ``alive()`` turns false); returns
        (count, seconds waited)."""
        began = time.monotonic()
        count = self.total()
        while count < n and time.monotonic() - began < timeout_s:
            time.sleep(tick_s)
            count = self.total()
            if on_tick is not None:
                on_tick(count)
            if alive is not None and not alive():
                break
        return count, time.monotonic() - began

    def close(self) -> None:
        self._consumer.close()


def read_topics(
    kafka: dict[str, Any], topics: Iterable[str], timeout_s: float = 60.0
) -> list[tuple[bytes | None, int, str]]:
    """Every record now in ``topics`` as (key, CreateTime ms, topic)."""
    consumer = Consumer(
        {**kafka, "group.id": f"bench-read-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False}
    )
    meta = consumer.list_topics(timeout=10)
    ends: dict[tuple[str, int], int] = {}
    assign = []
    for t in topics:
        for p in meta.topics[t].partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(t, p), timeout=10)
            if high > low:
                ends[(t, p)] = high
                assign.append(TopicPartition(t, p, OFFSET_BEGINNING))
    out: list[tuple[bytes | None, int, str]] = []
    if assign:
        consumer.assign(assign)
    deadline = time.monotonic() + timeout_s
    while ends and time.monotonic() < deadline:
        for msg in consumer.consume(5000, 0.5):
            if msg.error() is not None:
                continue
            out.append((msg.key(), msg.timestamp()[1], msg.topic()))
            tp = (msg.topic(), msg.partition())
            if tp in ends and msg.offset() + 1 >= ends[tp]:
                del ends[tp]
    consumer.close()
    return out


def middle_rate(timestamps_ms: Sequence[float], lo: float = 0.1, hi: float = 0.9) -> float:
    """Records per second between the ``lo`` and ``hi`` quantiles of the timestamps: the
    steady part of a drain, without the start (group join) or the tail."""
    ts = sorted(timestamps_ms)
    if len(ts) < 20:
        return float("nan")
    a, b = int(len(ts) * lo), int(len(ts) * hi) - 1
    span = (ts[b] - ts[a]) / 1000
    return (b - a) / span if span > 0 else float("nan")


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return float(ordered[index])


def median(values: Iterable[float]) -> float:
    data = [v for v in values if v == v]  # drop NaN
    return float(statistics.median(data)) if data else float("nan")


def interleave(
    baseline: Callable[[], T], candidate: Callable[[], T], reps: int
) -> tuple[list[T], list[T]]:
    """A/B/A/B/.../A: ``reps`` candidate runs, each between two baseline runs."""
    base, cand = [baseline()], []
    for _ in range(reps):
        cand.append(candidate())
        base.append(baseline())
    return base, cand


def ratio(num: float, den: float) -> float:
    return num / den if den else float("nan")


def rounded(value: float, digits: int = 3) -> float | None:
    return None if value != value else round(value, digits)
