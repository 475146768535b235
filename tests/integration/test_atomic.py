"""The atomic writer on the real broker: groups written all or nothing, many per transaction; a
process killed before its commit leaves nothing visible, and its successor aborts it at once;
a group the producer refuses fails alone."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from prometheus_client import REGISTRY

from switchboard.core.aio_producer import AsyncProducer, Outbound
from switchboard.core.atomic import TRANSACTION_TIMEOUT_MS, AtomicWriter
from switchboard.core.kafka_clients import producer_config
from switchboard.core.tail import TopicTail

from .helpers import read_topic

pytestmark = pytest.mark.integration


def _pair(ledger: str, reply: str, i: int, tag: str = "") -> list[Outbound]:
    key = f"r{i}".encode()
    return [
        Outbound(ledger, f"copy{tag}-{i}".encode(), key),
        Outbound(reply, f"reply{tag}-{i}".encode(), key),
    ]


def _transactions(outcome: str) -> float:
    value = REGISTRY.get_sample_value("switchboard_reply_transactions_total", {"outcome": outcome})
    return value or 0.0


def _values(config: dict[str, str], topic: str, n: int, **extra: str) -> list[bytes]:
    got = read_topic({**config, **extra}, topic, until=lambda m: len(m) >= n, timeout_s=20)
    return sorted(m.value() for m in got)


def test_groups_are_written_together_many_to_a_transaction(
    kafka_config: dict[str, str], make_topic: Callable[..., str]
) -> None:
    """300 pairs sent at once: each lands on both topics once, in far fewer transactions."""
    ledger, reply = make_topic("ledger", 3), make_topic("reply", 2)
    writer = AtomicWriter(producer_config(kafka_config), f"test.txn.{uuid.uuid4().hex}")
    committed_before = _transactions("committed")

    async def main() -> None:
        await asyncio.gather(*(writer.send(_pair(ledger, reply, i)) for i in range(300)))

    try:
        asyncio.run(main())
    finally:
        writer.close()
    assert _values(kafka_config, ledger, 300) == sorted(f"copy-{i}".encode() for i in range(300))
    assert _values(kafka_config, reply, 300) == sorted(f"reply-{i}".encode() for i in range(300))
    assert 1 <= writer.committed <= 100, writer.committed
    assert _transactions("committed") - committed_before == writer.committed  # the metric
    assert writer.aborted == 0


KILLED_MID_TRANSACTION = textwrap.dedent(
    """
    import os, sys
    from confluent_kafka import Producer
    config, tid, ledger, reply = eval(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    p = Producer({**config, "transactional.id": tid, "transaction.timeout.ms": 60000})
    p.init_transactions(30)
    p.begin_transaction()
    for i in range(5):
        p.produce(ledger, b"copy-killed-%d" % i, b"k%d" % i)
    assert p.flush(30) == 0  # the copies are in the log, their transaction open
    os._exit(0)  # dies before the reply and the commit, like a SIGKILL between them
    """
)


def test_a_transaction_killed_before_its_commit_stays_invisible_and_is_aborted_at_once(
    kafka_config: dict[str, str], make_topic: Callable[..., str]
) -> None:
    """A process writes five ledger copies in a transaction and dies before the replies and
    the commit (its coordinator would keep it open for a minute). Readers never see those
    copies; the next instance with the same transactional id fences it and aborts it at
    once, so its own group is readable within seconds, not after the timeout."""
    ledger, reply = make_topic("ledger"), make_topic("reply")
    tid = f"test.txn.{uuid.uuid4().hex}"
    child = subprocess.run(
        [sys.executable, "-c", KILLED_MID_TRANSACTION, repr(kafka_config), tid, ledger, reply],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert child.returncode == 0, child.stderr
    # The killed copies did reach the log (this test would prove nothing otherwise).
    uncommitted = _values(kafka_config, ledger, 5, **{"isolation.level": "read_uncommitted"})
    assert uncommitted == [b"copy-killed-%d" % i for i in range(5)]

    writer = AtomicWriter(producer_config(kafka_config), tid)
    began = time.monotonic()

    async def main() -> None:
        await writer.send(_pair(ledger, reply, 1))

    try:
        asyncio.run(main())
    finally:
        writer.close()
    got = read_topic(
        kafka_config, ledger, until=lambda m: any(x.value() == b"copy-1" for x in m), timeout_s=30
    )
    took = time.monotonic() - began
    assert [m.value() for m in got] == [b"copy-1"]  # read_committed: the killed ones never
    assert took < TRANSACTION_TIMEOUT_MS / 1000 / 2, took  # aborted by the fence, not a timeout
    assert _values(kafka_config, reply, 1) == [b"reply-1"]


def test_a_group_the_producer_refuses_fails_alone(
    kafka_config: dict[str, str], make_topic: Callable[..., str]
) -> None:
    """A group whose second record is too large for the producer, among good groups: it
    raises, its first record is never visible, and every other group is delivered."""
    ledger, reply = make_topic("ledger"), make_topic("reply")
    config = producer_config({**kafka_config, "message.max.bytes": 100_000})
    producer = AsyncProducer(config, atomic=AtomicWriter(config, f"test.txn.{uuid.uuid4().hex}"))
    too_large = [Outbound(ledger, b"copy-bad", b"bad"), Outbound(reply, b"x" * 200_000, b"bad")]

    async def main() -> list[BaseException | None]:
        sends = [producer.send_atomic(_pair(ledger, reply, i)) for i in range(20)]
        sends.insert(10, producer.send_atomic(too_large))
        return await asyncio.gather(*sends, return_exceptions=True)

    try:
        results = asyncio.run(main())
    finally:
        producer.close()
    assert isinstance(results[10], KafkaException), results[10]
    assert [r for i, r in enumerate(results) if i != 10] == [None] * 20
    assert _values(kafka_config, ledger, 20) == sorted(f"copy-{i}".encode() for i in range(20))
    assert _values(kafka_config, reply, 20) == sorted(f"reply-{i}".encode() for i in range(20))


def test_a_tail_barrier_resolves_past_commit_and_abort_markers(
    kafka_config: dict[str, str], make_topic: Callable[..., str]
) -> None:
    """A topic whose last offsets are a transaction's commit marker, then an aborted
    transaction: a tail's barrier still resolves (the offset after the last record read stays
    below the high watermark for good), having seen only the committed records."""
    topic = make_topic("tail", 2)
    tid = f"test.txn.{uuid.uuid4().hex}"
    producer = Producer(producer_config({**kafka_config, "transactional.id": tid}))
    producer.init_transactions(30)
    producer.begin_transaction()
    for i in range(6):
        producer.produce(topic, b"kept-%d" % i, b"k%d" % i)
    producer.commit_transaction(30)
    seen: list[bytes] = []
    tail = TopicTail(kafka_config, topic, lambda m: seen.append(m.value() or b""), since_ms=0)
    try:
        tail.barrier().result(timeout=15)
        assert sorted(seen) == [b"kept-%d" % i for i in range(6)]
        producer.begin_transaction()
        for i in range(4):
            producer.produce(topic, b"aborted-%d" % i, b"k%d" % i)
        assert producer.flush(30) == 0
        producer.abort_transaction(30)
        tail.barrier().result(timeout=15)  # the aborted records and the marker: read past
    finally:
        tail.stop()
    assert sorted(seen) == [b"kept-%d" % i for i in range(6)]


def test_a_group_the_broker_refuses_fails_alone(
    kafka_config: dict[str, str], make_topic: Callable[..., str], admin: AdminClient
) -> None:
    """A reply topic that takes records of 2,000 bytes at most: a group with a larger reply is
    refused by the broker (a delivery report, not a produce error), the transaction holding it
    is aborted, that group fails and the others go into the next transaction, delivered."""
    ledger = make_topic("ledger")
    reply = f"reply-small-{uuid.uuid4().hex[:10]}"
    small = {"max.message.bytes": "2000"}
    admin.create_topics([NewTopic(reply, 1, 1, config=small)])[reply].result(30)
    writer = AtomicWriter(producer_config(kafka_config), f"test.txn.{uuid.uuid4().hex}")
    too_large = [Outbound(ledger, b"copy-bad", b"bad"), Outbound(reply, os.urandom(20_000), b"bad")]
    aborted_before = _transactions("aborted")

    async def main() -> list[BaseException | None]:
        sends = [writer.send(_pair(ledger, reply, i)) for i in range(30)]
        sends.insert(15, writer.send(too_large))
        return await asyncio.gather(*sends, return_exceptions=True)

    try:
        results = asyncio.run(main())
    finally:
        writer.close()
    refused = results.pop(15)
    assert isinstance(refused, KafkaException), refused
    assert refused.args[0].code() == KafkaError.MSG_SIZE_TOO_LARGE
    assert results == [None] * 30
    assert writer.aborted >= 1
    assert _transactions("aborted") - aborted_before == writer.aborted
    assert _values(kafka_config, ledger, 30) == sorted(f"copy-{i}".encode() for i in range(30))
    assert _values(kafka_config, reply, 30) == sorted(f"reply-{i}".encode() for i in range(30))


def test_a_producer_the_broker_will_not_start_fails_its_groups_at_once(
    kafka_config: dict[str, str], make_topic: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The broker refuses ``init_transactions`` (a transaction timeout above its
    ``transaction.max.timeout.ms``, 15 minutes by default): every queued group fails with the
    broker's error within seconds instead of waiting, a group sent later fails the same way
    (the writer tries a new producer, not a dead one), nothing reaches the log, and close
    returns."""
    ledger, reply = make_topic("ledger"), make_topic("reply")
    monkeypatch.setattr("switchboard.core.atomic.TRANSACTION_TIMEOUT_MS", 3_600_000)
    writer = AtomicWriter(producer_config(kafka_config), f"test.txn.{uuid.uuid4().hex}")

    async def main() -> tuple[list[BaseException | None], BaseException | None]:
        first = await asyncio.wait_for(
            asyncio.gather(
                *(writer.send(_pair(ledger, reply, i)) for i in range(5)), return_exceptions=True
            ),
            timeout=20,
        )
        try:
            await asyncio.wait_for(writer.send(_pair(ledger, reply, 99)), timeout=20)
        except KafkaException as exc:
            return first, exc
        return first, None

    began = time.monotonic()
    try:
        first, later = asyncio.run(main())
    finally:
        writer.close(timeout_s=10)
    assert time.monotonic() - began < 25
    for result in [*first, later]:
        assert isinstance(result, KafkaException), result
        assert result.args[0].code() == KafkaError.INVALID_TRANSACTION_TIMEOUT, result
    assert writer.committed == 0
    # Not even an uncommitted record: each topic's high watermark is still 0.
    probe = Consumer({**kafka_config, "group.id": f"probe-{uuid.uuid4().hex}"})
    try:
        for topic in (ledger, reply):
            assert probe.get_watermark_offsets(TopicPartition(topic, 0), timeout=10) == (0, 0)
    finally:
        probe.close()
