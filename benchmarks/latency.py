"""Latency under open-loop load: G3 (at 50% of RAW-CHAIN capacity, vs the raw chain) and G4
(at 100 req/s: added latency per hop, end-to-end p99).

One run per system carries three phases from one generator: ``warm`` (group joins, excluded),
``p100`` (100 req/s, G4) and ``half`` (50% of the raw chain's capacity measured in this run,
G3). Latencies come from timestamps, never from a request/response round trip:

- request CreateTime is the generator's *scheduled* send time (no coordinated omission);
- a task's and a response's CreateTime is when the router or worker produced it;
- end to end is the observer's wall clock at arrival minus the request's CreateTime.

A request still unanswered ``cap_s`` after its phase ended counts as "at least that late"
(censored): percentiles that land on it are lower bounds and say so.
"""

from __future__ import annotations

import time
from typing import Any, Final

from benchmarks import procs
from benchmarks.capacity import _task_topics, stage_specs
from benchmarks.env import BenchKafka
from benchmarks.measure import Watermarks, interleave, median, percentile, read_topics, rounded
from benchmarks.overload import quiet_broker

#: G4's phase at 100 req/s, in both modes.
P100_S: Final = 20.0


def latency_run(
    bench: BenchKafka, kind: str, phases: list[dict[str, Any]], cap_s: float, **extra: Any
) -> dict[str, Any]:
    """Run ``phases`` of load through ``kind`` (raw or switchboard) and return per-phase stats."""
    total = sum(int(p["rate"] * p["seconds"]) for p in phases)
    with bench.pipeline_topics(3) as topics:
        kafka = bench.config
        stages = [procs.start(*s) for s in stage_specs(kind, bench, topics, "chain", **extra)]
        obs = procs.start("observer", "observer", {"kafka": kafka, "topics": [topics.responses]})
        gen = procs.start(
            "generator", "generator", {"kafka": kafka, "topic": topics.requests, "phases": phases}
        )
        wm = Watermarks(kafka, [topics.responses])
        try:
            procs.go(*stages, obs, gen)
            last_phase_s = phases[-1]["seconds"]
            load_s = sum(p["seconds"] for p in phases)
            if not gen.conn.poll(load_s * 3 + 30):
                raise RuntimeError("the generator did not finish its phases")
            gen_report = gen.conn.recv()[1]["phases"]
            count, _ = wm.wait_for(total, cap_s, tick_s=0.1)
            _ = last_phase_s
        finally:
            results = procs.stop_all([*stages, obs, gen])
            wm.close()
        requests = {k: ts for k, ts, _ in read_topics(kafka, [topics.requests])}
        tasks = {k: ts for k, ts, _ in read_topics(kafka, _task_topics(topics))}
        responses = {k: ts for k, ts, _ in read_topics(kafka, [topics.responses])}
    seen: dict[bytes, float] = results["observer"].get("seen", {})
    out: dict[str, Any] = {"system": kind, "generator": gen_report, "responses": count}
    for phase, report in zip(phases, gen_report, strict=True):
        label = phase["label"]
        prefix = f"{label}-".encode()
        keys = [k for k in requests if k.startswith(prefix)]
        censor_ms = (report["end"] + cap_s) * 1000
        e2e, hop1, hop2, missing = [], [], [], 0
        for key in keys:
            sent = requests[key]
            if key in seen:
                e2e.append(seen[key] * 1000 - sent)
            else:
                missing += 1
                e2e.append(censor_ms - sent)
            if key in tasks:
                hop1.append(tasks[key] - sent)
                if key in responses:
                    hop2.append(responses[key] - tasks[key])
        censored = missing / max(1, len(keys))
        out[label] = {
            "offered_rate": phase["rate"],
            "sent": len(keys),
            "unanswered": missing,
            "generator_max_behind_s": report["max_behind_s"],
            "e2e_p50_ms": percentile(e2e, 50),
            "e2e_p99_ms": percentile(e2e, 99),
            "p50_censored": censored > 0.5,
            "p99_censored": censored > 0.01,
            "hop1_p50_ms": percentile(hop1, 50),
            "hop1_p99_ms": percentile(hop1, 99),
            "hop2_p50_ms": percentile(hop2, 50),
            "hop2_p99_ms": percentile(hop2, 99),
        }
    return out


def run(bench: BenchKafka, quick: bool, state: dict[str, Any], only: set[str]) -> dict[str, Any]:
    reps = 1 if quick else 2
    seconds = 2.5 if quick else 20.0
    # Capacity as performance.md defines it, where the live-capacity step measured it (the
    # highest open-loop rate with a bounded backlog); else the drain rates (G2's run).
    raw_live = state.get("raw_chain_live") or {}
    pipeline_live = state.get("pipeline_live") or {}
    raw_capacity = raw_live.get("capacity") or state["raw_chain_capacity"]
    pipeline_capacity = pipeline_live.get("capacity") or state.get("pipeline_capacity", 1000.0)
    half_rate = 0.5 * raw_capacity
    phases = [
        {"label": "warm", "rate": 100, "seconds": 2.0},
        # G4's phase is full length in --quick too (the issue's acceptance): 2,000 requests,
        # so its p99 is not the 3rd-slowest of 250, which one stall of the shared machine moved.
        {"label": "p100", "rate": 100, "seconds": P100_S},
        # Extra, for information: 50% of the pipeline's own capacity (this run).
        {
            "label": "sbhalf",
            "rate": round(0.5 * pipeline_capacity),
            "seconds": seconds,
        },
        {"label": "half", "rate": round(half_rate), "seconds": seconds},
    ]
    cap_s = 4.0 if quick else 15.0
    waited: list[float] = []

    def quietly(kind: str) -> dict[str, Any]:
        waited.append(quiet_broker())
        return latency_run(bench, kind, phases, cap_s)

    raw, sb = interleave(lambda: quietly("raw"), lambda: quietly("switchboard"), reps)
    state["runs"] += raw + sb

    def med(runs: list[dict[str, Any]], phase: str, field: str) -> float:
        return median(r[phase][field] for r in runs)

    out: dict[str, Any] = {}
    if "G3" in only:
        p50 = med(sb, "half", "e2e_p50_ms") / med(raw, "half", "e2e_p50_ms")
        p99 = med(sb, "half", "e2e_p99_ms") / med(raw, "half", "e2e_p99_ms")
        censored = any(r["half"]["p99_censored"] for r in sb)
        raw_p50 = med(raw, "half", "e2e_p50_ms")
        behind = max(r["half"]["generator_max_behind_s"] for r in raw + sb)
        # At 50% of its capacity the raw chain's latency must be bounded; if it is not, the
        # generator and observer (which need CPU too) overloaded the machine, not the chain.
        measurable = raw_p50 < 1000 and behind < 1.0
        value = f"p50 {p50:.2f}x, p99 {p99:.2f}x" + (" (lower bounds)" if censored else "")
        if not measurable:
            value = (
                f"not measurable here: at {phases[3]['rate']:,} req/s the raw chain's own "
                f"p50 is {raw_p50:,.0f} ms (generator up to {behind:.1f} s behind)"
            )
        sbp50 = med(sb, "sbhalf", "e2e_p50_ms") / med(raw, "sbhalf", "e2e_p50_ms")
        sbp99 = med(sb, "sbhalf", "e2e_p99_ms") / med(raw, "sbhalf", "e2e_p99_ms")
        out["G3"] = {
            "value": value,
            "target": "<= 1.3x and <= 2.0x",
            "passed": measurable and p50 <= 1.3 and p99 <= 2.0,
            "detail": {
                "ratios_at_half_raw_chain_capacity": {
                    "p50": rounded(p50, 2),
                    "p99": rounded(p99, 2),
                    "lower_bounds": censored,
                },
                "generator_max_behind_s": behind,
                "at_half_pipeline_capacity": {
                    "offered_rate": phases[2]["rate"],
                    "p50_ratio": rounded(sbp50, 2),
                    "p99_ratio": rounded(sbp99, 2),
                    "pipeline": {f: rounded(med(sb, "sbhalf", f), 1) for f in _FIELDS},
                    "raw_chain": {f: rounded(med(raw, "sbhalf", f), 1) for f in _FIELDS},
                },
                "offered_rate": phases[3]["rate"],
                "capacities": {
                    "raw_chain": rounded(raw_capacity, 0),
                    "raw_chain_is": "live" if raw_live else "drain",
                    "raw_chain_live_search": raw_live or None,
                    "pipeline": rounded(pipeline_capacity, 0),
                    "pipeline_is": "live" if pipeline_live else "drain",
                },
                "seconds": seconds,
                "pipeline": {f: rounded(med(sb, "half", f), 1) for f in _FIELDS},
                "raw_chain": {f: rounded(med(raw, "half", f), 1) for f in _FIELDS},
                "pipeline_unanswered_within_cap": [r["half"]["unanswered"] for r in sb],
                "cap_s": cap_s,
            },
        }
    if "G4" in only:
        added1 = med(sb, "p100", "hop1_p50_ms") - med(raw, "p100", "hop1_p50_ms")
        added2 = med(sb, "p100", "hop2_p50_ms") - med(raw, "p100", "hop2_p50_ms")
        p99 = med(sb, "p100", "e2e_p99_ms")
        worst = max(added1, added2)
        out["G4"] = {
            "value": f"{added1:+.1f} / {added2:+.1f} ms per hop (p50); e2e p99 {p99:.1f} ms",
            "target": "<= 1 ms per hop; <= 25 ms",
            "passed": worst <= 1.0 and p99 <= 25.0,
            "detail": {
                # Seconds each run waited for a quiet broker before its phases (30 s at most).
                "quiet_broker_wait_s": waited,
                "pipeline": {f: rounded(med(sb, "p100", f), 1) for f in _FIELDS},
                "raw_chain": {f: rounded(med(raw, "p100", f), 1) for f in _FIELDS},
                "added_router_hop_p50_ms": rounded(added1, 2),
                "added_worker_hop_p50_ms": rounded(added2, 2),
            },
        }
    _ = time
    return out


_FIELDS = ("e2e_p50_ms", "e2e_p99_ms", "hop1_p50_ms", "hop1_p99_ms", "hop2_p50_ms", "hop2_p99_ms")
