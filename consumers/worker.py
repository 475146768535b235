"""A specialist worker: answer each task once, or let the runtime retry, dead-letter or expire it.

Decode -> skip if answered (or a duplicate in flight) -> deadline -> circuit breaker and
provider concurrency -> model call. The handler returns the records to deliver, or raises
``RecordFailed`` with the decision it acted on: the runtime's ``FailureStrategy`` writes the
retry record, the dead letter or the ``expired`` answer. Only the worker's own reactions stay
here: the breaker and the AIMD limiter learn of every model failure, a halt (bad key, spend
limit) pauses the breaker and calls again, and the answered-index claim is released with the
status the decision writes. The runtime commits the task's offset only after the records are
delivered.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from opentelemetry.trace import SpanKind, Tracer

from consumers.answered import AnsweredLedger
from consumers.outcomes import Outcomes, history_from, now_ms
from consumers.resilience.breaker import CircuitBreaker
from consumers.resilience.ratelimit import AimdLimiter
from consumers.runtime import Context, Record
from consumers.runtime.failures import FailureStrategy, RecordFailed
from consumers.specialists.backends import Answer, SpecialistBackend
from consumers.status.usage import UsageTotals
from consumers.validation import (
    BodyRules,
    admit_routed,
    header_request,
    invalid_utf8,
    routed_by_headers,
)
from switchboard.core import headers as h
from switchboard.core import tracing
from switchboard.core.aio_producer import Outbound
from switchboard.core.classify import classify
from switchboard.core.errors import DecodeError, RequestInvalid
from switchboard.core.policy import DEADLINE_REACHED, Expire, Halt
from switchboard.core.serde import REQUEST, Codec
from switchboard.core.status import ResponseStatus

log = logging.getLogger(__name__)


async def _resolved(
    outputs: Sequence[Outbound] | Awaitable[Sequence[Outbound]],
) -> Sequence[Outbound]:
    return await outputs if inspect.isawaitable(outputs) else outputs


class SpecialistWorker:
    """The handler of one specialist's consumer group."""

    def __init__(
        self,
        specialist: str,
        *,
        codec: Codec,
        outcomes: Outcomes,
        index: AnsweredLedger,
        backend: SpecialistBackend,
        failures: FailureStrategy,
        breaker: CircuitBreaker,
        limiter: AimdLimiter | None = None,
        rules: BodyRules | None = None,
    ) -> None:
        """``rules``: the body's limits, checked here for tasks the router routed from
        headers (default: the settings' defaults)."""
        self.specialist = specialist
        self._body_rules = rules or BodyRules()
        self._codec = codec
        self._outcomes = outcomes
        self._index = index
        self._backend = backend
        self._failures = failures
        self._breaker = breaker
        self._limiter = limiter
        self.model_calls = 0
        self.skipped = 0
        #: Answers, tokens and cost so far (the status publisher reports their last hour).
        self.usage = UsageTotals()
        self._answer_now: Callable[[str, str, Mapping[str, Any]], Answer] | None = getattr(
            backend, "answer_now", None
        )
        #: Model calls get a ``chat <model>`` span (a child of the record's) when tracing is on
        #: and a model answers; asked once here, so tracing off costs nothing per call.
        self._tracer = tracing.tracer() if backend.name == "claude" else None

    @property
    def breaker(self) -> CircuitBreaker:
        """This worker's circuit breaker; read it on the worker's event loop (or once stopped)."""
        return self._breaker

    def handle(
        self, msg: Record, ctx: Context
    ) -> Sequence[Outbound] | Awaitable[Sequence[Outbound]]:
        """Answer one task: at once when nothing needs waiting (an instant backend), else an
        awaitable the runtime runs as a task (model calls, barriers, retries)."""
        picked_ms = now_ms()
        headers = msg.headers()
        facts = dict(headers) if headers else {}
        by_headers = routed_by_headers(facts)
        try:
            request = self._codec.decode(REQUEST, msg.value() or b"", str(msg.topic()))
        except DecodeError as exc:
            answer_to = header_request(headers) if by_headers else None
            if answer_to is not None and isinstance(exc.__cause__, UnicodeDecodeError):
                return self._rejected(ctx, answer_to, invalid_utf8(exc.__cause__))
            raise RecordFailed(classify(exc), specialist=self.specialist) from exc
        if by_headers:
            # Routed from its headers alone: the body's checks are this worker's (the router's
            # reasons and codes), before any model call.
            try:
                request = admit_routed(request, facts, self._body_rules)
            except RequestInvalid as exc:
                answer_to = header_request(headers) or {}
                return self._rejected(ctx, {**request, **answer_to}, exc)
        if self._answer_now is not None:
            answered = self._try_answer_now(msg, ctx, request, picked_ms, facts)
            if answered is not None:
                return answered
        return self._handle(msg, ctx, request, picked_ms)

    def _rejected(
        self, ctx: Context, request: dict[str, Any], exc: RequestInvalid
    ) -> Sequence[Outbound] | Awaitable[Sequence[Outbound]]:
        """A header-routed task whose body the router would have refused: its one
        ``rejected`` response (none when the request was answered already)."""
        if not self._index.synced(ctx.assigned_at):
            return self._rejected_after_sync(ctx, request, exc)
        request_id = request["request_id"]
        if self._index.is_answered(request_id) or self._index.busy(request_id):
            self.skipped += 1
            return []
        self._index.mark_answered(request_id)
        response = self._outcomes.response(
            request,
            ResponseStatus.REJECTED,
            str(exc),
            specialist=self.specialist,
            error_code=exc.code,
        )
        return self._outcomes.recorded(response)

    async def _rejected_after_sync(
        self, ctx: Context, request: dict[str, Any], exc: RequestInvalid
    ) -> Sequence[Outbound]:
        await self._index.sync(ctx.assigned_at)
        return await _resolved(self._rejected(ctx, request, exc))

    def _try_answer_now(
        self,
        msg: Record,
        ctx: Context,
        request: dict[str, Any],
        picked_ms: int,
        facts: Mapping[str, Any],
    ) -> list[Outbound] | None:
        """The fast path, or None when anything would need a wait (or a retry decision).
        ``facts``: the task's headers as a dict (the last value of each), read once."""
        request_id = request["request_id"]
        deadline = request.get("deadline_ms")
        if (
            not self._index.synced(ctx.assigned_at)
            or self._index.busy(request_id)
            or (deadline is not None and now_ms() >= deadline)
            or not self._breaker.allows_call()
            or self._index.beyond_horizon(_created_ms(msg, request))
        ):
            return None
        replay = facts.get(h.REPLAY_ID) is not None
        if self._index.is_answered(request_id, replay=replay):
            self.skipped += 1  # already answered (a redelivery) or a duplicate: never twice
            return []
        assert self._answer_now is not None
        answer = self._answer_now(self.specialist, request["prompt"], request)
        self.model_calls += 1
        self._index.mark_answered(request_id)
        attempt = int(request.get("attempt") or 0) + 1
        return self._outcomes.recorded(self._response(request, answer, attempt, picked_ms))

    async def _handle(
        self, msg: Record, ctx: Context, request: dict[str, Any], picked_ms: int
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
            if self._index.beyond_horizon(_created_ms(msg, request)):
                # Its answer, if it had one, may be forgotten: never sent to the model again.
                status = ResponseStatus.EXPIRED
                expired = self._outcomes.expired(
                    request,
                    int(request.get("attempt") or 0),
                    specialist=self.specialist,
                    horizon_s=self._index.horizon_s,
                )
                return self._outcomes.recorded(expired)
            answer, attempt = await self._answer(msg, request)
            status = answer.status
            return self._outcomes.recorded(self._response(request, answer, attempt, picked_ms))
        except RecordFailed as failed:
            status = self._failures.terminal_status(failed.decision)
            raise
        finally:
            # Marked answered before delivery: the runtime delivers (or the process dies and the
            # index is rebuilt from the log), and a duplicate waiting on this claim must skip.
            self._index.release(
                request_id, answered=status is not None, failed=status == ResponseStatus.FAILED
            )

    async def _answer(self, msg: Record, request: dict[str, Any]) -> tuple[Answer, int]:
        """The answer and the attempt it took; raises ``RecordFailed`` with the decision when
        the call fails for good, must wait in a retry tier, or the deadline passes first."""
        attempt = int(request.get("attempt") or 0) + 1
        deadline = request.get("deadline_ms")
        while True:
            if (deadline is not None and now_ms() >= deadline) or not await self._admitted(
                deadline
            ):
                raise RecordFailed(
                    None,
                    request=request,
                    attempt=attempt,
                    specialist=self.specialist,
                    decision=Expire(DEADLINE_REACHED),
                )
            try:
                answer = await self._call(request)
            except Exception as exc:  # every failure goes through classify + decide below
                failure = classify(exc)
                self._breaker.record_failure(failure)
                if self._limiter is not None and failure.overload:
                    self._limiter.record_overload()
                decision = self._failures.decide(failure, attempt=attempt, deadline_ms=deadline)
                if isinstance(decision, Halt):
                    # Fatal and systemic (bad key, spend limit): hold this record and everything
                    # behind it in Kafka, probe again later; never fill the DLQ with these.
                    log.error(
                        "%s halted: %s; pausing %.0fs",
                        self.specialist,
                        decision.reason,
                        decision.pause_s,
                    )
                    self._breaker.force_open(decision.pause_s)
                    continue
                raise RecordFailed(
                    failure,
                    request=request,
                    attempt=attempt,
                    history=history_from(msg),
                    specialist=self.specialist,
                    deadline_ms=deadline,
                    decision=decision,
                ) from exc
            self._breaker.record_success()
            return answer, attempt

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
        if self._tracer is not None:
            return await self._traced_call(self._tracer, request)
        return await self._call_backend(request)

    async def _traced_call(self, tracer: Tracer, request: Mapping[str, Any]) -> Answer:
        """``_call_backend`` in a ``chat <model>`` span with the GenAI attributes (prompt and
        answer only with ``SWITCHBOARD_TRACE_CONTENT``)."""
        model_for = getattr(self._backend, "model_for", None)
        model = model_for(self.specialist) if model_for is not None else None
        attrs = tracing.gen_ai_attributes(request_model=model, response_model=None)
        with tracer.start_as_current_span(
            f"chat {model or self.specialist}", kind=SpanKind.CLIENT, attributes=attrs
        ) as span:
            try:
                answer = await self._call_backend(request)
            except Exception as exc:
                span.set_attribute("error.type", type(exc).__name__)
                raise
            reasons = [answer.finish_reason] if answer.finish_reason else []
            span.set_attributes(
                tracing.gen_ai_attributes(
                    request_model=model,
                    response_model=answer.model,
                    finish_reasons=reasons,
                    usage=answer.usage,
                )
            )
            if tracing.record_content():
                span.set_attributes(tracing.content_attributes(request["prompt"], answer.content))
            return answer

    async def _call_backend(self, request: Mapping[str, Any]) -> Answer:
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

    async def close(self) -> None:
        """Close the backend's connections, if it holds any (a model client's pool)."""
        aclose = getattr(self._backend, "aclose", None)
        if aclose is not None:
            await aclose()

    def _response(
        self, request: Mapping[str, Any], answer: Answer, attempt: int, picked_ms: int
    ) -> Outbound:
        self.usage.add(answer.usage, answer.cost_micro_usd)
        done = now_ms()
        latency = {"model": answer.model_ms, "worker": done - picked_ms}
        try:  # a plain try: a suppress() context costs a call and an object per answer
            meta = request.get("metadata") or {}
            latency["queue"] = picked_ms - int(meta["routed_at_ms"])
            latency["route"] = int(meta["route_ms"])
        except (KeyError, ValueError, TypeError):
            pass
        latency["total"] = done - int(request.get("created_at_ms") or done)
        return self._outcomes.answer(
            request,
            answer,
            backend=answer.backend,
            specialist=self.specialist,
            stage_latency_ms=latency,
            attempts=attempt,
        )


def _created_ms(msg: Record, request: Mapping[str, Any]) -> int | None:
    """When the request was made: its ``created_at_ms``, else the task record's timestamp."""
    created = request.get("created_at_ms")
    if created is not None:
        return int(created)
    kind, ts = msg.timestamp()
    return ts if kind and ts > 0 else None
