"""Tracing on the in-memory runtime, into the SDK's in-memory exporter: a span per hop with the
messaging attributes, the model call a child with gen_ai attributes, and the W3C context (with
the tenant as baggage) carried in Kafka headers through the router, a retry and the relay.
Tracing off installs nothing at all."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from opentelemetry import baggage, trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from consumers.answered import AnsweredLedger
from consumers.outcomes import Stage
from consumers.relay import RetryRelay
from consumers.resilience.breaker import CircuitBreaker
from consumers.runtime.memory import MemoryRuntime, MemorySink
from consumers.runtime.observe import observed
from consumers.specialists.backends import Answer
from consumers.worker import SpecialistWorker
from switchboard.core import headers as h
from switchboard.core import tracing
from switchboard.core.errors import TransientError
from switchboard.core.status import ResponseStatus

from .memory_kit import TOPICS, encoded, header, id_header, request, router_runtime, strategy

PARENT_TRACE = "0af7651916cd43dd8448eb211c80319c"
PARENT_SPAN = "b7ad6b7169203331"
TRACEPARENT = f"00-{PARENT_TRACE}-{PARENT_SPAN}-01"
TRACESTATE = "vendor=opaque"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use(provider, content=False)
    try:
        yield exporter
    finally:
        tracing.use(None)


def _named(exporter: InMemorySpanExporter, name: str) -> ReadableSpan:
    found = [s for s in exporter.get_finished_spans() if s.name == name]
    assert len(found) == 1, [s.name for s in exporter.get_finished_spans()]
    return found[0]


def _ids(span: ReadableSpan) -> tuple[str, str]:
    ctx = span.get_span_context()
    assert ctx is not None
    return f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"


def _parent_span_id(span: ReadableSpan) -> str | None:
    return f"{span.parent.span_id:016x}" if span.parent is not None else None


class ClaudeLike:
    """A backend that calls itself claude: the worker then traces its calls."""

    name = "claude"

    def __init__(self, *steps: BaseException) -> None:
        self.steps = list(steps)

    def model_for(self, specialist: str) -> str:
        return "claude-sonnet-5-5"

    async def answer(self, specialist: str, prompt: str, request: Mapping[str, Any]) -> Answer:
        if self.steps:
            raise self.steps.pop(0)
        return Answer(
            ResponseStatus.ANSWERED,
            "use a token bucket",
            backend="claude-sonnet-5-5-20990101",
            model="claude-sonnet-5-5-20990101",
            usage={
                "input_tokens": 11,
                "output_tokens": 7,
                "cache_read_input_tokens": 100,
                "cache_creation_input_tokens": 20,
            },
            finish_reason="end_turn",
        )


def _worker(backend: ClaudeLike, sink: MemorySink) -> MemoryRuntime:
    failures = strategy(Stage.MODEL, sink, max_attempts=3)
    worker = SpecialistWorker(
        "backend",
        codec=failures.outcomes.codec,
        outcomes=failures.outcomes,
        index=AnsweredLedger(3600),
        backend=backend,
        failures=failures,
        breaker=CircuitBreaker("backend:test", failure_threshold=5, open_s=0.05),
    )
    return MemoryRuntime(worker.handle, failures, sink)


def _router(sink: MemorySink) -> MemoryRuntime:
    runtime, _ = router_runtime(sink)
    return runtime


def test_the_router_span_is_the_child_of_the_callers_context_and_its_task_carries_its_own(
    spans: InMemorySpanExporter,
) -> None:
    """A request with a caller's traceparent, tracestate and tenant: the router's
    ``process <requests>`` span is that span's child, with the messaging attributes; the task
    it writes carries the router span's traceparent, the caller's tracestate and the tenant as
    baggage."""
    sink = MemorySink()
    runtime = _router(sink)
    req = request(tenant="checkout")
    headers = [
        *id_header(req),
        (h.TENANT, b"checkout"),
        (h.TRACEPARENT, TRACEPARENT.encode()),
        (h.TRACESTATE, TRACESTATE.encode()),
    ]
    value = encoded(req, TOPICS.requests)
    key = req["request_id"].encode()
    [task] = asyncio.run(
        runtime.feed(TOPICS.requests, value, key=key, headers=headers, partition=2)
    )
    span = _named(spans, f"process {TOPICS.requests}")
    assert span.kind is SpanKind.CONSUMER
    assert _ids(span)[0] == PARENT_TRACE and _parent_span_id(span) == PARENT_SPAN
    assert dict(span.attributes or {}) == {
        "messaging.system": "kafka",
        "messaging.destination.name": TOPICS.requests,
        "messaging.destination.partition.id": "2",
        "messaging.consumer.group.name": "unit.router",
        "messaging.kafka.offset": 0,
        "messaging.kafka.message.key": req["request_id"],
        "messaging.operation.type": "process",
        "switchboard.request_id": req["request_id"],
        "switchboard.tenant": "checkout",
        "switchboard.stage": "route",
    }
    trace_id, span_id = _ids(span)
    assert header(task, h.TRACEPARENT) == f"00-{trace_id}-{span_id}-01"
    assert header(task, h.TRACESTATE) == TRACESTATE
    assert header(task, h.BAGGAGE) == "tenant=checkout"
    assert [k for k, _v in task.headers].count(h.TRACEPARENT) == 1  # replaced, not added


def test_a_worker_span_holds_the_model_call_as_a_child_with_gen_ai_attributes(
    spans: InMemorySpanExporter,
) -> None:
    """The worker's span is the child of the task's context, the ``chat <model>`` span the
    worker span's child, with usage counting cache tokens into input tokens; no prompt text
    is recorded unless the content option is on; the response carries the worker's context."""
    sink = MemorySink()
    runtime = _worker(ClaudeLike(), sink)
    task = request(specialist="backend", prompt="design a rate limiter")
    tasks = TOPICS.tasks("backend")
    headers = [*id_header(task), (h.TRACEPARENT, TRACEPARENT.encode())]
    [response] = asyncio.run(runtime.feed(tasks, encoded(task, tasks), key=b"k", headers=headers))
    hop = _named(spans, f"process {tasks}")
    chat = _named(spans, "chat claude-sonnet-5-5")
    assert _parent_span_id(hop) == PARENT_SPAN
    assert _parent_span_id(chat) == _ids(hop)[1] and _ids(chat)[0] == PARENT_TRACE
    assert chat.kind is SpanKind.CLIENT
    attrs = dict(chat.attributes or {})
    assert attrs == {
        "gen_ai.provider.name": "anthropic",
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "claude-sonnet-5-5",
        "gen_ai.response.model": "claude-sonnet-5-5-20990101",
        "gen_ai.response.finish_reasons": ("end_turn",),
        "gen_ai.usage.input_tokens": 131,
        "gen_ai.usage.output_tokens": 7,
        "gen_ai.usage.cache_read.input_tokens": 100,
        "gen_ai.usage.cache_creation.input_tokens": 20,
    }
    assert (hop.attributes or {})["switchboard.status"] == "answered"
    assert header(response, h.TRACEPARENT) == f"00-{PARENT_TRACE}-{_ids(hop)[1]}-01"


def test_the_content_option_records_prompt_and_answer(spans: InMemorySpanExporter) -> None:
    """With ``SWITCHBOARD_TRACE_CONTENT`` on, the model-call span holds prompt and answer."""
    tracing.use(_provider_of(spans), content=True)
    sink = MemorySink()
    runtime = _worker(ClaudeLike(), sink)
    task = request(specialist="backend", prompt="design a rate limiter")
    tasks = TOPICS.tasks("backend")
    asyncio.run(runtime.feed(tasks, encoded(task, tasks), key=b"k", headers=id_header(task)))
    attrs = dict(_named(spans, "chat claude-sonnet-5-5").attributes or {})
    assert "design a rate limiter" in str(attrs["gen_ai.input.messages"])
    assert "use a token bucket" in str(attrs["gen_ai.output.messages"])


def _provider_of(exporter: InMemorySpanExporter) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def test_a_retried_task_stays_in_its_trace_through_the_retry_record_and_the_relay(
    spans: InMemorySpanExporter,
) -> None:
    """A 429-like failure: the retry record carries the failed worker span's context, the
    relay's span is its child and the task it sends back carries the relay's, so the second
    attempt's span is in the same trace. The failed attempt's span is marked as an error."""
    sink = MemorySink()
    runtime = _worker(ClaudeLike(TransientError("rate limited", retry_after_s=0.0)), sink)
    task = request(specialist="backend", prompt="design a rate limiter", tenant="acme")
    tasks = TOPICS.tasks("backend")
    headers = [*id_header(task), (h.TENANT, b"acme"), (h.TRACEPARENT, TRACEPARENT.encode())]
    [retry] = asyncio.run(runtime.feed(tasks, encoded(task, tasks), key=b"k", headers=headers))
    first = _named(spans, f"process {tasks}")
    assert first.status.status_code is trace.StatusCode.ERROR
    assert header(retry, h.TRACEPARENT) == f"00-{PARENT_TRACE}-{_ids(first)[1]}-01"
    assert header(retry, h.BAGGAGE) == "tenant=acme"

    relay_sink = MemorySink()
    relay = MemoryRuntime(RetryRelay(TOPICS).handle, strategy(Stage.RELAY, relay_sink))
    [back] = asyncio.run(
        relay.feed(retry.topic, retry.value, key=retry.key, headers=list(retry.headers))
    )
    relay_span = _named(spans, f"process {retry.topic}")
    assert _parent_span_id(relay_span) == _ids(first)[1]
    assert header(back, h.TRACEPARENT) == f"00-{PARENT_TRACE}-{_ids(relay_span)[1]}-01"

    spans.clear()
    asyncio.run(runtime.feed(back.topic, back.value, key=back.key, headers=list(back.headers)))
    second = _named(spans, f"process {tasks}")
    assert _ids(second)[0] == PARENT_TRACE and _parent_span_id(second) == _ids(relay_span)[1]


def test_a_dead_letter_carries_the_failing_hops_context_and_keeps_the_original_headers(
    spans: InMemorySpanExporter,
) -> None:
    """Bytes that do not decode at the router: the DLQ record's own headers carry the router
    span's context, its original headers the caller's, and the ``failed`` response (the
    request id header survived) the router span's too."""
    sink = MemorySink()
    runtime = _router(sink)
    headers = [(h.REQUEST_ID, b"r-1"), (h.TRACEPARENT, TRACEPARENT.encode())]
    [failed] = asyncio.run(runtime.feed(TOPICS.requests, b"\x00garbage", headers=headers))
    span = _named(spans, f"process {TOPICS.requests}")
    mine = f"00-{PARENT_TRACE}-{_ids(span)[1]}-01"
    [letter] = sink.records(TOPICS.dlq)
    assert header(letter, h.TRACEPARENT) == mine
    assert header(failed, h.TRACEPARENT) == mine
    assert span.status.status_code is trace.StatusCode.ERROR


def test_headers_round_trip_through_the_getter_and_setter_in_either_shape() -> None:
    """Extract reads a list of pairs or a dict, bytes or str; inject replaces, never adds."""
    for carrier in (
        [(h.TRACEPARENT, TRACEPARENT.encode()), (h.BAGGAGE, b"tenant=t1")],
        {h.TRACEPARENT: TRACEPARENT, h.BAGGAGE: "tenant=t1"},
    ):
        ctx = tracing.extract(carrier)
        span_ctx = trace.get_current_span(ctx).get_span_context()
        assert f"{span_ctx.trace_id:032x}" == PARENT_TRACE
        assert baggage.get_baggage("tenant", ctx) == "t1"
        out: list[tuple[str, Any]] = [(h.TRACEPARENT, b"stale"), ("other", b"x")]
        tracing.inject(out, ctx)
        assert out == [
            ("other", b"x"),
            (h.TRACEPARENT, TRACEPARENT.encode()),
            (h.BAGGAGE, b"tenant=t1"),
        ]


def test_tracing_off_installs_nothing_on_the_hot_path() -> None:
    """No SDK provider: the runtime keeps the very handler and failure path it was given, so
    a record costs no extra call, no span and no header walk."""
    tracing.use(None)
    assert tracing.tracer() is None

    def handler(_msg: Any, _ctx: Any) -> list[Any]:
        return []

    failures = strategy(Stage.ROUTE)
    assert observed(handler, failures) == (handler, failures)
