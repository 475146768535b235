"""The runtime: out-of-order completion, in-order commit, the in-flight cap, bounded runs."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Callable, Sequence

import pytest
from confluent_kafka import Message

from consumers.runtime import ConsumerRuntime, Context, Handler, RuntimeConfig
from switchboard.core.aio_producer import AsyncProducer, Outbound

from .helpers import Unexpected, committed_offsets, produce_all, read_topic

pytestmark = pytest.mark.integration


async def _run_to_completion(
    kafka_config: dict[str, str], source: str, group: str, handler: Handler, n: int, cap: int
) -> None:
    """One runtime over ``source`` until ``n`` records are handled (and their outputs sent)."""
    producer = AsyncProducer({**kafka_config, "linger.ms": 2})
    runtime = ConsumerRuntime(
        RuntimeConfig([source], group, kafka_config, concurrency=cap),
        handler,
        producer=producer,
        failures=Unexpected(),
    )
    stats = await runtime.run(max_messages=n, idle_timeout=20)
    producer.close()
    assert stats.completed == n


def test_slow_handlers_complete_out_of_order_and_commit_in_order(
    kafka_config: dict[str, str], make_topic: Callable[..., str], unique: Callable[[str], str]
) -> None:
    """600 records on one partition, each handled in 10-80 ms with a cap of 100: every record
    is forwarded once, in-flight never passes the cap, and the committed offset is 600."""
    source, sink = make_topic("src"), make_topic("sink")
    group = unique("g")
    n, cap = 600, 100
    produce_all(kafka_config, source, ((None, f"r{i}".encode()) for i in range(n)))
    rng = random.Random(7)
    concurrent = 0
    high_water = 0

    async def handler(msg: Message, _ctx: Context) -> Sequence[Outbound]:
        nonlocal concurrent, high_water
        concurrent += 1
        high_water = max(high_water, concurrent)
        await asyncio.sleep(rng.uniform(0.01, 0.08))
        concurrent -= 1
        return [Outbound(sink, msg.value())]

    asyncio.run(_run_to_completion(kafka_config, source, group, handler, n, cap))
    assert 1 < high_water <= cap
    out = read_topic(kafka_config, sink, until=lambda m: len(m) >= n, timeout_s=30)
    assert sorted(m.value() for m in out) == sorted(f"r{i}".encode() for i in range(n))
    assert committed_offsets(kafka_config, group, source, 1) == [n]


def test_no_consumer_call_is_made_on_the_event_loop(
    kafka_config: dict[str, str],
    make_topic: Callable[..., str],
    unique: Callable[[str], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """confluent-kafka blocks a consumer's methods behind a poll() in progress on another
    thread, so a store_offsets, pause or resume made on the event loop would stall every
    runtime of the process. With a cap of 4 (so partitions pause and resume) and 300 records,
    every such call runs on the poll thread, and the offsets still reach the commit."""
    import threading

    import consumers.runtime.loop as loop_module

    source, sink = make_topic("src"), make_topic("sink")
    group = unique("g")
    n = 300
    produce_all(kafka_config, source, ((None, f"r{i}".encode()) for i in range(n)))
    calls: list[tuple[str, int]] = []

    class WatchedConsumer(loop_module.Consumer):  # type: ignore[misc,name-defined]
        def store_offsets(self, *args: object, **kwargs: object) -> None:
            calls.append(("store_offsets", threading.get_ident()))
            super().store_offsets(*args, **kwargs)

        def pause(self, *args: object, **kwargs: object) -> None:
            calls.append(("pause", threading.get_ident()))
            super().pause(*args, **kwargs)

        def resume(self, *args: object, **kwargs: object) -> None:
            calls.append(("resume", threading.get_ident()))
            super().resume(*args, **kwargs)

    monkeypatch.setattr(loop_module, "Consumer", WatchedConsumer)

    async def handler(msg: Message, _ctx: Context) -> Sequence[Outbound]:
        await asyncio.sleep(0.002)
        return [Outbound(sink, msg.value())]

    loop_thread = 0

    async def main() -> None:
        nonlocal loop_thread
        loop_thread = threading.get_ident()
        await _run_to_completion(kafka_config, source, group, handler, n, cap=4)

    asyncio.run(main())
    kinds = {kind for kind, _ in calls}
    assert {"store_offsets", "pause", "resume"} <= kinds
    assert [kind for kind, thread in calls if thread == loop_thread] == []
    assert committed_offsets(kafka_config, group, source, 1) == [n]


def test_delivery_reports_are_served_on_the_loop_between_batches(
    kafka_config: dict[str, str], make_topic: Callable[..., str]
) -> None:
    """``serve_reports`` runs settled deliveries' callbacks on the event loop, inside the call:
    the loop below never yields, so the poller thread's scheduled drain cannot have run them,
    and every one of 200 callbacks runs on the loop's thread."""
    sink = make_topic("sink")
    n = 200

    async def main() -> tuple[int, set[int]]:
        producer = AsyncProducer(kafka_config)
        threads: set[int] = set()
        seen = 0

        def delivered(err: object, _msg: Message) -> None:
            nonlocal seen
            assert err is None
            threads.add(threading.get_ident())
            seen += 1

        for i in range(n):
            producer.produce(Outbound(sink, f"r{i}".encode()), delivered)
        deadline = time.monotonic() + 20
        while seen < n and time.monotonic() < deadline:
            producer.serve_reports()  # synchronous: the loop runs nothing else meanwhile
            time.sleep(0.005)
        producer.close()
        return seen, threads

    seen, threads = asyncio.run(main())
    assert seen == n
    assert threads == {threading.get_ident()}  # asyncio.run's loop is this thread's
