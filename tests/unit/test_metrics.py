"""The metrics helpers: bounded labels, responses and latencies, model calls through the
instrumented backend (no broker; the process registry, read as deltas)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import anthropic
import httpx2
import pytest
from prometheus_client import REGISTRY

from consumers.specialists.backends import Answer, OfflineBackend
from consumers.specialists.instrumented import InstrumentedBackend
from switchboard.core import metrics
from switchboard.core.status import ResponseStatus


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_specialist_labels_are_bounded() -> None:
    assert metrics.specialist_label("backend") == "backend"
    assert metrics.specialist_label("") == "none"
    assert metrics.specialist_label(None) == "none"
    assert metrics.specialist_label("x" * 1000) == "other"


def test_responses_count_by_status_and_observe_e2e_and_stage_latency() -> None:
    m = metrics.ResponseMetrics("model")

    def samples() -> tuple[float, ...]:
        return (
            value(
                "switchboard_responses_total", stage="model", specialist="api", status="answered"
            ),
            value("switchboard_e2e_duration_seconds_count", specialist="api"),
            value("switchboard_e2e_duration_seconds_sum", specialist="api"),
            value("switchboard_stage_duration_seconds_count", stage="queue", specialist="api"),
            value("switchboard_e2e_duration_seconds_bucket", specialist="api", le="0.05"),
        )

    before = samples()
    m.observe("api", ResponseStatus.ANSWERED, {"total": 40, "queue": 3, "model": 30, "worker": 35})
    m.observe("api", ResponseStatus.ANSWERED, {"total": 2000, "queue": 1})
    after = samples()
    assert [a - b for a, b in zip(after, before, strict=True)] == pytest.approx([2, 2, 2.04, 2, 1])


def test_a_made_up_specialist_is_counted_as_other_without_a_series_of_its_own() -> None:
    m = metrics.ResponseMetrics("route")
    before = value(
        "switchboard_responses_total", stage="route", specialist="other", status="rejected"
    )
    for i in range(50):
        m.observe(f"frontend-{i}", ResponseStatus.REJECTED)
    after = value(
        "switchboard_responses_total", stage="route", specialist="other", status="rejected"
    )
    assert after - before == 50
    assert len(m._responses) == 1  # one bound child, not fifty
    assert (
        REGISTRY.get_sample_value(
            "switchboard_responses_total",
            {"stage": "route", "specialist": "frontend-1", "status": "rejected"},
        )
        is None
    )


class _Scripted:
    """A backend that answers with usage, or raises what it is given."""

    name = "claude"

    def __init__(self, result: Answer | Exception) -> None:
        self.result = result

    async def answer(self, specialist: str, prompt: str, request: Mapping[str, Any]) -> Answer:
        if isinstance(self.result, Exception):
            raise self.result
        return self.result


def _model_call_values(specialist: str, model: str) -> list[float]:
    """What one answered model call moves: calls, input/output/cache-read tokens, cost, and the
    GenAI duration and input-token sums."""
    labels = {"specialist": specialist, "model": model}
    genai = {"specialist": specialist, "gen_ai_request_model": model}
    return [
        value("switchboard_model_calls_total", **labels, outcome="answered"),
        value("switchboard_model_tokens_total", **labels, type="input"),
        value("switchboard_model_tokens_total", **labels, type="output"),
        value("switchboard_model_tokens_total", **labels, type="cache_read"),
        value("switchboard_model_cost_usd_total", **labels),
        value("gen_ai_client_operation_duration_seconds_sum", **genai),
        value("gen_ai_client_token_usage_sum", **genai, gen_ai_token_type="input"),
    ]


def test_instrumented_backend_counts_calls_tokens_and_cost() -> None:
    usage = {
        "input_tokens": 120,
        "output_tokens": 300,
        "cache_read_input_tokens": 1000,
        "cache_creation_input_tokens": 0,
    }
    answer = Answer(ResponseStatus.ANSWERED, "ok", "m-1", "m-1", usage, 2_500, 1500)
    backend = InstrumentedBackend(_Scripted(answer), "perf", "m-1")
    assert not hasattr(backend, "answer_now")  # a backend that waits keeps the slow path
    before = _model_call_values("perf", "m-1")
    assert asyncio.run(backend.answer("perf", "p", {})) is answer
    after = _model_call_values("perf", "m-1")
    deltas = [a - b for a, b in zip(after, before, strict=True)]
    assert deltas == pytest.approx([1, 120, 300, 1000, 0.0025, 1.5, 1120])


def test_instrumented_backend_counts_a_429_by_code_and_raises_it_unchanged() -> None:
    response = httpx2.Response(429, request=httpx2.Request("POST", "http://fake/v1/messages"))
    error = anthropic.RateLimitError("slow down", response=response, body=None)
    backend = InstrumentedBackend(_Scripted(error), "data", "m-2")
    key = {"specialist": "data", "model": "m-2"}
    before = value(
        "switchboard_model_errors_total", **key, error_class="transient", code="rate_limited"
    )
    calls = value("switchboard_model_calls_total", **key, outcome="error")
    with pytest.raises(anthropic.RateLimitError):
        asyncio.run(backend.answer("data", "p", {}))
    after = value(
        "switchboard_model_errors_total", **key, error_class="transient", code="rate_limited"
    )
    assert after - before == 1
    assert value("switchboard_model_calls_total", **key, outcome="error") - calls == 1


def test_the_offline_rulebook_keeps_its_fast_path_and_is_counted() -> None:
    backend = InstrumentedBackend(OfflineBackend(), "api", "claude-sonnet-5-5")
    labels = {"specialist": "api", "model": "offline", "outcome": "answered"}
    before = value("switchboard_model_calls_total", **labels)
    answer = backend.answer_now("api", "/api design cursor pagination", {})
    assert answer.backend == "offline"
    assert value("switchboard_model_calls_total", **labels) - before == 1


def test_a_loop_counter_exports_what_a_prometheus_counter_would() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry()
    counter = metrics.LoopCounter("t_calls_total", "Calls.", ["outcome"], registry=registry)
    answered = counter.labels("answered")
    answered.inc()
    answered.value += 2  # the hot path's own add
    counter.labels("error").inc(0.5)
    assert counter.labels("answered") is answered  # bound once, kept
    text = generate_latest(registry).decode()
    assert "# TYPE t_calls_total counter" in text  # as prometheus_client's Counter writes it
    assert 't_calls_total{outcome="answered"} 3.0' in text
    assert 't_calls_total{outcome="error"} 0.5' in text
    with pytest.raises(ValueError, match="only goes up"):
        answered.inc(-1)
    with pytest.raises(ValueError, match="takes labels"):
        counter.labels("answered", "extra")


def test_exported_names_are_the_samples_a_scrape_writes() -> None:
    from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

    registry = CollectorRegistry()
    metrics.LoopCounter("t_loop_total", "Loop.", ["x"], registry=registry).labels("a").inc()
    metrics.LoopHistogram("t_hist", "Hist.", ["x"], buckets=[1.0], registry=registry).labels(
        "a"
    ).observe(0.5)
    Counter("t_plain_total", "Plain.", registry=registry).inc()
    Histogram("t_lat_seconds", "Latency.", ["x"], buckets=[1.0], registry=registry)  # no child
    written = {
        line.split("{")[0].split(" ")[0]
        for line in generate_latest(registry).decode().splitlines()
        if line and not line.startswith("#")
    }
    exported = metrics.exported_names(registry)
    assert written <= exported
    # The loop families write no ``_created``: claiming one would let a rule use a series
    # that never exists. prometheus_client's own counter writes it.
    assert "t_loop_created" not in exported and "t_hist_created" not in exported
    assert "t_plain_created" in written and "t_plain_created" in exported
    # A labelled family with no child yet still names the samples it will write.
    assert {"t_lat_seconds_bucket", "t_lat_seconds_sum", "t_lat_seconds_count"} <= exported
