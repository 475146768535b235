"""The pipeline as ``switchboard status`` (and the console) shows it: ``PipelineStatus``.

Two sources, both on the broker: the processes' own reports on the compacted status topic
(members, in-flight, paused partitions, breakers, model usage, a worker group's
latency over the last minute), and the admin API's offsets
(lag per partition from each group's committed offsets, so it stays right while a partition is
paused; the retry backlog from the relay group's committed offsets to the end of each tier;
the DLQ's depth). ``read_status`` reads them; ``aggregate`` is the pure part that joins them.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Final

from confluent_kafka import (
    OFFSET_INVALID,
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, OffsetSpec

from consumers.status.latency import merge as merge_latency
from switchboard.core import headers as h
from switchboard.core.admin import is_settling
from switchboard.core.budgets import ADMIN_TIMEOUT_S, SETTLE_RETRY_PAUSE_S
from switchboard.core.kafka_clients import make_admin, reader_config
from switchboard.core.serde import Codec
from switchboard.core.settings import SPECIALISTS
from switchboard.core.tail import Unreadable, json_record
from switchboard.core.topics import RETRY_TIERS_S, GroupRole, Topics

log = logging.getLogger(__name__)

#: Version of ``PipelineStatus.to_json``'s shape (bumped only if a key changes meaning).
STATUS_SCHEMA_VERSION: Final = 1
#: A process whose latest report is older than this many of its intervals is stale.
STALE_INTERVALS: Final = 3
#: A retry tier scan reads at most this many records (the backlog then says "at least").
RETRY_SCAN_LIMIT: Final = 100_000
#: One consume call of a scan.
_SCAN_POLL_S: Final = 0.2
_SCAN_BATCH: Final = 1000
#: Breaker states, best to worst: a specialist shows the worst of its live workers.
BREAKER_ORDER: Final = ("closed", "half_open", "open")

TP = tuple[str, int]


# --- the model ----------------------------------------------------------------------------
@dataclass(frozen=True)
class PartitionStatus:
    topic: str
    partition: int
    end_offset: int
    #: The group's committed offset, None when it never committed (lag then counts from the
    #: log start, as ``auto.offset.reset=earliest`` reads it).
    committed: int | None
    lag: int
    #: From the report of the live process holding the partition; None when no report says.
    in_flight: int | None = None
    paused: bool | None = None
    process_id: str | None = None


@dataclass(frozen=True)
class MemberStatus:
    member_id: str
    client_id: str
    host: str
    instance_id: str | None
    partitions: list[TP]
    #: The process whose report names this member, if any.
    process_id: str | None = None


@dataclass(frozen=True)
class GroupStatus:
    group: str
    role: str
    topics: list[str]
    state: str
    members: list[MemberStatus]
    partitions: list[PartitionStatus]
    #: Count, p50 and p99 per stage over the last minute, merged over the group's live
    #: processes (``consumers.status.latency.merge``); empty for groups that measure none.
    latency: dict[str, Any] = field(default_factory=dict)

    @property
    def lag(self) -> int:
        return sum(p.lag for p in self.partitions)

    @property
    def in_flight(self) -> int:
        return sum(p.in_flight or 0 for p in self.partitions)

    @property
    def paused(self) -> int:
        return sum(1 for p in self.partitions if p.paused)


@dataclass(frozen=True)
class RetryTierStatus:
    tier_s: int
    topic: str
    #: Records past the relay group's committed offsets (waiting, or held by the relay).
    backlog: int
    #: The earliest ``sb-retry-due-ms`` among them (None when the backlog is empty).
    oldest_due_ms: int | None
    #: How many of them are due already.
    due_now: int
    #: False when the scan stopped at its limit or timeout: the backlog is a lower bound.
    complete: bool = True


@dataclass(frozen=True)
class DlqStatus:
    topic: str
    #: Dead letters not acknowledged (``dlq purge``).
    depth: int
    by_error_class: dict[str, int]
    acknowledged: int = 0
    exists: bool = True


@dataclass(frozen=True)
class ProcessStatus:
    process_id: str
    report: dict[str, Any]
    age_s: float
    stale: bool


@dataclass(frozen=True)
class PipelineStatus:
    prefix: str
    generated_at_ms: int
    groups: list[GroupStatus]
    retry: list[RetryTierStatus]
    dlq: list[DlqStatus]
    processes: list[ProcessStatus]
    #: Specialist -> worst live breaker state and each live process's.
    breakers: dict[str, dict[str, Any]]
    #: Specialist -> model calls, answers, tokens and cost over the last hour, summed.
    usage: dict[str, dict[str, int]]
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The stable object ``switchboard status --json`` prints (docs/operations.md)."""
        return {
            "schema_version": STATUS_SCHEMA_VERSION,
            "prefix": self.prefix,
            "generated_at_ms": self.generated_at_ms,
            "groups": [
                {
                    "group": g.group,
                    "role": g.role,
                    "topics": g.topics,
                    "state": g.state,
                    "lag": g.lag,
                    "in_flight": g.in_flight,
                    "paused_partitions": g.paused,
                    "members": [
                        {**asdict(m), "partitions": [list(tp) for tp in m.partitions]}
                        for m in g.members
                    ],
                    "partitions": [asdict(p) for p in g.partitions],
                    "latency": g.latency,
                }
                for g in self.groups
            ],
            "retry": [asdict(t) for t in self.retry],
            "dlq": [asdict(d) for d in self.dlq],
            "breakers": self.breakers,
            "usage": self.usage,
            "processes": [
                {
                    "process_id": p.process_id,
                    "host": p.report.get("host"),
                    "pid": p.report.get("pid"),
                    "roles": p.report.get("roles", []),
                    "started_at_ms": p.report.get("started_at_ms"),
                    "reported_at_ms": p.report.get("reported_at_ms"),
                    "age_s": round(p.age_s, 1),
                    "stale": p.stale,
                    "report": p.report,
                }
                for p in self.processes
            ],
            "notes": self.notes,
        }


# --- the pure part -------------------------------------------------------------------------
@dataclass(frozen=True)
class GroupInput:
    """What the admin API says of one group: its role, topics, state and members."""

    group: str
    role: str
    topics: list[str]
    state: str
    members: list[MemberStatus]


def pipeline_groups(topics: Topics) -> list[tuple[str, str, list[str]]]:
    """(group, role, topics) of every consumer group of the pipeline."""
    groups = [
        (topics.group(GroupRole.ROUTER), "router", [topics.requests]),
        (topics.group(GroupRole.RELAY), "relay", [topics.retry(t) for t in RETRY_TIERS_S]),
    ]
    groups += [
        (topics.group(GroupRole.WORKER, s), f"worker.{s}", topics.task_topics(s))
        for s in SPECIALISTS
    ]
    return groups


def process_statuses(reports: Mapping[str, dict[str, Any]], now_ms: int) -> list[ProcessStatus]:
    """Every report, with its age and whether it is stale (no report for 3 intervals)."""
    out = []
    for pid, report in sorted(reports.items()):
        age_s = max(0.0, (now_ms - int(report.get("reported_at_ms") or 0)) / 1000)
        interval = float(report.get("interval_s") or 0) or 5.0
        out.append(ProcessStatus(pid, report, age_s, age_s > STALE_INTERVALS * interval))
    return out


def aggregate(
    *,
    prefix: str,
    now_ms: int,
    groups: list[GroupInput],
    committed: Mapping[str, Mapping[TP, int]],
    end_offsets: Mapping[TP, int],
    start_offsets: Mapping[TP, int],
    reports: Mapping[str, dict[str, Any]],
    retry: list[RetryTierStatus],
    dlq: list[DlqStatus],
    notes: Iterable[str] = (),
) -> PipelineStatus:
    """Join the admin API's view of the groups with the processes' reports."""
    processes = process_statuses(reports, now_ms)
    live = [p for p in processes if not p.stale]
    # (group, topic, partition) -> (process, its partition entry), and member id -> process.
    held: dict[tuple[str, str, int], tuple[str, dict[str, Any]]] = {}
    member_process: dict[str, str] = {}
    latencies: dict[str, list[dict[str, Any]]] = {}
    for proc in live:
        for consumer in _list(proc.report.get("consumers")):
            group = str(consumer.get("group"))
            if isinstance(consumer.get("latency"), dict):
                latencies.setdefault(group, []).append(consumer["latency"])
            if consumer.get("member_id"):
                member_process[str(consumer["member_id"])] = proc.process_id
            for part in _list(consumer.get("partitions")):
                key = (group, str(part.get("topic")), int(part.get("partition") or 0))
                held[key] = (proc.process_id, part)
    group_statuses = []
    for g in groups:
        offsets = committed.get(g.group, {})
        partitions = []
        order = {t: i for i, t in enumerate(g.topics)}
        for tp in sorted(
            (tp for tp in end_offsets if tp[0] in order), key=lambda x: (order[x[0]], x[1])
        ):
            end = end_offsets[tp]
            done = offsets.get(tp, OFFSET_INVALID)
            has_commit = done >= 0
            base = done if has_commit else start_offsets.get(tp, 0)
            owner = held.get((g.group, *tp))
            partitions.append(
                PartitionStatus(
                    tp[0],
                    tp[1],
                    end,
                    done if has_commit else None,
                    max(0, end - base),
                    None if owner is None else int(owner[1].get("in_flight") or 0),
                    None if owner is None else bool(owner[1].get("paused")),
                    None if owner is None else owner[0],
                )
            )
        members = [
            MemberStatus(
                m.member_id,
                m.client_id,
                m.host,
                m.instance_id,
                m.partitions,
                member_process.get(m.member_id),
            )
            for m in g.members
        ]
        group_statuses.append(
            GroupStatus(
                g.group,
                g.role,
                g.topics,
                g.state,
                members,
                partitions,
                merge_latency(latencies.get(g.group, [])),
            )
        )
    return PipelineStatus(
        prefix=prefix,
        generated_at_ms=now_ms,
        groups=group_statuses,
        retry=retry,
        dlq=dlq,
        processes=processes,
        breakers=breaker_states(live),
        usage=usage_last_hour(processes),
        notes=list(notes),
    )


def breaker_states(live: Iterable[ProcessStatus]) -> dict[str, dict[str, Any]]:
    """Specialist -> the worst state among live processes, and each one's."""
    out: dict[str, dict[str, Any]] = {}
    for proc in live:
        breakers = proc.report.get("breakers")
        for specialist, breaker in (breakers if isinstance(breakers, dict) else {}).items():
            state = str(breaker.get("state") or "closed")
            entry = out.setdefault(specialist, {"state": "closed", "processes": {}})
            entry["processes"][proc.process_id] = state
            if _rank(state) > _rank(entry["state"]):
                entry["state"] = state
    return dict(sorted(out.items()))


def usage_last_hour(processes: Iterable[ProcessStatus]) -> dict[str, dict[str, int]]:
    """Specialist -> the sum of every reporting process's last hour (a stale process's spend
    was real: it counts until its report leaves the topic)."""
    totals: dict[str, Counter[str]] = {}
    for proc in processes:
        specialists = proc.report.get("specialists")
        for specialist, usage in (specialists if isinstance(specialists, dict) else {}).items():
            last = usage.get("last_hour") if isinstance(usage, dict) else None
            counter = totals.setdefault(specialist, Counter())
            for key, value in (last if isinstance(last, dict) else {}).items():
                if isinstance(value, int):
                    counter[key] += value
    return {s: dict(c) for s, c in sorted(totals.items())}


def retry_tier_status(
    tier_s: int, topic: str, due_times: Iterable[int | None], now_ms: int, *, complete: bool
) -> RetryTierStatus:
    """A tier's backlog from the due times of its records past the relay's offsets (a record
    without a usable due time is due now, as the relay treats it)."""
    dues = [d if d is not None else 0 for d in due_times]
    return RetryTierStatus(
        tier_s,
        topic,
        len(dues),
        min(dues) if dues else None,
        sum(1 for d in dues if d <= now_ms),
        complete,
    )


def _rank(state: str) -> int:
    return BREAKER_ORDER.index(state) if state in BREAKER_ORDER else len(BREAKER_ORDER)


def _list(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


# --- reading the broker --------------------------------------------------------------------
def scan(
    kafka: dict[str, Any],
    topic: str,
    starts: Mapping[int, int],
    ends: Mapping[int, int],
    on_message: Callable[[Message], None],
    *,
    limit: int | None = None,
    timeout_s: float = ADMIN_TIMEOUT_S,
) -> bool:
    """Pass each record of ``topic`` from ``starts`` up to ``ends`` (per partition) to
    ``on_message``; False when ``limit`` records or ``timeout_s`` ended it first."""
    todo = {p: (starts.get(p, 0), end) for p, end in ends.items() if end > starts.get(p, 0)}
    if not todo:
        return True
    consumer = Consumer(reader_config(kafka, "status-scan"))
    seen = 0
    try:
        consumer.assign([TopicPartition(topic, p, start) for p, (start, _end) in todo.items()])
        deadline = time.monotonic() + timeout_s
        while todo:
            if time.monotonic() > deadline or (limit is not None and seen >= limit):
                return False
            for msg in consumer.consume(_SCAN_BATCH, _SCAN_POLL_S):
                err = msg.error()
                if err is not None:
                    if err.code() != KafkaError._PARTITION_EOF:
                        log.warning("status scan of %s: %s", topic, err)
                    continue
                part, offset = int(msg.partition() or 0), int(msg.offset() or 0)
                bounds = todo.get(part)
                if bounds is None or offset >= bounds[1]:
                    continue
                seen += 1
                on_message(msg)
                if offset + 1 >= bounds[1]:
                    del todo[part]
        return True
    finally:
        consumer.close()


class StatusReader:
    """Reads everything a ``PipelineStatus`` needs from the broker, in a few admin calls and
    bounded scans (nothing is committed, no group is joined)."""

    def __init__(
        self,
        kafka: dict[str, Any],
        topics: Topics,
        codec: Codec,
        *,
        timeout_s: float = ADMIN_TIMEOUT_S,
        retry_scan_limit: int = RETRY_SCAN_LIMIT,
        dlq_status: Callable[[str], DlqStatus] | None = None,
    ) -> None:
        self.kafka = kafka
        #: The console passes its in-memory DLQ view here rather than rescanning the DLQ.
        self.dlq_status = dlq_status or self._dlq
        self.topics = topics
        self.codec = codec
        self.timeout_s = timeout_s
        self.retry_scan_limit = retry_scan_limit
        self.admin: AdminClient = make_admin(kafka)

    def read(self) -> PipelineStatus:
        now = _now_ms()
        notes: list[str] = []
        existing = self.admin.list_topics(timeout=self.timeout_s).topics
        groups = pipeline_groups(self.topics)
        wanted = sorted({t for _g, _r, ts in groups for t in ts} | {self.topics.status})
        missing = [t for t in wanted if t not in existing]
        if missing:
            notes.append(f"missing topics ({', '.join(missing)}): run `switchboard topics ensure`")
        parts = [
            TopicPartition(t, p)
            for t in wanted
            if t in existing
            for p in sorted(existing[t].partitions)
        ]
        ends = self._offsets(parts, OffsetSpec.latest())
        starts = self._offsets(parts, OffsetSpec.earliest())
        committed = self._committed([g for g, _r, _t in groups])
        described = self._describe(groups)
        reports = self.reports(starts, ends) if self.topics.status in existing else {}
        relay = self.topics.group(GroupRole.RELAY)
        retry = [
            self._retry_tier(t, starts, ends, committed.get(relay, {}), now)
            for t in RETRY_TIERS_S
            if self.topics.retry(t) in existing
        ]
        dlq = [self.dlq_status(topic) for topic in (self.topics.dlq, self.topics.parking_lot)]
        return aggregate(
            prefix=self.topics.prefix,
            now_ms=now,
            groups=described,
            committed=committed,
            end_offsets={tp: o for tp, o in ends.items() if tp[0] != self.topics.status},
            start_offsets=starts,
            reports=reports,
            retry=retry,
            dlq=dlq,
            notes=notes,
        )

    def _offsets(self, parts: list[TopicPartition], spec: OffsetSpec) -> dict[TP, int]:
        if not parts:
            return {}
        deadline = time.monotonic() + self.timeout_s
        while True:
            futures = self.admin.list_offsets(
                {tp: spec for tp in parts}, request_timeout=self.timeout_s
            )
            try:
                return {(tp.topic, tp.partition): f.result().offset for tp, f in futures.items()}
            except KafkaException as exc:  # a just-created topic's leadership still settling
                if not is_settling(exc.args[0]) or time.monotonic() > deadline:
                    raise
                time.sleep(SETTLE_RETRY_PAUSE_S)

    def _committed(self, groups: list[str]) -> dict[str, dict[TP, int]]:
        # One group per request (the client's limit); every request is in flight at once.
        futures = {
            g: self.admin.list_consumer_group_offsets(
                [ConsumerGroupTopicPartitions(g)], request_timeout=self.timeout_s
            )[g]
            for g in groups
        }
        out: dict[str, dict[TP, int]] = {}
        for group, future in futures.items():
            try:
                result = future.result()
            except Exception as exc:  # a group that never committed: no offsets
                log.debug("offsets of %s: %s", group, exc)
                out[group] = {}
                continue
            out[group] = {
                (tp.topic, tp.partition): tp.offset for tp in result.topic_partitions or []
            }
        return out

    def _describe(self, groups: list[tuple[str, str, list[str]]]) -> list[GroupInput]:
        futures = self.admin.describe_consumer_groups(
            [g for g, _r, _t in groups], request_timeout=self.timeout_s
        )
        out = []
        for group, role, topics in groups:
            try:
                desc = futures[group].result()
            except Exception as exc:  # an unknown group reads as one with no members
                log.debug("describe %s: %s", group, exc)
                out.append(GroupInput(group, role, topics, "unknown", []))
                continue
            members = [
                MemberStatus(
                    m.member_id,
                    m.client_id,
                    m.host,
                    m.group_instance_id,
                    sorted(
                        (tp.topic, tp.partition)
                        for tp in (m.assignment.topic_partitions if m.assignment else [])
                    ),
                )
                for m in desc.members
            ]
            state = getattr(desc.state, "name", str(desc.state)).lower()
            out.append(GroupInput(group, role, topics, state, members))
        return out

    def reports(self, starts: Mapping[TP, int], ends: Mapping[TP, int]) -> dict[str, dict]:
        """Process id -> its latest report (a tombstone removes it)."""
        topic = self.topics.status
        reports: dict[str, dict[str, Any]] = {}

        def keep(msg: Message) -> None:
            key, report = json_record(msg)
            if report is Unreadable.TOMBSTONE:
                reports.pop(key, None)
            elif isinstance(report, dict):  # anything else is not a report: ignored
                reports[key] = report

        scan(
            self.kafka,
            topic,
            {p: o for (t, p), o in starts.items() if t == topic},
            {p: o for (t, p), o in ends.items() if t == topic},
            keep,
            timeout_s=self.timeout_s,
        )
        return reports

    def _retry_tier(
        self,
        tier_s: int,
        starts: Mapping[TP, int],
        ends: Mapping[TP, int],
        committed: Mapping[TP, int],
        now_ms: int,
    ) -> RetryTierStatus:
        topic = self.topics.retry(tier_s)
        part_ends = {p: o for (t, p), o in ends.items() if t == topic}
        part_starts = {
            p: max(committed.get((topic, p), OFFSET_INVALID), starts.get((topic, p), 0))
            for p in part_ends
        }
        dues: list[int | None] = []

        def due(msg: Message) -> None:
            raw = h.header_value(msg.headers(), h.RETRY_DUE_MS)
            try:
                dues.append(int(raw) if raw is not None else None)
            except ValueError:
                dues.append(None)

        complete = scan(
            self.kafka,
            topic,
            part_starts,
            part_ends,
            due,
            limit=self.retry_scan_limit,
            timeout_s=self.timeout_s,
        )
        return retry_tier_status(tier_s, topic, dues, now_ms, complete=complete)

    def _dlq(self, topic: str) -> DlqStatus:
        from consumers.replay.selection import ReplayFilter, group_counts, select
        from consumers.replay.store import DeadLetterStore

        store = DeadLetterStore(
            self.kafka, self.topics, self.codec, source=topic, timeout_s=self.timeout_s
        )
        if not store.exists(topic):
            return DlqStatus(topic, 0, {}, exists=False)
        snap = store.snapshot()
        chosen = select(snap.letters, ReplayFilter(), snap.acks)
        counts = group_counts(chosen.records, _now_ms())["error_class"]
        return DlqStatus(topic, len(chosen.records), counts, chosen.hidden_acked)


def _now_ms() -> int:
    return int(time.time() * 1000)
