"""What a handler reads from a record, and where the runtime's outputs go: two small protocols.

Handlers, outcomes and the answered index read a record only through ``Record`` (the methods of
``confluent_kafka.Message`` they use, as quix-streams' ``SuccessfulConfluentKafkaMessageProto``
does), so they run unchanged on a real consumer's messages and on ``MemoryRecord`` in unit
tests. ``Sink`` is the part of ``AsyncProducer`` that outcomes and the runtime use, so the
in-memory runtime can collect outputs per topic instead of producing them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from confluent_kafka import KafkaError

from switchboard.core.aio_producer import BatchDone, DeliveryBatch, DeliveryCallback, Outbound
from switchboard.core.headers import RawHeaders

#: librdkafka's timestamp types: (type, milliseconds); type 0 means "not available".
TIMESTAMP_NOT_AVAILABLE = 0
TIMESTAMP_CREATE_TIME = 1


class Record(Protocol):
    """One consumed record, as a handler sees it (``confluent_kafka.Message`` is one)."""

    def topic(self) -> str | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...
    def key(self) -> bytes | None: ...
    def value(self) -> bytes | None: ...
    def headers(self) -> RawHeaders: ...
    def timestamp(self) -> tuple[int, int]: ...
    def error(self) -> KafkaError | None: ...


class Delivered(Protocol):
    """Where a produced record landed (the delivery report's message)."""

    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...


class Sink(Protocol):
    """Delivers outputs: ``AsyncProducer``, or ``MemorySink`` in unit tests."""

    def produce(self, record: Outbound, callback: DeliveryCallback) -> None: ...
    def batch(self, done: BatchDone) -> DeliveryBatch: ...
    def send(self, record: Outbound) -> Awaitable[Delivered]: ...
    async def send_all(self, records: Sequence[Outbound]) -> Sequence[Delivered]: ...
    def send_atomic(self, records: Sequence[Outbound]) -> Awaitable[None]: ...
    def serve_reports(self) -> None: ...


@dataclass(frozen=True, slots=True)
class MemoryRecord:
    """A ``Record`` built in memory: what the in-memory runtime feeds and collects."""

    topic_: str
    value_: bytes | None
    key_: bytes | None = None
    headers_: list[tuple[str, bytes | None]] = field(default_factory=list)
    partition_: int = 0
    offset_: int = 0
    timestamp_ms: int | None = None

    def topic(self) -> str:
        return self.topic_

    def partition(self) -> int:
        return self.partition_

    def offset(self) -> int:
        return self.offset_

    def key(self) -> bytes | None:
        return self.key_

    def value(self) -> bytes | None:
        return self.value_

    def headers(self) -> list[tuple[str, bytes | None]] | None:
        return self.headers_ or None  # as librdkafka: no headers reads None, not []

    def timestamp(self) -> tuple[int, int]:
        if self.timestamp_ms is None:
            return (TIMESTAMP_NOT_AVAILABLE, 0)
        return (TIMESTAMP_CREATE_TIME, self.timestamp_ms)

    def error(self) -> KafkaError | None:
        return None
