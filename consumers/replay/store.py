"""Reading a dead-letter topic, its two ledgers and the responses topic: ``DeadLetterStore``.

Every read is a bounded scan, through ``read_to_end``, from the start (or ``since``) to the end
offsets the topic had when the scan began: no consumer group, no commits, nothing changes on
the broker. A value that is not a DeadLetter is kept as undecodable rather than stopping a scan.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from consumers.replay.view import DeadLetterView, message_headers
from switchboard.core import headers as h
from switchboard.core.admin import ensure_topics, listed_topic
from switchboard.core.errors import ConfigError, DecodeError, TransientError
from switchboard.core.kafka_clients import make_admin, reader_config
from switchboard.core.serde import RESPONSE, Codec
from switchboard.core.tail import Unreadable, json_record, read_to_end
from switchboard.core.topics import Topics

#: How long one broker call or one scan may take before the command gives up.
DEFAULT_TIMEOUT_S: Final = 60.0
#: Partitions of each ledger topic: a ledger is small, and every command reads it whole.
LEDGER_PARTITIONS: Final = 1
#: Responses may be written a little before the origin record's timestamp says (clock skew).
_RESPONSE_SCAN_MARGIN_MS: Final = 5 * 60_000
#: One poll of ``fetch``: short, so the overall ``timeout_s`` is kept to within it.
_FETCH_POLL_S: Final = 0.5
#: ``snapshot`` reads the dead letters and both ledgers side by side.
_SNAPSHOT_SCANS: Final = 3


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
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.kafka = kafka
        self.topics = topics
        self.codec = codec
        self.topic = source or topics.dlq
        self.timeout_s = timeout_s
        self.admin = make_admin(dict(kafka))

    def exists(self, topic: str) -> bool:
        # Never by name: a dry run made the ledgers so, uncompacted (see ``listed_topic``).
        found = listed_topic(self.admin, topic, self.timeout_s)
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
            partitions=LEDGER_PARTITIONS,
            replication_factor=replication_factor,
            timeout_s=self.timeout_s,
        )

    def read(self, topic: str, on_message: Callable[[Message], None], since_ms: int | None) -> None:
        """Pass every record of ``topic`` below its current end offsets to ``on_message``."""
        try:
            read_to_end(
                self.kafka,
                topic,
                on_message,
                since_ms=since_ms,
                timeout_s=self.timeout_s,
                name="dlq-scan",
                admin=self.admin,
            )
        except TimeoutError:
            raise TransientError(
                f"reading {topic} took longer than {self.timeout_s:g}s: is the broker "
                "overloaded? Narrow the scan with --since"
            ) from None

    def scan(self, since_ms: int | None = None) -> list[DeadLetterView]:
        """Every dead letter of the source topic (from ``since_ms``), oldest offset first."""
        if not self.exists(self.topic):
            raise ConfigError(_missing(self.topic))
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
        with concurrent.futures.ThreadPoolExecutor(_SNAPSHOT_SCANS, "dlq-read") as pool:
            letters = pool.submit(self.scan, since_ms)
            acks = pool.submit(self.acks)
            replays = pool.submit(self.replays)
            return Snapshot(letters.result(), acks.result(), replays.result())

    def ledger(self, topic: str) -> dict[str, dict[str, Any]]:
        """Pointer -> latest entry of a ledger (a tombstone removes one); {} when missing."""
        entries: dict[str, dict[str, Any]] = {}
        if not self.exists(topic):
            return entries

        self.read(topic, lambda msg: keep_ledger_entry(msg, entries), None)
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
            raise ConfigError(_missing(self.topic))
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
                for msg in consumer.consume(1, _FETCH_POLL_S):
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


def keep_ledger_entry(msg: Message, into: dict[str, dict[str, Any]]) -> None:
    """Fold one ledger record into ``into`` (pointer -> latest entry): a tombstone removes its
    pointer; a value that is not a JSON object is kept as ``{}``."""
    key, entry = json_record(msg)
    if entry is Unreadable.TOMBSTONE:
        into.pop(key, None)
    else:
        into[key] = entry if isinstance(entry, dict) else {}


def _missing(topic: str) -> str:
    # A secured broker leaves topics this identity may not describe out of the metadata.
    return (
        f"topic {topic} does not exist, or this identity may not describe it: run `switchboard "
        "topics ensure`, or connect as an identity with Read on it"
    )
