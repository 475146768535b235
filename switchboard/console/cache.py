"""What the console serves from memory: background readers that follow the dead-letter topics,
their ledgers, the audit trail and the status topic.

Decoding 10,000 dead letters takes about 0.8 s, too slow for every page view. Each topic is
followed by one ``TopicTail`` from its start, on its own thread, so the in-memory copy is
updated record by record as the broker gets them; pages read a snapshot of it. A topic that
does not exist yet (the ledgers appear at the first replay) is looked for again on each refresh.
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from confluent_kafka import Message

from consumers.replay.selection import ReplayFilter, group_counts, select
from consumers.replay.store import DeadLetterStore, Snapshot, keep_ledger_entry
from consumers.replay.view import DeadLetterView
from consumers.status.latency import quantile
from consumers.status.view import DlqStatus, PipelineStatus, StatusReader
from switchboard.core.serde import Codec
from switchboard.core.tail import TopicTail
from switchboard.core.topics import Topics

log = logging.getLogger(__name__)

#: Samples of the throughput and latency history the overview's charts draw.
HISTORY_SAMPLES: Final = 60
#: How long a caller waits for the mirrors to read what is on the broker now.
CATCH_UP_TIMEOUT_S: Final = 30.0


class TopicMirror:
    """Follows one topic from its start on a background thread, once the topic exists."""

    def __init__(
        self, kafka: dict[str, Any], topic: str, on_message: Callable[[Message], None]
    ) -> None:
        self.kafka = kafka
        self.topic = topic
        self._on_message = on_message
        self._tail: TopicTail | None = None
        self._lock = threading.Lock()

    @property
    def running(self) -> bool:
        return self._tail is not None

    def start_if_present(self, existing: set[str]) -> None:
        with self._lock:
            if self._tail is not None or self.topic not in existing:
                return
            try:
                self._tail = TopicTail(
                    self.kafka, self.topic, self._on_message, since_ms=0, name="console-mirror"
                )
            except Exception as exc:  # not ready, or refused: the next refresh tries again
                log.warning("console: cannot follow %s yet: %s", self.topic, exc)

    def catch_up(self, timeout_s: float = CATCH_UP_TIMEOUT_S) -> None:
        """Return once everything now in the topic has been read (at once when not followed)."""
        if self._tail is not None:
            self._tail.barrier().result(timeout=timeout_s)

    def stop(self) -> None:
        with self._lock:
            if self._tail is not None:
                self._tail.stop()
                self._tail = None


@dataclass(frozen=True)
class ThroughputSample:
    at_ms: int
    #: Consumer role -> records completed, summed over the live processes' reports.
    completed: dict[str, int]
    #: Consumer role -> end-to-end latency bucket counts since each process's publisher
    #: started (``cumulative`` of the reports' ``total`` stage), summed likewise.
    latency: dict[str, list[int]] = field(default_factory=dict)
    #: The buckets' upper bounds, ms (the counts have one more, +Inf).
    bounds_ms: list[float] = field(default_factory=list)


class ConsoleCache:
    """The dead letters of both DLQ topics, both ledgers, the audit trail and the latest
    ``PipelineStatus``, kept current by background readers."""

    def __init__(
        self,
        kafka: dict[str, Any],
        topics: Topics,
        codec: Codec,
        *,
        refresh_s: float,
        status_timeout_s: float = 10.0,
    ) -> None:
        self.kafka = kafka
        self.topics = topics
        self.codec = codec
        self.refresh_s = refresh_s
        self.sources = (topics.dlq, topics.parking_lot)
        self._letters: dict[str, dict[str, DeadLetterView]] = {t: {} for t in self.sources}
        self._acks: dict[str, dict[str, Any]] = {}
        self._replays: dict[str, dict[str, Any]] = {}
        self._audit: list[dict[str, Any]] = []
        #: Source -> its letters sorted by offset, until the next letter arrives: pages of an
        #: unchanged DLQ do not sort 10,000 records again.
        self._sorted: dict[str, list[DeadLetterView]] = {}
        self._lock = threading.Lock()
        self.mirrors = [
            *(TopicMirror(kafka, t, self._letter_reader(t)) for t in self.sources),
            TopicMirror(kafka, topics.dlq_acks, self._ledger_reader(self._acks)),
            TopicMirror(kafka, topics.dlq_replays, self._ledger_reader(self._replays)),
            TopicMirror(kafka, topics.audit, self._audit_reader),
        ]
        self.status: PipelineStatus | None = None
        self.status_error: str | None = None
        self.history: deque[ThroughputSample] = deque(maxlen=HISTORY_SAMPLES)
        self._reader = StatusReader(
            kafka, topics, codec, timeout_s=status_timeout_s, dlq_status=self.dlq_status
        )
        self._store = DeadLetterStore(kafka, topics, codec, timeout_s=status_timeout_s)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- readers (on the mirrors' threads) -----------------------------------------------
    def _letter_reader(self, topic: str) -> Callable[[Message], None]:
        def keep(msg: Message) -> None:
            letter = DeadLetterView.from_message(msg, self.codec)
            with self._lock:
                self._letters[topic][letter.pointer] = letter
                self._sorted.pop(topic, None)

        return keep

    def _ledger_reader(self, into: dict[str, dict[str, Any]]) -> Callable[[Message], None]:
        def keep(msg: Message) -> None:
            with self._lock:
                keep_ledger_entry(msg, into)

        return keep

    def _audit_reader(self, msg: Message) -> None:
        try:
            event = json.loads(msg.value() or b"")
        except ValueError:
            return  # not an event of ours: nothing to list
        if isinstance(event, dict):
            with self._lock:
                self._audit.append(event)

    # --- what pages read -------------------------------------------------------------------
    def snapshot(self, source: str) -> Snapshot:
        """The letters of ``source`` (oldest offset first) and both ledgers, as of now."""
        with self._lock:
            letters = self._sorted.get(source)
            if letters is None:
                letters = sorted(
                    self._letters[source].values(), key=lambda x: (x.partition, x.offset)
                )
                self._sorted[source] = letters
            acks, replays = dict(self._acks), dict(self._replays)
        return Snapshot(list(letters), acks, replays)

    def letter(self, source: str, pointer: str) -> DeadLetterView | None:
        with self._lock:
            return self._letters[source].get(pointer)

    def audit_events(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._audit)

    def dlq_status(self, topic: str) -> DlqStatus:
        """``StatusReader``'s DLQ depth, from memory instead of a rescan."""
        mirror = next(m for m in self.mirrors if m.topic == topic)
        if not mirror.running:
            return DlqStatus(topic, 0, {}, exists=False)
        snap = self.snapshot(topic)
        chosen = select(snap.letters, ReplayFilter(), snap.acks)
        counts = group_counts(chosen.records, int(time.time() * 1000))["error_class"]
        return DlqStatus(topic, len(chosen.records), counts, chosen.hidden_acked)

    # --- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        self.refresh()
        self._thread = threading.Thread(target=self._run, name="console-refresh", daemon=True)
        self._thread.start()

    def refresh(self) -> None:
        """Follow topics that appeared, then reread the status (one round of the loop)."""
        try:
            existing = set(self._store.admin.list_topics(timeout=self.refresh_s * 5).topics)
        except Exception as exc:  # broker away: the pages say so and keep the last state
            self.status_error = f"the broker did not answer: {exc}"
            return
        for mirror in self.mirrors:
            mirror.start_if_present(existing)
        try:
            status = self._reader.read()
        except Exception as exc:  # shown on the overview; the next round tries again
            self.status_error = str(exc)
            return
        self.status, self.status_error = status, None
        self.history.append(_sample(status))

    def catch_up(self) -> None:
        """Wait until every mirror has read what is on the broker now (after a write)."""
        for mirror in self.mirrors:
            mirror.catch_up()

    def ensure_following(self) -> None:
        """Start mirrors of topics created since the last refresh (a write just made one)."""
        existing = set(self._store.admin.list_topics(timeout=CATCH_UP_TIMEOUT_S).topics)
        for mirror in self.mirrors:
            mirror.start_if_present(existing)

    def _run(self) -> None:
        while not self._stop.wait(self.refresh_s):
            self.refresh()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.refresh_s + 15)
        for mirror in self.mirrors:
            mirror.stop()


def _sample(status: PipelineStatus) -> ThroughputSample:
    completed: dict[str, int] = {}
    latency: dict[str, list[int]] = {}
    bounds: list[float] = []
    for proc in status.processes:
        if proc.stale:
            continue
        for consumer in proc.report.get("consumers") or []:
            role = str(consumer.get("role") or "?")
            done = int((consumer.get("records") or {}).get("completed") or 0)
            completed[role] = completed.get(role, 0) + done
            entry = consumer.get("latency") or {}
            counts = ((entry.get("stages") or {}).get("total") or {}).get("cumulative")
            if not isinstance(counts, list) or not isinstance(entry.get("bounds_ms"), list):
                continue
            bounds = bounds or entry["bounds_ms"]
            if entry["bounds_ms"] != bounds or len(counts) != len(bounds) + 1:
                continue  # another version's buckets cannot be added to these
            before = latency.get(role, [0] * len(counts))
            latency[role] = [
                a + (c if isinstance(c, int) else 0) for a, c in zip(before, counts, strict=True)
            ]
    return ThroughputSample(status.generated_at_ms, completed, latency, bounds)


def throughput(history: list[ThroughputSample]) -> dict[str, list[float]]:
    """Role -> records a second between consecutive samples (a restart's drop counts as 0)."""
    roles = sorted({r for s in history for r in s.completed})
    rates: dict[str, list[float]] = {r: [] for r in roles}
    for before, after in itertools.pairwise(history):
        span_s = max(0.001, (after.at_ms - before.at_ms) / 1000)
        for role in roles:
            grown = after.completed.get(role, 0) - before.completed.get(role, 0)
            rates[role].append(max(0, grown) / span_s)
    return rates


def latency(history: list[ThroughputSample]) -> dict[str, tuple[list[float | None], ...]]:
    """Role -> (p50s, p99s) end to end, ms, of the responses between consecutive samples
    (None where there were none). Bucket counts are differenced per bucket; a restart's drop
    counts as 0, as for throughput."""
    roles = sorted({r for s in history for r in s.latency})
    out: dict[str, tuple[list[float | None], ...]] = {r: ([], []) for r in roles}
    for before, after in itertools.pairwise(history):
        for role in roles:
            now = after.latency.get(role) or []
            base = before.latency.get(role)
            if base is None or before.bounds_ms != after.bounds_ms:
                base = [0] * len(now)  # new, or other buckets: count from zero
            grown = [max(0, a - b) for a, b in zip(now, base, strict=True)]
            bounds = after.bounds_ms
            out[role][0].append(quantile(bounds, grown, 0.5) if grown else None)
            out[role][1].append(quantile(bounds, grown, 0.99) if grown else None)
    return out


def latency_chart(
    p50: list[float | None], p99: list[float | None], width: int = 160, height: int = 28
) -> str:
    """An inline SVG of two lines, p50 and p99 (same scale, from 0 to the highest p99); an
    interval without responses is a gap. Escaped by construction: numbers only."""
    values = [v for v in (*p50, *p99) if v is not None]
    if len(p99) < 2 or not values:
        return f'<svg class="latency" width="{width}" height="{height}"></svg>'
    top = max(values) or 1.0
    step = width / (len(p99) - 1)
    lines = []
    for name, series in (("p99", p99), ("p50", p50)):
        runs: list[list[str]] = [[]]
        for i, v in enumerate(series):
            if v is None:
                runs.append([])
            else:
                runs[-1].append(f"{i * step:.1f},{height - 2 - (v / top) * (height - 4):.1f}")
        for run in runs:
            if len(run) == 1:  # one interval between gaps: a dot
                x, y = run[0].split(",")
                lines.append(f'<circle class="{name}" cx="{x}" cy="{y}" r="1.5"/>')
            elif run:
                lines.append(f'<polyline class="{name}" fill="none" points="{" ".join(run)}"/>')
    return (
        f'<svg class="latency" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}">{"".join(lines)}</svg>'
    )


def sparkline(values: list[float], width: int = 160, height: int = 28) -> str:
    """An inline SVG polyline of ``values`` (escaped by construction: numbers only)."""
    if len(values) < 2:
        return f'<svg class="spark" width="{width}" height="{height}"></svg>'
    top = max(values) or 1.0
    step = width / (len(values) - 1)
    points = " ".join(
        f"{i * step:.1f},{height - 2 - (v / top) * (height - 4):.1f}" for i, v in enumerate(values)
    )
    return (
        f'<svg class="spark" width="{width}" height="{height}" viewBox="0 0 {width} {height}">'
        f'<polyline fill="none" stroke="currentColor" stroke-width="1.5" points="{points}"/></svg>'
    )
