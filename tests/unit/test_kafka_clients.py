"""The client factories give each kind of client only the passthrough keys it reads: the
producer-only and consumer-only lists are checked against librdkafka itself, which logs a
CONFWARN line for a key of the other kind (no broker needed: the clients only start)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer

from switchboard.core.kafka_clients import (
    CONSUMER_ONLY,
    LIBRDKAFKA_LOGGER,
    PRODUCER_ONLY,
    consumer_config,
    make_admin,
    producer_config,
    reader_config,
)

#: A valid value for every key of both lists (librdkafka refuses a client with a bad one).
VALUES: dict[str, Any] = {
    "acks": "all",
    "batch.num.messages": 5000,
    "batch.size": 500_000,
    "compression.codec": "lz4",
    "compression.level": 1,
    "compression.type": "lz4",
    "delivery.report.only.error": False,
    "delivery.timeout.ms": 60_000,
    "enable.gapless.guarantee": False,
    "enable.idempotence": True,
    "linger.ms": 10,
    "message.send.max.retries": 100,
    "message.timeout.ms": 60_000,
    "partitioner": "consistent_random",
    "queue.buffering.backpressure.threshold": 1,
    "queue.buffering.max.kbytes": 100_000,
    "queue.buffering.max.messages": 100_000,
    "queue.buffering.max.ms": 10,
    "request.required.acks": -1,
    "request.timeout.ms": 30_000,
    "retries": 100,
    "sticky.partitioning.linger.ms": 10,
    "transaction.timeout.ms": 60_000,
    "transactional.id": "test-scope",
    "auto.commit.interval.ms": 1000,
    "auto.offset.reset": "earliest",
    "check.crcs": False,
    "consume.callback.max.messages": 0,
    "coordinator.query.interval.ms": 600_000,
    "enable.auto.commit": True,
    "enable.auto.offset.store": True,
    "enable.partition.eof": False,
    "fetch.error.backoff.ms": 500,
    "fetch.max.bytes": 52_428_800,
    "fetch.message.max.bytes": 1_048_576,
    "fetch.min.bytes": 16_384,
    "fetch.queue.backoff.ms": 1000,
    "fetch.wait.max.ms": 10,
    "heartbeat.interval.ms": 3000,
    "isolation.level": "read_committed",
    "max.partition.fetch.bytes": 1_048_576,
    "max.poll.interval.ms": 300_000,
    "partition.assignment.strategy": "range,roundrobin",
    "queued.max.messages.kbytes": 65_536,
    "queued.min.messages": 100_000,
    "session.timeout.ms": 45_000,
}
#: A key every client reads: it must reach all of them.
SHARED = {"client.id": "scope-test"}
BASE = {"bootstrap.servers": "127.0.0.1:1", **SHARED}


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def confwarn() -> Iterator[Callable[[], list[str]]]:
    """The lines in which librdkafka said it ignores a key for this kind of client (its other
    CONFWARN lines, an experimental key's, are not the question), logged so far."""
    handler = _Lines()
    logger = logging.getLogger(LIBRDKAFKA_LOGGER)
    logger.addHandler(handler)
    old = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield lambda: [line for line in handler.lines if "will be ignored by this" in line]
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)


def _started(kind: str, config: dict[str, Any]) -> None:
    """Start a client of ``kind`` and poll it once, which forwards librdkafka's log lines."""
    if kind == "consumer":
        consumer = Consumer({"group.id": "scope-test", **config})
        consumer.poll(0.2)
        consumer.close()
    else:
        Producer(config).poll(0.2)


def test_the_lists_do_not_overlap() -> None:
    assert not PRODUCER_ONLY & CONSUMER_ONLY
    assert set(VALUES) == PRODUCER_ONLY | CONSUMER_ONLY


@pytest.mark.parametrize(
    ("keys", "kind", "says"),
    [
        (PRODUCER_ONLY, "consumer", "is a producer property"),
        (CONSUMER_ONLY, "producer", "is a consumer property"),
    ],
)
def test_every_listed_key_is_one_librdkafka_ignores_for_the_other_kind(
    keys: frozenset[str], kind: str, says: str, confwarn: Callable[[], list[str]]
) -> None:
    """Each key alone, given to the other kind of client: librdkafka warns that it ignores it
    (a key in the wrong list, or misspelt, would not be warned about, or not accepted)."""
    logger = logging.getLogger(LIBRDKAFKA_LOGGER)
    for key in sorted(keys):
        before = len(confwarn())
        _started(kind, {"bootstrap.servers": "127.0.0.1:1", "logger": logger, key: VALUES[key]})
        warned = confwarn()[before:]
        assert any(says in line for line in warned), (key, warned)


def test_each_factory_leaves_out_the_other_kinds_keys(
    confwarn: Callable[[], list[str]],
) -> None:
    """Every key of both lists as passthrough keys (``SWITCHBOARD_KAFKA_CONFIG``): each
    factory's client starts without a line saying it ignores one, keeps its own kind's keys and the
    shared ones."""
    base = {**BASE, **VALUES}
    del base["transactional.id"]  # a transactional producer needs init_transactions
    producer = producer_config(base)
    consumer = consumer_config(base, "scope-group")
    reader = reader_config(base, "scope")
    assert producer["linger.ms"] == 10 and "fetch.wait.max.ms" not in producer
    assert consumer["fetch.wait.max.ms"] == 10 and "linger.ms" not in consumer
    assert reader["fetch.min.bytes"] == 16_384 and "compression.type" not in reader
    for config in (producer, consumer, reader):
        assert config["client.id"] == "scope-test"
    _started("producer", producer)
    _started("consumer", consumer)
    _started("consumer", reader)
    make_admin(base).poll(0.2)
    assert confwarn() == []
