"""Prometheus metrics, defined once. Components bind their labels at construction, so the hot
path only increments (no label lookups per record)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

RECORDS = Counter(
    "switchboard_records_total", "Records a consumer group member finished handling.", ["group"]
)
IN_FLIGHT = Gauge("switchboard_in_flight", "Handlers running now.", ["group"])
PAUSED = Gauge("switchboard_paused_partitions", "Partitions paused by backpressure.", ["group"])
REBALANCES = Counter("switchboard_rebalances_total", "Assignments and revocations.", ["group"])
RESPONSES = Counter(
    "switchboard_responses_total", "Terminal responses written, by status.", ["stage", "status"]
)
DEAD_LETTERS = Counter(
    "switchboard_dead_letters_total", "Records written to the DLQ.", ["stage", "error_class"]
)
BREAKER_STATE = Gauge(
    "switchboard_breaker_state",
    "Circuit breaker per specialist model: 0 closed, 1 open, 2 half-open.",
    ["breaker"],
)
MODEL_SECONDS = Histogram(
    "switchboard_model_seconds",
    "Model call latency.",
    ["specialist", "backend"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120),
)


def serve_metrics(port: int, addr: str = "127.0.0.1") -> None:
    """Expose ``/metrics`` on ``addr:port`` from a daemon thread."""
    start_http_server(port, addr=addr)
