"""The retry relay on the in-memory runtime: back to the origin when due, poison to the DLQ."""

from __future__ import annotations

import asyncio
import time

from consumers.outcomes import Stage
from consumers.relay import RetryRelay
from consumers.runtime.memory import MemoryRuntime, MemorySink
from switchboard.core import headers as h
from switchboard.core.status import ResponseStatus

from .memory_kit import TOPICS, dead_letters, header, responses, strategy

TIER = TOPICS.retry(1)
ORIGIN = TOPICS.tasks("api")


def _runtime() -> tuple[MemoryRuntime, RetryRelay, MemorySink]:
    sink = MemorySink()
    relay = RetryRelay(TOPICS)
    return MemoryRuntime(relay.handle, strategy(Stage.RELAY, sink), sink), relay, sink


def _now_ms() -> int:
    return int(time.time() * 1000)


def _feed(runtime: MemoryRuntime, headers: list[tuple[str, bytes | None]]) -> None:
    asyncio.run(runtime.feed(TIER, b"task-bytes", key=b"r-1", headers=headers))


def test_a_due_record_goes_back_to_its_origin_at_once_without_the_relay_headers() -> None:
    runtime, relay, sink = _runtime()
    headers = [
        (h.REQUEST_ID, b"r-1"),
        (h.RETRY_DUE_MS, str(_now_ms() - 1).encode()),
        (h.RETRY_ORIGIN_TOPIC, ORIGIN.encode()),
        (h.RETRY_ATTEMPT, b"2"),
    ]
    _feed(runtime, headers)
    [back] = sink.records(ORIGIN)
    assert (back.value(), back.key()) == (b"task-bytes", b"r-1")
    assert header(back, h.RETRY_DUE_MS) is None and header(back, h.RETRY_ORIGIN_TOPIC) is None
    assert header(back, h.RETRY_ATTEMPT) == "2" and header(back, h.REQUEST_ID) == "r-1"
    assert runtime.fast_path == 1 and relay.relayed == 1


def test_a_record_not_yet_due_waits_in_its_own_task_until_due() -> None:
    runtime, _relay, sink = _runtime()
    due = _now_ms() + 80
    _feed(runtime, [(h.RETRY_DUE_MS, str(due).encode()), (h.RETRY_ORIGIN_TOPIC, ORIGIN.encode())])
    assert runtime.fast_path == 0  # an awaitable: the real runtime runs it as a task
    [back] = sink.records(ORIGIN)
    assert back.timestamp()[1] >= due - 2  # not before its due time (2 ms: clock granularity)


def test_a_mangled_due_time_sends_the_record_back_now() -> None:
    runtime, _relay, sink = _runtime()
    _feed(runtime, [(h.RETRY_DUE_MS, b"soon"), (h.RETRY_ORIGIN_TOPIC, ORIGIN.encode())])
    assert len(sink.records(ORIGIN)) == 1 and runtime.fast_path == 1


def test_a_record_without_an_origin_is_dead_lettered_with_a_failed_answer() -> None:
    runtime, _relay, sink = _runtime()
    _feed(runtime, [(h.REQUEST_ID, b"r-1"), (h.RETRY_DUE_MS, b"0")])
    [letter] = dead_letters(sink)
    assert letter["stage"] == Stage.RELAY and "no origin topic" in letter["error_message"]
    assert letter["original_value"] == b"task-bytes"
    [response] = responses(sink)
    assert (response["status"], response["request_id"]) == (ResponseStatus.FAILED, "r-1")


def test_an_origin_outside_the_pipeline_is_poison_not_a_destination() -> None:
    runtime, _relay, sink = _runtime()
    for origin in (TOPICS.dlq, TOPICS.retry(10), "elsewhere.tasks.backend"):
        _feed(runtime, [(h.RETRY_ORIGIN_TOPIC, origin.encode())])
    assert len(dead_letters(sink)) == 3
    assert sink.topics.keys() == {TOPICS.dlq}  # nothing sent on, no id to answer
    assert "is not this pipeline's" in dead_letters(sink)[0]["error_message"]
