"""G12, batch priority: interactive e2e p99 while a 500-item review-style batch job runs,
against the p99 without it, in the same run, through the same router and worker.

One router and one worker process (all five specialists, each with the in-flight cap ``CAP``, a
simulated model of ``MODEL_S``) and an open-loop generator at ``RATE`` req/s over the five
specialists. Phases interleave A/B/A/B: ``alone``, ``with``, ``alone``, ``with``; at the start
of each ``with`` phase a fresh job of 500 requests (``priority=BATCH``, cycling backend,
security and perf, as ``switchboard review`` fans out) is written to the requests topic at once.
The job alone would fill every cap it reaches (167 items per specialist against a cap of 16);
at the default 25% share it takes ~9 s, inside its phase. p99 is over each kind's pooled
samples. A control run sends the same job at ``NORMAL`` priority (no batch topic, no share):
what the scheme saves.
"""

from __future__ import annotations

import time
from typing import Any

from benchmarks import procs
from benchmarks.env import PROMPTS, BenchKafka, preload
from benchmarks.measure import Watermarks, percentile, read_topics, rounded
from producers.client import build_request
from switchboard.core.admin import wait_for_leaders
from switchboard.core.serde import REQUEST, SingleObjectCodec
from switchboard.core.settings import DEFAULTS

#: Review jobs fan out to these specialists by default (``switchboard review --specialists``).
REVIEW_SPECIALISTS = ("backend", "security", "perf")
RATE = 40.0
MODEL_S = 0.2
CAP = 16
BATCH_ITEMS = 500
WARM_S = 3.0
ALONE_S = 10.0
#: Longer than the job takes at the default share (500 / (3 x 4 / 0.2 s) = 8.3 s), so the next
#: ``alone`` phase is alone.
WITH_S = 12.0
TARGET = 1.5


def batch_job(n: int, priority: str, prefix: str) -> list[tuple[bytes, bytes]]:
    """``n`` review-style requests (documents x specialists) at ``priority``."""
    codec = SingleObjectCodec()
    out = []
    for i in range(n):
        specialist = REVIEW_SPECIALISTS[i % len(REVIEW_SPECIALISTS)]
        request = build_request(
            f"/{specialist} review design doc {i // len(REVIEW_SPECIALISTS)}: "
            + PROMPTS[i % len(PROMPTS)],
            tenant="review",
            request_id=f"{prefix}{i:06d}",
            priority=priority,
        )
        out.append((request["request_id"].encode(), codec.encode(REQUEST, request, "")))
    return out


def priority_run(bench: BenchKafka, batch_priority: str, rounds: int) -> dict[str, Any]:
    """``rounds`` of (alone, with) interactive phases after a warm-up; a batch job is written
    at the start of each ``with``. Per kind: pooled interactive percentiles; per job: when it
    was done."""
    phases: list[dict[str, Any]] = [{"label": "warm", "rate": RATE, "seconds": WARM_S}]
    for r in range(rounds):
        phases.append({"label": f"alone{r}", "rate": RATE, "seconds": ALONE_S})
        phases.append({"label": f"with{r}", "rate": RATE, "seconds": WITH_S})
    jobs = [batch_job(BATCH_ITEMS, batch_priority, f"batch{r}-") for r in range(rounds)]
    expected = sum(int(p["rate"] * p["seconds"]) for p in phases) + BATCH_ITEMS * rounds
    with bench.pipeline_topics(3) as topics:
        kafka = bench.config
        # On a loaded broker a just-created topic can be missing for a moment (stages then fail).
        wait_for_leaders(
            bench.admin, [topics.requests, topics.responses, *topics.all_task_topics()], 30.0
        )
        base = {
            "kafka": kafka,
            "prefix": topics.prefix,
            "backend": f"sleep:{MODEL_S}",
            "concurrency": CAP,
        }
        router = procs.start("sb-router", "switchboard", {**base, "roles": ["router"]})
        worker = procs.start("sb-worker", "switchboard", {**base, "roles": ["worker:all"]})
        obs = procs.start("observer", "observer", {"kafka": kafka, "topics": [topics.responses]})
        gen = procs.start(
            "generator", "generator", {"kafka": kafka, "topic": topics.requests, "phases": phases}
        )
        stages = [router, worker, obs, gen]
        wm = Watermarks(kafka, [topics.responses])
        sent_at: list[float] = []
        try:
            procs.go(*stages)
            began = time.monotonic()
            for r, job in enumerate(jobs):
                start_of_with = WARM_S + (r + 1) * ALONE_S + r * WITH_S
                time.sleep(max(0.0, start_of_with - (time.monotonic() - began)))
                sent_at.append(time.time())
                preload(kafka, topics.requests, job)
            load_s = sum(p["seconds"] for p in phases)
            if not gen.conn.poll(load_s * 2 + 60):
                raise RuntimeError("the generator did not finish its phases")
            gen_report = gen.conn.recv()[1]["phases"]
            count, _ = wm.wait_for(expected, 60, tick_s=0.1)
        finally:
            results = procs.stop_all(stages)
            wm.close()
        requests = {k: ts for k, ts, _ in read_topics(kafka, [topics.requests])}
        batch_topics = {topics.batch_tasks(s) for s in REVIEW_SPECIALISTS}
        routed = read_topics(kafka, topics.all_task_topics())
        tasks = {k: ts for k, ts, _t in routed}
        responses = {k: ts for k, ts, _t in read_topics(kafka, [topics.responses])}
    seen: dict[bytes, float] = results["observer"].get("seen", {})
    out: dict[str, Any] = {
        "batch_priority": batch_priority,
        "responses": count,
        "expected": expected,
        "generator": gen_report,
        "jobs": [],
        "worker": results["sb-worker"].get("runtimes", {}),
    }
    for r, at in enumerate(sent_at):
        prefix = f"batch{r}-".encode()
        done = [ts for k, ts in seen.items() if k.startswith(prefix)]
        out["jobs"].append(
            {
                "items": BATCH_ITEMS,
                "answered": len(done),
                "on_batch_topics": sum(
                    1 for k, _ts, t in routed if t in batch_topics and k and k.startswith(prefix)
                ),
                "done_after_s": round(max(done) - at, 2) if done else None,
            }
        )
    ends = {str(p["label"]): rep["end"] for p, rep in zip(phases, gen_report, strict=True)}
    for kind in ("alone", "with"):
        labels = [f"{kind}{r}" for r in range(rounds)]
        keys = [
            k
            for k in requests
            if k is not None and any(k.startswith(f"{label}-".encode()) for label in labels)
        ]
        censor_ms = (max(ends[label] for label in labels) + 60) * 1000
        e2e = [(seen[k] * 1000 if k in seen else censor_ms) - requests[k] for k in keys]
        # Where the time goes: router hop (request -> task append) and worker hop (task
        # append -> response append), from broker timestamps.
        hop1 = [tasks[k] - requests[k] for k in keys if k in tasks]
        hop2 = [responses[k] - tasks[k] for k in keys if k in tasks and k in responses]
        jobs_at = sent_at or [0.0]
        slowest = sorted(zip(e2e, keys, strict=True), key=lambda x: x[0], reverse=True)[:8]
        out[kind] = {
            # The slowest few: e2e, seconds after the latest job was written, the two hops.
            "slowest": [
                (
                    round(e),
                    round(
                        requests[k] / 1000
                        - max([a for a in jobs_at if a * 1000 <= requests[k]] or [jobs_at[0]]),
                        2,
                    ),
                    tasks.get(k, 0) - requests[k],
                    responses.get(k, 0) - tasks.get(k, 0),
                )
                for e, k in slowest
            ],
            "sent": len(keys),
            "unanswered": sum(1 for k in keys if k not in seen),
            "e2e_p50_ms": rounded(percentile(e2e, 50), 1),
            "e2e_p99_ms": rounded(percentile(e2e, 99), 1),
            "e2e_max_ms": rounded(max(e2e), 1) if e2e else None,
            "router_hop_p99_ms": rounded(percentile(hop1, 99), 1),
            "worker_hop_p99_ms": rounded(percentile(hop2, 99), 1),
            "per_phase_p99_ms": [
                rounded(
                    percentile(
                        [
                            e
                            for e, k in zip(e2e, keys, strict=True)
                            if k.startswith(f"{lb}-".encode())
                        ],
                        99,
                    ),
                    1,
                )
                for lb in labels
            ],
        }
    return out


def run(bench: BenchKafka, quick: bool) -> dict[str, Any]:
    with_priority = priority_run(bench, "BATCH", rounds=2)
    control = priority_run(bench, "NORMAL", rounds=1)
    alone = with_priority["alone"]["e2e_p99_ms"]
    loaded = with_priority["with"]["e2e_p99_ms"]
    ratio = loaded / alone if alone else float("inf")
    c_alone, c_with = control["alone"]["e2e_p99_ms"], control["with"]["e2e_p99_ms"]
    control_ratio = c_with / c_alone if c_alone else float("inf")
    unanswered = with_priority["alone"]["unanswered"] + with_priority["with"]["unanswered"]
    jobs_whole = all(j["answered"] == BATCH_ITEMS for j in with_priority["jobs"])
    return {
        "value": round(ratio, 2),
        "target": f"<= {TARGET}x",
        "passed": ratio <= TARGET and unanswered == 0 and jobs_whole,
        "summary": (
            f"interactive e2e p99 {alone:.0f} ms alone, {loaded:.0f} ms with the batch job "
            f"({ratio:.2f}x); the same job at NORMAL priority: {c_alone:.0f} -> {c_with:.0f} ms "
            f"({control_ratio:.1f}x)"
        ),
        "detail": {
            "rate_per_s": RATE,
            "model_s": MODEL_S,
            "cap_per_worker": CAP,
            "batch_share": DEFAULTS.batch_share,
            "batch_items": BATCH_ITEMS,
            "with_priority": with_priority,
            "control_normal_priority": control,
            "control_ratio": rounded(control_ratio, 2),
            "note": "quick and full runs are the same (about 100 s)" if quick else "",
        },
    }
