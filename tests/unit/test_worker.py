"""A specialist worker on the in-memory runtime: answered once, retried, dead-lettered, expired,
halted; its breaker, limiter and answered-index claim react as in production."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from typing import Any

import pytest

import consumers.worker as worker_module
from consumers.answered import AnsweredLedger
from consumers.outcomes import Stage
from consumers.resilience.breaker import BreakerState, CircuitBreaker
from consumers.resilience.ratelimit import AimdLimiter
from consumers.runtime.memory import MemoryRuntime, MemorySink
from consumers.specialists.backends import Answer
from consumers.worker import SpecialistWorker
from switchboard.core import headers as h
from switchboard.core.classify import Failure
from switchboard.core.errors import ErrorClass, FatalError, PermanentError, TransientError
from switchboard.core.status import ResponseStatus

from .memory_kit import (
    TOPICS,
    dead_letters,
    decoded_request,
    encoded,
    header,
    id_header,
    request,
    responses,
    strategy,
)

TASKS = TOPICS.tasks("backend")


class ScriptedBackend:
    """Answers from a script: each call takes the next step (an exception is raised)."""

    name = "scripted"

    def __init__(self, *steps: BaseException | str, delay_s: float = 0.0) -> None:
        self.steps = list(steps)
        self.calls = 0
        self.delay_s = delay_s

    async def answer(self, specialist: str, prompt: str, request: Mapping[str, Any]) -> Answer:
        self.calls += 1
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        step = self.steps.pop(0) if self.steps else "fine"
        if isinstance(step, BaseException):
            raise step
        return Answer(ResponseStatus.ANSWERED, f"{step}: {prompt}", backend="scripted")


class InstantBackend(ScriptedBackend):
    """Offers ``answer_now``: the worker may answer on the runtime's fast path."""

    def answer_now(self, specialist: str, prompt: str, request: Mapping[str, Any]) -> Answer:
        self.calls += 1
        return Answer(ResponseStatus.ANSWERED, "now", backend="instant")


class WorkerStage:
    """One worker on the in-memory runtime, with what it writes."""

    def __init__(
        self,
        backend: ScriptedBackend,
        *,
        max_attempts: int = 3,
        halt_pause_s: float = 30.0,
        limiter: AimdLimiter | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self.sink = MemorySink()
        self.ledger = AnsweredLedger(3600)
        self.backend = backend
        failures = strategy(
            Stage.MODEL, self.sink, max_attempts=max_attempts, halt_pause_s=halt_pause_s
        )
        self.worker = SpecialistWorker(
            "backend",
            codec=failures.outcomes.codec,
            outcomes=failures.outcomes,
            index=self.ledger,
            backend=backend,
            failures=failures,
            breaker=breaker or CircuitBreaker("backend:test", failure_threshold=2, open_s=0.05),
            limiter=limiter,
        )
        self.runtime = MemoryRuntime(self.worker.handle, failures, self.sink)

    def feed(
        self, task: dict[str, Any], headers: list[tuple[str, bytes | None]] | None = None
    ) -> None:
        value = encoded(task, TASKS)
        key = task["request_id"].encode()
        hdrs = id_header(task) if headers is None else headers
        asyncio.run(self.runtime.feed(TASKS, value, key=key, headers=hdrs))


def _task(**fields: Any) -> dict[str, Any]:
    return request(specialist="backend", prompt="design a rate limiter", **fields)


def test_a_task_is_answered_and_its_id_marked_answered() -> None:
    stage = WorkerStage(ScriptedBackend("ok"))
    task = _task()
    stage.feed(task)
    [response] = responses(stage.sink)
    assert (response["status"], response["content"]) == (
        ResponseStatus.ANSWERED,
        "ok: design a rate limiter",
    )
    assert (response["specialist"], response["attempts"]) == ("backend", 1)
    assert stage.ledger.is_answered(task["request_id"]) and not stage.ledger.busy(
        task["request_id"]
    )
    assert "worker" in response["stage_latency_ms"]


def test_an_already_answered_task_is_skipped_without_a_model_call() -> None:
    stage = WorkerStage(ScriptedBackend())
    task = _task()
    stage.ledger.record_response(task["request_id"].encode(), 1, ResponseStatus.ANSWERED)
    stage.feed(task)
    assert responses(stage.sink) == [] and stage.backend.calls == 0 and stage.worker.skipped == 1


def test_an_instant_backend_answers_on_the_fast_path() -> None:
    stage = WorkerStage(InstantBackend())
    stage.feed(_task())
    assert stage.runtime.fast_path == 1 and responses(stage.sink)[0]["content"] == "now"


def test_a_transient_failure_writes_a_retry_record_with_its_history() -> None:
    stage = WorkerStage(
        ScriptedBackend(TransientError("busy", code="overloaded", retry_after_s=5.0))
    )
    task = _task()
    before = int(time.time() * 1000)
    stage.feed(task)
    [retry] = stage.sink.records(TOPICS.retry(10))  # 5 s: the 10 s tier
    assert decoded_request(retry, TOPICS.retry(10))["attempt"] == 1
    assert header(retry, h.RETRY_ORIGIN_TOPIC) == TASKS and header(retry, h.RETRY_ATTEMPT) == "1"
    assert int(header(retry, h.RETRY_DUE_MS) or 0) >= before + 5000
    [attempt] = json.loads(header(retry, h.RETRY_HISTORY) or "[]")
    assert (attempt["attempt"], attempt["error_type"]) == (1, "TransientError")
    assert retry.key() == task["request_id"].encode()
    assert responses(stage.sink) == [] and not stage.ledger.is_answered(task["request_id"])


def test_the_last_attempt_is_dead_lettered_with_every_attempt_and_a_failed_answer() -> None:
    stage = WorkerStage(ScriptedBackend(TransientError("still busy")), max_attempts=3)
    task = _task(attempt=2)
    earlier = [
        {"attempt": n, "at_ms": n, "error_type": "TransientError", "error_message": "busy"}
        for n in (1, 2)
    ]
    history = json.dumps(earlier).encode()
    stage.feed(task, headers=[*id_header(task), (h.RETRY_HISTORY, history)])
    [letter] = dead_letters(stage.sink)
    assert [a["attempt"] for a in letter["attempts"]] == [1, 2, 3]
    assert letter["stage"] == Stage.MODEL and letter["error_code"] == "transient"
    [response] = responses(stage.sink)
    assert (response["status"], response["attempts"]) == (ResponseStatus.FAILED, 3)
    assert response["specialist"] == "backend" and response["dlq"]["topic"] == TOPICS.dlq
    # A failed answer may be superseded by a replay: answered, but not settled.
    assert stage.ledger.is_answered(task["request_id"])
    assert not stage.ledger.is_answered(task["request_id"], replay=True)


def test_a_permanent_failure_is_dead_lettered_at_once() -> None:
    stage = WorkerStage(
        ScriptedBackend(PermanentError("prompt is too long", code="invalid_request"))
    )
    stage.feed(_task())
    [letter] = dead_letters(stage.sink)
    assert (letter["error_class"], letter["error_code"]) == ("permanent", "invalid_request")
    assert responses(stage.sink)[0]["status"] == ResponseStatus.FAILED
    assert stage.worker.breaker.state is BreakerState.CLOSED  # neutral: says nothing of health


def test_a_task_past_its_deadline_expires_without_a_model_call() -> None:
    stage = WorkerStage(ScriptedBackend())
    stage.feed(_task(deadline_ms=int(time.time() * 1000) - 1))
    [response] = responses(stage.sink)
    assert (response["status"], response["error_code"]) == (
        ResponseStatus.EXPIRED,
        "deadline_exceeded",
    )
    assert stage.backend.calls == 0 and dead_letters(stage.sink) == []


def test_a_retry_that_would_miss_the_deadline_expires_with_the_last_error() -> None:
    stage = WorkerStage(ScriptedBackend(TransientError("busy", retry_after_s=60.0)))
    stage.feed(_task(deadline_ms=int(time.time() * 1000) + 10_000))
    [response] = responses(stage.sink)
    assert (
        response["status"] == ResponseStatus.EXPIRED and "last error: busy" in response["content"]
    )
    assert stage.sink.records(TOPICS.retry(60)) == []


def test_a_halt_pauses_the_breaker_and_calls_again_in_place() -> None:
    stage = WorkerStage(ScriptedBackend(FatalError("spend limit reached"), "ok"), halt_pause_s=0.05)
    began = time.monotonic()
    stage.feed(_task())
    assert time.monotonic() - began >= 0.05  # waited out the pause before the second call
    assert stage.backend.calls == 2 and stage.worker.breaker.opened_count == 1
    [response] = responses(stage.sink)
    assert response["status"] == ResponseStatus.ANSWERED and dead_letters(stage.sink) == []
    assert stage.sink.topics.keys() == {TOPICS.responses}  # no retry record either


def test_a_halt_that_outlasts_the_deadline_ends_expired() -> None:
    stage = WorkerStage(ScriptedBackend(FatalError("bad key")), halt_pause_s=30.0)
    began = time.monotonic()
    stage.feed(_task(deadline_ms=int(time.time() * 1000) + 150))
    assert time.monotonic() - began < 5.0  # at the deadline, not after the 30 s halt
    assert responses(stage.sink)[0]["status"] == ResponseStatus.EXPIRED
    assert stage.backend.calls == 1


def test_overload_failures_open_the_breaker_and_shrink_the_limiter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    overloaded = Failure(
        ErrorClass.TRANSIENT, "overloaded", "529", "OverloadedError", overload=True
    )
    monkeypatch.setattr(worker_module, "classify", lambda _exc: overloaded)
    limiter = AimdLimiter(8, maximum=8, cooldown_s=0.0)
    stage = WorkerStage(ScriptedBackend(RuntimeError("a"), RuntimeError("b")), limiter=limiter)
    stage.feed(_task())
    stage.feed(_task())
    assert stage.worker.breaker.opened_count == 1  # failure_threshold=2
    assert limiter.limit == 2  # 8 -> 4 -> 2
    assert len(stage.sink.records(TOPICS.retry(1))) == 2


def test_a_task_that_does_not_decode_is_dead_lettered_with_the_specialist() -> None:
    stage = WorkerStage(ScriptedBackend())
    asyncio.run(stage.runtime.feed(TASKS, b"garbage", headers=[(h.REQUEST_ID, b"r-1")]))
    assert dead_letters(stage.sink)[0]["original_value"] == b"garbage"
    [response] = responses(stage.sink)
    assert (response["status"], response["specialist"]) == (ResponseStatus.FAILED, "backend")


def test_a_duplicate_in_flight_waits_for_the_original_and_is_skipped() -> None:
    stage = WorkerStage(ScriptedBackend(delay_s=0.02))
    task = _task()

    async def both() -> None:
        value = encoded(task, TASKS)
        await asyncio.gather(
            stage.runtime.feed(TASKS, value, headers=id_header(task)),
            stage.runtime.feed(TASKS, value, headers=id_header(task)),
        )

    asyncio.run(both())
    assert len(responses(stage.sink)) == 1 and stage.backend.calls == 1
    assert stage.worker.skipped == 1
