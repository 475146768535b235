"""Consumer lag stays right while a partition is paused (the retry relay pauses by design)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from consumers.runtime import ConsumerRuntime, Context, Record, RuntimeConfig
from consumers.runtime.lag import LagMonitor
from switchboard.core import metrics
from switchboard.core.aio_producer import AsyncProducer, Outbound
from switchboard.core.kafka_clients import producer_config

from .helpers import Unexpected, produce_all

pytestmark = pytest.mark.integration


def test_lag_counts_records_behind_a_paused_partition(
    kafka_config: dict[str, str],
    make_topic: Callable[..., str],
    unique: Callable[[str], str],
) -> None:
    """After 5 records are handled and committed, a member whose handlers then all wait (cap 1:
    the partition pauses after 2 records) reads 20 records' lag, then 30 after 10 more arrive while it is paused; once the handlers go,
    the lag drains to 0. librdkafka's own ``consumer_lag`` statistic is recorded alongside:
    it takes the high watermark from fetch responses, which a paused partition does not get,
    so it does not see the 10 new records (the reason lag is read through the admin API)."""
    topic = make_topic("lag", partitions=1)
    group = unique("lag-group")
    produce_all(kafka_config, topic, [(b"k", b"fast%d" % i) for i in range(5)])
    stats_lag: list[int] = []

    def on_stats(raw: str) -> None:
        parts = json.loads(raw).get("topics", {}).get(topic, {}).get("partitions", {})
        if "0" in parts:
            stats_lag.append(int(parts["0"]["consumer_lag"]))

    async def scenario() -> tuple[int, int, int, list[int], bool]:
        release = asyncio.Event()

        async def wait(msg: Record, _ctx: Context) -> Sequence[Outbound]:
            if not (msg.value() or b"").startswith(b"fast"):
                await release.wait()
            return []

        producer = AsyncProducer(producer_config(kafka_config))
        runtime = ConsumerRuntime(
            RuntimeConfig(
                [topic],
                group,
                kafka_config,
                concurrency=1,
                consumer_overrides={"statistics.interval.ms": 200, "stats_cb": on_stats},
            ),
            lambda m, c: wait(m, c),
            producer=producer,
            failures=Unexpected(),
        )
        run = asyncio.create_task(runtime.run())
        monitor = LagMonitor(kafka_config)

        async def lag_now() -> int:
            return (await asyncio.to_thread(monitor.refresh, {group: [(topic, 0)]}))[group][
                (topic, 0)
            ]

        async def until(check: Callable[[], Any], what: str, timeout_s: float = 30) -> None:
            deadline = time.monotonic() + timeout_s
            while not await check():
                assert time.monotonic() < deadline, f"timed out waiting for {what}"
                await asyncio.sleep(0.1)

        async def paused() -> bool:
            return any(c.paused for c in runtime.contexts)

        async def drained() -> bool:
            return await lag_now() == 0

        # Five records handled and committed first, so librdkafka has a committed offset.
        await until(drained, "the first 5 records to be committed")
        await asyncio.to_thread(
            produce_all, kafka_config, topic, [(b"k", b"v%d" % i) for i in range(20)]
        )
        await until(paused, "the partition to pause")
        await asyncio.sleep(0.5)  # a statistics interval or two while paused
        first = await lag_now()
        stats_before = stats_lag[-1] if stats_lag else -1
        await asyncio.to_thread(
            produce_all, kafka_config, topic, [(b"k", b"w%d" % i) for i in range(10)]
        )
        second = await lag_now()
        await asyncio.sleep(0.6)  # three more statistics intervals, still paused
        stats_after = stats_lag[-1] if stats_lag else -1
        stats_saw_new = stats_after >= stats_before + 10
        exported = metrics.CONSUMER_LAG.labels(group, topic, "0")._value.get()
        assert exported == second
        release.set()
        await until(drained, "the lag to drain (auto-commit every second)")
        runtime.request_stop()
        await run
        await asyncio.to_thread(producer.close)
        return first, second, int(exported), [stats_before, stats_after], stats_saw_new

    first, second, exported, stats, stats_saw_new = asyncio.run(scenario())
    assert (first, second, exported) == (20, 30, 30)
    # librdkafka's statistic misses the records that arrived while paused.
    assert stats[0] >= 0, "no librdkafka statistics arrived"
    print(f"admin-API lag {first} -> {second}; librdkafka consumer_lag {stats[0]} -> {stats[1]}")
    assert not stats_saw_new, f"librdkafka consumer_lag followed the paused partition: {stats}"
