"""Prometheus metrics, defined once: every family a Switchboard process exports.

Components bind their labels at construction (``.labels(...)`` once, kept as attributes), so
the hot path only increments; where a label is only known per record (a response's status, a
model id), the bound children are cached in a small dict (``ResponseMetrics``,
``ModelMetrics``), never looked up through ``.labels()`` per record.

Names follow Prometheus conventions (base units in names, ``_total`` counters) and mirror the
OpenTelemetry GenAI metrics where they exist (``gen_ai_client_operation_duration_seconds``,
``gen_ai_client_token_usage``). Labels have bounded values: group and topic names, partition
numbers, specialists, statuses, error classes and codes, model ids from the settings; never
request ids, tenants or error messages.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Mapping, Sequence
from typing import Final, Generic, TypeVar

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from switchboard.core.settings import SPECIALISTS

_Child = TypeVar("_Child")

#: Latency buckets, seconds: 5 ms to 60 s, straddling both the router's few milliseconds and
#: the pipeline's SLO (e2e p99 under 30 s with model calls, see infra/prometheus/rules).
LATENCY_BUCKETS_S: Final = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    20.0,
    30.0,
    60.0,
    120.0,
)
#: OpenTelemetry's recommended buckets for ``gen_ai.client.token.usage`` (powers of 4).
TOKEN_BUCKETS: Final = tuple(float(4**n) for n in range(0, 14))


class _LoopFamily(Collector, Generic[_Child]):
    """A metric family whose children are updated only by the thread that runs the event loop
    and read by a scrape, without locks (``LoopHistogram``, ``LoopCounter``)."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        registry: CollectorRegistry | None,
    ) -> None:
        self._name = name
        self._documentation = documentation
        self._labelnames = tuple(labelnames)
        self._children: dict[tuple[str, ...], _Child] = {}
        if registry is not None:
            registry.register(self)

    def _new_child(self) -> _Child:
        raise NotImplementedError

    def labels(self, *values: str) -> _Child:
        """The child of ``values`` (bind it once and keep it: this is a dict lookup)."""
        child = self._children.get(values)
        if child is None:
            if len(values) != len(self._labelnames):
                raise ValueError(f"{self._name} takes labels {self._labelnames}, got {values}")
            child = self._children.setdefault(values, self._new_child())
        return child


class LoopHistogram(_LoopFamily["LoopHistogramChild"]):
    """A histogram family for the hot path: observed from one event loop, without locks.

    prometheus_client's ``Histogram.observe`` takes a lock per bucket and sum update (about
    1.2 µs here); a worker's answer observes five latencies, so that alone was 6 µs a record.
    A child here is a list of bucket counts and a float, updated only by the thread that runs
    the event loop (``observe`` is called there and nowhere else) and read by a scrape: a read
    may see an observation's bucket before its sum, never a torn number. About 0.3 µs.
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        *,
        buckets: Sequence[float],
        registry: CollectorRegistry | None = REGISTRY,
    ) -> None:
        self._bounds = tuple(float(b) for b in buckets)
        super().__init__(name, documentation, labelnames, registry)

    def _new_child(self) -> LoopHistogramChild:
        return LoopHistogramChild(self._bounds)

    @property
    def bounds(self) -> tuple[float, ...]:
        """The finite bucket upper bounds (the counts have one more, +Inf)."""
        return self._bounds

    def counts_of(self, *values: str) -> list[int]:
        """A copy of the per-bucket (not cumulative) counts of ``values``: zeros when nothing
        was observed there, without creating the child. Read it on the event loop that observes
        (as the status publisher does): no lock, and no observation is half counted."""
        child = self._children.get(values)
        return list(child.counts) if child is not None else [0] * (len(self._bounds) + 1)

    def describe(self) -> Iterator[Metric]:
        yield HistogramMetricFamily(self._name, self._documentation, labels=self._labelnames)

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self._name, self._documentation, labels=self._labelnames)
        les = [*(_float_label(b) for b in self._bounds), "+Inf"]
        for values, child in list(self._children.items()):
            counts = list(child.counts)
            cumulative, running = [], 0
            for le, n in zip(les, counts, strict=True):
                running += n
                cumulative.append((le, float(running)))
            family.add_metric(list(values), cumulative, child.sum)
        yield family


class LoopHistogramChild:
    """One label set of a ``LoopHistogram``."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        #: The family's finite bucket upper bounds (shared, never changed).
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, amount: float) -> None:
        self.counts[bisect_left(self.bounds, amount)] += 1  # bucket le >= amount
        self.sum += amount


class LoopCounter(_LoopFamily["LoopCounterChild"]):
    """A counter family for the hot path, with ``LoopHistogram``'s contract: incremented only
    by the thread that runs the event loop, read by a scrape, no lock.

    prometheus_client's ``Counter.inc`` checks the amount and takes a lock (about 0.7 µs
    here); a worker's answer counts its response and its model call, 1.4 µs of a record's
    30. A child here is one float (``value``) added to in place: about 0.1 µs.
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        *,
        registry: CollectorRegistry | None = REGISTRY,
    ) -> None:
        super().__init__(name, documentation, labelnames, registry)

    def _new_child(self) -> LoopCounterChild:
        return LoopCounterChild()

    def describe(self) -> Iterator[Metric]:
        yield CounterMetricFamily(self._name, self._documentation, labels=self._labelnames)

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self._name, self._documentation, labels=self._labelnames)
        for values, child in list(self._children.items()):
            family.add_metric(list(values), child.value)
        yield family


class LoopCounterChild:
    """One label set of a ``LoopCounter``."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        """Add ``amount`` (a caller on the hot path may add to ``value`` itself)."""
        if amount < 0:
            raise ValueError("a counter only goes up")
        self.value += amount


def _float_label(bound: float) -> str:
    """A bucket bound as prometheus_client writes it (``0.005``, ``1.0``)."""
    return repr(float(bound))


# --- the consumer runtime (per consumer group) ----------------------------------------------
RECORDS = Counter(
    "switchboard_records_total", "Records a consumer group member finished handling.", ["group"]
)
IN_FLIGHT = Gauge(
    "switchboard_in_flight",
    "Handlers running now (slow path; fast-path records take none).",
    ["group"],
)
PAUSED = Gauge("switchboard_paused_partitions", "Partitions paused by backpressure now.", ["group"])
ASSIGNED = Gauge("switchboard_assigned_partitions", "Partitions this member holds.", ["group"])
REBALANCES = Counter("switchboard_rebalances_total", "Assignments and revocations.", ["group"])
CONSUMER_LAG = Gauge(
    "switchboard_consumer_lag_records",
    "High watermark minus the group's committed offset, per partition this member holds "
    "(read through the admin API, so it stays right while a partition is paused).",
    ["group", "topic", "partition"],
)
LAG_SCRAPE_ERRORS = Counter(
    "switchboard_consumer_lag_errors_total", "Lag refreshes that failed (broker unreachable)."
)
LOOP_HEARTBEAT = Gauge(
    "switchboard_loop_heartbeat_timestamp_seconds",
    "Unix time the process's event loop last turned (what /healthz checks).",
)

# --- outcomes ----------------------------------------------------------------------------------
RESPONSES = LoopCounter(
    "switchboard_responses_total",
    "Terminal responses written, by stage, specialist and status.",
    ["stage", "specialist", "status"],
)
REPLY_TRANSACTIONS = Counter(
    "switchboard_reply_transactions_total",
    "Transactions of replies and their ledger copies, by outcome (committed, aborted).",
    ["outcome"],
)
DEAD_LETTERS = Counter(
    "switchboard_dead_letters_total", "Records written to the DLQ.", ["stage", "error_class"]
)
RETRIES = Counter(
    "switchboard_retries_total",
    "Records sent to a retry tier, by tier and error class.",
    ["stage", "tier", "error_class"],
)
DECISIONS = Counter(
    "switchboard_failure_decisions_total",
    "Failure-strategy decisions: retry, dead, expire, drop, halt.",
    ["stage", "decision"],
)
STAGE_SECONDS = LoopHistogram(
    "switchboard_stage_duration_seconds",
    "Time a request spent per stage (route, queue, model, worker), from its response.",
    ["stage", "specialist"],
    buckets=LATENCY_BUCKETS_S,
)
E2E_SECONDS = LoopHistogram(
    "switchboard_e2e_duration_seconds",
    "Request created (client) to terminal response written (worker).",
    ["specialist"],
    buckets=LATENCY_BUCKETS_S,
)

# --- resilience ----------------------------------------------------------------------------------
BREAKER_STATE = Gauge(
    "switchboard_breaker_state",
    "Circuit breaker per specialist model: 0 closed, 1 open, 2 half-open.",
    ["breaker"],
)

# --- model calls -----------------------------------------------------------------------------------
MODEL_CALLS = LoopCounter(
    "switchboard_model_calls_total",
    "Model calls by outcome: answered, refused, error.",
    ["specialist", "model", "outcome"],
)
MODEL_ERRORS = Counter(
    "switchboard_model_errors_total",
    "Failed model calls by error class and code (rate_limited is HTTP 429).",
    ["specialist", "model", "error_class", "code"],
)
MODEL_DURATION = LoopHistogram(
    "gen_ai_client_operation_duration_seconds",
    "Model call duration (OpenTelemetry gen_ai.client.operation.duration).",
    ["specialist", "gen_ai_request_model"],
    buckets=LATENCY_BUCKETS_S,
)
TOKEN_USAGE = Histogram(
    "gen_ai_client_token_usage",
    "Tokens per call (OpenTelemetry gen_ai.client.token.usage; input counts cache tokens too).",
    ["specialist", "gen_ai_request_model", "gen_ai_token_type"],
    buckets=TOKEN_BUCKETS,
)
MODEL_TOKENS = Counter(
    "switchboard_model_tokens_total",
    "Tokens by type: input, output, cache_read, cache_write.",
    ["specialist", "model", "type"],
)
MODEL_COST = Counter(
    "switchboard_model_cost_usd_total",
    "Model spend in US dollars, from usage and published prices.",
    ["specialist", "model"],
)

# --- DLQ replay ----------------------------------------------------------------------------------
REPLAYED = Counter(
    "switchboard_replay_records_total", "Dead letters replayed: sent, failed.", ["outcome"]
)

# --- batch review ----------------------------------------------------------------------------
REVIEW_ITEMS = Counter(
    "switchboard_review_items_total",
    "Review requests settled: answered, not answered (another status), timed out, or reused "
    "(answered by an earlier run of the job).",
    ["outcome"],
)
REVIEW_PENDING = Gauge(
    "switchboard_review_pending_items", "Review requests sent and not yet settled."
)

#: A request's specialist as a label: one of the known specialists, "none" when there is none
#: yet (a rejected request), "other" for anything else a caller wrote.
_SPECIALIST_LABELS: Final = frozenset(SPECIALISTS)
#: Stage latencies (``stage_latency_ms`` keys) exported per stage; "total" is the e2e histogram.
_STAGES: Final = ("route", "queue", "model", "worker")
#: The usage keys of an ``Answer`` and their token type label.
_TOKEN_TYPES: Final = (
    ("input_tokens", "input"),
    ("output_tokens", "output"),
    ("cache_read_input_tokens", "cache_read"),
    ("cache_creation_input_tokens", "cache_write"),
)


def specialist_label(value: object) -> str:
    """``value`` as a bounded ``specialist`` label value."""
    if not value:
        return "none"
    return value if isinstance(value, str) and value in _SPECIALIST_LABELS else "other"


class ResponseMetrics:
    """Terminal responses and their stage latencies, for one stage's outcomes.

    Children are bound once per (specialist, status) and kept: a dict lookup per response.
    """

    def __init__(self, stage: str) -> None:
        self._stage = stage
        self._responses: dict[tuple[object, str], LoopCounterChild] = {}
        self._latency: dict[object, tuple[LoopHistogramChild, dict[str, LoopHistogramChild]]] = {}

    def observe(
        self, specialist: object, status: str, latency_ms: Mapping[str, int] | None = None
    ) -> None:
        # Keyed by the bounded label, not the raw value: a caller's free-form specialist must
        # not grow this cache (or the series) without bound.
        label = specialist if specialist in _SPECIALIST_LABELS else specialist_label(specialist)
        child = self._responses.get((label, status))
        if child is None:
            child = RESPONSES.labels(self._stage, label, status)
            self._responses[(label, status)] = child
        child.value += 1
        if latency_ms:
            bound = self._latency.get(label)
            if bound is None:
                bound = (
                    E2E_SECONDS.labels(label),
                    {s: STAGE_SECONDS.labels(s, label) for s in _STAGES},
                )
                self._latency[label] = bound
            e2e, stages = bound
            # LoopHistogramChild.observe written out: five observations a response, a call each.
            for stage, ms in latency_ms.items():
                hist = e2e if stage == "total" else stages.get(stage)
                if hist is not None:
                    seconds = ms / 1000
                    hist.counts[bisect_left(hist.bounds, seconds)] += 1
                    hist.sum += seconds


class ModelMetrics:
    """Model calls of one specialist: outcomes, duration, tokens and cost, per model id."""

    def __init__(self, specialist: str) -> None:
        self.specialist = specialist
        self._bound: dict[str, ModelChildren] = {}

    def children(self, model: str) -> ModelChildren:
        bound = self._bound.get(model)
        if bound is None:
            bound = self._bound[model] = ModelChildren(self.specialist, model)
        return bound

    def error(self, model: str, error_class: str, code: str, seconds: float) -> None:
        bound = self.children(model)
        bound.errors.inc()
        MODEL_ERRORS.labels(self.specialist, model, error_class, code).inc()
        bound.duration.observe(seconds)


class ModelChildren:
    """The bound children of one (specialist, model)."""

    def __init__(self, specialist: str, model: str) -> None:
        self.answered = MODEL_CALLS.labels(specialist, model, "answered")
        self.refused = MODEL_CALLS.labels(specialist, model, "refused")
        self.errors = MODEL_CALLS.labels(specialist, model, "error")
        self.duration = MODEL_DURATION.labels(specialist, model)
        self.cost = MODEL_COST.labels(specialist, model)
        self.tokens = [
            (key, MODEL_TOKENS.labels(specialist, model, kind)) for key, kind in _TOKEN_TYPES
        ]
        self.usage_input = TOKEN_USAGE.labels(specialist, model, "input")
        self.usage_output = TOKEN_USAGE.labels(specialist, model, "output")

    def success(self, refused: bool, seconds: float) -> None:
        (self.refused if refused else self.answered).value += 1
        self.duration.observe(seconds)

    def spend(self, usage: Mapping[str, int] | None, cost_micro_usd: int) -> None:
        """Tokens and cost of one answered call (none for the offline rulebook)."""
        if usage:
            for key, counter in self.tokens:
                if n := usage.get(key, 0):
                    counter.inc(n)
            inputs = (
                usage.get("input_tokens", 0)
                + usage.get("cache_read_input_tokens", 0)
                + usage.get("cache_creation_input_tokens", 0)
            )
            self.usage_input.observe(inputs)
            self.usage_output.observe(usage.get("output_tokens", 0))
        if cost_micro_usd:
            self.cost.inc(cost_micro_usd / 1_000_000)


#: The samples a family of each type exports whatever it holds; ``_created`` is not among
#: them: prometheus_client's own counters and histograms write one per child, the loop families
#: (``LoopCounter``, ``LoopHistogram``) none, so it is taken from the samples themselves.
_TYPE_SUFFIXES: Final = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}


def exported_names(registry: CollectorRegistry = REGISTRY) -> set[str]:
    """Every sample name the registry can export (``_total``, ``_bucket``, ``_sum``, ...)."""
    names: set[str] = set()
    for family in registry.collect():
        names.add(family.name)
        names.update(family.name + s for s in _TYPE_SUFFIXES.get(family.type, ()))
        names.update(sample.name for sample in family.samples)
    return names
