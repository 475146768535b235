"""The batch ledger: every Message Batch a review job created, in a compacted Kafka topic.

A batch is written as a head record keyed by its batch id (job, round, state, how many chunk
records) and its items in chunk records keyed ``<batch id>.<n>`` (``custom_id`` -> request id,
specialist, tenant, attempt), because one batch's 100,000 items would pass Kafka's record size
limit. The chunks are delivered before the head, so a head always has its items. When the
batch's results are published the head is rewritten with state ``done`` and the chunks get
tombstones (compaction then drops them). A restarted job reads the ledger to its end and
resumes polling every batch of its job that is not ``done``, instead of creating it again.

What a crash can still cost: a batch created whose head was not yet delivered is created again
on restart (the API has no idempotency key); the window is one produce round trip.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any, Final

from confluent_kafka import Message

from switchboard.core.admin import ensure_topics
from switchboard.core.aio_producer import AsyncProducer, Outbound
from switchboard.core.kafka_clients import make_admin
from switchboard.core.tail import Unreadable, json_record, read_to_end
from switchboard.core.topics import Topics

log = logging.getLogger(__name__)

#: Items per chunk record: about 200 bytes each, so a chunk stays far below 1 MB.
CHUNK_ITEMS: Final = 2_000
#: The ledger is tiny and read whole: one partition keeps it simple and ordered.
LEDGER_PARTITIONS: Final = 1
#: How long reading the ledger to its end may take.
READ_TIMEOUT_S: Final = 60.0
#: The API keeps a batch's results 29 days after it was created; the ledger need not outlive them.
LEDGER_RETENTION_MS: Final = 29 * 24 * 3600 * 1000


class BatchState(StrEnum):
    """Where a ledgered batch stands."""

    SUBMITTED = "submitted"
    """Created at the API; its results are not yet published."""
    DONE = "done"
    """Its results are published on the response topic (or resubmitted in a later batch)."""


@dataclass(frozen=True)
class LedgerItem:
    """What the ledger keeps of one batch request: enough to answer it without its job."""

    request_id: str
    specialist: str
    tenant: str
    attempt: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class LedgerBatch:
    """One batch of a job: its id, round, state, and ``custom_id`` -> item."""

    batch_id: str
    job: str
    round: int
    state: BatchState
    created_at_ms: int
    items: dict[str, LedgerItem] = field(default_factory=dict)


class BatchLedger:
    """Reads and writes one topic's batch ledger for one job."""

    def __init__(
        self,
        kafka: Mapping[str, Any],
        topics: Topics,
        producer: AsyncProducer,
        job: str,
        *,
        replication_factor: int = 1,
    ) -> None:
        self._kafka = dict(kafka)
        self._topic = topics.review_batches
        self._spec = topics.review_batches_spec(LEDGER_RETENTION_MS)
        self._producer = producer
        self._replication_factor = replication_factor
        self.job = job

    def ensure(self) -> None:
        """Create the ledger topic when missing (blocking; idempotent)."""
        ensure_topics(
            make_admin(self._kafka),
            [self._spec],
            partitions=LEDGER_PARTITIONS,
            replication_factor=self._replication_factor,
        )

    def open_batches(self) -> list[LedgerBatch]:
        """This job's batches that are not ``done``, oldest first (blocking: a bounded scan)."""
        heads: dict[str, dict[str, Any]] = {}
        chunks: dict[str, dict[str, Any]] = {}

        def keep(msg: Message) -> None:
            key, record = json_record(msg)
            target = chunks if "." in key else heads
            if record is Unreadable.TOMBSTONE:
                target.pop(key, None)
            elif record is Unreadable.NOT_JSON:
                log.warning("batch ledger %s: record %s is not JSON; ignored", self._topic, key)
            elif isinstance(record, dict) and record.get("job") == self.job:
                target[key] = record

        self._read(keep)
        found = []
        for batch_id, head in heads.items():
            if head.get("state") == BatchState.DONE:
                continue
            batch = LedgerBatch(
                batch_id,
                self.job,
                int(head.get("round", 1)),
                BatchState(head.get("state", BatchState.SUBMITTED)),
                int(head.get("created_at_ms", 0)),
            )
            for n in range(int(head.get("chunks", 0))):
                for custom_id, raw in chunks.get(f"{batch_id}.{n}", {}).get("items", {}).items():
                    try:
                        batch.items[custom_id] = LedgerItem(**raw)
                    except TypeError:  # a hand-edited or foreign record: skip, do not stop
                        log.warning("batch ledger: item %s of %s is malformed", custom_id, batch_id)
            found.append(batch)
        return sorted(found, key=lambda b: b.created_at_ms)

    def _read(self, on_message: Callable[[Message], None]) -> None:
        read_to_end(
            self._kafka, self._topic, on_message, timeout_s=READ_TIMEOUT_S, name="batch-ledger"
        )

    async def record(self, batch: LedgerBatch) -> None:
        """Write a new batch: its chunks first, then its head (both delivered on return)."""
        ids = list(batch.items)
        chunk_keys = [f"{batch.batch_id}.{n}" for n in range(-(-len(ids) // CHUNK_ITEMS))]
        chunks = [
            self._outbound(
                key,
                {
                    "job": batch.job,
                    "batch_id": batch.batch_id,
                    "items": {
                        cid: batch.items[cid].to_json()
                        for cid in ids[n * CHUNK_ITEMS : (n + 1) * CHUNK_ITEMS]
                    },
                },
            )
            for n, key in enumerate(chunk_keys)
        ]
        await self._producer.send_all(chunks)
        await self._producer.send(self._head(batch, len(chunk_keys)))

    async def mark_done(self, batch: LedgerBatch) -> None:
        """The batch's results are published: its head says ``done``, its chunks are dropped."""
        batch.state = BatchState.DONE
        n_chunks = -(-len(batch.items) // CHUNK_ITEMS)
        await self._producer.send(self._head(batch, 0))
        tombstones: Iterable[Outbound] = (
            Outbound(self._topic, None, f"{batch.batch_id}.{n}".encode())  # type: ignore[arg-type]
            for n in range(n_chunks)
        )
        await self._producer.send_all(list(tombstones))

    def _head(self, batch: LedgerBatch, chunks: int) -> Outbound:
        return self._outbound(
            batch.batch_id,
            {
                "job": batch.job,
                "batch_id": batch.batch_id,
                "round": batch.round,
                "state": batch.state,
                "created_at_ms": batch.created_at_ms,
                "count": len(batch.items),
                "chunks": chunks,
            },
        )

    def _outbound(self, key: str, value: dict[str, Any]) -> Outbound:
        return Outbound(self._topic, json.dumps(value).encode(), key.encode())


async def read_open_batches(ledger: BatchLedger) -> list[LedgerBatch]:
    """``ensure`` then ``open_batches``, off the event loop."""
    await asyncio.to_thread(ledger.ensure)
    return await asyncio.to_thread(ledger.open_batches)
