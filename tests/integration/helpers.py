"""Small helpers for integration tests: produce and read topics on the real broker, and a
failure path for runtimes whose handlers never fail."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Sequence

from confluent_kafka import Consumer, Message, Producer, TopicPartition

from consumers.runtime import Record
from switchboard.core.aio_producer import Outbound


class Unexpected:
    """A failure path for handlers that never fail: any failure fails the test."""

    def expected(self, exc: BaseException) -> bool:
        return False

    async def resolve(self, msg: Record, exc: BaseException) -> Sequence[Outbound]:
        raise AssertionError(f"unexpected failure: {exc!r}")


def produce_all(
    config: dict[str, str], topic: str, records: Iterable[tuple[bytes | None, bytes]]
) -> int:
    producer = Producer({**config, "linger.ms": 5})
    count = 0
    for key, value in records:
        producer.produce(topic, value, key)
        producer.poll(0)
        count += 1
    assert producer.flush(30) == 0
    return count


def read_topic(
    config: dict[str, str],
    topic: str,
    *,
    until: Callable[[list[Message]], bool],
    timeout_s: float = 60.0,
) -> list[Message]:
    """Read ``topic`` from the beginning until ``until(messages)`` holds or the timeout passes."""
    consumer = Consumer(
        {
            **config,
            "group.id": f"reader-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    out: list[Message] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and not until(out):
            for msg in consumer.consume(500, 0.2):
                if msg.error() is None:
                    out.append(msg)
    finally:
        consumer.close()
    return out


def committed_offsets(config: dict[str, str], group: str, topic: str, partitions: int) -> list[int]:
    consumer = Consumer({**config, "group.id": group})
    try:
        tps = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        return [tp.offset for tp in tps]
    finally:
        consumer.close()
