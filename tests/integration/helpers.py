"""Small helpers for integration tests: produce and read topics on the real broker, and a
failure path for runtimes whose handlers never fail."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from confluent_kafka import Consumer, Message, Producer, TopicPartition

from consumers.runtime import Record
from switchboard.core.admin import end_offsets
from switchboard.core.aio_producer import Outbound
from switchboard.core.kafka_clients import make_admin


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


def topic_end_total(config: dict[str, str], topic: str) -> int:
    """How many records ``topic`` holds now: the sum of its partitions' high watermarks (a
    test's topic, never compacted or trimmed)."""
    consumer = Consumer({**config, "group.id": f"ends-{uuid.uuid4().hex}"})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in partitions
        )
    finally:
        consumer.close()


def committed_offsets(config: dict[str, str], group: str, topic: str, partitions: int) -> list[int]:
    consumer = Consumer({**config, "group.id": group})
    try:
        tps = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        return [tp.offset for tp in tps]
    finally:
        consumer.close()


def topic_bytes(kafka: dict[str, Any], prefix: str) -> dict[str, bytes]:
    """Every record of every topic under ``prefix``, as one blob of raw bytes per topic."""
    admin = make_admin(kafka)
    names = [t for t in admin.list_topics(timeout=10).topics if t.startswith(prefix + ".")]
    blobs: dict[str, bytes] = {}
    consumer = Consumer({**kafka, "group.id": f"switchboard-grep-{uuid.uuid4().hex}"})
    try:
        for topic in names:
            ends = end_offsets(admin, topic)
            chunks: list[bytes] = []
            tps = [TopicPartition(topic, p, 0) for p, end in ends.items() if end > 0]
            want = sum(ends.values())
            if tps:
                consumer.assign(tps)
                deadline = time.monotonic() + 20
                got = 0
                while got < want and time.monotonic() < deadline:
                    for msg in consumer.consume(500, 0.2):
                        if msg.error() is not None:
                            continue
                        got += 1
                        chunks += [msg.key() or b"", msg.value() or b""]
                        for name, value in msg.headers() or []:
                            chunks += [name.encode(), value or b""]
                consumer.unassign()
                assert got >= want, f"read {got} of {want} records of {topic}"
            blobs[f"topic {topic}"] = b"\n".join(chunks)
    finally:
        consumer.close()
    return blobs
