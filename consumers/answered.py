"""The answered-request index: how a redelivered request is never answered (or billed) twice.

Mechanism: the response topic is the ledger. A request is answered iff a response keyed by its
request id exists there. Task topics and the response topic are co-partitioned: the same
partition count, and every producer maps a key to a partition the same way
(``switchboard.core.kafka_clients.PARTITIONER``), so the response of a task read from partition
``p`` is in response partition ``p``. A process therefore follows only the response partitions
matching the partitions its consumers hold (``follow``), each into an on-disk store
(``consumers.answered_store``) that remembers the last offset read: a restart reads only what
is new, a missing or unreadable store is rebuilt from ``now - horizon``.

Before handling a record of a partition a consumer waits for a barrier: every response that
existed when that partition was assigned has been read. A previous owner's responses were
delivered before it lost the partition (or before it died), so they are in the log by then, and
the redelivered request is recognised and skipped.

The horizon is how far back answers are kept: the requests topic's retention by default (a
request older than that cannot be redelivered), see ``consumers.app``. A request created before
``now - horizon`` is answered ``expired`` by the worker, never sent to the model
(``beyond_horizon``). Requests in flight inside this process are deduplicated by ``claim``.

DLQ replay: a dead-lettered request already has its ``failed`` response, so a replayed record
(``sb-replay-id``) is skipped only when a response of another status exists, read from the
``sb-status`` header (a response without it counts as answered for ordinary records and as not
settled for replays: the replay tool checked the decoded responses before sending).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Final

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from consumers.answered_store import BLOCK_CACHE_BYTES, AnswerStore, StateDir, StoreBudget
from switchboard.core.budgets import BROKER_REQUEST_TIMEOUT_S
from switchboard.core.errors import KafkaAccessError
from switchboard.core.headers import STATUS
from switchboard.core.kafka_clients import reader_config
from switchboard.core.status import ResponseStatus
from switchboard.core.tail import (
    CONSUME_WAIT_S,
    FETCH_MIN_BYTES,
    FETCH_QUEUE_BACKOFF_MS,
    FETCH_WAIT_MAX_MS,
    STOP_JOIN_TIMEOUT_S,
    Barriers,
    fetch,
    past_markers,
)

log = logging.getLogger(__name__)

#: How often the tail thread forgets answers older than the horizon.
PRUNE_EVERY_S: Final = 60.0
#: One fetch of the index's tail: at most this many records, waiting at most
#: ``switchboard.core.tail.CONSUME_WAIT_S`` (the fetch wait and join timeout are the tail's),
#: so follow changes, barriers and ``close`` are served within about that time.
CONSUME_BATCH: Final = 2000
#: librdkafka's prefetch queue and fetch size for the tail: bound a catch-up's memory.
QUEUED_MIN_MESSAGES: Final = 10_000
QUEUED_MAX_KBYTES: Final = 2048
FETCH_MAX_BYTES: Final = 1 << 20
#: A response's ``sb-status`` header value that does not settle its request.
_FAILED: Final = ResponseStatus.FAILED.value.encode()


#: The horizon when the topics' retention cannot be read (or both keep forever): 7 days,
#: Kafka's default retention.
DEFAULT_HORIZON_S: Final = 7 * 24 * 3600.0


def resolve_horizon(
    configured_s: float | None, requests_ms: int | None, responses_ms: int | None
) -> tuple[float, str]:
    """The dedup horizon and where it came from: ``SWITCHBOARD_DEDUP_HORIZON_S`` when set, else
    the requests topic's retention (a request older than that cannot be redelivered), cut to
    the responses topic's when that is shorter (older answers cannot be rebuilt), else 7 days."""
    if configured_s is not None:
        if responses_ms is not None and 0 < responses_ms < configured_s * 1000:
            log.warning(
                "dedup horizon %gs is longer than the responses topic keeps answers (%gs): "
                "a rebuilt index cannot recognise requests answered before that",
                configured_s,
                responses_ms / 1000,
            )
        return configured_s, "SWITCHBOARD_DEDUP_HORIZON_S"
    kept = {name: ms for name, ms in (("requests", requests_ms), ("responses", responses_ms))}
    finite = {name: ms for name, ms in kept.items() if ms is not None and ms > 0}
    if not finite:
        return DEFAULT_HORIZON_S, "default: 7 days (no finite retention.ms read)"
    name = min(finite, key=lambda n: finite[n])
    return finite[name] / 1000, f"retention.ms of the {name} topic"


def partition_of(request_id: str | bytes, partitions: int) -> int:
    """The partition every Switchboard producer writes key ``request_id`` to (librdkafka's
    ``consistent_random``: CRC-32 of the key, modulo the partition count)."""
    key = request_id.encode() if isinstance(request_id, str) else request_id
    return zlib.crc32(key) % partitions


class AnsweredLedger:
    """Request ids that already have a terminal response, plus the ones in flight here: every
    decision of the index, in memory and without the tail that feeds it (unit tests use it as
    it is; it holds every partition and is always "synced": nothing exists it has not seen)."""

    def __init__(self, horizon_s: float, *, wall_ms: Callable[[], int] | None = None) -> None:
        self.horizon_s = horizon_s
        self._horizon_ms = int(horizon_s * 1000)
        self._wall_ms = wall_ms or _wall_ms
        self._answered: dict[str, int] = {}
        #: Ids with a response of a known status other than ``failed``: a replay cannot help.
        self._settled: set[str] = set()
        self._in_flight: dict[str, asyncio.Future[None]] = {}

    def record_response(self, key: bytes | None, timestamp_ms: int, status: str | None) -> None:
        """A response read from the ledger: keyed by request id, with its ``sb-status``."""
        if key:
            request_id = key.decode("utf-8", "replace")
            self._answered[request_id] = timestamp_ms
            if status is not None and status != ResponseStatus.FAILED:
                self._settled.add(request_id)

    def mark_answered(self, request_id: str, *, failed: bool = False) -> None:
        """Record our own delivered response at once (the tail will see it later too)."""
        self._answered[request_id] = self._wall_ms()
        if not failed:
            self._settled.add(request_id)

    def is_answered(self, request_id: str, *, replay: bool = False) -> bool:
        """Whether to skip the record: any response, or for a ``replay`` one not ``failed``."""
        return request_id in (self._settled if replay else self._answered)

    def beyond_horizon(self, created_ms: int | None) -> bool:
        """True for a request created before ``now - horizon``: its answer, if it had one, may
        be forgotten, so it is answered ``expired`` instead of being sent to the model."""
        return created_ms is not None and created_ms < self._wall_ms() - self._horizon_ms

    def follow(self, owner: str, partitions: Iterable[int]) -> None:
        """``owner`` (a consumer) now holds ``partitions`` (of a topic co-partitioned with the
        response topic): the index follows the union over owners. The ledger holds all."""

    def busy(self, request_id: str) -> bool:
        """True while ``request_id`` is claimed (in flight) in this process."""
        return request_id in self._in_flight

    def synced(self, since: float) -> bool:
        """True when every response that existed at monotonic time ``since`` has been read."""
        return True

    async def sync(self, since: float) -> None:
        """Wait until every response that existed at monotonic time ``since`` has been read."""

    async def claim(self, request_id: str, *, replay: bool = False) -> bool:
        """Claim ``request_id`` for handling here; False if it is answered or a duplicate.

        A duplicate that arrives while the original is in flight waits for it to finish, so
        the caller can then skip it without racing the original's response.
        """
        while (running := self._in_flight.get(request_id)) is not None:
            await asyncio.shield(running)
        return self.try_claim(request_id, replay=replay)

    def try_claim(self, request_id: str, *, replay: bool = False) -> bool:
        """``claim`` when ``request_id`` is not in flight here (the caller checked ``busy``)."""
        if self.is_answered(request_id, replay=replay):
            return False
        self._in_flight[request_id] = asyncio.get_running_loop().create_future()
        return True

    def release(self, request_id: str, *, answered: bool, failed: bool = False) -> None:
        """End a claim: ``answered`` when its terminal response was delivered (``failed``: it
        was a ``failed`` one, which a DLQ replay may still supersede)."""
        if answered:
            self.mark_answered(request_id, failed=failed)
        future = self._in_flight.pop(request_id, None)
        if future is not None and not future.done():
            future.set_result(None)

    def prune(self) -> int:
        """Forget answers older than the horizon; returns how many were dropped."""
        horizon = self._wall_ms() - self._horizon_ms
        # A snapshot: the event loop may add answers while the tail thread prunes.
        old = [rid for rid, ts in list(self._answered.items()) if ts < horizon]
        for rid in old:
            self._answered.pop(rid, None)
            self._settled.discard(rid)
        return len(old)


class AnsweredIndex(AnsweredLedger):
    """The ledger on disk, one store per followed response partition, fed by a tail of those
    partitions only, with the assignment barrier.

    ``partitions``: the response topic's partition count (read from the broker when None).
    ``state``: this process's state directory (``StateDir``), closed with the index.
    ``cache_bytes``: the block cache every store of the process shares (the memtables are
    charged to it): what a process's index memory is, and what keeps its lookups in memory.
    """

    def __init__(
        self,
        config: dict[str, Any],
        responses_topic: str,
        horizon_s: float,
        *,
        state: StateDir,
        partitions: int | None = None,
        cache_bytes: int = BLOCK_CACHE_BYTES,
    ) -> None:
        super().__init__(horizon_s)
        self.topic = responses_topic
        self._state = state
        self._budget = StoreBudget(cache_bytes)  # the memory every store of this process shares
        self._consumer = Consumer(
            reader_config(
                config,
                "answered-index",
                **{
                    "fetch.wait.max.ms": FETCH_WAIT_MAX_MS,
                    "fetch.min.bytes": FETCH_MIN_BYTES,
                    # A catch-up reads as fast as it stores: no need to queue or fetch more
                    # ahead (librdkafka's defaults: 100,000 records or 64 MiB queued per
                    # partition, 50 MiB a fetch; they cost a rebuild ~50 MB of RSS). With
                    # bounds this small the queue is over them all the time on a rebuild:
                    # the backoff after that must be short (FETCH_QUEUE_BACKOFF_MS).
                    "queued.min.messages": QUEUED_MIN_MESSAGES,
                    "queued.max.messages.kbytes": QUEUED_MAX_KBYTES,
                    "fetch.max.bytes": FETCH_MAX_BYTES,
                    "fetch.queue.backoff.ms": FETCH_QUEUE_BACKOFF_MS,
                },
            )
        )
        self.partitions = partitions or _partition_count(self._consumer, responses_topic)
        #: Read on the event loop, changed on the tail thread (a dict swap is atomic).
        self._stores: dict[int, AnswerStore] = {}
        #: Our own responses (request id -> settles a replay) until the tail stores them.
        self._own: dict[str, bool] = {}
        #: How each followed partition started: "stored" (resumed at the store's offset) or
        #: "rebuilt" (read from now - horizon); tests and the benchmark read it.
        self.started: dict[int, str] = {}
        self._owners: dict[str, frozenset[int]] = {}
        self._wanted: frozenset[int] = frozenset()  # set on the loop, applied on the tail
        self._followed: frozenset[int] = frozenset()  # the tail's assignment
        #: The partitions the tail's consumer is assigned, read back from it after each change.
        self.assignment: frozenset[int] = frozenset()
        self._next: dict[int, int] = {}
        self._barriers = Barriers()
        self._lock = threading.Lock()
        self._synced_at = 0.0
        self._pending_sync: tuple[float, asyncio.Future[None]] | None = None
        self._next_prune = time.monotonic() + PRUNE_EVERY_S
        self._running = True
        self._thread = threading.Thread(target=self._run, name="answered-index", daemon=True)
        self._thread.start()

    # --- the event loop's side -----------------------------------------------------------
    def follow(self, owner: str, partitions: Iterable[int]) -> None:
        self._owners[owner] = frozenset(partitions)
        wanted = frozenset().union(*self._owners.values())
        with self._lock:
            self._wanted = wanted

    @property
    def followed(self) -> frozenset[int]:
        """The response partitions the tail reads now."""
        return self._followed

    def holds(self) -> dict[int, list[str]]:
        """Partition -> every request id its store holds (tests; reads every store)."""
        return {
            p: [rid.decode() for rid in store.answers()] for p, store in dict(self._stores).items()
        }

    def _store_of(self, request_id: str) -> tuple[AnswerStore | None, bytes]:
        rid = request_id.encode()
        return self._stores.get(partition_of(rid, self.partitions)), rid

    def is_answered(self, request_id: str, *, replay: bool = False) -> bool:
        settled = self._own.get(request_id)
        if settled is not None and (settled or not replay):
            return True
        store, rid = self._store_of(request_id)
        if store is None:
            return False  # not a partition of ours: the worker that holds it decides
        try:
            return store.lookup(rid, replay=replay)
        except Exception:  # closed under us: the partition was just dropped
            return False

    def mark_answered(self, request_id: str, *, failed: bool = False) -> None:
        """Our own response, in memory only until the tail reads it from the log.

        The mark is made before the runtime has delivered the response: written to the store,
        it would outlive a SIGKILL before the delivery, and the restarted worker would skip a
        request that has no response (a loss). Only what the log holds goes on disk.
        """
        self._own[request_id] = not failed or self._own.get(request_id, False)

    def prune(self) -> int:
        before = self._wall_ms() - self._horizon_ms
        return sum(store.prune(before) for store in list(self._stores.values()))

    def synced(self, since: float) -> bool:
        return self._synced_at >= since

    async def sync(self, since: float) -> None:
        if self._synced_at >= since:
            return
        pending = self._pending_sync
        if pending is None or pending[0] < since:
            started = time.monotonic()
            future = asyncio.wrap_future(self._barrier())
            pending = (started, future)
            self._pending_sync = pending
        await asyncio.shield(pending[1])
        self._synced_at = max(self._synced_at, pending[0])

    def _barrier(self) -> concurrent.futures.Future[None]:
        """Resolved once every followed partition is read up to its end at this call (after
        every ``follow`` made before it has been applied)."""
        return self._barriers.request()

    def close(self) -> None:
        self._running = False
        self._thread.join(timeout=STOP_JOIN_TIMEOUT_S)
        self._consumer.close()
        stores, self._stores = self._stores, {}
        for store in stores.values():
            store.close()
        self._state.close()

    # --- the tail's thread ---------------------------------------------------------------
    def _run(self) -> None:
        while self._running:
            try:
                self._apply_follow()
                self._take_barrier_requests()
            except RuntimeError:  # closed under us during close()
                return
            except KafkaAccessError as exc:  # raised by the error callback: waiting cannot help
                log.error("answered index %s stopped: %s", self.topic, exc)
                self._barriers.fail(exc)
                return
            except KafkaException as exc:  # a broker request failed: tried again next round
                log.warning("answered index %s: %s", self.topic, exc)
                time.sleep(CONSUME_WAIT_S)
                continue
            batch = fetch(self._consumer, self._barriers, self.topic, CONSUME_BATCH)
            if batch is None:
                return
            if batch:
                self._store_batch(batch)
            if self._barriers.waiting:
                self._barriers.resolve(past_markers(self._consumer, self.topic, self._next))
            if time.monotonic() >= self._next_prune:
                self._next_prune = time.monotonic() + PRUNE_EVERY_S
                dropped = self.prune()
                if dropped:
                    log.info("answered index: %d answers older than the horizon pruned", dropped)

    def _store_batch(self, batch: list[Message]) -> None:
        # Per answer read (every response of the followed partitions, a whole share on a
        # rebuild): no typing.cast, no generic header helper; 5.0 -> 3.2-4.3 us of the tail
        # thread's CPU an answer in a 450,000-answer rebuild.
        by_partition: dict[int, list[Message]] = {}
        for msg in batch:
            partition: Any = msg.partition()
            group = by_partition.get(partition)
            if group is None:
                group = by_partition[partition] = []
            group.append(msg)
        own = self._own
        for partition, msgs in by_partition.items():
            store = self._stores.get(partition)
            if store is None:
                continue  # dropped since the fetch
            last: Any = msgs[-1].offset()  # never None on a record without an error
            after = last + 1
            store.write(_answers(msgs), after)
            self._next[partition] = after
            if own:
                for msg in msgs:  # in the store now: the in-memory mark has done its work
                    if key := msg.key():
                        own.pop(key.decode("utf-8", "replace"), None)

    def _apply_follow(self) -> None:
        with self._lock:
            wanted = self._wanted
        if wanted == self._followed:
            return
        gone = self._followed - wanted
        if gone:
            self._consumer.incremental_unassign([TopicPartition(self.topic, p) for p in gone])
            for p in gone:
                store = self._stores.pop(p, None)
                self._next.pop(p, None)
                self.started.pop(p, None)
                if store is not None:
                    store.close()
            self._followed -= gone
            # Marks of work a revoke abandoned may never reach the log: forget them with it.
            for rid in [r for r in list(self._own) if partition_of(r, self.partitions) in gone]:
                self._own.pop(rid, None)
        if wanted - self._followed:
            # The client learns the topic's partitions before their offsets are asked for
            # (else "Unknown partition" until some other request fetched its metadata).
            self._consumer.list_topics(self.topic, timeout=BROKER_REQUEST_TIMEOUT_S)
        for p in sorted(wanted - self._followed):  # one at a time: a failure retries the rest
            store, offset, how = self._open(p)
            self._next[p] = offset
            self.started[p] = how
            self._stores = {**self._stores, p: store}
            self._consumer.incremental_assign([TopicPartition(self.topic, p, offset)])
            self._followed |= {p}
            log.info("answered index: %s[%d] from offset %d (%s)", self.topic, p, offset, how)
        # As the consumer has it (asked here: the consumer is not to be used off this thread).
        self.assignment = frozenset(tp.partition for tp in self._consumer.assignment())

    def _open(self, partition: int) -> tuple[AnswerStore, int, str]:
        """The partition's store and the offset to read from: the store's own, else (a new,
        unreadable or stale store) the first offset of ``now - horizon``."""
        tp = TopicPartition(self.topic, partition)
        low, high = self._consumer.get_watermark_offsets(
            tp, timeout=BROKER_REQUEST_TIMEOUT_S, cached=False
        )
        store = AnswerStore(self._state.partition(partition), self._budget)
        try:
            stored = store.next_offset()
            if stored is not None and stored <= high:
                return store, max(stored, low), "stored"
            if stored is not None:  # past the end: the topic was recreated
                store.destroy()
                store = AnswerStore(self._state.partition(partition), self._budget)
            since = self._wall_ms() - self._horizon_ms
            (found,) = self._consumer.offsets_for_times(
                [TopicPartition(self.topic, partition, since)], timeout=BROKER_REQUEST_TIMEOUT_S
            )
            start = high if found.offset < 0 else found.offset
            store.write([], start)  # a restart resumes here even if nothing is read before
        except BaseException:
            store.close()
            raise
        return store, start, "rebuilt"

    def _take_barrier_requests(self) -> None:
        if self._followed != self._wanted:
            return  # a follow is still to apply: its partitions belong in the marks
        self._barriers.take_requests(self._ends)

    def _ends(self) -> dict[int, int]:
        """Each followed partition's high watermark now."""
        return {
            p: self._consumer.get_watermark_offsets(
                TopicPartition(self.topic, p), timeout=BROKER_REQUEST_TIMEOUT_S, cached=False
            )[1]
            for p in self._followed
        }


def _answers(msgs: list[Message]) -> Iterator[tuple[bytes, int, bool]]:
    """(request id, timestamp ms, settles) of each keyed response: it settles its request for
    a DLQ replay when its last ``sb-status`` is a status other than ``failed``."""
    for msg in msgs:
        key = msg.key()
        if not key:
            continue
        status = None
        headers: Any = msg.headers() or ()
        for name, value in headers:
            if name == STATUS:
                status = value
        yield key, msg.timestamp()[1], status is not None and status != _FAILED


def _partition_count(consumer: Consumer, topic: str) -> int:
    metadata = consumer.list_topics(topic, timeout=BROKER_REQUEST_TIMEOUT_S)
    found = metadata.topics.get(topic)
    if found is None or found.error is not None or not found.partitions:
        raise KafkaException(f"topic {topic} has no partitions: run `switchboard topics ensure`")
    return len(found.partitions)


def _wall_ms() -> int:
    return int(time.time() * 1000)
