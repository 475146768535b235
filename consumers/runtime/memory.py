"""The runtime in memory: feed records to a handler, collect what it writes, no broker.

``MemoryRuntime`` runs a handler as ``ConsumerRuntime`` does (the fast path for a list, a task's
await for an awaitable) with the same ``FailureStrategy`` for whatever it raises, and the same
delivery rule: an output that can never be delivered takes the failure path once.
``MemorySink`` stands in for the producer, for the runtime and for ``Outcomes`` alike: it keeps
every record per topic, each at the next offset, as a broker would. Faststream's
``TestKafkaBroker`` is the model: the handlers under test are the production ones.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Final, cast

from confluent_kafka import KafkaError, KafkaException, Message

from consumers.runtime.failures import FailurePath
from consumers.runtime.loop import TP, Context, Handler, RunStats
from consumers.runtime.message import MemoryRecord
from consumers.runtime.observe import observed
from switchboard.core.aio_producer import (
    BatchDone,
    DeliveryBatch,
    DeliveryCallback,
    DeliveryError,
    Outbound,
)
from switchboard.core.classify import classify_kafka
from switchboard.core.errors import ErrorClass, ProcessStop

#: Transient delivery failures the in-memory runtime retries before it gives up (the real one
#: retries forever, holding the offset).
MAX_DELIVERY_RETRIES: Final = 3

#: Decides whether the sink refuses a record: the error to fail its delivery with, or None.
Refusal = Callable[[Outbound], KafkaError | None]


class MemorySink:
    """Every delivered record, per topic, in order; ``refuse`` makes chosen deliveries fail."""

    def __init__(self, refuse: Refusal | None = None) -> None:
        self.refuse = refuse
        self.topics: defaultdict[str, list[MemoryRecord]] = defaultdict(list)

    def records(self, topic: str) -> list[MemoryRecord]:
        """What was delivered to ``topic`` (empty if nothing)."""
        return list(self.topics.get(topic, ()))

    def _deliver(self, record: Outbound) -> MemoryRecord:
        error = self.refuse(record) if self.refuse is not None else None
        if error is not None:
            raise DeliveryError(error)
        log = self.topics[record.topic]
        delivered = MemoryRecord(
            record.topic,
            record.value,
            record.key,
            [(k, v if isinstance(v, bytes | None) else v.encode()) for k, v in record.headers],
            offset_=len(log),
            timestamp_ms=int(time.time() * 1000),
        )
        log.append(delivered)
        return delivered

    def produce(self, record: Outbound, callback: DeliveryCallback) -> None:
        try:
            delivered = self._deliver(record)
        except DeliveryError as exc:
            callback(exc.args[0], cast(Message, None))
        else:
            callback(None, cast(Message, delivered))

    def batch(self, done: BatchDone) -> DeliveryBatch:
        """As ``AsyncProducer.batch``: each record is delivered at once, ``done`` runs on the
        event loop's next turn."""
        loop = asyncio.get_running_loop()

        def settle(batch: DeliveryBatch) -> None:
            loop.call_soon(batch.run_done)

        return DeliveryBatch(self.produce, settle, done)

    def send(self, record: Outbound) -> asyncio.Future[MemoryRecord]:
        future: asyncio.Future[MemoryRecord] = asyncio.get_running_loop().create_future()
        try:
            future.set_result(self._deliver(record))
        except DeliveryError as exc:
            future.set_exception(exc)
        return future

    async def send_all(self, records: Sequence[Outbound]) -> list[MemoryRecord]:
        """Deliver every record; raises the first failure (the others are delivered, as with
        the real producer's concurrent sends)."""
        futures = [self.send(r) for r in records]
        return list(await asyncio.gather(*futures))

    async def send_atomic(self, records: Sequence[Outbound]) -> None:
        """As a transaction: every record delivered, or (the first refusal raised) none."""
        for record in records:
            error = self.refuse(record) if self.refuse is not None else None
            if error is not None:
                raise DeliveryError(error)
        for record in records:
            self._deliver(record)

    def serve_reports(self) -> None:
        """Nothing to serve: a record's delivery is settled when it is produced."""


class MemoryRuntime:
    """One handler and its failure strategy over records fed by hand."""

    def __init__(
        self, handler: Handler, failures: FailurePath, sink: MemorySink | None = None
    ) -> None:
        # The runtime's tracing and log-context hook, as ``ConsumerRuntime`` installs it.
        handler, failures = observed(handler, failures)
        self._handler = handler
        self._failures = failures
        self.sink = sink if sink is not None else MemorySink()
        self.stats = RunStats()
        #: How many records the handler answered synchronously (the real runtime's fast path).
        self.fast_path = 0
        self._parts: dict[TP, Context] = {}
        self._next_offset: defaultdict[TP, int] = defaultdict(int)

    def context(self, topic: str, partition: int = 0) -> Context:
        """The partition's context (assigned when first used)."""
        ctx = self._parts.get((topic, partition))
        if ctx is None:
            ctx = self._parts[(topic, partition)] = Context(topic, partition, time.monotonic())
        return ctx

    async def feed(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None = None,
        headers: Sequence[tuple[str, bytes | None]] = (),
        partition: int = 0,
        timestamp_ms: int | None = None,
    ) -> list[Outbound]:
        """Handle one record at the partition's next offset; returns what was delivered for it."""
        offset = self._next_offset[(topic, partition)]
        self._next_offset[(topic, partition)] = offset + 1
        record = MemoryRecord(
            topic, value, key, list(headers), partition, offset, timestamp_ms or _now_ms()
        )
        return await self.handle(record)

    async def handle(self, record: MemoryRecord) -> list[Outbound]:
        """Run the handler on ``record`` (the failure strategy if it raises), then deliver."""
        ctx = self.context(record.topic(), record.partition())
        self.stats.received += 1
        try:
            result = self._handler(record, ctx)
            if type(result) is list or type(result) is tuple or not inspect.isawaitable(result):
                self.fast_path += 1
                outputs = list(cast(Sequence[Outbound], result))
            else:
                outputs = list(await result)
        except (asyncio.CancelledError, ProcessStop):
            raise  # a stop ends the run with the record undone, as the real runtime's does
        except Exception as exc:
            if self._failures.expected(exc):
                self.stats.failures += 1
            else:
                self.stats.handler_errors += 1
            outputs = list(await self._failures.resolve(record, exc))
        outputs = await self._deliver(record, outputs)
        self.stats.completed += 1
        return outputs

    async def _deliver(self, record: MemoryRecord, outputs: list[Outbound]) -> list[Outbound]:
        replaced = False
        while True:
            try:
                if len(outputs) > 1:  # as the real runtime: a group is written all or nothing
                    await self.sink.send_atomic(outputs)
                else:
                    await self.sink.send_all(outputs)
                return outputs
            except KafkaException as exc:
                permanent = classify_kafka(exc).error_class is ErrorClass.PERMANENT
                if permanent and not replaced:
                    replaced = True  # as the real runtime: the failure path once
                    outputs = list(await self._failures.resolve(record, exc))
                    continue
                self.stats.delivery_retries += 1
                if self.stats.delivery_retries > MAX_DELIVERY_RETRIES:
                    raise


def _now_ms() -> int:
    return int(time.time() * 1000)
