"""The one failure path: what the strategy writes for each decision, for a typed failure, a bug
and an output that can never be delivered."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from consumers.outcomes import Attempt, Stage
from consumers.runtime.failures import FailureStrategy, RecordFailed
from consumers.runtime.memory import MemoryRuntime, MemorySink
from consumers.runtime.message import MemoryRecord
from switchboard.core import headers as h
from switchboard.core.aio_producer import Outbound
from switchboard.core.classify import Failure, classify
from switchboard.core.errors import ErrorClass, PermanentError, TransientError
from switchboard.core.policy import (
    ATTEMPTS_EXHAUSTED,
    Dead,
    Decision,
    DecisionKind,
    Drop,
    Expire,
    Halt,
    Retry,
)
from switchboard.core.status import ResponseStatus

from .memory_kit import (
    TOPICS,
    dead_letters,
    decoded_request,
    decoded_response,
    encoded,
    header,
    id_header,
    refuse_topic,
    request,
    responses,
    strategy,
)

NOW_MS = 1_700_000_000_000
TASKS = TOPICS.tasks("backend")
TRANSIENT = classify(TransientError("busy"))
PERMANENT = classify(PermanentError("no", code="invalid_request"))


def _setup() -> tuple[FailureStrategy, MemorySink]:
    sink = MemorySink()
    return strategy(Stage.MODEL, sink, max_attempts=3, clock_ms=lambda: NOW_MS), sink


def _record(
    req: dict[str, Any], headers: list[tuple[str, bytes | None]] | None = None
) -> MemoryRecord:
    hdrs = id_header(req) if headers is None else headers
    return MemoryRecord(TASKS, encoded(req, TASKS), req["request_id"].encode(), hdrs, 0, 7)


def _write(failures: FailureStrategy, msg: MemoryRecord, failed: RecordFailed) -> list[Outbound]:
    return asyncio.run(failures.write(msg, failed))


def test_retry_writes_the_request_to_its_tier_due_later_with_this_attempt_in_its_history() -> None:
    failures, _sink = _setup()
    req = request()
    earlier = [Attempt(1, 5, "TransientError", "first")]
    replay = [*id_header(req), (h.REPLAY_ID, b"replay-2")]
    failed = RecordFailed(
        TRANSIENT, request=req, attempt=2, history=earlier, decision=Retry(10.0, TOPICS.retry(10))
    )
    [out] = _write(failures, _record(req, replay), failed)
    assert out.topic == TOPICS.retry(10) and out.key == req["request_id"].encode()
    assert decoded_request(out, out.topic)["attempt"] == 2
    assert header(out, h.RETRY_DUE_MS) == str(NOW_MS + 10_000)
    assert (header(out, h.RETRY_ORIGIN_TOPIC), header(out, h.RETRY_ATTEMPT)) == (TASKS, "2")
    history = json.loads(header(out, h.RETRY_HISTORY) or "[]")
    assert [(a["attempt"], a["at_ms"]) for a in history] == [(1, 5), (2, NOW_MS)]
    assert header(out, h.REPLAY_ID) == "replay-2"  # a replay that fails for good is parked


def test_dead_writes_the_dead_letter_and_a_failed_answer_with_its_pointer() -> None:
    failures, sink = _setup()
    req = request()
    failed = RecordFailed(
        PERMANENT, request=req, attempt=1, specialist="backend", decision=Dead("invalid_request")
    )
    [out] = _write(failures, _record(req), failed)
    [letter] = dead_letters(sink)
    assert letter["origin_offset"] == 7 and letter["request_id"] == req["request_id"]
    # The dead letter is delivered first (its pointer is real); the answer is returned for the
    # runtime to deliver with the record's other outputs.
    assert responses(sink) == []
    body = decoded_response(out)
    assert (body["status"], body["specialist"]) == (ResponseStatus.FAILED, "backend")
    assert body["dlq"] == {"topic": TOPICS.dlq, "partition": 0, "offset": 0}


def test_expire_answers_expired_without_a_dead_letter() -> None:
    failures, sink = _setup()
    req = request()
    failed = RecordFailed(None, request=req, attempt=3, decision=Expire("deadline reached"))
    [out] = _write(failures, _record(req), failed)
    assert header(out, h.STATUS) == ResponseStatus.EXPIRED and sink.topics == {}


def test_drop_writes_nothing() -> None:
    failures, sink = _setup()
    failed = RecordFailed(classify(ValueError("x")), request=request(), decision=Drop("skip"))
    assert _write(failures, _record(request()), failed) == [] and sink.topics == {}


def test_a_halt_without_a_reaction_waits_out_the_pause_in_a_tier_without_using_an_attempt() -> None:
    failures, sink = _setup()
    req = request()
    fatal = Failure(ErrorClass.FATAL, "spend_limit", "limit", "FatalError", systemic=True)
    failed = RecordFailed(fatal, request=req, attempt=2, decision=Halt("spend_limit", 45.0))
    [out] = _write(failures, _record(req), failed)
    assert out.topic == TOPICS.retry(60) and header(out, h.RETRY_DUE_MS) == str(NOW_MS + 45_000)
    assert header(out, h.RETRY_ATTEMPT) == "1" and decoded_request(out, out.topic)["attempt"] == 1
    assert dead_letters(sink) == []


@pytest.mark.parametrize(
    ("failure", "attempt", "expected"),
    [
        (TRANSIENT, 1, Retry),
        (TRANSIENT, 3, Dead),  # max_attempts=3: exhausted
        (PERMANENT, 1, Dead),
    ],
)
def test_without_a_decision_the_strategy_asks_the_policy(
    failure: Failure, attempt: int, expected: type
) -> None:
    failures, sink = _setup()
    req = request()
    outputs = _write(failures, _record(req), RecordFailed(failure, request=req, attempt=attempt))
    if expected is Retry:
        assert [o.topic for o in outputs] == [TOPICS.retry(1)] and sink.topics == {}
    else:
        assert len(dead_letters(sink)) == 1 and len(outputs) == 1


def test_exhausted_attempts_are_dead_lettered_with_that_reason_by_the_policy() -> None:
    failures, _sink = _setup()
    decision = failures.decide(TRANSIENT, attempt=3, deadline_ms=None)
    assert decision == Dead(ATTEMPTS_EXHAUSTED)
    assert failures.decide(TRANSIENT, attempt=1, deadline_ms=NOW_MS + 10) == Expire(
        "deadline reached"
    )


def test_a_bug_is_dead_lettered_and_answered_failed_never_lost() -> None:
    failures, sink = _setup()
    req = request()
    [out] = asyncio.run(failures.resolve(_record(req), KeyError("prompt")))
    [letter] = dead_letters(sink)
    assert (letter["error_type"], letter["error_code"]) == ("KeyError", "unexpected")
    assert header(out, h.STATUS) == ResponseStatus.FAILED
    assert not failures.expected(KeyError("x"))
    assert failures.expected(PermanentError("x")) and failures.expected(RecordFailed(PERMANENT))


def test_a_handler_that_raises_a_bug_counts_as_a_handler_error() -> None:
    failures, sink = _setup()

    def broken(_msg: Any, _ctx: Any) -> list[Outbound]:
        raise RuntimeError("a bug")

    runtime = MemoryRuntime(broken, failures, sink)
    req = request()
    asyncio.run(runtime.feed(TASKS, encoded(req, TASKS), headers=id_header(req)))
    assert (runtime.stats.handler_errors, runtime.stats.failures) == (1, 0)
    assert len(dead_letters(sink)) == 1 and responses(sink)[0]["status"] == "failed"


def test_an_output_that_can_never_be_delivered_takes_the_failure_path_once() -> None:
    sink = MemorySink(refuse_topic("illegal.topic"))
    failures = strategy(Stage.ROUTE, sink)
    req = request()

    def handler(_msg: Any, _ctx: Any) -> list[Outbound]:
        return [Outbound("illegal.topic", b"x")]

    runtime = MemoryRuntime(handler, failures, sink)
    delivered = asyncio.run(runtime.feed(TOPICS.requests, b"v", headers=id_header(req)))
    assert [o.topic for o in delivered] == [TOPICS.responses]
    [letter] = dead_letters(sink)
    assert letter["error_type"] == "DeliveryError"
    assert responses(sink)[0]["request_id"] == req["request_id"]
    assert sink.records("illegal.topic") == []


def test_terminal_status_of_each_decision() -> None:
    decisions: list[tuple[Decision | None, ResponseStatus | None]] = [
        (Retry(1.0, "t"), None),
        (Dead("x"), ResponseStatus.FAILED),
        (Drop("x"), None),
        (Halt("x", 1.0), None),
        (Expire("x"), ResponseStatus.EXPIRED),
        (None, None),
    ]
    for decision, status in decisions:
        assert FailureStrategy.terminal_status(decision) == status


def test_every_decision_type_names_its_kind() -> None:
    kinds = [d.kind for d in (Retry(1.0, "t"), Dead("x"), Drop("x"), Halt("x", 1.0), Expire("x"))]
    assert kinds == list(DecisionKind)


def test_a_record_failure_must_carry_what_its_decision_writes() -> None:
    with pytest.raises(ValueError, match="without a failure"):
        RecordFailed(None, request=request(), decision=Dead("x"))
    with pytest.raises(ValueError, match="needs the decoded request"):
        RecordFailed(TRANSIENT, decision=Retry(1.0, "t"))
