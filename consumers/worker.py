"""A specialist worker: answer each task once, or retry it, dead-letter it, or let it expire.

Decode -> skip if answered (or a duplicate in flight) -> deadline -> circuit breaker and
provider concurrency -> model call -> the retry decision on failure. The handler returns the
records to deliver; the runtime commits the task's offset only after they are delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from confluent_kafka import Message

from consumers.answered import AnsweredIndex
from consumers.outcomes import (
    Attempt,
    Outcomes,
    history_from,
    history_header,
    now_ms,
    replay_headers,
)
from consumers.resilience.breaker import CircuitBreaker
from consumers.resilience.ratelimit import AimdLimiter
from consumers.runtime import Context
from consumers.specialists.backends import Answer, SpecialistBackend
from switchboard.core import headers as h
from switchboard.core.aio_producer import Outbound
from switchboard.core.classify import Failure, classify
from switchboard.core.errors import DecodeError
from switchboard.core.policy import Dead, Drop, Expire, Halt, Retry, RetryPolicy
from switchboard.core.serde import REQUEST, Codec

log = logging.getLogger(__name__)


class SpecialistWorker:
    """The handler of one specialist's consumer group."""

    def __init__(
        self,
        specialist: str,
        *,
        codec: Codec,
        outcomes: Outcomes,
        index: AnsweredIndex,
        backend: SpecialistBackend,
        policy: RetryPolicy,
        breaker: CircuitBreaker,
        limiter: AimdLimiter | None = None,
    ) -> None:
        self.specialist = specialist
        self._codec = codec
        self._outcomes = outcomes
        self._index = index
        self._backend = backend
        self._policy = policy
        self._breaker = breaker
        self._limiter = limiter
        self.model_calls = 0
        self.skipped = 0
        self._answer_now: Callable[[str, str, Mapping[str, Any]], Answer] | None = getattr(
            backend, "answer_now", None
        )

    @property
    def breaker(self) -> CircuitBreaker:
        """This worker's circuit breaker; read it on the worker's event loop (or once stopped)."""
        return self._breaker

    def handle(
        self, msg: Message, ctx: Context
    ) -> Sequence[Outbound] | Awaitable[Sequence[Outbound]]:
        """Answer one task: at once when nothing needs waiting (an instant backend), else an
        awaitable the runtime runs as a task (model calls, barriers, retries)."""
        picked_ms = now_ms()
        try:
            request = self._codec.decode(REQUEST, msg.value() or b"", str(msg.topic()))
        except DecodeError as exc:
            return self._outcomes.fail(msg, classify(exc), specialist=self.specialist)
        if self._answer_now is not None:
            answered = self._try_answer_now(msg, ctx, request, picked_ms)
            if answered is not None:
                return answered
        return self._handle(msg, ctx, request, picked_ms)

    def _try_answer_now(
        self, msg: Message, ctx: Context, request: dict[str, Any], picked_ms: int
    ) -> list[Outbound] | None:
        """The fast path, or None when anything would need a wait (or a retry decision)."""
        request_id = request["request_id"]
        deadline = request.get("deadline_ms")
        if (
            not self._index.synced(ctx.assigned_at)
            or self._index.busy(request_id)
            or (deadline is not None and now_ms() >= deadline)
            or not self._breaker.allows_call()
        ):
            return None
        replay = h.header_value(msg.headers(), h.REPLAY_ID) is not None
        if self._index.is_answered(request_id, replay=replay):
            self.skipped += 1  # already answered (a redelivery) or a duplicate: never twice
            return []
        assert self._answer_now is not None
        answer = self._answer_now(self.specialist, request["prompt"], request)
        self.model_calls += 1
        self._index.mark_answered(request_id)
        attempt = int(request.get("attempt") or 0) + 1
        return [self._response(request, answer, attempt, picked_ms)]

    async def _handle(
        self, msg: Message, ctx: Context, request: dict[str, Any], picked_ms: int
    ) -> Sequence[Outbound]:
        request_id = request["request_id"]
        if not self._index.synced(ctx.assigned_at):
            await self._index.sync(ctx.assigned_at)
        # A DLQ replay follows the request's own `failed` response: only another status skips it.
        replay = h.header_value(msg.headers(), h.REPLAY_ID) is not None
        index = self._index
        claimed = (
            await index.claim(request_id, replay=replay)
            if index.busy(request_id)
            else index.try_claim(request_id, replay=replay)
        )
        if not claimed:
            self.skipped += 1  # already answered (a redelivery) or a duplicate: never twice
            return []
        status: str | None = None
        try:
            outputs, status = await self._answer(msg, request, picked_ms)
            return outputs
        finally:
            # Marked answered before delivery: the runtime delivers (or the process dies and the
            # index is rebuilt from the log), and a duplicate waiting on this claim must skip.
            self._index.release(request_id, answered=status is not None, failed=status == "failed")

    async def _answer(
        self, msg: Message, request: dict[str, Any], picked_ms: int
    ) -> tuple[list[Outbound], str | None]:
        """The records to deliver, and the status of the terminal response among them (None
        when there is none: a retry or a drop)."""
        history = history_from(msg)
        attempt = int(request.get("attempt") or 0) + 1
        deadline = request.get("deadline_ms")
        while True:
            if deadline is not None and now_ms() >= deadline:
                return [self._expired(request, attempt)], "expired"
            if not await self._admitted(deadline):
                return [self._expired(request, attempt)], "expired"
            try:
                answer = await self._call(request)
            except Exception as exc:  # every failure goes through classify + decide below
                failure = classify(exc)
                self._breaker.record_failure(failure)
                if self._limiter is not None and failure.overload:
                    self._limiter.record_overload()
                decision = self._policy.decide(failure, attempt, now_ms(), deadline)
                if isinstance(decision, Halt):
                    # Fatal and systemic (bad key, spend limit): hold this record and everything
                    # behind it in Kafka, probe again later; never fill the DLQ with these.
                    log.error("%s halted: %s; pausing %.0fs", self.specialist, decision.reason,
                              decision.pause_s)  # fmt: skip
                    self._breaker.force_open(decision.pause_s)
                    continue
                history = [
                    *history,
                    Attempt(attempt, now_ms(), failure.error_type, failure.message),
                ]
                outputs = await self._after_failure(
                    msg, request, failure, decision, attempt, history
                )
                return outputs, _terminal_status(decision)
            self._breaker.record_success()
            return [self._response(request, answer, attempt, picked_ms)], answer.status

    async def _admitted(self, deadline: int | None) -> bool:
        """Wait until the breaker admits a call; False if the deadline passes first.

        An open breaker (a halt lasts 30 s by default) can hold a call far longer than its
        request is wanted: the caller is answered ``expired`` at the deadline, not after.
        """
        if self._breaker.try_acquire():
            return True  # closed (the usual case): no wait, no timer
        if deadline is None:
            await self._breaker.acquire()
            return True
        try:
            async with asyncio.timeout(max(0.0, (deadline - now_ms()) / 1000)):
                await self._breaker.acquire()
        except TimeoutError:
            return False  # cancelled while waiting: no probe slot was taken
        return True

    async def _call(self, request: Mapping[str, Any]) -> Answer:
        """The model call, once ``_admitted`` took the breaker's admission."""
        try:
            self.model_calls += 1
            if self._limiter is None:
                return await self._backend.answer(self.specialist, request["prompt"], request)
            async with self._limiter:
                answer = await self._backend.answer(self.specialist, request["prompt"], request)
            self._limiter.record_success()
            return answer
        except asyncio.CancelledError:
            self._breaker.release()  # abandoned (revoke or shutdown): no verdict on the model
            raise

    async def _after_failure(
        self,
        msg: Message,
        request: dict[str, Any],
        failure: Failure,
        decision: Retry | Dead | Drop | Expire,
        attempt: int,
        history: list[Attempt],
    ) -> list[Outbound]:
        if isinstance(decision, Retry):
            retry = dict(request, attempt=attempt)
            headers = [
                (h.REQUEST_ID, str(request["request_id"]).encode()),
                (h.RETRY_DUE_MS, str(now_ms() + int(decision.delay_s * 1000)).encode()),
                (h.RETRY_ORIGIN_TOPIC, str(msg.topic()).encode()),
                (h.RETRY_ATTEMPT, str(attempt).encode()),
                (h.RETRY_HISTORY, history_header(history)),
                *replay_headers(msg),  # a replayed record that fails for good is parked
            ]
            value = self._codec.encode(REQUEST, retry, decision.topic)
            return [Outbound(decision.topic, value, msg.key(), headers)]
        if isinstance(decision, Expire):
            return [self._expired(request, attempt, failure)]
        if isinstance(decision, Drop):
            return []
        return await self._outcomes.fail(
            msg, failure, request=request, history=history[:-1], specialist=self.specialist,
            attempts=attempt,
        )  # fmt: skip

    def _expired(
        self, request: Mapping[str, Any], attempt: int, failure: Failure | None = None
    ) -> Outbound:
        reason = "the deadline passed before an answer"
        if failure is not None:
            reason += f" (last error: {failure.message})"
        return self._outcomes.response(
            request, "expired", f"Expired: {reason}", specialist=self.specialist,
            attempts=attempt, error_code="deadline_exceeded",
        )  # fmt: skip

    def _response(
        self, request: Mapping[str, Any], answer: Answer, attempt: int, picked_ms: int
    ) -> Outbound:
        done = now_ms()
        latency = {"model": answer.model_ms, "worker": done - picked_ms}
        with contextlib.suppress(KeyError, ValueError, TypeError):
            meta = request.get("metadata") or {}
            latency["queue"] = picked_ms - int(meta["routed_at_ms"])
            latency["route"] = int(meta["route_ms"])
        latency["total"] = done - int(request.get("created_at_ms") or done)
        return self._outcomes.response(
            request, answer.status, answer.content, specialist=self.specialist,
            backend=answer.backend, model=answer.model, usage=answer.usage,
            cost_micro_usd=answer.cost_micro_usd, stage_latency_ms=latency, attempts=attempt,
        )  # fmt: skip


def _terminal_status(decision: Retry | Dead | Drop | Expire) -> str | None:
    """The status of the response a decision writes, or None when it writes none."""
    if isinstance(decision, Dead):
        return "failed"
    if isinstance(decision, Expire):
        return "expired"
    return None
