"""The runtime's readiness gate on a real broker: after an assignment the first batch waits once
for ``ready`` (the answered index's barrier in the pipeline), so a backlog's records are handled
after it on the fast path, not as a task each waiting for the same barrier; a ``ready`` that
does not come within ``READY_WAIT_S`` holds nothing longer, and the handler decides."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

import pytest

from consumers.runtime import ConsumerRuntime, Context, Record, RuntimeConfig
from consumers.runtime import loop as runtime_loop
from switchboard.core.aio_producer import AsyncProducer, Outbound

from .helpers import Unexpected, committed_offsets, produce_all, read_topic

pytestmark = pytest.mark.integration

N = 3000
PARTITIONS = 3


class Barrier:
    """A ``ready`` that resolves ``delay_s`` after it is first awaited (never, with None)."""

    def __init__(self, delay_s: float | None) -> None:
        self.delay_s = delay_s
        self.calls: list[float] = []
        self.resolved_at: float | None = None

    async def __call__(self, since: float) -> None:
        self.calls.append(since)
        if self.delay_s is None:
            await asyncio.Event().wait()
        await asyncio.sleep(self.delay_s)
        self.resolved_at = time.monotonic()


def _run(
    kafka_config: dict[str, str],
    source: str,
    group: str,
    handler: Callable[[Record, Context], Sequence[Outbound]],
    ready: Barrier,
) -> ConsumerRuntime:
    producer = AsyncProducer({**kafka_config, "linger.ms": 2})
    runtime = ConsumerRuntime(
        RuntimeConfig([source], group, kafka_config, concurrency=100),
        handler,
        producer=producer,
        failures=Unexpected(),
        ready=ready,
    )
    asyncio.run(runtime.run(idle_timeout=3))
    producer.close()
    return runtime


def test_a_backlog_waits_once_for_ready_then_takes_the_fast_path(
    kafka_config: dict[str, str], make_topic: Callable[..., str], unique: Callable[[str], str]
) -> None:
    source, sink = make_topic("src", PARTITIONS), make_topic("sink")
    group = unique("g")
    produce_all(kafka_config, source, ((f"k{i}".encode(), f"r{i}".encode()) for i in range(N)))
    ready = Barrier(0.3)
    handled_at: list[float] = []

    def forward(msg: Record, _ctx: Context) -> Sequence[Outbound]:
        handled_at.append(time.monotonic())
        return [Outbound(sink, msg.value() or b"", msg.key())]  # at once: the fast path

    runtime = _run(kafka_config, source, group, forward, ready)
    assert ready.resolved_at is not None
    assert ready.calls == [runtime.assigned_at]  # once, for the one assignment
    assert len(handled_at) == N and min(handled_at) >= ready.resolved_at
    assert runtime.stats.max_in_flight == 0  # no record became a task
    out = read_topic(kafka_config, sink, until=lambda m: len(m) >= N, timeout_s=30)
    assert {m.value() for m in out} == {f"r{i}".encode() for i in range(N)}
    assert sum(committed_offsets(kafka_config, group, source, PARTITIONS)) == N


def test_a_ready_that_does_not_come_holds_the_records_no_longer_than_its_bound(
    kafka_config: dict[str, str],
    make_topic: Callable[..., str],
    unique: Callable[[str], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(runtime_loop, "READY_WAIT_S", 0.2)
    source, sink = make_topic("src", PARTITIONS), make_topic("sink")
    group = unique("g")
    n = 300
    produce_all(kafka_config, source, ((f"k{i}".encode(), f"r{i}".encode()) for i in range(n)))
    ready = Barrier(None)
    first: list[float] = []

    def forward(msg: Record, _ctx: Context) -> Sequence[Outbound]:
        first.append(time.monotonic())
        return [Outbound(sink, msg.value() or b"", msg.key())]

    runtime = _run(kafka_config, source, group, forward, ready)
    assert len(ready.calls) == 1  # waited once, not per batch
    assert runtime.stats.completed == n
    assert min(first) - runtime.assigned_at < 5  # the bound, not forever
