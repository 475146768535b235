"""The runtime's batch fast path on a real broker: records a handler answers at once go out
through one delivery accounting per fetched batch; every record is delivered before its offset
is committed, a second member joining mid-run (a cooperative revoke) loses nothing, and an
output the broker refuses sends its record to the failure path, not past it."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from consumers.runtime import ConsumerRuntime, Context, Handler, Record, RuntimeConfig
from switchboard.core.aio_producer import AsyncProducer, Outbound

from .helpers import Unexpected, committed_offsets, produce_all, read_topic

pytestmark = pytest.mark.integration

N = 6000
#: Records produced once the second member holds partitions.
LATE = 300
PARTITIONS = 3


def _runtime(
    kafka: dict[str, Any],
    source: str,
    group: str,
    handler: Handler,
    consumer: dict[str, Any] | None = None,
) -> tuple[ConsumerRuntime, AsyncProducer]:
    """A runtime and its producer; ``consumer`` adds settings for its group consumer."""
    producer = AsyncProducer({**kafka, "linger.ms": 2})
    runtime = ConsumerRuntime(
        RuntimeConfig([source], group, {**kafka, **(consumer or {})}, concurrency=100),
        handler,
        producer=producer,
        failures=Unexpected(),
    )
    return runtime, producer


def test_fast_records_are_delivered_before_commit_and_survive_a_member_joining(
    kafka_config: dict[str, str], make_topic: Callable[..., str], unique: Callable[[str], str]
) -> None:
    source, sink = make_topic("src", PARTITIONS), make_topic("sink", PARTITIONS)
    group = unique("g")
    produce_all(kafka_config, source, ((f"k{i}".encode(), f"r{i}".encode()) for i in range(N)))

    #: Records the first member handled while the second held partitions.
    handled_while_shared: list[int] = []

    def forward(msg: Record, _ctx: Context) -> Sequence[Outbound]:
        time.sleep(0.001)  # a slow fast path: the second member joins while it runs
        if second.assignment:
            handled_while_shared.append(msg.offset() or 0)
        return [Outbound(sink, msg.value() or b"", msg.key())]  # at once: the fast path

    # A member learns of a rebalance at its next heartbeat (librdkafka's default: every 3 s),
    # and the first has 4,000 records of its own, ~5 s of work: the join must not wait 3 s.
    quick_heartbeat = {"heartbeat.interval.ms": 100}
    first, p1 = _runtime(kafka_config, source, group, forward, quick_heartbeat)
    second, p2 = _runtime(kafka_config, source, group, forward, quick_heartbeat)
    late = [(f"k{i}".encode(), f"r{i}".encode()) for i in range(N, N + LATE)]

    async def main() -> None:
        run_first = asyncio.create_task(first.run(idle_timeout=8))
        while first.stats.completed < N // 10:  # mid-run: then a member joins
            await asyncio.sleep(0.001)
        run_second = asyncio.create_task(second.run(idle_timeout=8))
        # How far the first has got when the join completes depends on the machine (on a
        # loaded one it can finish every record first): records produced once the second
        # holds partitions make the shared phase certain: the first reads its share of them.
        async with asyncio.timeout(30):
            await second.assigned.wait()
        await asyncio.to_thread(produce_all, kafka_config, source, late)
        await asyncio.gather(run_first, run_second)

    asyncio.run(main())
    p1.close()
    p2.close()
    total = N + LATE
    assert first.stats.rebalances >= 2 and handled_while_shared
    # Distinct values: a record redone after the revoke is there twice (at least once).
    out = read_topic(
        kafka_config, sink, until=lambda m: len({x.value() for x in m}) >= total, timeout_s=30
    )
    seen = Counter(m.value() for m in out)
    assert set(seen) == {f"r{i}".encode() for i in range(total)}  # nothing lost (at least once)
    assert sum(committed_offsets(kafka_config, group, source, PARTITIONS)) == total
    assert first.stats.completed + second.stats.completed >= total


class ToDeadLetters:
    """A failure path that writes the record to ``dlq`` (and counts what it saw)."""

    def __init__(self, dlq: str) -> None:
        self.dlq = dlq
        self.seen: list[bytes] = []

    def expected(self, exc: BaseException) -> bool:
        return True

    async def resolve(self, msg: Record, exc: BaseException) -> Sequence[Outbound]:
        self.seen.append(msg.value() or b"")
        return [Outbound(self.dlq, msg.value() or b"", msg.key())]


@pytest.mark.parametrize("refused_by", ["producer", "broker"])
def test_an_output_that_is_refused_takes_the_failure_path(
    kafka_config: dict[str, str],
    make_topic: Callable[..., str],
    unique: Callable[[str], str],
    refused_by: str,
) -> None:
    """Every tenth record's output is too large: for the producer (refused at ``produce``) or
    for the sink topic's ``max.message.bytes`` (a failed delivery report). Either way the
    record is redelivered on the slow path, which sends it to the failure path (here a
    dead-letter topic); the others of its batch complete; every offset is committed."""
    source, dlq = make_topic("src"), make_topic("dlq")
    sink = unique("sink")
    admin = AdminClient(dict[str, Any](kafka_config))
    config = {"max.message.bytes": "20000"} if refused_by == "broker" else {}
    for future in admin.create_topics([NewTopic(sink, 1, 1, config=config)]).values():
        future.result(30)
    group = unique("g")
    n = 600
    produce_all(kafka_config, source, ((f"k{i}".encode(), f"r{i}".encode()) for i in range(n)))
    failures = ToDeadLetters(dlq)

    def forward(msg: Record, _ctx: Context) -> Sequence[Outbound]:
        value = msg.value() or b""
        big = int(value[1:]) % 10 == 0
        return [Outbound(sink, value * (1 if not big else 25_000), msg.key())]

    limit = {"message.max.bytes": 40_000} if refused_by == "producer" else {}
    producer = AsyncProducer({**kafka_config, "linger.ms": 2, **limit})
    runtime = ConsumerRuntime(
        RuntimeConfig([source], group, kafka_config, concurrency=100),
        forward,
        producer=producer,
        failures=failures,
    )
    stats = asyncio.run(runtime.run(max_messages=n, idle_timeout=10))
    producer.close()
    assert stats.completed == n
    bad = {f"r{i}".encode() for i in range(0, n, 10)}
    dead = set(failures.seen)  # what the failure path wrote (and was delivered)
    letters = read_topic(kafka_config, dlq, until=lambda m: len(m) >= len(dead), timeout_s=30)
    assert {m.value() for m in letters} == dead
    out = read_topic(kafka_config, sink, until=lambda m: len(m) >= n - len(dead), timeout_s=30)
    # Nothing lost: each record is on the sink or, through the failure path, a dead letter.
    # (The broker refuses a whole produce batch holding a record over its limit, so there
    # small neighbours can fail with it; the producer refuses the large record alone.)
    assert {m.value() for m in out} | dead == {f"r{i}".encode() for i in range(n)}
    assert bad <= dead
    if refused_by == "producer":
        assert dead == bad
    assert committed_offsets(kafka_config, group, source, 1) == [n]


class OrderLog(AsyncProducer):
    """An ``AsyncProducer`` that notes when each record is produced and acknowledged."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.events: list[tuple[str, bytes, str]] = []  # (event, value, topic)

    def _produce(self, record: Outbound, on_delivery: Any) -> None:
        self.events.append(("produced", record.value or b"", record.topic))

        def noted(err: Any, msg: Any) -> None:
            self.events.append(("acked", record.value or b"", record.topic))
            on_delivery(err, msg)

        super()._produce(record, noted)


def test_a_records_outputs_are_delivered_in_order_each_after_the_one_before(
    kafka_config: dict[str, str], make_topic: Callable[..., str], unique: Callable[[str], str]
) -> None:
    """A handler's outputs land in their order: the second is produced only once the first is
    acknowledged (a reply after its ledger copy). Produce order alone is not delivery order
    across partitions: a process killed after producing both could leave the second only."""
    source, ledger, replies = make_topic("src", 3), make_topic("ledger", 3), make_topic("reply")
    n = 300
    produce_all(kafka_config, source, ((f"k{i}".encode(), f"r{i}".encode()) for i in range(n)))

    def copy_then_reply(msg: Record, _ctx: Context) -> Sequence[Outbound]:
        value = msg.value() or b""
        return [Outbound(ledger, value, msg.key()), Outbound(replies, value, msg.key())]

    producer = OrderLog({**kafka_config, "linger.ms": 2})
    runtime = ConsumerRuntime(
        RuntimeConfig([source], unique("g"), kafka_config, concurrency=100),
        copy_then_reply,
        producer=producer,
        failures=Unexpected(),
    )
    stats = asyncio.run(runtime.run(max_messages=n, idle_timeout=10))
    producer.close()
    assert stats.completed == n
    position = {event: i for i, event in enumerate(producer.events)}
    for i in range(n):
        value = f"r{i}".encode()
        copy_acked = position[("acked", value, ledger)]
        assert (
            position[("produced", value, ledger)]
            < copy_acked
            < position[("produced", value, replies)]
            < position[("acked", value, replies)]
        )
    # In the topics too: every reply has its copy.
    copies = read_topic(kafka_config, ledger, until=lambda m: len(m) >= n, timeout_s=30)
    answered = read_topic(kafka_config, replies, until=lambda m: len(m) >= n, timeout_s=30)
    assert {m.value() for m in answered} == {m.value() for m in copies}


def test_a_batch_answered_at_once_is_produced_in_one_burst_and_never_pauses_its_partition(
    kafka_config: dict[str, str],
    make_topic: Callable[..., str],
    unique: Callable[[str], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A fetched batch's outputs go to librdkafka after its last record is handled (one burst:
    one request per partition, not one per linger interval), and while the batch is handled
    its records count as fast-path records: a batch far larger than the partition's share of
    the cap pauses nothing (a pause drops librdkafka's prefetched records)."""
    n = 3000
    source, sink = make_topic("src", 1), make_topic("sink", 1)
    produce_all(kafka_config, source, ((f"k{i}".encode(), f"r{i}".encode()) for i in range(n)))
    events: list[tuple[str, int]] = []
    pauses: list[bool] = []
    original_pause = ConsumerRuntime._set_paused

    def set_paused(self: ConsumerRuntime, ctx: Context, paused: bool) -> None:
        pauses.append(paused)
        original_pause(self, ctx, paused)

    monkeypatch.setattr(ConsumerRuntime, "_set_paused", set_paused)

    class Burst(AsyncProducer):
        def _produce(self, record: Outbound, on_delivery: Any) -> None:
            events.append(("produced", int(record.value[1:])))
            super()._produce(record, on_delivery)

    def forward(msg: Record, _ctx: Context) -> Sequence[Outbound]:
        events.append(("handled", msg.offset() or 0))
        return [Outbound(sink, msg.value() or b"", msg.key())]

    producer = Burst({**kafka_config, "linger.ms": 2})
    group = unique("g")
    runtime = ConsumerRuntime(
        # A share of 10 records: a batch of 500 is 50 shares.
        RuntimeConfig([source], group, kafka_config, concurrency=10, batch_size=500),
        forward,
        producer=producer,
        failures=Unexpected(),
    )
    stats = asyncio.run(runtime.run(max_messages=n, idle_timeout=10))
    producer.close()
    assert stats.completed == n
    assert not any(pauses), f"{sum(pauses)} pauses"
    # Each run of handled records is followed by their outputs, none produced between.
    runs: list[tuple[str, list[int]]] = []
    for kind, number in events:
        if not runs or runs[-1][0] != kind:
            runs.append((kind, []))
        runs[-1][1].append(number)
    assert [kind for kind, _ in runs[:2]] == ["handled", "produced"]
    for (kind, handled), (_, produced) in zip(runs[::2], runs[1::2], strict=False):
        assert kind == "handled" and produced == handled
    assert max(len(numbers) for _, numbers in runs) > 10 * 10  # batches, not single records
    out = read_topic(kafka_config, sink, until=lambda m: len(m) >= n, timeout_s=30)
    assert sorted(int((m.value() or b"r0")[1:]) for m in out) == list(range(n))
    assert committed_offsets(kafka_config, group, source, 1) == [n]
