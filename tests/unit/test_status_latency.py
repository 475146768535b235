"""A worker group's recent latency in the status data (no broker): quantiles from bucket
counts, the publisher's window over the process's own histograms, fed by a worker on the
in-memory runtime, two processes of one group merged by adding their bucket counts, the
``status --json`` key and the terminal column, and the console's p50/p99 series and chart."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any, cast

import pytest
from rich.console import Console

from consumers.status.latency import STAGES, LatencyWindow, merge, quantile
from consumers.status.view import aggregate, pipeline_groups
from switchboard.cli.status_cmds import latency_cell, render
from switchboard.console.cache import ThroughputSample, _sample, latency, latency_chart
from switchboard.core.metrics import LATENCY_BUCKETS_S, LoopHistogram
from switchboard.core.topics import Topics
from tests.support import FakeClock

from .test_status_view import NOW, _backend_consumer, _backend_publisher, _report
from .test_worker import ScriptedBackend, WorkerStage, _task

T = Topics("unit")
BOUNDS_MS = [round(b * 1000, 3) for b in LATENCY_BUCKETS_S]
#: The index of the bucket that holds ``ms`` (upper bound inclusive, as Prometheus counts).
_NB = len(BOUNDS_MS) + 1


def _bucket(ms: float) -> int:
    return next((i for i, b in enumerate(BOUNDS_MS) if ms <= b), len(BOUNDS_MS))


def _counts(*values_ms: float) -> list[int]:
    counts = [0] * _NB
    for v in values_ms:
        counts[_bucket(v)] += 1
    return counts


def test_a_quantile_interpolates_in_its_bucket_and_the_inf_bucket_reads_as_the_top() -> None:
    # 100 values: 50 in (250, 500], 49 in (500, 1000], 1 past 120 s.
    counts = [0] * _NB
    counts[_bucket(300)] = 50
    counts[_bucket(700)] = 49
    counts[-1] = 1
    assert quantile(BOUNDS_MS, counts, 0.5) == 500.0  # the 50th value ends the first bucket
    assert quantile(BOUNDS_MS, counts, 0.25) == pytest.approx(375.0)  # half way through it
    assert quantile(BOUNDS_MS, counts, 0.99) == 1000.0
    assert quantile(BOUNDS_MS, counts, 1.0) == 120_000.0  # +Inf: the largest bound
    assert quantile(BOUNDS_MS, [0] * _NB, 0.5) is None
    assert quantile(BOUNDS_MS, [1, 2], 0.5) is None  # counts that do not fit the bounds


def test_the_window_counts_what_was_observed_since_it_started_and_forgets_after_a_minute() -> None:
    stages = LoopHistogram(
        "t_stage", "t", ["stage", "specialist"], buckets=LATENCY_BUCKETS_S, registry=None
    )
    e2e = LoopHistogram("t_e2e", "t", ["specialist"], buckets=LATENCY_BUCKETS_S, registry=None)
    e2e.labels("backend").observe(9.0)  # before the publisher: not its to report
    clock = FakeClock()
    window = LatencyWindow("backend", clock=clock, stages=stages, e2e=e2e)
    for seconds in (0.3, 0.3, 0.3, 2.0):
        e2e.labels("backend").observe(seconds)
    stages.labels("model", "backend").observe(0.04)
    clock.now += 5
    first = window.report()
    total = first["stages"]["total"]
    assert (first["window_s"], total["count"], total["window"]) == (
        5.0,
        4,
        _counts(300, 300, 300, 2000),
    )
    assert 250 < total["p50_ms"] <= 500 and 1000 < total["p99_ms"] <= 2500
    assert first["stages"]["model"]["count"] == 1 and first["stages"]["route"]["count"] == 0
    assert first["stages"]["route"]["p50_ms"] is None
    assert set(first["stages"]) == set(STAGES)
    clock.now += 70  # a minute later with nothing new: the window is empty, the start is not
    e2e.labels("backend").observe(0.01)
    clock.now += 1
    later = window.report()["stages"]["total"]
    assert (later["count"], sum(later["cumulative"])) == (1, 5)


def _latency(window_ms: list[float], window_s: float = 60.0) -> dict[str, Any]:
    counts = _counts(*window_ms)
    return {
        "window_s": window_s,
        "bounds_ms": BOUNDS_MS,
        "stages": {"total": {"window": counts, "cumulative": counts}},
    }


def _pipeline(reports: dict[str, dict[str, Any]]) -> Any:
    from consumers.status.view import GroupInput

    groups = {g: (role, topics) for g, role, topics in pipeline_groups(T)}
    return aggregate(
        prefix="unit",
        now_ms=NOW,
        groups=[
            GroupInput(g, *groups[g], "stable", []) for g in ("unit.worker.backend", "unit.router")
        ],
        committed={},
        end_offsets={(T.tasks("backend"), 0): 0, (T.requests, 0): 0},
        start_offsets={},
        reports=reports,
        retry=[],
        dlq=[],
    )


def test_two_processes_of_a_group_are_merged_by_adding_bucket_counts_and_stale_ones_left_out() -> (
    None
):
    """Process 1 answered 90 requests at ~300 ms, process 2 ten at ~8 s: the group's p50 is in
    the 300 ms bucket and its p99 in the 8 s one (averaging the two p99s would say neither); a
    stale process's minute is old news and is not counted; the router has no latency."""

    def consumer(member: str, window_ms: list[float]) -> dict[str, Any]:
        return {**_backend_consumer(member, []), "latency": _latency(window_ms)}

    reports = {
        "h1": _report("h1", consumers=[consumer("m-a", [300.0] * 90)]),
        "h2": _report("h2", consumers=[consumer("m-b", [8000.0] * 10)]),
        "h3": _report("h3", age_s=60.0, consumers=[consumer("m-c", [50_000.0] * 500)]),
    }
    status = _pipeline(reports)
    backend, router = status.groups
    total = backend.latency["stages"]["total"]
    assert total["count"] == 100
    assert 250 < total["p50_ms"] <= 500
    assert 5000 < total["p99_ms"] <= 10_000
    assert router.latency == {}
    out = json.loads(json.dumps(status.to_json()))
    assert out["groups"][0]["latency"] == {"window_s": 60.0, "stages": {"total": total}}
    assert latency_cell(backend.latency) == f"{total['p50_ms']:.0f} / {total['p99_ms']:.0f}"
    console = Console(record=True, width=250)
    console.print(render(status))
    text = console.export_text()
    assert "p50/p99 ms" in text and latency_cell(backend.latency) in text


def test_merge_leaves_out_entries_with_other_buckets_and_says_idle_for_an_empty_minute() -> None:
    other = {"window_s": 60.0, "bounds_ms": [1.0, 2.0], "stages": {"total": {"window": [5, 5, 5]}}}
    merged = merge([_latency([300.0]), other, {"bogus": 1}])
    assert merged["stages"]["total"]["count"] == 1
    assert merge([]) == {} and merge([{"stages": "x"}]) == {}
    assert latency_cell(merge([_latency([])])) == "idle" and latency_cell({}) == "-"


def test_the_publisher_reports_a_worker_groups_latency_after_records_on_the_in_memory_runtime() -> (
    None
):
    """A worker on the in-memory runtime answers 12 tasks created 300 ms before it took them
    and one created 40 s before: the next report's worker.backend consumer counts 13 responses
    end to end, p50 in the 300 ms bucket and p99 in the 40 s one, with model and worker stage
    latencies counted too (the worker measures them into the process's histograms)."""
    stage = WorkerStage(ScriptedBackend())
    publisher = _backend_publisher(stage.worker, stage.runtime.stats)
    [before] = publisher.report()["consumers"]
    assert before["latency"]["stages"]["total"]["count"] == 0
    from consumers.outcomes import now_ms

    for _ in range(12):
        stage.feed(_task(created_at_ms=now_ms() - 300))
    stage.feed(_task(created_at_ms=now_ms() - 40_000))
    [consumer] = publisher.report()["consumers"]
    assert consumer["records"]["completed"] == 13
    figures = consumer["latency"]["stages"]
    assert figures["total"]["count"] == 13
    assert 250 < figures["total"]["p50_ms"] <= 500
    assert 30_000 < figures["total"]["p99_ms"] <= 60_000
    assert figures["model"]["count"] == 13 and figures["worker"]["count"] == 13
    json.dumps(publisher.report())  # plain JSON


def test_the_console_draws_p50_and_p99_between_samples_with_gaps_where_nothing_was_answered() -> (
    None
):
    def sample(at_ms: int, *values_ms: float) -> ThroughputSample:
        return ThroughputSample(at_ms, {}, {"worker.api": _counts(*values_ms)}, BOUNDS_MS)

    history = [
        sample(0),
        sample(2000, *[300.0] * 99, 8000.0),
        sample(4000, *[300.0] * 99, 8000.0),  # nothing new
        sample(6000, *[300.0] * 99, 8000.0, 40.0, 40.0),
    ]
    p50, p99 = latency(history)["worker.api"]
    assert p50[1] is None and p99[1] is None
    assert p50[0] is not None and 250 < p50[0] <= 500
    assert p99[0] is not None and 250 < p99[0] <= 500
    assert p50[2] is not None and 25 < p50[2] <= 50
    svg = latency_chart(p50, p99)
    assert svg.startswith("<svg") and 'class="p99"' in svg and 'class="p50"' in svg
    assert "polyline" not in latency_chart([None, None], [None, None])
    # The console's sample adds the live processes' cumulative counts per role.
    status = SimpleNamespace(
        generated_at_ms=NOW,
        processes=[
            SimpleNamespace(
                stale=stale,
                report={"consumers": [{"role": "worker.api", "latency": _latency(ms)}]},
            )
            for stale, ms in ((False, [300.0]), (False, [300.0, 8000.0]), (True, [1.0]))
        ],
    )
    assert _sample(cast(Any, status)).latency == {"worker.api": _counts(300, 300, 8000)}
