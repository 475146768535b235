"""DLQ replay: read dead letters, filter and group them, send them back, acknowledge them.

The engine behind ``switchboard dlq``. Three parts:

- Reading: a bounded scan of a dead-letter topic (the DLQ, or the parking lot) from its start
  (or ``since``) to the end offsets it had when the scan began, through ``TopicTail``: no
  consumer group, no commits, nothing changes on the broker. A value that is not a DeadLetter
  is kept as ``undecodable`` rather than stopping the scan.
- Choosing: ``ReplayFilter`` (pure) picks records; ``select`` hides acknowledged ones;
  ``plan_replay`` (pure) drops what must not be sent again.
- Writing: ``Replayer`` sends each record to its origin topic with its original key, value and
  headers plus ``sb-replay-id`` / ``sb-replay-of``, at most ``rate`` records a second, and once a
  record is delivered writes its pointer to the replays ledger.

Two compacted ledger topics sit beside the DLQ, keyed by the dead letter's pointer
(``topic/partition/offset``), JSON values:

- ``<prefix>.dlq.replays``: records already replayed. A second replay skips them, so running
  the same replay twice sends nothing the second time. A request that has a response other
  than ``failed`` on the responses topic is skipped too (someone answered it meanwhile).
- ``<prefix>.dlq.acks``: records an operator acknowledged (``dlq purge``). Kafka cannot delete
  one record, so acknowledging hides it from ``list`` and ``replay``; retention (or
  ``kafka-delete-records``) frees the space.

A replayed record that fails for good again is parked (``Topics.parking_lot``) by the workers,
never dead-lettered again, so a replay cannot loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import math
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient

from consumers.outcomes import now_ms
from consumers.resilience.ratelimit import TokenBucket
from switchboard.core import headers as h
from switchboard.core.admin import end_offsets, ensure_topics
from switchboard.core.aio_producer import AsyncProducer, Outbound
from switchboard.core.errors import ConfigError, DecodeError, ErrorClass, TransientError
from switchboard.core.kafka_clients import reader_config
from switchboard.core.serde import DEAD_LETTER, RESPONSE, Codec
from switchboard.core.tail import TopicTail
from switchboard.core.topics import Topics

#: What ``error_class`` says of a DLQ value that does not decode as a DeadLetter.
UNDECODABLE: Final = "undecodable"
ERROR_CLASSES: Final = (*(str(c) for c in ErrorClass), UNDECODABLE)
#: Group name of a missing field (no tenant, no specialist) in ``group_counts``.
NONE_GROUP: Final = "(none)"
#: Age buckets of ``group_counts``: (upper bound in ms, name); older ones are ">7d".
AGE_BUCKETS: Final = (
    (5 * 60_000, "<5m"),
    (3_600_000, "5m-1h"),
    (86_400_000, "1h-1d"),
    (7 * 86_400_000, "1d-7d"),
)
OLDEST_BUCKET: Final = ">7d"
#: Responses may be written a little before the origin record's timestamp says (clock skew).
_RESPONSE_SCAN_MARGIN_MS: Final = 5 * 60_000
_UNIT_S: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION_PART: Final = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_TIME_HELP: Final = "give ISO 8601 (2025-06-01T12:00Z) or a duration ago (90s, 30m, 2h, 7d, 1h30m)"


# --- time and ids ------------------------------------------------------------------------------
def parse_duration(text: str) -> float:
    """Seconds in a duration such as ``90s``, ``30m``, ``2h``, ``7d``, ``1w`` or ``1h30m``."""
    compact = text.strip().lower().replace(" ", "")
    total, position = 0.0, 0
    for part in _DURATION_PART.finditer(compact):
        if part.start() != position:
            break
        total += float(part.group(1)) * _UNIT_S[part.group(2)]
        position = part.end()
    if not compact or position != len(compact):
        raise ConfigError(f"{text!r} is not a duration: use e.g. 90s, 30m, 2h, 7d or 1h30m")
    return total


def parse_instant(text: str, now: int | None = None) -> int:
    """Epoch milliseconds of an ISO 8601 time (UTC when it names no offset), or of a duration
    before ``now`` (epoch ms, default the current time)."""
    stripped = text.strip()
    if _DURATION_PART.match(stripped.lower()):
        with contextlib.suppress(ConfigError):  # not a duration after all: try ISO 8601
            return (now_ms() if now is None else now) - int(parse_duration(stripped) * 1000)
    try:
        when = datetime.fromisoformat(stripped)
    except ValueError:
        raise ConfigError(f"{text!r} is not a time: {_TIME_HELP}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


def parse_record_id(text: str) -> tuple[str | None, int, int]:
    """``(topic or None, partition, offset)`` of ``P:O`` or ``topic/P/O``."""
    parts = text.strip().split("/")
    if len(parts) == 3:
        topic, numbers = parts[0] or None, parts[1:]
    else:
        topic, numbers = None, text.strip().split(":")
    try:
        partition, offset = (int(n) for n in numbers)
    except ValueError:
        raise ConfigError(
            f"{text!r} is not a dead letter id: use PARTITION:OFFSET (e.g. 2:1041) or "
            "TOPIC/PARTITION/OFFSET, as `switchboard dlq list` prints them"
        ) from None
    if partition < 0 or offset < 0:
        raise ConfigError(f"{text!r}: partition and offset cannot be negative")
    return topic, partition, offset


def pointer(topic: str, partition: int, offset: int) -> str:
    """The stable pointer of one record, as ledgers and ``sb-replay-of`` carry it."""
    return f"{topic}/{partition}/{offset}"


def iso(ms: int | None) -> str | None:
    """``ms`` (epoch milliseconds) as ISO 8601 UTC, for people and JSON."""
    if ms is None or ms < 0:
        return None
    text = datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")
    return text.replace("+00:00", "Z")


def message_headers(msg: Message) -> list[tuple[str, bytes | None]]:
    """``msg``'s headers as (name, bytes) pairs, whatever shape the client handed them in."""
    raw = msg.headers() or []
    items = raw.items() if isinstance(raw, dict) else raw
    return [(str(k), v.encode() if isinstance(v, str) else v) for k, v in items]


# --- one dead letter ---------------------------------------------------------------------------
@dataclass(frozen=True)
class DeadLetterView:
    """One record of a dead-letter topic: where it is and, when it decodes, what it says."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    #: The decoded DeadLetter, or None when the value is not one (see ``decode_error``).
    record: dict[str, Any] | None
    decode_error: str | None = None
    raw_value: bytes | None = field(default=None, repr=False)
    headers: tuple[tuple[str, bytes | None], ...] = field(default=(), repr=False)

    @classmethod
    def from_message(cls, msg: Message, codec: Codec) -> DeadLetterView:
        """Decode ``msg``; a value that is not a DeadLetter is kept as undecodable."""
        topic, value = str(msg.topic()), msg.value()
        headers = tuple(message_headers(msg))
        try:
            record: dict[str, Any] | None = codec.decode(DEAD_LETTER, value, topic)
            error = None
        except DecodeError as exc:
            record, error = None, str(exc)
        return cls(
            topic,
            int(msg.partition() or 0),
            int(msg.offset() or 0),
            msg.timestamp()[1],
            record,
            error,
            value if record is None else None,
            headers,
        )

    @property
    def id(self) -> str:
        return f"{self.partition}:{self.offset}"

    @property
    def pointer(self) -> str:
        return pointer(self.topic, self.partition, self.offset)

    @property
    def undecodable(self) -> bool:
        return self.record is None

    @property
    def truncated(self) -> bool:
        """Whether the copy of the original was cut to fit the DLQ (it cannot be replayed)."""
        return h.header_value(self.headers, h.DLQ_TRUNCATED) is not None

    def _field(self, name: str) -> Any:
        return None if self.record is None else self.record.get(name)

    @property
    def error_class(self) -> str:
        return str(self._field("error_class") or UNDECODABLE)

    @property
    def error_code(self) -> str | None:
        return self._field("error_code")

    @property
    def request_id(self) -> str | None:
        return self._field("request_id")

    @property
    def tenant(self) -> str | None:
        return self._field("tenant")

    @property
    def specialist(self) -> str | None:
        return self._field("specialist")

    @property
    def stage(self) -> str | None:
        return self._field("stage")

    @property
    def origin_topic(self) -> str | None:
        return self._field("origin_topic")

    @property
    def origin_timestamp_ms(self) -> int:
        """When the failed record was written to its origin topic (0 when unknown)."""
        return int(self._field("origin_timestamp_ms") or 0)

    @property
    def failed_at_ms(self) -> int:
        """When it was dead-lettered: the last failure, else the DLQ record's own timestamp."""
        return int(self._field("last_failure_ms") or self.timestamp_ms)

    def summary(self, *, acked: bool = False, replayed: str | None = None) -> dict[str, Any]:
        """The stable JSON row of ``dlq list --json``."""
        attempts = self._field("attempts") or []
        return {
            "id": self.id,
            "pointer": self.pointer,
            "request_id": self.request_id,
            "error_class": self.error_class,
            "error_code": self.error_code,
            "error_type": self._field("error_type"),
            "error_message": self._field("error_message") or self.decode_error,
            "stage": self.stage,
            "specialist": self.specialist,
            "tenant": self.tenant,
            "origin_topic": self.origin_topic,
            "origin_partition": self._field("origin_partition"),
            "origin_offset": self._field("origin_offset"),
            "provider_status": self._field("provider_status"),
            "attempts": len(attempts),
            "failed_at": iso(self.failed_at_ms),
            "failed_at_ms": self.failed_at_ms,
            "acked": acked,
            "replayed": replayed,
            "truncated": self.truncated,
        }

    def replay_record(self, replay_id: str) -> Outbound:
        """The record to send: original key, value and headers, to the origin topic, plus the
        replay headers (an earlier replay's are replaced, for a record replayed again)."""
        if self.record is None or not self.origin_topic:
            raise ConfigError(f"dead letter {self.id} does not decode: it cannot be replayed")
        ours = (h.REPLAY_ID, h.REPLAY_OF)
        headers: list[tuple[str, bytes | str | None]] = [
            (item["key"], item["value"])
            for item in self.record.get("original_headers") or []
            if item["key"] not in ours
        ]
        headers += [(h.REPLAY_ID, replay_id.encode()), (h.REPLAY_OF, self.pointer.encode())]
        return Outbound(
            self.origin_topic,
            self.record["original_value"],
            self.record.get("original_key"),
            headers,
        )


# --- choosing ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReplayFilter:
    """Which dead letters a command acts on; empty fields match everything.

    Values within one field are alternatives (``--specialist api --specialist data``); fields
    combine with AND. ``since_ms``/``until_ms`` bound when the record was dead-lettered.
    """

    error_classes: frozenset[str] = frozenset()
    error_codes: frozenset[str] = frozenset()
    specialists: frozenset[str] = frozenset()
    tenants: frozenset[str] = frozenset()
    request_ids: frozenset[str] = frozenset()
    #: Full pointers (``topic/partition/offset``).
    pointers: frozenset[str] = frozenset()
    since_ms: int | None = None
    until_ms: int | None = None

    def __post_init__(self) -> None:
        since, until = self.since_ms, self.until_ms
        if since is not None and until is not None and since > until:
            raise ConfigError(f"--since ({iso(since)}) is after --until ({iso(until)}): swap them")

    @property
    def is_empty(self) -> bool:
        """True when the filter matches every record."""
        return not (
            self.error_classes
            or self.error_codes
            or self.specialists
            or self.tenants
            or self.request_ids
            or self.pointers
            or self.since_ms is not None
            or self.until_ms is not None
        )

    def matches(self, letter: DeadLetterView) -> bool:
        checks: tuple[tuple[Collection[str], str | None], ...] = (
            (self.pointers, letter.pointer),
            (self.error_classes, letter.error_class),
            (self.error_codes, letter.error_code),
            (self.specialists, letter.specialist),
            (self.tenants, letter.tenant),
            (self.request_ids, letter.request_id),
        )
        if any(wanted and value not in wanted for wanted, value in checks):
            return False
        at = letter.failed_at_ms
        if self.since_ms is not None and at < self.since_ms:
            return False
        return self.until_ms is None or at <= self.until_ms


@dataclass(frozen=True)
class Selection:
    """The records a filter matched, and how many acknowledged ones it hid."""

    records: list[DeadLetterView]
    hidden_acked: int


def select(
    letters: Iterable[DeadLetterView],
    flt: ReplayFilter,
    acked: Collection[str] = (),
    *,
    include_acked: bool = False,
) -> Selection:
    """The letters ``flt`` matches, without acknowledged ones unless ``include_acked``."""
    chosen, hidden = [], 0
    for letter in letters:
        if not flt.matches(letter):
            continue
        if letter.pointer in acked and not include_acked:
            hidden += 1
            continue
        chosen.append(letter)
    return Selection(chosen, hidden)


#: Why ``plan_replay`` leaves a record out (the keys of ``ReplayPlan.skipped``).
SKIP_UNDECODABLE: Final = "undecodable"
SKIP_TRUNCATED: Final = "truncated"
SKIP_REPLAYED: Final = "already_replayed"
SKIP_ANSWERED: Final = "already_answered"
SKIP_DUPLICATE: Final = "duplicate_request"
SKIP_LIMIT: Final = "over_limit"


@dataclass(frozen=True)
class ReplayPlan:
    """What a replay sends, oldest failure first, and what it leaves out and why."""

    to_send: list[DeadLetterView]
    skipped: dict[str, list[DeadLetterView]]

    def skipped_counts(self) -> dict[str, int]:
        return {reason: len(items) for reason, items in self.skipped.items() if items}


def plan_replay(
    letters: Iterable[DeadLetterView],
    *,
    replayed: Collection[str] = (),
    settled: Collection[str] = (),
    limit: int | None = None,
) -> ReplayPlan:
    """Which of ``letters`` (already selected) to send.

    Left out: undecodable records (no origin to send to), truncated copies (replaying a prefix
    would only fail again: the full original is at the letter's origin pointer), records
    whose pointer is in the replays ledger (``replayed``), requests with a response other than
    ``failed`` (``settled``), older dead letters of a request that is replayed from a newer
    one, and everything past ``limit``.
    """
    skipped: dict[str, list[DeadLetterView]] = {
        k: []
        for k in (
            SKIP_UNDECODABLE, SKIP_TRUNCATED, SKIP_REPLAYED, SKIP_ANSWERED, SKIP_DUPLICATE,
            SKIP_LIMIT,
        )
    }  # fmt: skip
    newest: dict[str, DeadLetterView] = {}
    candidates: list[DeadLetterView] = []
    for letter in sorted(letters, key=lambda x: (x.failed_at_ms, x.topic, x.partition, x.offset)):
        if letter.undecodable or not letter.origin_topic:
            skipped[SKIP_UNDECODABLE].append(letter)
        elif letter.truncated:
            skipped[SKIP_TRUNCATED].append(letter)
        elif letter.pointer in replayed:
            skipped[SKIP_REPLAYED].append(letter)
        elif letter.request_id is not None and letter.request_id in settled:
            skipped[SKIP_ANSWERED].append(letter)
        else:
            candidates.append(letter)
            if letter.request_id is not None:
                newest[letter.request_id] = letter  # sorted oldest first: the last one wins
    to_send: list[DeadLetterView] = []
    for letter in candidates:
        if letter.request_id is not None and newest[letter.request_id] is not letter:
            skipped[SKIP_DUPLICATE].append(letter)
        elif limit is not None and len(to_send) >= limit:
            skipped[SKIP_LIMIT].append(letter)
        else:
            to_send.append(letter)
    return ReplayPlan(to_send, skipped)


def age_bucket(age_ms: int) -> str:
    """The ``group_counts`` age bucket of a record dead-lettered ``age_ms`` ago."""
    for bound, name in AGE_BUCKETS:
        if age_ms < bound:
            return name
    return OLDEST_BUCKET


def group_counts(letters: Iterable[DeadLetterView], now: int) -> dict[str, dict[str, int]]:
    """Counts by error class, specialist, tenant and age (at epoch ms ``now``), largest first
    (age buckets youngest first)."""
    counters: dict[str, Counter[str]] = {
        "error_class": Counter(),
        "specialist": Counter(),
        "tenant": Counter(),
        "age": Counter(),
    }
    for letter in letters:
        counters["error_class"][letter.error_class] += 1
        counters["specialist"][letter.specialist or NONE_GROUP] += 1
        counters["tenant"][letter.tenant or NONE_GROUP] += 1
        counters["age"][age_bucket(now - letter.failed_at_ms)] += 1
    order = [name for _bound, name in AGE_BUCKETS] + [OLDEST_BUCKET]
    result = {key: dict(c.most_common()) for key, c in counters.items() if key != "age"}
    result["age"] = {name: counters["age"][name] for name in order if counters["age"][name]}
    return result


# --- reading -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Snapshot:
    """A dead-letter topic and its two ledgers, as read by one command."""

    letters: list[DeadLetterView]
    #: Pointer -> ledger entry.
    acks: dict[str, dict[str, Any]]
    replays: dict[str, dict[str, Any]]


class DeadLetterStore:
    """Reads one dead-letter topic (the DLQ or the parking lot), its ledgers and the responses.

    Every read is a bounded scan to the end offsets of when it began; nothing is committed.
    """

    def __init__(
        self,
        kafka: dict[str, Any],
        topics: Topics,
        codec: Codec,
        *,
        source: str | None = None,
        timeout_s: float = 60.0,
    ) -> None:
        self.kafka = kafka
        self.topics = topics
        self.codec = codec
        self.topic = source or topics.dlq
        self.timeout_s = timeout_s
        self.admin = AdminClient(dict(kafka))

    def exists(self, topic: str) -> bool:
        found = self.admin.list_topics(topic, timeout=self.timeout_s).topics.get(topic)
        return found is not None and found.error is None and bool(found.partitions)

    def missing_topics(self, names: Iterable[str]) -> list[str]:
        """Which of ``names`` do not exist (a replay to them would wait out every timeout)."""
        existing = self.admin.list_topics(timeout=self.timeout_s).topics
        return sorted({n for n in names if n not in existing})

    def ensure_ledgers(self, *, replication_factor: int, retention_ms: int) -> None:
        """Create the two ledger topics when missing (only commands that write call this)."""
        ensure_topics(
            self.admin,
            self.topics.ledger_specs(retention_ms),
            partitions=1,
            replication_factor=replication_factor,
            timeout_s=self.timeout_s,
        )

    def read(self, topic: str, on_message: Callable[[Message], None], since_ms: int | None) -> None:
        """Pass every record of ``topic`` below its current end offsets to ``on_message``."""
        ends = end_offsets(self.admin, topic, timeout_s=self.timeout_s)
        if not any(ends.values()):
            return

        def below_end(msg: Message) -> None:
            # The tail keeps reading past the barrier: records newer than the scan are not in it.
            if (msg.offset() or 0) < ends.get(msg.partition() or 0, 0):
                on_message(msg)

        tail = TopicTail(self.kafka, topic, below_end, since_ms=since_ms or 0, name="dlq-scan")
        try:
            tail.barrier().result(timeout=self.timeout_s)
        except TimeoutError:
            raise TransientError(
                f"reading {topic} took longer than {self.timeout_s:g}s: is the broker "
                "overloaded? Narrow the scan with --since"
            ) from None
        finally:
            tail.stop()

    def scan(self, since_ms: int | None = None) -> list[DeadLetterView]:
        """Every dead letter of the source topic (from ``since_ms``), oldest offset first."""
        if not self.exists(self.topic):
            raise ConfigError(f"topic {self.topic} does not exist: run `switchboard topics ensure`")
        letters: list[DeadLetterView] = []
        self.read(
            self.topic,
            lambda m: letters.append(DeadLetterView.from_message(m, self.codec)),
            since_ms,
        )
        letters.sort(key=lambda x: (x.partition, x.offset))
        return letters

    def snapshot(self, since_ms: int | None = None) -> Snapshot:
        """The dead letters and both ledgers, read at once (three scans side by side)."""
        with concurrent.futures.ThreadPoolExecutor(3, "dlq-read") as pool:
            letters = pool.submit(self.scan, since_ms)
            acks = pool.submit(self.acks)
            replays = pool.submit(self.replays)
            return Snapshot(letters.result(), acks.result(), replays.result())

    def ledger(self, topic: str) -> dict[str, dict[str, Any]]:
        """Pointer -> latest entry of a ledger (a tombstone removes one); {} when missing."""
        entries: dict[str, dict[str, Any]] = {}
        if not self.exists(topic):
            return entries

        def keep(msg: Message) -> None:
            key = (msg.key() or b"").decode("utf-8", "replace")
            value = msg.value()
            if value is None:
                entries.pop(key, None)
                return
            try:
                entry = json.loads(value)
            except ValueError:
                entry = {}
            entries[key] = entry if isinstance(entry, dict) else {}

        self.read(topic, keep, None)
        return entries

    def acks(self) -> dict[str, dict[str, Any]]:
        return self.ledger(self.topics.dlq_acks)

    def replays(self) -> dict[str, dict[str, Any]]:
        return self.ledger(self.topics.dlq_replays)

    def settled_requests(self, letters: Iterable[DeadLetterView]) -> set[str]:
        """Request ids among ``letters`` with a response other than ``failed`` on the shared
        responses topic (the ``sb-status`` header, or the decoded value without it)."""
        wanted: dict[str, int] = {}
        for letter in letters:
            if letter.request_id is not None:
                wanted[letter.request_id] = max(0, letter.origin_timestamp_ms)
        topic = self.topics.responses
        if not wanted or not self.exists(topic):
            return set()
        settled: set[str] = set()

        def check(msg: Message) -> None:
            request_id = (msg.key() or b"").decode("utf-8", "replace")
            if request_id not in wanted or request_id in settled:
                return
            status = h.header_value(message_headers(msg), h.STATUS)
            if status is None:
                with contextlib.suppress(DecodeError):
                    status = self.codec.decode(RESPONSE, msg.value(), topic).get("status")
            if status is not None and status != "failed":
                settled.add(request_id)

        since = max(0, min(wanted.values()) - _RESPONSE_SCAN_MARGIN_MS)
        self.read(topic, check, since)
        return settled

    def fetch(self, partition: int, offset: int) -> DeadLetterView:
        """The one dead letter at ``partition``/``offset`` of the source topic."""
        wanted = f"{partition}:{offset}"
        if not self.exists(self.topic):
            raise ConfigError(f"topic {self.topic} does not exist: run `switchboard topics ensure`")
        consumer = Consumer(reader_config(self.kafka, "dlq-show"))
        try:
            tp = TopicPartition(self.topic, partition)
            parts = consumer.list_topics(self.topic, timeout=self.timeout_s).topics[self.topic]
            if partition not in parts.partitions:
                raise ConfigError(
                    f"no dead letter {wanted}: {self.topic} has partitions "
                    f"0-{len(parts.partitions) - 1}"
                )
            low, high = consumer.get_watermark_offsets(tp, timeout=self.timeout_s)
            if not low <= offset < high:
                held = f"offsets {low}-{high - 1}" if high > low else "no records"
                raise ConfigError(
                    f"no dead letter {wanted} in {self.topic}: partition {partition} holds {held}"
                )
            consumer.assign([TopicPartition(self.topic, partition, offset)])
            deadline = time.monotonic() + self.timeout_s
            while time.monotonic() < deadline:
                for msg in consumer.consume(1, 0.5):
                    err = msg.error()
                    if err is None:
                        if msg.offset() != offset:  # compacted away or a transaction marker
                            raise ConfigError(f"no dead letter {wanted} in {self.topic}")
                        return DeadLetterView.from_message(msg, self.codec)
                    if err.code() != KafkaError._PARTITION_EOF:
                        raise TransientError(f"reading {wanted} from {self.topic}: {err}")
            raise TransientError(f"reading {wanted} from {self.topic} timed out")
        finally:
            consumer.close()


# --- writing -----------------------------------------------------------------------------------
@dataclass
class ReplayResult:
    """What a replay did."""

    replay_id: str
    sent: list[DeadLetterView] = field(default_factory=list)
    failed: list[tuple[DeadLetterView, str]] = field(default_factory=list)
    elapsed_s: float = 0.0
    #: How often, and how long in all, the rate limit held the replay back.
    rate_waits: int = 0
    rate_waited_s: float = 0.0

    @property
    def rate_per_s(self) -> float:
        return len(self.sent) / self.elapsed_s if self.elapsed_s > 0 else 0.0


def new_replay_id() -> str:
    return f"replay-{uuid.uuid4().hex[:12]}"


class Replayer:
    """Sends dead letters back to their origin topics and records each in the replays ledger.

    ``rate``: records a second, through a token bucket holding a tenth of a second's worth
    (at least one), so the pace is smooth rather than one burst a second. ``max_in_flight``
    bounds the records sent but not yet confirmed.
    """

    def __init__(
        self,
        producer: AsyncProducer,
        topics: Topics,
        *,
        replay_id: str | None = None,
        rate: float | None = None,
        max_in_flight: int = 1000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate is not None and not rate > 0:
            raise ConfigError(f"--rate {rate:g}: give a number of records a second above 0")
        self._producer = producer
        self._ledger = topics.dlq_replays
        self.replay_id = replay_id or new_replay_id()
        self._bucket = (
            TokenBucket(rate, max(1, math.ceil(rate / 10)), clock) if rate is not None else None
        )
        self._max_in_flight = max_in_flight
        self._clock = clock

    async def replay(
        self,
        letters: Iterable[DeadLetterView],
        on_done: Callable[[DeadLetterView, bool], None] | None = None,
    ) -> ReplayResult:
        """Send every letter; ``on_done(letter, ok)`` runs as each one is settled."""
        result = ReplayResult(self.replay_id)
        slots = asyncio.Semaphore(self._max_in_flight)
        began = self._clock()
        pending: set[asyncio.Task[None]] = set()
        for letter in letters:
            while self._bucket is not None and (wait := self._bucket.try_acquire()) > 0:
                result.rate_waits += 1
                result.rate_waited_s += wait
                await asyncio.sleep(wait)
            await slots.acquire()
            task = asyncio.create_task(self._send_one(letter, result, on_done))
            task.add_done_callback(lambda _t: slots.release())
            pending.add(task)
            task.add_done_callback(pending.discard)
        if pending:
            await asyncio.gather(*pending)
        result.elapsed_s = self._clock() - began
        return result

    async def _send_one(
        self,
        letter: DeadLetterView,
        result: ReplayResult,
        on_done: Callable[[DeadLetterView, bool], None] | None,
    ) -> None:
        try:
            delivered = await self._producer.send(letter.replay_record(self.replay_id))
            # The ledger entry follows the delivery: a crash in between replays this record
            # again next time, and the workers skip it if that replay answered it meanwhile.
            entry = {
                "replay_id": self.replay_id,
                "replayed_at_ms": now_ms(),
                "request_id": letter.request_id,
                "sent_to": pointer(
                    str(delivered.topic()),
                    int(delivered.partition() or 0),
                    int(delivered.offset() or 0),
                ),
            }
            await self._producer.send(
                Outbound(self._ledger, json.dumps(entry).encode(), letter.pointer.encode())
            )
        except (KafkaException, ConfigError) as exc:  # DeliveryError is a KafkaException
            result.failed.append((letter, str(exc)))
            ok = False
        else:
            result.sent.append(letter)
            ok = True
        if on_done is not None:
            on_done(letter, ok)


async def acknowledge(
    producer: AsyncProducer,
    topics: Topics,
    letters: Iterable[DeadLetterView],
    *,
    reason: str | None = None,
) -> int:
    """Write each letter's pointer to the acks ledger; returns how many were written."""
    ledger = topics.dlq_acks
    at = now_ms()
    records = [
        Outbound(
            ledger,
            json.dumps(
                {
                    "acked_at_ms": at,
                    "reason": reason,
                    "request_id": letter.request_id,
                    "error_class": letter.error_class,
                }
            ).encode(),
            letter.pointer.encode(),
        )
        for letter in letters
    ]
    await producer.send_all(records)
    return len(records)


def ledger_state(
    letters: Iterable[DeadLetterView],
    acked: Mapping[str, Any],
    replayed: Mapping[str, dict[str, Any]],
) -> list[dict[str, Any]]:
    """``summary`` rows of ``letters`` with their ledger state filled in."""
    rows = []
    for letter in letters:
        entry = replayed.get(letter.pointer)
        replay_id = None if entry is None else str(entry.get("replay_id") or "unknown")
        rows.append(letter.summary(acked=letter.pointer in acked, replayed=replay_id))
    return rows
