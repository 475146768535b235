"""Tracing across every hop on a real broker, with the real SDK against the fake model server,
into the OpenTelemetry SDK's in-memory exporter:

- a request the client sends is ONE trace: client send -> router -> worker -> model call;
- a request that meets a 429 stays in that trace through its retry record, the relay and the
  second attempt;
- a dead letter replayed later is sent in a new trace whose span LINKS to the original one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from consumers.app import Pipeline
from consumers.replay.replayer import Replayer
from consumers.replay.view import DeadLetterView
from producers.client import SwitchboardClient
from switchboard.core import tracing
from switchboard.core.aio_producer import AsyncProducer
from switchboard.core.kafka_clients import producer_config
from switchboard.core.serde import make_codec
from switchboard.core.settings import Settings
from switchboard.core.topics import GroupRole, Topics
from switchboard.devtools.fake_anthropic import FakeAnthropic
from switchboard.devtools.fake_anthropic.faults import Fault
from tests.support import wait_for

from .harness import RunningPipeline, create_topics, settings_for_test
from .helpers import read_topic

pytestmark = pytest.mark.integration

RATE_LIMITED = "size the pool (traced-429)"
BAD_REQUEST = "review this schema (traced-400)"


@dataclass
class Traced:
    settings: Settings
    topics: Topics
    kafka: dict[str, str]
    client: SwitchboardClient
    spans: InMemorySpanExporter

    def trace_of(self, trace_id: int) -> list[ReadableSpan]:
        return [
            s
            for s in self.spans.get_finished_spans()
            if s.context is not None and s.context.trace_id == trace_id
        ]


def _router_relay_backend(p: Pipeline) -> None:
    p.add_router()
    p.add_relay()
    p.add_worker("backend")


@pytest.fixture(scope="module")
def traced(kafka_bootstrap: str, kafka_config: dict[str, str]) -> Iterator[Traced]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use(provider)  # before anything is built: components ask once
    try:
        with FakeAnthropic(latency_ms=10) as fake:
            fake.script(Fault.http(429, retry_after_ms=200, match=RATE_LIMITED, count=1))
            fake.script(Fault.http(400, message="bad token", match=BAD_REQUEST, count=1))
            settings = settings_for_test(kafka_bootstrap, fake=fake)
            topics = create_topics(settings, kafka_config)
            with (
                RunningPipeline(settings, kafka_config, _router_relay_backend),
                SwitchboardClient(kafka_config, topic_prefix=settings.topic_prefix) as client,
            ):
                yield Traced(settings, topics, kafka_config, client, exporter)
    finally:
        tracing.use(None)


def _ask(traced: Traced, prompt: str) -> tuple[str, ReadableSpan]:
    """Submit ``/backend prompt``, await its response; its status and the client's send span."""
    request_id = traced.client.submit(f"/backend {prompt}")
    response = traced.client.result(request_id, 60)
    [send] = [
        s
        for s in traced.spans.get_finished_spans()
        if s.name.startswith("send ")
        and (s.attributes or {}).get("switchboard.request_id") == request_id
    ]
    return response.status, send


def _one(spans: list[ReadableSpan], name: str) -> ReadableSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, sorted(s.name for s in spans)
    return found[0]


def _parent(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def _id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.span_id


def test_a_request_is_one_trace_from_the_client_to_the_model_call(traced: Traced) -> None:
    """Client send (producer), router (consumer, child of send), worker (child of the router),
    and the model call (client, child of the worker, with gen_ai usage): one trace."""
    status, send = _ask(traced, "design a rate limiter (traced-ok)")
    assert status == "answered"
    assert send.context is not None
    spans = traced.trace_of(send.context.trace_id)
    t = traced.topics
    router = _one(spans, f"process {t.requests}")
    worker = _one(spans, f"process {t.tasks('backend')}")
    chat = _one(spans, "chat claude-sonnet-5-5")
    assert send.kind is SpanKind.PRODUCER and _parent(send) is None
    assert (send.attributes or {})["messaging.destination.name"] == t.requests
    assert _parent(router) == _id(send) and _parent(worker) == _id(router)
    assert _parent(chat) == _id(worker)
    group = t.group(GroupRole.WORKER, "backend")
    assert (worker.attributes or {})["messaging.consumer.group.name"] == group
    attrs = chat.attributes or {}
    assert attrs["gen_ai.provider.name"] == "anthropic"
    assert attrs["gen_ai.usage.output_tokens"] > 0 and attrs["gen_ai.usage.input_tokens"] > 0
    assert (worker.attributes or {})["switchboard.status"] == "answered"


def test_a_retried_request_stays_in_its_trace(traced: Traced) -> None:
    """The first model call meets a 429: that worker span is an error, the relay's span is
    its child, the second worker span the relay's child, all in the client's trace."""
    status, send = _ask(traced, RATE_LIMITED)
    assert status == "answered"
    assert send.context is not None
    spans = traced.trace_of(send.context.trace_id)
    t = traced.topics
    workers = sorted(
        (s for s in spans if s.name == f"process {t.tasks('backend')}"),
        key=lambda s: s.start_time or 0,
    )
    relays = [s for s in spans if s.name.startswith(f"process {t.prefix}.retry.")]
    assert len(workers) == 2 and len(relays) == 1, sorted(s.name for s in spans)
    first, second = workers
    assert first.status.status_code is StatusCode.ERROR
    assert _parent(relays[0]) == _id(first) and _parent(second) == _id(relays[0])
    assert len([s for s in spans if s.name.startswith("chat ")]) == 2


def test_a_replayed_dead_letter_links_to_its_original_trace(traced: Traced) -> None:
    """A 400 dead-letters the task; replaying it sends it in a new trace whose send span links
    to the original trace, and the worker's span of the replayed task is that span's child."""
    status, send = _ask(traced, BAD_REQUEST)
    assert status == "failed"
    assert send.context is not None
    original = send.context.trace_id
    codec = make_codec(None)
    [msg] = read_topic(traced.kafka, traced.topics.dlq, until=lambda m: len(m) >= 1, timeout_s=30)
    letter = DeadLetterView.from_message(msg, codec)

    async def replay() -> None:
        producer = AsyncProducer(producer_config(traced.kafka))
        try:
            result = await Replayer(producer, traced.topics).replay([letter])
            assert len(result.sent) == 1
        finally:
            await asyncio.to_thread(producer.close)

    asyncio.run(replay())
    [replay_send] = [
        s
        for s in traced.spans.get_finished_spans()
        if (s.attributes or {}).get("switchboard.replay_of") == letter.pointer
    ]
    assert replay_send.context is not None and replay_send.context.trace_id != original
    assert [link.context.trace_id for link in replay_send.links] == [original]
    tasks = f"process {traced.topics.tasks('backend')}"
    replayed = wait_for(
        lambda: [s for s in traced.trace_of(replay_send.context.trace_id) if s.name == tasks],
        30,
        "the worker's span of the replayed task",
    )
    assert _parent(replayed[0]) == _id(replay_send)
