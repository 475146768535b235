"""Builders for handler tests on the in-memory runtime: no broker, the production handlers."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from confluent_kafka import KafkaError

from consumers.answered import AnsweredLedger
from consumers.outcomes import Outcomes, Stage
from consumers.router import Router, RouterRules
from consumers.runtime.failures import FailureStrategy
from consumers.runtime.memory import MemoryRuntime, MemorySink
from consumers.runtime.message import MemoryRecord
from producers.client import build_request
from switchboard.core import headers as h
from switchboard.core.aio_producer import Outbound
from switchboard.core.policy import RetryPolicy
from switchboard.core.serde import DEAD_LETTER, REQUEST, RESPONSE, SingleObjectCodec
from switchboard.core.topics import Topics

TOPICS = Topics("unit")
CODEC = SingleObjectCodec()
GROUPS = {Stage.ROUTE: "unit.router", Stage.MODEL: "unit.worker.backend", Stage.RELAY: "unit.relay"}


def strategy(
    stage: Stage,
    sink: MemorySink | None = None,
    *,
    max_attempts: int = 3,
    halt_pause_s: float = 30.0,
    clock_ms: Callable[[], int] | None = None,
) -> FailureStrategy:
    """A failure strategy writing to ``sink``, with a jitter-free policy."""
    outcomes = Outcomes(CODEC, TOPICS, sink or MemorySink(), GROUPS[stage], stage)
    policy = RetryPolicy(TOPICS, max_attempts=max_attempts, jitter=0.0, halt_pause_s=halt_pause_s)
    if clock_ms is None:
        return FailureStrategy(outcomes, policy)
    return FailureStrategy(outcomes, policy, clock_ms)


def router_runtime(
    sink: MemorySink,
    *,
    index: AnsweredLedger | None = None,
    rules: RouterRules | None = None,
    **router: Any,
) -> tuple[MemoryRuntime, Router]:
    """The production router on the in-memory runtime, writing to ``sink``: a fresh answered
    index (an hour's window) and default rules unless given; ``router`` passes the other
    ``Router`` arguments (``limiter``, ``tenants``, ``triage``)."""
    failures = strategy(Stage.ROUTE, sink)
    handler = Router(
        codec=failures.outcomes.codec,
        topics=TOPICS,
        outcomes=failures.outcomes,
        index=index or AnsweredLedger(3600),
        rules=rules or RouterRules(),
        **router,
    )
    return MemoryRuntime(handler.handle, failures, sink), handler


_BUILD_ARGS = ("tenant", "specialist", "request_id", "deadline_s", "reply_to", "metadata")


def request(text: str = "/backend design a rate limiter", **fields: Any) -> dict[str, Any]:
    """A SpecialistRequest; ``fields`` override any of its fields."""
    build = {name: fields.pop(name) for name in _BUILD_ARGS if name in fields}
    return {**build_request(text, **build), **fields}


def encoded(record: Mapping[str, Any], topic: str) -> bytes:
    return CODEC.encode(REQUEST, record, topic)


def id_header(record: Mapping[str, Any]) -> list[tuple[str, bytes | None]]:
    return [(h.REQUEST_ID, str(record["request_id"]).encode())]


def decoded_response(record: MemoryRecord | Outbound) -> dict[str, Any]:
    value = record.value if isinstance(record, Outbound) else record.value()
    return CODEC.decode(RESPONSE, value, TOPICS.responses)


def decoded_request(record: MemoryRecord | Outbound, topic: str) -> dict[str, Any]:
    value = record.value if isinstance(record, Outbound) else record.value()
    return CODEC.decode(REQUEST, value, topic)


def decoded_dead_letter(record: MemoryRecord) -> dict[str, Any]:
    return CODEC.decode(DEAD_LETTER, record.value(), TOPICS.dlq)


def responses(sink: MemorySink) -> list[dict[str, Any]]:
    return [decoded_response(r) for r in sink.records(TOPICS.responses)]


def dead_letters(sink: MemorySink, topic: str = TOPICS.dlq) -> list[dict[str, Any]]:
    return [decoded_dead_letter(r) for r in sink.records(topic)]


def header(record: MemoryRecord | Outbound, name: str) -> str | None:
    return h.header_value(
        record.headers if isinstance(record, Outbound) else record.headers(), name
    )


def refuse_topic(
    topic: str, code: int = KafkaError.MSG_SIZE_TOO_LARGE
) -> Callable[[Outbound], KafkaError | None]:
    """A sink refusal: every record for ``topic`` fails with ``code``."""
    return lambda out: KafkaError(code) if out.topic == topic else None
