"""An asyncio face on confluent-kafka's Producer: ``await send(...)`` resolves on delivery.

librdkafka batches and retries on its own threads; a small poller thread serves delivery reports
and hands them to the event loop in batches (one wake-up per poll, not one per record).
Nothing on the hot path flushes.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, cast

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from switchboard.core.errors import KafkaAccessError
from switchboard.core.kafka_clients import with_logger

if TYPE_CHECKING:  # atomic imports this module: the type only
    from switchboard.core.atomic import AtomicWriter

log = logging.getLogger(__name__)

#: How long one poll of delivery reports blocks: the latency between a delivery and its callback
#: when the poller is idle, and the pause before retrying a send into a full local queue.
POLL_INTERVAL_S: Final = 0.05
#: Budget for records still queued when a producer is flushed or closed.
FLUSH_TIMEOUT_S: Final = 30.0
#: How long ``close`` waits for the poller thread (a daemon: it never blocks the exit).
POLLER_JOIN_TIMEOUT_S: Final = 1.0

Headers = Sequence[tuple[str, bytes | str | None]]
#: Called on the event loop when a record's delivery is settled: (error or None, message).
DeliveryCallback = Callable[[KafkaError | None, Message], None]


@dataclass(frozen=True, slots=True)
class Outbound:
    """One record to produce: the unit every handler returns and the runtime delivers."""

    topic: str
    value: bytes
    key: bytes | None = None
    headers: Headers = field(default_factory=tuple)


class DeliveryError(KafkaException):
    """Raised when librdkafka gives up on a record (after its own retries and timeout)."""


#: Called once when every record of a ``DeliveryBatch`` is settled: the (error, message) of
#: those that failed (empty when all were delivered).
BatchDone = Callable[[list[tuple[KafkaError, Message]]], None]


class DeliveryBatch:
    """One delivery accounting for many records: ``add`` produces each with one shared
    callback, ``seal`` says none follow, and ``done`` runs once on the event loop when all
    of them are settled.

    The per-record callback runs on whichever thread polls the producer and only appends
    to a deque and compares its length (both atomic under the GIL), so no record costs a
    closure, a future or an event-loop callback of its own. ``settle`` hands the finished
    batch to the event loop (the producer's drain).
    """

    __slots__ = ("_acks", "_added", "_done", "_failed", "_fired", "_produce", "_settle", "_total")

    def __init__(
        self,
        produce: Callable[[Outbound, DeliveryCallback], None],
        settle: Callable[[DeliveryBatch], None],
        done: BatchDone,
    ) -> None:
        self._produce = produce
        self._settle = settle
        self._done = done
        self._acks: deque[None] = deque()
        self._failed: list[tuple[KafkaError, Message]] = []
        self._added = 0
        self._total = -1  # unknown until sealed
        self._fired = itertools.count()

    def add(self, record: Outbound) -> None:
        """Produce ``record`` as part of this batch (on the event loop); raises what
        ``produce`` raises (then the record is not part of the batch)."""
        self._produce(record, self._delivered)
        self._added += 1

    def seal(self) -> None:
        """No more records: ``done`` runs once every added one is settled (at once if they
        are already, or if there are none)."""
        self._total = self._added
        if len(self._acks) == self._total:
            self._fire()

    def _delivered(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self._failed.append((err, msg))
        acks = self._acks
        acks.append(None)
        if len(acks) == self._total:
            self._fire()

    def _fire(self) -> None:
        # The last acknowledgement and ``seal`` may both see the batch complete: once only.
        if next(self._fired) == 0:
            self._settle(self)

    def run_done(self) -> None:
        """On the event loop: tell the owner how the batch went."""
        self._done(self._failed)


class AsyncProducer:
    """Thread-safe async producer; one per process is enough (librdkafka multiplexes)."""

    def __init__(self, config: dict[str, Any], *, atomic: AtomicWriter | None = None) -> None:
        """``atomic``: writes ``send_atomic``'s groups in transactions (without one, a group's
        records are sent one after the other, each once the one before it is delivered)."""
        self._producer = Producer(with_logger(config))
        self._atomic = atomic
        self._running = True
        self._loop: asyncio.AbstractEventLoop | None = None
        # Delivery reports waiting for the event loop; filled on whichever thread polls.
        self._settled: deque[tuple[DeliveryCallback, KafkaError | None, Message]] = deque()
        self._drain_scheduled = False
        #: Kafka refused this producer (credentials, TLS): ``produce`` raises it from then on.
        self.refused: KafkaAccessError | None = None
        self._poller = threading.Thread(
            target=self._poll_forever, name="producer-poll", daemon=True
        )
        self._poller.start()

    @property
    def transactional_id(self) -> str | None:
        """The transactional id ``send_atomic`` writes under (None without an atomic writer)."""
        return self._atomic.transactional_id if self._atomic is not None else None

    def learn_topics(self, topics: Iterable[str], timeout_s: float = 5.0) -> None:
        """Fetch these topics' metadata now (blocking), so the first record to each does not
        wait for a metadata round trip behind the records already queued (a router's first
        batch job had stalled interactive routing ~100-400 ms this way)."""
        try:
            # Only topics that exist: asking for a missing one would have the broker create it
            # with its default partition count (a producer's metadata request may auto-create).
            existing = self._producer.list_topics(timeout=timeout_s).topics
            for topic in topics:
                if topic in existing:
                    self._producer.list_topics(topic, timeout=timeout_s)
        except KafkaException as exc:  # learnt at the first send instead
            log.debug("metadata: %s", exc)

    def _poll_forever(self) -> None:
        while self._running:
            self._poll(POLL_INTERVAL_S)
            self._wake_loop()

    def _poll(self, timeout_s: float) -> None:
        """Serve delivery reports for up to ``timeout_s``, on whichever thread calls."""
        try:
            self._producer.poll(timeout_s)
        except KafkaAccessError as exc:  # from the error callback: keep serving reports
            self.refused = exc

    def serve_reports(self) -> None:
        """On the event loop: serve the delivery reports librdkafka holds now, and run the
        callbacks of those settled (the poller thread serves the rest meanwhile). Called
        between a consumer's batches, it keeps acknowledgements from waiting behind the GIL:
        a router draining a backlog paused for them 9-13 times a 60k-record drain at
        20-32k msg/s; with them served here too, 6 times at 35-57k (2026-12-02; 3 times at
        83-87k with the runtime's pause at 8 batches, ``FAST_PAUSE_BATCHES``)."""
        self._poll(0)
        if self._settled:
            self._drain()

    def _wake_loop(self) -> None:
        loop = self._loop
        if self._settled and not self._drain_scheduled and loop is not None:
            self._drain_scheduled = True
            try:
                loop.call_soon_threadsafe(self._drain)
            except RuntimeError:  # the loop closed under us: nobody is waiting any more
                self._drain_scheduled = False

    def _drain(self) -> None:
        """On the event loop: run the callbacks of every settled delivery."""
        self._drain_scheduled = False
        settled = self._settled
        while settled:
            callback, err, msg = settled.popleft()
            callback(err, msg)

    def produce(self, record: Outbound, callback: DeliveryCallback) -> None:
        """Produce ``record``; ``callback`` runs on the event loop once it is settled.

        The cheap path for the runtime: no future per record.
        """
        if self.refused is not None:
            raise self.refused
        settled = self._settled

        def on_delivery(err: KafkaError | None, msg: Message) -> None:
            settled.append((callback, err, msg))  # on the poller thread; deque is thread-safe

        self._produce(record, on_delivery)

    def batch(self, done: BatchDone) -> DeliveryBatch:
        """A ``DeliveryBatch`` on this producer: ``done`` runs on the event loop."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return DeliveryBatch(self._produce, self._settle_batch, done)

    def _settle_batch(self, batch: DeliveryBatch) -> None:
        # On the poller thread (or the loop's, when sealed complete): to the loop's drain.
        self._settled.append((_run_batch, None, cast(Message, batch)))
        self._wake_loop()

    def _produce(self, record: Outbound, on_delivery: DeliveryCallback) -> None:
        """``record`` to librdkafka; ``on_delivery`` runs on the thread that polls."""
        if self.refused is not None:
            raise self.refused
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        produce_into(self._producer, record, on_delivery, self._wake_loop)

    def send(self, record: Outbound) -> asyncio.Future[Message]:
        """Produce ``record``; the returned future resolves when the broker has acknowledged it."""
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()

        def settle(err: KafkaError | None, msg: Message) -> None:
            if future.done():
                return
            if err is not None:
                future.set_exception(DeliveryError(err))
            else:
                future.set_result(msg)

        self.produce(record, settle)
        return future

    async def send_all(self, records: Sequence[Outbound]) -> list[Message]:
        """Produce every record and wait until all are delivered (raises the first failure)."""
        if not records:
            return []
        if len(records) == 1:
            return [await self.send(records[0])]
        return list(await asyncio.gather(*(self.send(r) for r in records)))

    def send_atomic(self, records: Sequence[Outbound]) -> asyncio.Future[None]:
        """Deliver ``records`` all or nothing (one Kafka transaction, shared with other groups)
        when this producer has an ``AtomicWriter``; else in order, each once the one before it
        is acknowledged (a crash between two leaves the first only). The future fails with the
        error that left them undelivered; a retry sends the whole group again."""
        if self._atomic is not None:
            return self._atomic.send(records)
        return asyncio.ensure_future(self._send_in_order(records))

    async def _send_in_order(self, records: Sequence[Outbound]) -> None:
        for record in records:
            await self.send(record)

    def flush(self, timeout_s: float = FLUSH_TIMEOUT_S) -> int:
        """Wait for everything queued; returns how many records are still undelivered."""
        remaining = int(self._producer.flush(timeout_s))
        self._wake_loop()
        return remaining

    def close(self, timeout_s: float = FLUSH_TIMEOUT_S) -> int:
        if self._atomic is not None:
            self._atomic.close(timeout_s)
        remaining = self.flush(timeout_s)
        self._running = False
        self._poller.join(timeout=POLLER_JOIN_TIMEOUT_S)
        return remaining


def produce_into(
    producer: Producer,
    record: Outbound,
    on_delivery: DeliveryCallback,
    after_full: Callable[[], None] | None = None,
) -> None:
    """``record`` to ``producer``'s queue; while the queue is full, poll (delivery reports
    drain it, ``after_full`` runs after each such poll) and try again."""
    # Any, not a typing.cast: a cast's subscripted type is built on every call, per record.
    headers: Any = record.headers
    if headers and type(headers) is not list:
        headers = list(headers)  # librdkafka takes a list (or dict); most already are
    while True:
        try:
            producer.produce(
                record.topic,
                record.value,
                record.key,
                headers=headers or None,
                on_delivery=on_delivery,
            )
            return
        except BufferError:
            producer.poll(POLL_INTERVAL_S)
            if after_full is not None:
                after_full()


def _run_batch(_err: KafkaError | None, batch: Any) -> None:
    """The drain's callback for a settled ``DeliveryBatch`` (passed where a message goes)."""
    batch.run_done()
