"""Batch priority: batch records take a small share of the cap and yield slots to interactive ones.

The runtime here is the production ``ConsumerRuntime``, records handed to its dispatch as the
poll loop would (no broker: the consumer's pause/resume calls are only queued, and read here).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any, cast

from confluent_kafka import Consumer, Message

from consumers.outcomes import Stage
from consumers.relay import RetryRelay
from consumers.replay.view import DeadLetterView
from consumers.runtime import ConsumerRuntime, Context, MemoryRecord, RuntimeConfig
from consumers.runtime.failures import RecordFailed
from consumers.runtime.loop import Pause, Resume
from consumers.runtime.memory import MemoryRuntime, MemorySink
from consumers.runtime.slots import BatchGate, Slots
from switchboard.core import headers as h
from switchboard.core.aio_producer import Outbound
from switchboard.core.classify import classify
from switchboard.core.errors import PermanentError, TransientError
from switchboard.core.policy import Dead, Retry
from switchboard.core.settings import Settings
from switchboard.core.topics import TopicRole, Topics
from tests.support import most_at_once

from .memory_kit import (
    CODEC,
    TOPICS,
    decoded_request,
    encoded,
    header,
    id_header,
    request,
    router_runtime,
    strategy,
)

INTERACTIVE = TOPICS.tasks("backend")
BATCH = TOPICS.batch_tasks("backend")


# --- the slots ----------------------------------------------------------------------------
def test_a_freed_slot_goes_to_a_waiting_interactive_record_before_an_earlier_batch_one() -> None:
    async def main() -> list[str]:
        slots = Slots(1)
        await slots.acquire()
        order: list[str] = []

        async def take(name: str, low: bool) -> None:
            await slots.acquire(low=low)
            order.append(name)
            slots.release()

        batch = asyncio.create_task(take("batch", True))
        await asyncio.sleep(0)  # the batch record waits first
        interactive = asyncio.create_task(take("interactive", False))
        await asyncio.sleep(0)
        assert slots.contended
        slots.release()
        await asyncio.gather(batch, interactive)
        assert slots.free == 1 and not slots.contended
        return order

    assert asyncio.run(main()) == ["interactive", "batch"]


def test_the_batch_gate_never_lets_more_than_its_share_in_and_returns_every_slot() -> None:
    async def main() -> tuple[int, Slots, Slots]:
        shared, own = Slots(8), Slots(2)
        high = await most_at_once(BatchGate(own, shared), 30, hold_s=0.001)
        return high, shared, own

    high, shared, own = asyncio.run(main())
    assert high == 2 and shared.free == 8 and own.free == 2


def test_a_batch_waiter_cancelled_while_queued_gives_its_batch_slot_back() -> None:
    async def main() -> tuple[int, int]:
        shared, own = Slots(1), Slots(2)
        await shared.acquire()  # the shared cap is full
        waiter = asyncio.create_task(BatchGate(own, shared).__aenter__())
        await asyncio.sleep(0)
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)
        shared.release()
        return shared.free, own.free

    assert asyncio.run(main()) == (1, 2)


# --- the runtime's shares and pauses ---------------------------------------------------------
class Gated:
    """A slow handler: each record waits on its own event; records the order they started."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.gates: dict[str, asyncio.Event] = {}

    def __call__(self, msg: Any, _ctx: Context) -> Any:
        name = f"{'b' if msg.topic() == BATCH else 'i'}{msg.offset()}"
        gate = self.gates[name] = asyncio.Event()
        return self._wait(name, gate)

    async def _wait(self, name: str, gate: asyncio.Event) -> Sequence[Outbound]:
        self.started.append(name)
        await gate.wait()
        return []

    def release(self, prefix: str = "") -> None:
        for name, gate in self.gates.items():
            if name.startswith(prefix):
                gate.set()


def _runtime(handler: Any, cap: int, share: float, parts: int = 1) -> ConsumerRuntime:
    config = RuntimeConfig(
        [INTERACTIVE, BATCH],
        "unit.worker.backend",
        {},
        concurrency=cap,
        batch_topics=frozenset({BATCH}),
        batch_share=share,
    )
    sink = MemorySink()
    runtime = ConsumerRuntime(config, handler, producer=sink, failures=strategy(Stage.MODEL, sink))
    runtime._loop = asyncio.get_running_loop()
    runtime._consumer = cast(Consumer, object())  # pause/resume are queued, never run
    runtime._assigned([(t, p) for t in (INTERACTIVE, BATCH) for p in range(parts)])
    return runtime


def _feed(runtime: ConsumerRuntime, topic: str, offsets: range) -> None:
    for offset in offsets:
        record = MemoryRecord(topic, b"v", b"k", [], 0, offset)
        runtime._dispatch(cast(Message, record))


async def _until(condition: Any, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.001)


def _paused(runtime: ConsumerRuntime, topic: str) -> list[bool]:
    """The pause/resume calls queued for ``topic``'s partition 0, in order (True: pause)."""
    return [
        isinstance(op, Pause)
        for op in runtime._consumer_ops
        if isinstance(op, Pause | Resume) and op.ctx.topic == topic
    ]


def test_batch_partitions_split_the_batch_share_and_never_shrink_the_interactive_share() -> None:
    async def main() -> tuple[int, int]:
        runtime = _runtime(Gated(), cap=60, share=0.25, parts=3)
        return runtime._share(), runtime._share(batch=True)

    # 60 over the 3 interactive partitions; 25% of 60 (15) over the 3 batch partitions.
    assert asyncio.run(main()) == (20, 5)


def test_interactive_records_sent_after_a_batch_burst_start_before_the_burst_goes_on() -> None:
    """Cap 8, batch share 25%: of a burst of 40 batch records 2 run; 6 interactive records
    read after the burst all start at once; the batch partition is paused (its records would
    only wait in memory); every record is handled exactly once."""

    async def main() -> tuple[Gated, ConsumerRuntime, list[bool]]:
        handler = Gated()
        runtime = _runtime(handler, cap=8, share=0.25)
        _feed(runtime, BATCH, range(40))
        _feed(runtime, INTERACTIVE, range(6))
        await _until(lambda: len(handler.started) == 8)
        pauses = _paused(runtime, BATCH)
        handler.release("i")
        while len(handler.started) < 46:
            handler.release()
            await asyncio.sleep(0.001)
        handler.release()
        await _until(lambda: runtime.stats.completed == 46)
        return handler, runtime, pauses

    handler, runtime, pauses = asyncio.run(main())
    assert sorted(handler.started[:8]) == sorted(["b0", "b1", *(f"i{i}" for i in range(6))])
    assert sorted(handler.started) == sorted(
        [*(f"b{i}" for i in range(40)), *(f"i{i}" for i in range(6))]
    )
    assert runtime.stats.max_batch_in_flight == 2 and runtime.stats.max_in_flight == 8
    assert pauses == [True]  # paused at twice its share (4 outstanding)


def test_a_batch_partition_paused_while_interactive_records_wait_resumes_when_they_stop() -> None:
    """Cap 2, batch share 50% (1 slot): 3 slow interactive records fill the cap and one waits,
    so a batch record read now pauses its partition though it is under its share; once no
    interactive record waits, the batch partition resumes (it had nothing else to complete)."""

    async def main() -> tuple[list[bool], list[bool], list[str]]:
        handler = Gated()
        runtime = _runtime(handler, cap=2, share=0.5)
        _feed(runtime, INTERACTIVE, range(3))
        await _until(lambda: len(handler.started) == 2)
        assert runtime._sem.contended
        _feed(runtime, BATCH, range(1))
        await asyncio.sleep(0.01)
        during = _paused(runtime, BATCH)
        handler.release("i")
        await _until(lambda: "i2" in handler.started)
        handler.release("i")
        await _until(lambda: "b0" in handler.started)
        handler.release()
        await _until(lambda: runtime.stats.completed == 4)
        return during, _paused(runtime, BATCH), handler.started

    during, after, started = asyncio.run(main())
    assert during == [True]
    assert after == [True, False]
    assert started.index("b0") > started.index("i2")  # the waiting interactive record went first


def test_a_paused_partition_resumes_while_half_a_share_still_waits_in_memory() -> None:
    """Cap 10: 20 slow records (twice the share) pause the partition; it resumes once 5 of
    the running ones complete (15 outstanding), not only when all that waited has started,
    so what the resume fetches is in memory before the slots it is for free up."""

    async def main() -> tuple[list[bool], list[bool]]:
        handler = Gated()
        runtime = _runtime(handler, cap=10, share=0.25)
        _feed(runtime, INTERACTIVE, range(20))
        await _until(lambda: len(handler.started) == 10)
        paused = _paused(runtime, INTERACTIVE)
        for offset in range(5):
            handler.gates[f"i{offset}"].set()
        await _until(lambda: runtime.stats.completed == 5)
        await asyncio.sleep(0.01)  # the offset store and the resume check: one loop turn
        resumed = _paused(runtime, INTERACTIVE)
        while runtime.stats.completed < 20:
            handler.release()
            await asyncio.sleep(0.001)
        return paused, resumed

    paused, resumed = asyncio.run(main())
    assert paused == [True]  # 20 outstanding: twice the share
    assert resumed == [True, False]  # 15 outstanding: 1.5 shares


def test_without_batch_topics_the_runtime_shares_as_before() -> None:
    async def main() -> tuple[int, int]:
        config = RuntimeConfig([INTERACTIVE], "g", {}, concurrency=64)
        sink = MemorySink()
        runtime = ConsumerRuntime(
            config, Gated(), producer=sink, failures=strategy(Stage.MODEL, sink)
        )
        runtime._assigned([(INTERACTIVE, p) for p in range(4)])
        return runtime._share(), runtime._n_batch

    assert asyncio.run(main()) == (16, 0)


# --- topics, router, relay, retries ---------------------------------------------------------
def test_every_specialist_has_a_batch_task_topic_with_its_own_role() -> None:
    topics = Topics("p")
    specs = {s.role: s.name for s in topics.specs(retention_ms=1, dlq_retention_ms=1)}
    assert specs[f"{TopicRole.BATCH_TASKS}:backend"] == "p.tasks.backend.batch"
    assert topics.task_topics("perf") == ["p.tasks.perf", "p.tasks.perf.batch"]
    assert len(set(specs.values())) == len(specs)


def _route(priority: str) -> Outbound:
    sink = MemorySink()
    runtime, _ = router_runtime(sink)
    req = request("/backend review this design", priority=priority)
    [out] = asyncio.run(
        runtime.feed(TOPICS.requests, encoded(req, TOPICS.requests), headers=id_header(req))
    )
    return out


def test_the_router_sends_batch_requests_to_the_batch_topic_and_the_rest_to_the_task_topic() -> (
    None
):
    assert _route("BATCH").topic == BATCH
    assert decoded_request(_route("BATCH"), BATCH)["priority"] == "BATCH"
    assert _route("NORMAL").topic == INTERACTIVE
    assert _route("INTERACTIVE").topic == INTERACTIVE


def _failed_batch_task(
    error: Exception, offset: int, **failed: Any
) -> tuple[MemorySink, MemoryRecord, Sequence[Outbound]]:
    """A task read from the batch topic whose model stage raised ``error``, written by the
    failure strategy as ``failed`` (the ``RecordFailed`` fields) says: the strategy's sink, the
    record and what the strategy returned."""
    sink = MemorySink()
    req = request()
    msg = MemoryRecord(BATCH, encoded(req, BATCH), b"k", id_header(req), 0, offset)
    record_failed = RecordFailed(classify(error), request=req, attempt=1, **failed)
    return sink, msg, asyncio.run(strategy(Stage.MODEL, sink).write(msg, record_failed))


def test_a_batch_task_retried_keeps_its_priority_through_the_relay() -> None:
    """The retry record names the batch topic as its origin; the relay sends it back there."""
    _sink, _msg, [retry] = _failed_batch_task(
        TransientError("busy"), 3, decision=Retry(1.0, TOPICS.retry(1))
    )
    assert header(retry, h.RETRY_ORIGIN_TOPIC) == BATCH
    relay_sink = MemorySink()
    relay = MemoryRuntime(RetryRelay(TOPICS).handle, strategy(Stage.RELAY, relay_sink), relay_sink)
    due = [(k, v) for k, v in retry.headers if k != h.RETRY_DUE_MS]
    due.append((h.RETRY_DUE_MS, b"0"))
    [back] = asyncio.run(relay.feed(retry.topic, retry.value, key=retry.key, headers=due))
    assert back.topic == BATCH and relay_sink.records(TOPICS.dlq) == []


def test_batch_share_setting_is_validated() -> None:
    assert Settings().batch_share == 0.25
    assert Settings(batch_share=1.0).batch_share == 1.0
    for bad in (0, -0.1, 1.5):
        try:
            Settings(batch_share=bad)
        except ValueError as exc:
            assert "batch_share" in str(exc)
        else:
            raise AssertionError(f"batch_share={bad} accepted")


def test_a_dead_lettered_batch_task_is_replayed_to_the_batch_topic() -> None:
    """The dead letter's origin is the batch topic, and ``dlq replay`` sends it back there."""
    sink, msg, _outputs = _failed_batch_task(
        PermanentError("no", code="invalid_request"),
        5,
        specialist="backend",
        decision=Dead("invalid_request"),
    )
    [letter] = sink.records(TOPICS.dlq)
    view = DeadLetterView.from_message(cast(Message, letter), CODEC)
    assert view.origin_topic == BATCH
    replayed = view.replay_record("replay-1")
    assert replayed.topic == BATCH and replayed.value == msg.value()
