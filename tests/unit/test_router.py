"""The router on the in-memory runtime: validation, routing, dedup, rate limits, poison bytes."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from consumers.answered import AnsweredLedger
from consumers.outcomes import Stage
from consumers.resilience.ratelimit import TenantLimiter
from consumers.router import Router, RouterRules
from consumers.runtime.memory import MemoryRuntime, MemorySink
from switchboard.core import headers as h
from switchboard.core.settings import DEFAULTS, Settings
from switchboard.core.status import ResponseStatus
from tests.support import FakeClock

from .memory_kit import (
    TOPICS,
    dead_letters,
    decoded_request,
    encoded,
    header,
    id_header,
    request,
    responses,
    router_runtime,
)


def _runtime(
    *,
    rules: RouterRules | None = None,
    limiter: TenantLimiter | None = None,
    ledger: AnsweredLedger | None = None,
) -> tuple[MemoryRuntime, Router, MemorySink]:
    sink = MemorySink()
    runtime, router = router_runtime(sink, index=ledger, rules=rules, limiter=limiter)
    return runtime, router, sink


def _feed(runtime: MemoryRuntime, record: dict[str, Any], **kwargs: Any) -> list[Any]:
    value = encoded(record, TOPICS.requests)
    headers = kwargs.pop("headers", id_header(record))
    return asyncio.run(
        runtime.feed(TOPICS.requests, value, key=record["request_id"].encode(), headers=headers)
    )


def test_a_command_routes_to_its_specialists_task_topic_on_the_fast_path() -> None:
    runtime, _router, sink = _runtime()
    req = request("/data build a CDC pipeline", tenant="acme", traceparent="00-abc-def-01")
    _feed(runtime, req)
    [task] = sink.records(TOPICS.tasks("data"))
    routed = decoded_request(task, TOPICS.tasks("data"))
    assert (routed["specialist"], routed["prompt"]) == ("data", "build a CDC pipeline")
    assert int(routed["metadata"]["routed_at_ms"]) >= req["created_at_ms"]
    assert task.key() == req["request_id"].encode()
    assert header(task, h.TENANT) == "acme" and header(task, h.SPECIALIST) == "data"
    assert header(task, h.TRACEPARENT) == "00-abc-def-01"
    assert runtime.fast_path == 1 and responses(sink) == []


def test_free_text_is_triaged_by_keywords() -> None:
    runtime, _router, sink = _runtime()
    _feed(runtime, request("our SQL injection and XSS exposure after the OAuth change"))
    assert len(sink.records(TOPICS.tasks("security"))) == 1


@pytest.mark.parametrize(
    ("rules", "fields", "code"),
    [
        (RouterRules(), {"text": "/frontend make it pretty"}, "unknown_specialist"),
        (RouterRules(), {"text": "/backend   "}, "empty_prompt"),
        (RouterRules(max_prompt_bytes=10), {"text": "/api " + "x" * 11}, "prompt_too_large"),
        (RouterRules(tenants=frozenset({"acme"})), {"tenant": "other"}, "unknown_tenant"),
        (RouterRules(), {"deadline_ms": 1}, "deadline_passed"),
        (
            RouterRules(max_metadata_entries=1),
            {"metadata": {"a": "1", "b": "2"}},
            "too_much_metadata",
        ),
        (RouterRules(max_metadata_bytes=4), {"metadata": {"key": "value"}}, "too_much_metadata"),
        (RouterRules(), {"request_id": "  "}, "invalid_request"),
    ],
)
def test_an_invalid_request_is_answered_rejected_with_its_reason(
    rules: RouterRules, fields: dict[str, Any], code: str
) -> None:
    runtime, _router, sink = _runtime(rules=rules)
    _feed(runtime, request(**fields))
    [response] = responses(sink)
    assert (response["status"], response["error_code"]) == (ResponseStatus.REJECTED, code)
    assert response["content"]  # a reason a person can act on
    assert all(not sink.records(TOPICS.tasks(s)) for s in ("backend", "api", "data"))


def test_the_same_request_id_is_routed_once() -> None:
    runtime, router, sink = _runtime()
    req = request()
    _feed(runtime, req)
    _feed(runtime, req)
    assert len(sink.records(TOPICS.tasks("backend"))) == 1
    assert router.duplicates == 1


def test_a_request_already_answered_is_not_routed() -> None:
    ledger = AnsweredLedger(3600)
    req = request()
    ledger.record_response(req["request_id"].encode(), 1, ResponseStatus.ANSWERED)
    runtime, router, sink = _runtime(ledger=ledger)
    _feed(runtime, req)
    assert sink.records(TOPICS.tasks("backend")) == [] and router.duplicates == 1


def test_a_replay_of_a_failed_request_is_routed_with_its_replay_headers() -> None:
    ledger = AnsweredLedger(3600)
    req = request()
    ledger.record_response(req["request_id"].encode(), 1, ResponseStatus.FAILED)
    runtime, _router, sink = _runtime(ledger=ledger)
    replay = [*id_header(req), (h.REPLAY_ID, b"replay-1"), (h.REPLAY_OF, b"unit.dlq/0/7")]
    _feed(runtime, req, headers=replay)
    [task] = sink.records(TOPICS.tasks("backend"))
    assert (header(task, h.REPLAY_ID), header(task, h.REPLAY_OF)) == ("replay-1", "unit.dlq/0/7")


def test_over_the_tenants_rate_is_rejected_with_a_retry_hint() -> None:
    clock = FakeClock()
    runtime, _router, sink = _runtime(
        limiter=TenantLimiter(default_rate=1.0, default_burst=1, clock=clock)
    )
    _feed(runtime, request(tenant="acme"))
    _feed(runtime, request(tenant="acme"))
    assert len(sink.records(TOPICS.tasks("backend"))) == 1
    [response] = responses(sink)
    assert (response["status"], response["error_code"]) == (ResponseStatus.REJECTED, "rate_limited")
    assert "retry in 1.00s" in response["content"]


def test_over_the_rate_with_delay_waits_in_a_retry_tier_with_its_original_bytes() -> None:
    clock = FakeClock()
    runtime, _router, sink = _runtime(
        rules=RouterRules(over_limit="delay"),
        limiter=TenantLimiter(default_rate=0.5, default_burst=1, clock=clock),
    )
    _feed(runtime, request(tenant="acme"))
    second = request(tenant="acme")
    _feed(runtime, second)
    [held] = sink.records(TOPICS.retry(10))  # 2 s to wait: the 10 s tier holds it
    assert held.value() == encoded(second, TOPICS.requests)
    assert header(held, h.RETRY_ORIGIN_TOPIC) == TOPICS.requests
    assert int(header(held, h.RETRY_DUE_MS) or 0) > second["created_at_ms"]
    assert header(held, h.REQUEST_ID) == second["request_id"]
    assert responses(sink) == []


def test_bytes_that_do_not_decode_go_to_the_dlq_with_a_failed_response() -> None:
    runtime, _router, sink = _runtime()
    headers = [(h.REQUEST_ID, b"req-poison"), (h.TENANT, b"acme")]
    asyncio.run(runtime.feed(TOPICS.requests, b"\x00not avro", key=b"k", headers=headers))
    [letter] = dead_letters(sink)
    assert letter["original_value"] == b"\x00not avro" and letter["stage"] == Stage.ROUTE
    assert letter["error_class"] == "permanent" and letter["request_id"] == "req-poison"
    [response] = responses(sink)
    assert (response["status"], response["request_id"]) == (ResponseStatus.FAILED, "req-poison")
    assert response["tenant"] == "acme" and response["dlq"]["topic"] == TOPICS.dlq
    # A typed failure, not a bug of the handler's.
    assert (runtime.stats.failures, runtime.stats.handler_errors) == (1, 0)


def test_poison_bytes_without_a_request_id_go_to_the_dlq_only() -> None:
    runtime, _router, sink = _runtime()
    asyncio.run(runtime.feed(TOPICS.requests, b"{json?}"))
    assert len(dead_letters(sink)) == 1 and responses(sink) == []


def test_router_rules_come_from_settings_and_default_to_the_settings_defaults() -> None:
    settings = Settings(max_prompt_bytes=7, tenants="a,b", over_limit="delay", dedup_window_s=5)
    rules = RouterRules.from_settings(settings)
    assert rules == RouterRules(
        max_prompt_bytes=7, tenants=frozenset({"a", "b"}), over_limit="delay", dedup_window_s=5.0
    )
    defaults = RouterRules()
    assert (defaults.max_prompt_bytes, defaults.max_metadata_bytes) == (
        DEFAULTS.max_prompt_bytes,
        DEFAULTS.max_metadata_bytes,
    )
