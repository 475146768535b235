"""Tracing: OpenTelemetry spans per hop, W3C context carried in Kafka headers.

Off by default and then free: ``tracer()`` is None unless an SDK ``TracerProvider`` is
configured (by ``setup`` when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set, by ``use`` in tests, or
by an application that set the global provider itself), and every component asks once, when
it is built, so the hot path never creates a span nor parses a header for tracing.

On, every hop is a span named by the messaging conventions (``send switchboard.requests``,
``process switchboard.tasks.backend``), a consumer's span the child of the producer's context
found in the record's ``traceparent``/``tracestate`` headers, with the tenant carried as W3C
``baggage``. ``HopSpan`` is one record's span: its context is attached while the record is
handled, and ``finish`` writes that context into every output's headers.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final

from opentelemetry import baggage, trace
from opentelemetry import context as otel_context
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import Getter, Setter
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from switchboard.core import headers as h
from switchboard.core.aio_producer import Outbound

#: The instrumentation scope of every Switchboard span.
SCOPE: Final = "switchboard"
#: The baggage entry that carries the tenant across hops.
TENANT_BAGGAGE: Final = "tenant"
#: Headers a hop rewrites on its outputs: W3C trace context and baggage.
TRACE_HEADERS: Final = frozenset({h.TRACEPARENT, h.TRACESTATE, h.BAGGAGE})

# Messaging semantic-convention attribute names (still "Development" upstream: kept here once).
SYSTEM: Final = "messaging.system"
DESTINATION: Final = "messaging.destination.name"
PARTITION: Final = "messaging.destination.partition.id"
GROUP: Final = "messaging.consumer.group.name"
OFFSET: Final = "messaging.kafka.offset"
KEY: Final = "messaging.kafka.message.key"
OPERATION: Final = "messaging.operation.type"
# Switchboard's own.
REQUEST_ID: Final = "switchboard.request_id"
TENANT: Final = "switchboard.tenant"
STAGE: Final = "switchboard.stage"
STATUS: Final = "switchboard.status"

_PROPAGATOR: Final = CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()])


class _State:
    tracer: Tracer | None = None
    content: bool = False


_state = _State()


# --- set-up -------------------------------------------------------------------------------
def use(provider: trace.TracerProvider | None, *, content: bool = False) -> None:
    """Trace through ``provider`` from now on (None: tracing off). Components built before
    keep what they found when they were built. ``content``: record prompts and answers."""
    _state.tracer = provider.get_tracer(SCOPE) if provider is not None else None
    _state.content = content


def setup(service_name: str, *, endpoint: str | None, content: bool = False) -> bool:
    """Export spans over OTLP/HTTP when ``endpoint`` (``OTEL_EXPORTER_OTLP_ENDPOINT``) is set;
    without it nothing is loaded and tracing stays off. True when tracing is on.

    The exporter reads the standard ``OTEL_EXPORTER_OTLP_*`` variables itself (headers,
    per-signal endpoint, timeout), and ``OTEL_SERVICE_NAME`` wins over ``service_name``.
    """
    if not endpoint:
        _state.content = content
        return tracer() is not None  # an application may have set the global provider itself
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({SERVICE_NAME: service_name})
    provider = TracerProvider(resource=resource)  # flushes its batch at interpreter exit
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    use(provider, content=content)
    return True


def tracer() -> Tracer | None:
    """The tracer to use, or None when tracing is off (then create no span at all).

    Asked once per component, when it is built: never per record.
    """
    if _state.tracer is not None:
        return _state.tracer
    provider = trace.get_tracer_provider()
    if isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
        return None
    return provider.get_tracer(SCOPE)


def record_content() -> bool:
    """Whether spans may hold prompt and answer text (``SWITCHBOARD_TRACE_CONTENT``)."""
    return _state.content


# --- propagation over Kafka headers ----------------------------------------------------------
class KafkaHeadersGetter(Getter[Any]):
    """Reads W3C fields from confluent-kafka headers (a list of pairs, or a dict)."""

    def get(self, carrier: Any, key: str) -> list[str] | None:
        values = [
            v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
            for k, v in h.header_pairs(carrier)
            if k == key and v is not None
        ]
        return values or None

    def keys(self, carrier: Any) -> list[str]:
        return [k for k, _v in h.header_pairs(carrier)]


class KafkaHeadersSetter(Setter[list[tuple[str, Any]]]):
    """Writes W3C fields into a list of header pairs as bytes, replacing any earlier value."""

    def set(self, carrier: list[tuple[str, Any]], key: str, value: str) -> None:
        carrier[:] = [(k, v) for k, v in carrier if k != key]
        carrier.append((key, value.encode()))


GETTER: Final = KafkaHeadersGetter()
SETTER: Final = KafkaHeadersSetter()


def extract(headers: h.RawHeaders, context: Context | None = None) -> Context:
    """The trace context and baggage that ``headers`` carry (on top of ``context``)."""
    return _PROPAGATOR.extract(headers or [], context, getter=GETTER)


def inject(headers: list[tuple[str, Any]], context: Context | None = None) -> list[tuple[str, Any]]:
    """``headers`` with the trace context and baggage of ``context`` (default: the current
    one) in place of any they had; returns the same list."""
    _PROPAGATOR.inject(headers, context, setter=SETTER)
    return headers


def with_context(out: Outbound, context: Context | None = None) -> Outbound:
    """``out`` carrying ``context`` (default: the current one) instead of its own."""
    headers = [(k, v) for k, v in out.headers if k not in TRACE_HEADERS]
    return replace(out, headers=inject(headers, context))


def with_tenant(context: Context, tenant: str | None) -> Context:
    """``context`` with the tenant in its baggage, unless it has one already."""
    if not tenant or baggage.get_baggage(TENANT_BAGGAGE, context) is not None:
        return context
    return baggage.set_baggage(TENANT_BAGGAGE, tenant, context)


def traceparent(span: Span) -> tuple[str | None, str | None]:
    """``span``'s W3C ``traceparent`` and ``tracestate`` (None when it has none)."""
    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier, trace.set_span_in_context(span))
    return carrier.get(h.TRACEPARENT), carrier.get(h.TRACESTATE) or None


def current_ids() -> tuple[str, str] | None:
    """The current span's trace and span id in hex, or None (for log lines)."""
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None
    return f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"


def message_attributes(
    operation: str,
    topic: str,
    *,
    partition: int | None = None,
    key: bytes | None = None,
    offset: int | None = None,
    group: str | None = None,
) -> dict[str, Any]:
    """The messaging semantic-convention attributes of one Kafka record's span."""
    attrs: dict[str, Any] = {SYSTEM: "kafka", DESTINATION: topic, OPERATION: operation}
    if partition is not None:
        attrs[PARTITION] = str(partition)
    if offset is not None:
        attrs[OFFSET] = offset
    if group is not None:
        attrs[GROUP] = group
    if key:
        attrs[KEY] = key.decode("utf-8", "replace")
    return attrs


def link_to(headers: h.RawHeaders) -> list[Link]:
    """A link to the span whose context ``headers`` carry (none when they carry none)."""
    span_ctx = trace.get_current_span(extract(headers)).get_span_context()
    return [Link(span_ctx)] if span_ctx.is_valid else []


# --- one record's span ------------------------------------------------------------------------
@dataclass
class HopSpan:
    """The span of one consumed record, from the moment it is handed to its handler until
    its outputs are known: ``context`` is attached while the handler (or the failure path)
    runs, ``finish`` stamps the outputs with it and ends the span."""

    span: Span
    context: Context
    #: What log lines made while handling the record carry (request_id, tenant, ...).
    fields: dict[str, str] = field(default_factory=dict)

    def attach(self) -> object:
        return otel_context.attach(self.context)

    @staticmethod
    def detach(token: object) -> None:
        otel_context.detach(token)  # type: ignore[arg-type]

    def failed(self, exc: BaseException) -> None:
        self.span.record_exception(exc)
        self.span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"[:500]))

    def finish(self, outputs: Sequence[Outbound]) -> list[Outbound]:
        """``outputs`` carrying this span's context; the span ends."""
        stamped = [with_context(out, self.context) for out in outputs]
        for out in outputs:
            status = h.header_value(out.headers, h.STATUS)
            if status is not None:
                self.span.set_attribute(STATUS, status)
        self.span.end()
        return stamped


def start_hop(
    tracer: Tracer | None,
    *,
    topic: str,
    partition: int | None,
    offset: int | None,
    key: bytes | None,
    headers: h.RawHeaders,
    group: str,
    stage: str | None = None,
) -> HopSpan:
    """Start the ``process <topic>`` span of one record, the child of the context its headers
    carry; without a tracer only the log fields are gathered (a non-recording span)."""
    fields: dict[str, str] = {}
    for name, value in h.header_pairs(headers):
        if name in _LOG_HEADERS and value is not None:
            fields[_LOG_HEADERS[name]] = (
                value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
            )
    if stage:
        fields["stage"] = stage
    parent = with_tenant(extract(headers), fields.get("tenant"))
    if tracer is None:
        return HopSpan(trace.INVALID_SPAN, parent, fields)
    attrs = message_attributes(
        "process", topic, partition=partition, key=key, offset=offset, group=group
    )
    for name, attr in ((REQUEST_ID, "request_id"), (TENANT, "tenant"), (STAGE, "stage")):
        if attr in fields:
            attrs[name] = fields[attr]
    span = tracer.start_span(f"process {topic}", parent, SpanKind.CONSUMER, attrs)
    return HopSpan(span, trace.set_span_in_context(span, parent), fields)


#: Headers whose values log lines carry, by the log field they fill.
_LOG_HEADERS: Final[Mapping[str, str]] = {
    h.REQUEST_ID: "request_id",
    h.TENANT: "tenant",
    h.SPECIALIST: "specialist",
}


# --- the model call --------------------------------------------------------------------------
def gen_ai_attributes(
    *,
    request_model: str | None,
    response_model: str | None,
    finish_reasons: Iterable[str] = (),
    usage: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """The GenAI semantic-convention attributes of one Anthropic call. ``input_tokens`` counts
    every input token, as the conventions ask: input + cache read + cache creation."""
    attrs: dict[str, Any] = {"gen_ai.provider.name": "anthropic", "gen_ai.operation.name": "chat"}
    if request_model:
        attrs["gen_ai.request.model"] = request_model
    if response_model:
        attrs["gen_ai.response.model"] = response_model
    reasons = [r for r in finish_reasons if r]
    if reasons:
        attrs["gen_ai.response.finish_reasons"] = reasons
    if usage:
        read = int(usage.get("cache_read_input_tokens", 0))
        created = int(usage.get("cache_creation_input_tokens", 0))
        attrs["gen_ai.usage.input_tokens"] = int(usage.get("input_tokens", 0)) + read + created
        attrs["gen_ai.usage.output_tokens"] = int(usage.get("output_tokens", 0))
        attrs["gen_ai.usage.cache_read.input_tokens"] = read
        attrs["gen_ai.usage.cache_creation.input_tokens"] = created
    return attrs


def content_attributes(prompt: str, answer: str | None) -> dict[str, str]:
    """Prompt and answer as the GenAI conventions' message attributes (only when the content
    option is on: they can hold personal data)."""
    attrs = {
        "gen_ai.input.messages": json.dumps(
            [{"role": "user", "parts": [{"type": "text", "content": prompt}]}]
        )
    }
    if answer is not None:
        attrs["gen_ai.output.messages"] = json.dumps(
            [{"role": "assistant", "parts": [{"type": "text", "content": answer}]}]
        )
    return attrs


# --- a record sent again ------------------------------------------------------------------------
def start_linked_send(
    tracer: Tracer, out: Outbound, attributes: Mapping[str, Any]
) -> tuple[Span, Outbound]:
    """A ``send <topic>`` span for ``out``, a record sent again (a DLQ replay): it starts its
    own trace (under the current span, if any) LINKED to the one ``out``'s headers carry, and
    ``out`` leaves with the new span's context and the original baggage (the tenant)."""
    original = extract(out.headers)
    attrs = message_attributes("send", out.topic, key=out.key)
    attrs.update(attributes)
    span = tracer.start_span(
        f"send {out.topic}", None, SpanKind.PRODUCER, attrs, links=link_to(out.headers)
    )
    context = trace.set_span_in_context(span)
    for name, value in baggage.get_all(original).items():
        context = baggage.set_baggage(name, value, context)
    return span, with_context(out, context)
