"""Follow every partition of one topic on a background thread, with read-your-writes barriers.

Used by the client (awaiting responses) and by consumers (the answered-request index). No
consumer group: partitions are assigned explicitly, from the end or from a point in time.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from enum import Enum
from typing import Any, Final, cast

from confluent_kafka import (
    OFFSET_END,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from switchboard.core.admin import end_offsets, is_settling
from switchboard.core.budgets import BROKER_REQUEST_TIMEOUT_S, SETTLE_RETRY_PAUSE_S
from switchboard.core.classify import kafka_access_problem
from switchboard.core.errors import ConfigError, KafkaAccessError
from switchboard.core.kafka_clients import make_admin, reader_config

log = logging.getLogger(__name__)

#: How long a new topic's leadership may take to settle before assigning gives up.
SETTLE_BUDGET_S: Final = 20.0
#: How long a just-created topic may take to appear in the metadata with its partitions.
METADATA_BUDGET_S: Final = 15.0
#: The timeout of each broker request made while assigning (metadata, offsets, watermarks).
REQUEST_TIMEOUT_S: Final = 15.0
#: One metadata try while assigning: short, so a refusal (its error callback is served between
#: tries) surfaces in about this long rather than after ``REQUEST_TIMEOUT_S``.
METADATA_TRY_S: Final = 1.0
#: One fetch: at most this many records, waiting at most this long, so barrier requests and
#: ``stop`` are served within about that time.
CONSUME_BATCH: Final = 500
CONSUME_WAIT_S: Final = 0.05
#: librdkafka's own fetch wait: a tail serves read-your-writes barriers, so keep it short.
FETCH_WAIT_MAX_MS: Final = 10
#: And the broker answers a tail's fetch early only with this much: a tail that keeps up would
#: otherwise fetch every few records, and on this machine the broker spends ~170 µs of CPU on
#: each fetch request (five caught-up consumers at 3,000 records/s: 3,257 fetches/s, +0.56 of
#: a core; with 16 KiB or 10 ms: 446/s, +0.13).
FETCH_MIN_BYTES: Final = 64 * 1024
#: How long librdkafka waits before fetching a partition again once its prefetch queue was
#: over its bounds (``queued.min.messages``, ``queued.max.messages.kbytes``). Its default, 1 s,
#: stalls a tail that reads faster than it fetches every time the queue fills: a catch-up of
#: 600,000 records read 176k a second with it and 881k with 10 ms, and the answered index's
#: rebuild (smaller bounds) 24-26k against 140-220k (benchmarks/README.md, G13).
FETCH_QUEUE_BACKOFF_MS: Final = 10
#: How long ``stop`` waits for the tail's thread before closing the consumer.
STOP_JOIN_TIMEOUT_S: Final = 5.0


class Barriers:
    """The read-your-writes barriers of a reader thread (a ``TopicTail``, the answered index).

    Each barrier is a future, resolved once the reader's next offsets reach the high watermarks
    its partitions had when the reader took it up. ``request`` may be called from any thread;
    ``take_requests``, ``resolve`` and ``fail`` run on the reader's.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: list[concurrent.futures.Future[None]] = []
        self._waiting: list[tuple[dict[int, int], concurrent.futures.Future[None]]] = []
        #: Kafka refused the reader (credentials, TLS, ACL): every barrier fails with it.
        self.refused: KafkaAccessError | None = None

    def request(self) -> concurrent.futures.Future[None]:
        """A new barrier (failed at once when the reader was refused)."""
        future: concurrent.futures.Future[None] = concurrent.futures.Future()
        if self.refused is not None:
            future.set_exception(self.refused)
            return future
        with self._lock:
            self._requests.append(future)
        return future

    def take_requests(self, ends: Callable[[], dict[int, int]]) -> None:
        """Mark each barrier requested since the last call with ``ends()`` (partition -> its
        high watermark now)."""
        with self._lock:
            requests, self._requests = self._requests, []
        for future in requests:
            self._waiting.append((ends(), future))

    @property
    def waiting(self) -> bool:
        """Whether a barrier waits to be resolved (the reader's thread reads it)."""
        return bool(self._waiting)

    def resolve(self, next_offsets: Mapping[int, int]) -> None:
        """Resolve each barrier whose every partition is read up to its mark."""
        if not self._waiting:
            return
        still = []
        for marks, future in self._waiting:
            # A partition no longer read (dropped by a revoke since the mark) holds no barrier:
            # its absence from ``next_offsets`` counts as read, else the barrier never resolves.
            if all(next_offsets.get(p, high) >= high for p, high in marks.items()):
                future.set_result(None)
            else:
                still.append((marks, future))
        self._waiting = still

    def fail(self, exc: KafkaAccessError) -> None:
        """Fail every waiting and future barrier with ``exc`` (the reader has stopped)."""
        self.refused = exc
        with self._lock:
            requests, self._requests = self._requests, []
        for future in [*requests, *(f for _marks, f in self._waiting)]:
            if not future.done():
                future.set_exception(exc)
        self._waiting = []


def past_markers(consumer: Consumer, topic: str, next_offsets: dict[int, int]) -> dict[int, int]:
    """``next_offsets`` (partition -> the offset after the last record read) moved on to the
    consumer's positions: a transaction's commit or abort marker, and an aborted transaction's
    records, take offsets a ``read_committed`` reader never gets as records, so after the last
    reply written in a transaction (``switchboard.core.atomic``) the offset after the last
    record read stays below the high watermark for good. The position is local (no broker
    request); one not known yet (nothing fetched) leaves the offset as it is."""
    positions = consumer.position([TopicPartition(topic, p) for p in next_offsets])
    moved = dict(next_offsets)
    for tp in positions:
        if tp.offset > moved.get(tp.partition, -1):
            moved[tp.partition] = tp.offset
    return moved


def fetch(
    consumer: Consumer, barriers: Barriers, topic: str, size: int = CONSUME_BATCH
) -> list[Message] | None:
    """One fetch of a reader thread: its records, without partition-end events (other errors
    are logged). None when the reader must stop: its consumer was closed under it, or Kafka
    refused it (raised by the error callback: every barrier then fails with the refusal)."""
    try:
        batch = consumer.consume(size, CONSUME_WAIT_S)
    except RuntimeError:  # closed under us during stop()
        return None
    except KafkaAccessError as exc:
        log.error("tail %s stopped: %s", topic, exc)
        barriers.fail(exc)
        return None
    records = []
    for msg in batch:
        err = msg.error()
        if err is None:
            records.append(msg)
        elif err.code() != KafkaError._PARTITION_EOF:
            log.warning("tail %s: %s", topic, err)
    return records


class TopicTail:
    """Reads ``topic`` from ``since_ms`` (a timestamp) or from its end, calling ``on_message``.

    ``on_message`` runs on the tail's thread. ``barrier()`` returns a future that resolves once
    every record that was in the topic when it was called has been passed to ``on_message``.
    """

    def __init__(
        self,
        config: dict[str, Any],
        topic: str,
        on_message: Callable[[Message], None],
        *,
        since_ms: int | None = None,
        name: str = "tail",
    ) -> None:
        self._topic = topic
        self._on_message = on_message
        self._consumer = Consumer(
            reader_config(
                config,
                "tail",
                **{
                    "fetch.wait.max.ms": FETCH_WAIT_MAX_MS,
                    "fetch.min.bytes": FETCH_MIN_BYTES,
                    "fetch.queue.backoff.ms": FETCH_QUEUE_BACKOFF_MS,
                },
            )
        )
        self._next: dict[int, int] = {}
        self._barriers = Barriers()
        self._running = True
        try:
            self._assign(since_ms)
        except BaseException:
            # A refusal (credentials, TLS) or a missing topic: close the consumer now, not in
            # its finaliser, which may run while the interpreter shuts down (a CI run saw
            # `switchboard submit` print the refusal and then die of SIGSEGV on exit).
            self._consumer.close()
            raise
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _assign(self, since_ms: int | None) -> None:
        deadline = time.monotonic() + SETTLE_BUDGET_S
        while True:
            try:
                return self._try_assign(since_ms)
            except KafkaException as exc:
                # Leadership of a just-created topic may still be settling.
                err = exc.args[0]
                if not is_settling(err) or time.monotonic() > deadline:
                    self._consumer.poll(0)  # a refusal behind the failure is raised instead
                    raise
                time.sleep(SETTLE_RETRY_PAUSE_S)

    def _try_assign(self, since_ms: int | None) -> None:
        # A topic created a moment ago may not be in every broker's metadata yet: give it time.
        deadline = time.monotonic() + METADATA_BUDGET_S
        while True:
            try:
                metadata = self._consumer.list_topics(self._topic, timeout=METADATA_TRY_S)
            except KafkaException:
                # "Transport failure" says nothing: serving the client's callbacks raises the
                # refusal behind it (credentials, TLS), when there is one.
                self._consumer.poll(0)
                if time.monotonic() > deadline:
                    raise
                continue
            topic_md = metadata.topics.get(self._topic)
            if topic_md is not None and topic_md.error is not None:
                denied = kafka_access_problem(
                    topic_md.error, operation="Describe", resource=self._topic
                )
                if denied is not None:  # not "does not exist": this identity may not see it
                    raise KafkaAccessError(denied)
            ready = topic_md is not None and topic_md.error is None and topic_md.partitions
            if ready or time.monotonic() > deadline:
                break
            time.sleep(SETTLE_RETRY_PAUSE_S)
        if not ready:
            raise ConfigError(
                f"topic {self._topic} does not exist: run `switchboard topics ensure`"
            )
        assert topic_md is not None
        parts = sorted(topic_md.partitions)
        if since_ms is None:
            starts = [TopicPartition(self._topic, p, OFFSET_END) for p in parts]
        else:
            starts = self._consumer.offsets_for_times(
                [TopicPartition(self._topic, p, since_ms) for p in parts], timeout=REQUEST_TIMEOUT_S
            )
        assignment = []
        for tp in starts:
            _low, high = self._consumer.get_watermark_offsets(
                TopicPartition(self._topic, tp.partition), timeout=REQUEST_TIMEOUT_S
            )
            offset = high if tp.offset < 0 else tp.offset  # -1: nothing that recent: the end
            self._next[tp.partition] = offset
            assignment.append(TopicPartition(self._topic, tp.partition, offset))
        self._consumer.assign(assignment)

    def barrier(self) -> concurrent.futures.Future[None]:
        """A future resolved when everything now in the topic has been read."""
        return self._barriers.request()

    def _run(self) -> None:
        while self._running:
            self._barriers.take_requests(self._ends)
            batch = fetch(self._consumer, self._barriers, self._topic)
            if batch is None:
                return
            for msg in batch:
                self._next[cast(int, msg.partition())] = cast(int, msg.offset()) + 1
                try:
                    self._on_message(msg)
                except Exception:  # a bad record must not stop the tail
                    log.exception("tail %s: on_message failed", self._topic)
            if self._barriers.waiting:
                self._barriers.resolve(past_markers(self._consumer, self._topic, self._next))

    def _ends(self) -> dict[int, int]:
        """Each read partition's high watermark, asked of the broker now."""
        marks = {}
        for partition in self._next:
            _low, high = self._consumer.get_watermark_offsets(
                TopicPartition(self._topic, partition),
                timeout=BROKER_REQUEST_TIMEOUT_S,  # each watermark behind a barrier
                cached=False,
            )
            marks[partition] = high
        return marks

    def stop(self) -> None:
        self._running = False
        self._thread.join(timeout=STOP_JOIN_TIMEOUT_S)
        self._consumer.close()


def read_once(
    config: dict[str, Any],
    topic: str,
    on_message: Callable[[Message], None],
    *,
    since_ms: int | None,
    timeout_s: float,
    name: str,
) -> None:
    """Read ``topic`` from ``since_ms`` up to what it holds now, then stop the tail.

    ``on_message`` may also see records that arrive while the read runs. Raises
    ``TimeoutError`` when the read takes longer than ``timeout_s``.
    """
    tail = TopicTail(config, topic, on_message, since_ms=since_ms, name=name)
    try:
        tail.barrier().result(timeout=timeout_s)
    finally:
        tail.stop()


def read_to_end(
    config: dict[str, Any],
    topic: str,
    on_message: Callable[[Message], None],
    *,
    since_ms: int | None = None,
    timeout_s: float,
    name: str,
    admin: AdminClient | None = None,
) -> None:
    """Pass every record of ``topic`` from ``since_ms`` (default: its start) below the end
    offsets it has when called to ``on_message``: a bounded scan, nothing newer.

    ``admin`` (an ``AdminClient``) is made from ``config`` when not given. Raises
    ``TimeoutError`` when the read takes longer than ``timeout_s``.
    """
    ends = end_offsets(admin or make_admin(config), topic, timeout_s=timeout_s)
    if not any(ends.values()):
        return

    def below_end(msg: Message) -> None:
        # The tail keeps reading past the barrier: records newer than the scan are not in it.
        if (msg.offset() or 0) < ends.get(msg.partition() or 0, 0):
            on_message(msg)

    read_once(config, topic, below_end, since_ms=since_ms or 0, timeout_s=timeout_s, name=name)


class Unreadable(Enum):
    """What :func:`json_record` reads where a record of a compacted topic holds no JSON."""

    TOMBSTONE = "tombstone"
    """No value: the key is deleted."""
    NOT_JSON = "not_json"
    """A value that does not parse as JSON."""


def json_record(msg: Message) -> tuple[str, Any]:
    """The key (text) and the parsed JSON value of one record of a compacted topic (a ledger,
    the status topic): the value is ``Unreadable.TOMBSTONE`` for a deletion and
    ``Unreadable.NOT_JSON`` for bytes that do not parse."""
    key = (msg.key() or b"").decode("utf-8", "replace")
    value = msg.value()
    if value is None:
        return key, Unreadable.TOMBSTONE
    try:
        return key, json.loads(value)
    except ValueError:
        return key, Unreadable.NOT_JSON
