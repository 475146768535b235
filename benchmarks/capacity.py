"""Capacity by backlog drain: RAW-1 vs the router hop (G1), RAW-CHAIN vs the pipeline (G2),
CPU per delivered response (G5) and flushes on the hot path (G6).

Method: preload N requests, start the stage processes, and time the outputs. A consumer-bound
stage with a backlog runs at its capacity, so the drain rate (from the outputs' CreateTime,
between the 10th and 90th percentile: no group join, no tail) is the capacity; an open-loop
step search would need minutes per point on two shared cores to tell "bounded" from "slowly
growing" lag. CPU is the stage processes' own user+system time from "go" to the last output.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from benchmarks import procs
from benchmarks.env import BenchKafka, Payloads, preload, reply_topic
from benchmarks.measure import (
    Watermarks,
    interleave,
    median,
    middle_rate,
    ratio,
    read_topics,
    rounded,
)
from switchboard.core.settings import SPECIALISTS
from switchboard.core.topics import Topics

#: The peers of G10, by the module name under ``benchmarks/peers/`` (``<name>_app.py``).
PEERS = ("quix", "faststream", "faust")


def _task_topics(topics: Topics) -> list[str]:
    return [topics.tasks(s) for s in SPECIALISTS]


def stage_specs(
    kind: str, bench: BenchKafka, topics: Topics, hops: str, routers: int = 1, **extra: Any
) -> list[tuple[str, str, dict[str, Any]]]:
    """The processes of one system: ``kind`` raw or switchboard; ``hops`` router or chain;
    ``routers``: how many Switchboard router processes share the requests topic."""
    kafka = bench.config
    tasks = _task_topics(topics)
    if kind == "raw":
        specs = [
            (
                "raw-router",
                "raw_hop",
                {
                    "kafka": kafka,
                    "group": f"{topics.prefix}.rr",
                    "inputs": [topics.requests],
                    "outputs": tasks,
                },
            )
        ]
        if hops == "chain":
            specs.append(
                (
                    "raw-worker",
                    "raw_hop",
                    {
                        "kafka": kafka,
                        "group": f"{topics.prefix}.rw",
                        "inputs": tasks,
                        "outputs": [topics.responses],
                    },
                )
            )
        return specs
    if kind in PEERS:
        spec = {
            "kafka": kafka,
            "prefix": topics.prefix,
            "requests": topics.requests,
            "tasks": {s: topics.tasks(s) for s in SPECIALISTS},
            "responses": topics.responses,
            **extra,
        }
        module = f"benchmarks.peers.{kind}_app"
        specs = [(f"{kind}-router", f"{module}:router", spec)]
        if hops == "chain":
            specs.append((f"{kind}-worker", f"{module}:worker", spec))
        return specs
    base = {"kafka": kafka, "prefix": topics.prefix, **extra}
    specs = [
        (f"sb-router-{i + 1}" if i else "sb-router", "switchboard", {**base, "roles": ["router"]})
        for i in range(routers)
    ]
    if hops == "chain":
        specs.append(("sb-worker", "switchboard", {**base, "roles": ["worker:all"]}))
    return specs


def drain(
    bench: BenchKafka,
    records: list[Any] | Callable[[Topics], list[Any]],
    kind: str,
    hops: str,
    partitions: int = 3,
    timeout_s: float = 120.0,
    python: procs.PeerPython | None = None,
    routers: int = 1,
    replies: bool = False,
    **extra: Any,
) -> dict[str, Any]:
    """Preload ``records``, run the system until every output is there, and measure.

    ``records``: or a function of the run's topics making them (requests naming its reply
    topic). ``python``: the interpreter the stages run in (a G10 peer's venv); None: the fork
    server. ``routers``: Switchboard router processes (``benchmarks.scaling``). ``replies``:
    the outputs counted are those on the run's reply topic (each with its ledger copy on the
    responses topic, the two in one transaction).
    """
    with bench.pipeline_topics(partitions) as topics:
        if callable(records):
            records = records(topics)
        preload(bench.config, topics.requests, records)
        if replies:
            outputs = [reply_topic(topics)]
        elif hops == "router":
            outputs = _task_topics(topics)
        else:
            outputs = [topics.responses]
        stages = [
            procs.start(*s, python=python)
            for s in stage_specs(kind, bench, topics, hops, routers, **extra)
        ]
        wm = Watermarks(bench.config, outputs)
        try:
            broker0 = bench.broker_cpu_s()
            procs.go(*stages)
            count, waited = wm.wait_for(
                len(records), timeout_s, tick_s=0.05, alive=lambda: procs.all_alive(stages)
            )
            broker1 = bench.broker_cpu_s()
            cpu = {s.name: procs.cpu_since_go(s) for s in stages}
            rss = {s.name: s.rss_mb() for s in stages}
            threads = {s.name: s.threads_cpu() for s in stages}
        finally:
            results = procs.stop_all(stages)
            wm.close()
        stamps = [ts for _key, ts, _t in read_topics(bench.config, outputs)]
    done = count >= len(records)
    broker_cpu = broker1 - broker0 if broker0 is not None and broker1 is not None else None
    cpu_total = sum(cpu.values())
    return {
        "system": kind,
        "hops": hops,
        "n": len(records),
        "delivered": count,
        "complete": done,
        "rate": middle_rate(stamps) if done else float("nan"),
        "seconds": waited,
        "cpu_s": cpu,
        "cpu_us_per_msg": 1e6 * cpu_total / max(1, count),
        "rss_mb": rss,
        "threads_cpu_s": threads,
        # The broker shares this machine's cores: what a drain costs it, from "go" to the last
        # output (its idle work in that window included, ``broker_us_per_msg`` takes it out;
        # None for a broker elsewhere).
        "broker_cpu_s": broker_cpu,
        "stage_results": _slim(results),
    }


def broker_us_per_msg(result: dict[str, Any], idle_cores: float | None) -> float | None:
    """The broker's CPU a delivered output in one drain, above its idle work (``idle_cores``
    over the drain's window); None when the broker's process is not on this machine."""
    spent = result.get("broker_cpu_s")
    if spent is None or idle_cores is None or not result["delivered"]:
        return None
    return 1e6 * max(0.0, spent - idle_cores * result["seconds"]) / result["delivered"]


def median_or_none(values: Iterable[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return rounded(median(known), 1) if known else None


def _slim(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {name: {k: v for k, v in r.items() if k != "seen"} for name, r in results.items()}


def _throughput_gate(
    ours: str,
    our_runs: list[dict[str, Any]],
    raw: str,
    raw_runs: list[dict[str, Any]],
    *,
    floor: float,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The raw baseline's entry and the gate ``ours / raw >= floor`` on median drain rates."""
    our_rate = median(r["rate"] for r in our_runs)
    raw_rate = median(r["rate"] for r in raw_runs)
    value = ratio(our_rate, raw_rate)
    baseline = {
        "value": rounded(raw_rate, 0),
        "unit": "msg/s",
        "runs": [rounded(r["rate"], 0) for r in raw_runs],
    }
    gate = {
        "value": rounded(value),
        "target": f">= {floor:.2f}",
        "passed": value >= floor,
        "detail": {
            f"{ours}_msg_s": rounded(our_rate, 0),
            f"{raw}_msg_s": rounded(raw_rate, 0),
            f"{ours}_runs": [rounded(r["rate"], 0) for r in our_runs],
            f"{raw}_runs": [rounded(r["rate"], 0) for r in raw_runs],
        },
    }
    return baseline, gate


def run(
    bench: BenchKafka, payloads: Payloads, quick: bool, state: dict[str, Any], only: set[str]
) -> dict[str, Any]:
    """G1, G2, G5, G6 (and the RAW-1 and RAW-CHAIN baselines they need)."""
    reps = 1 if quick else 2
    out: dict[str, Any] = {}
    # Sized for drains of a few seconds at the rates this machine shows (raw ~30-100k/s,
    # Switchboard ~1-2k/s); the rate is the 10th-90th percentile slope, so N only sets precision.
    n_raw = 40_000 if quick else 150_000
    raw_records = payloads.requests(n_raw, headers=True)  # as the client writes them
    # Switchboard's drains must last seconds too at its header-path rates (router ~15-30k/s):
    # with a few thousand records the start (group join, index sync) weighed in the rate and
    # most of the CPU per response.
    router_records = raw_records[: 30_000 if quick else 100_000]
    chain_records = raw_records[: 20_000 if quick else 60_000]

    if only & {"G1"}:
        raw1, router = interleave(
            lambda: drain(bench, raw_records, "raw", "router"),
            lambda: drain(bench, router_records, "switchboard", "router"),
            reps,
        )
        out["RAW-1"], out["G1"] = _throughput_gate("router", router, "raw1", raw1, floor=0.60)
        state["runs"] += raw1 + router

    if only & {"G2", "G5", "G6", "G3", "G9"}:
        chain, pipe = interleave(
            lambda: drain(bench, raw_records, "raw", "chain"),
            lambda: drain(bench, chain_records, "switchboard", "chain"),
            reps,
        )
        chain_rate = median(r["rate"] for r in chain)
        pipe_rate = median(r["rate"] for r in pipe)
        state["raw_chain_capacity"] = chain_rate
        state["pipeline_capacity"] = pipe_rate
        state["runs"] += chain + pipe
        out["RAW-CHAIN"], out["G2"] = _throughput_gate(
            "pipeline", pipe, "raw_chain", chain, floor=0.50
        )
        # The same requests asking for their answers on a reply topic of their own: each
        # reply goes out with its ledger copy in one transaction (many pairs a transaction).
        # Reported beside G2, not judged.
        replied = [
            drain(
                bench,
                lambda t: payloads.requests(
                    len(chain_records), "q", headers=True, reply_to=reply_topic(t)
                ),
                "switchboard",
                "chain",
                replies=True,
            )
            for _ in range(reps)
        ]
        state["runs"] += replied
        reply_rate = median(r["rate"] for r in replied)
        out["G2"]["detail"].update(
            {
                "reply_topic_msg_s": rounded(reply_rate, 0),
                "reply_topic_runs": [rounded(r["rate"], 0) for r in replied],
                "reply_topic_vs_shared_topic": rounded(ratio(reply_rate, pipe_rate)),
                "reply_topic_cpu_us_per_response": rounded(
                    median(r["cpu_us_per_msg"] for r in replied), 1
                ),
                "reply_topic_transactions": [
                    sum(int(res.get("transactions", 0)) for res in r["stage_results"].values())
                    for r in replied
                ],
            }
        )
        chain_cpu = median(r["cpu_us_per_msg"] for r in chain)
        pipe_cpu = median(r["cpu_us_per_msg"] for r in pipe)
        g5 = ratio(pipe_cpu, chain_cpu)
        idle = bench.broker_idle_cores()
        out["G5"] = {
            "value": rounded(g5, 2),
            "target": "<= 2.0x",
            "passed": g5 <= 2.0,
            "detail": {
                "pipeline_cpu_us_per_response": rounded(pipe_cpu, 1),
                "raw_chain_cpu_us_per_response": rounded(chain_cpu, 1),
                "pipeline_cpu_s_by_process": [r["cpu_s"] for r in pipe],
                "raw_chain_cpu_s_by_process": [r["cpu_s"] for r in chain],
                # Not judged (G5 is the Python processes' CPU): the broker's, which shares the
                # same two cores, above its idle work.
                "broker_idle_cores": rounded(idle, 3) if idle is not None else None,
                "pipeline_broker_cpu_us_per_response": median_or_none(
                    broker_us_per_msg(r, idle) for r in pipe
                ),
                "raw_chain_broker_cpu_us_per_response": median_or_none(
                    broker_us_per_msg(r, idle) for r in chain
                ),
            },
        }
        flushes = sum(
            int(res.get("flushes_hot_path", 0)) for r in pipe for res in r["stage_results"].values()
        )
        out["G6"] = {
            "value": flushes,
            "target": "0",
            "passed": flushes == 0,
            "detail": "Producer.flush calls counted by a subclass in every Switchboard process "
            f"from 'go' to the last response, over {len(pipe)} pipeline run(s)",
        }
    return out
