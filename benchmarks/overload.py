"""G9: overload at 2x capacity, then half capacity: drain rate, memory growth, nothing lost.

T is the capacity as ``performance.md`` defines it: the highest rate an open-loop generator
can offer with the backlog staying bounded (``live_capacity``, a search between zero and G2's
drain rate). G2's drain rate is not that: a drain reads a preloaded backlog in full batches
with no generator running, while under live load the broker shares the two cores with the
generator's writes and answers each caught-up consumer's fetch a few records at a time (on
this machine the live capacity came out at about a third of the drain rate).

Phases from one open-loop generator: ``warm`` (excluded), ``over`` at 2T, ``under`` at T/2.
Backlog(t) = requests sent by t minus responses seen by t. Drain rate = the backlog at the end
of ``over`` divided by the time it took to fall to near zero (or how far it fell by the end).
Spare capacity = T - T/2. Memory = the peak RSS of the router and worker processes minus their
RSS at "go".
"""

from __future__ import annotations

import threading
import time
from typing import Any, Final

import psutil

from benchmarks import procs
from benchmarks.capacity import stage_specs
from benchmarks.env import BenchKafka
from benchmarks.measure import Watermarks, read_topics, rounded

#: After the generator's last phase: how long without a new answer counts as a stall, and the
#: longest the backlog is given to drain.
STALL_S: Final = 10.0
DRAIN_WAIT_MAX_S: Final = 300.0
#: The live-capacity search: a rate is sustained when, over its step after a warm-up of a
#: fifth of the step, the backlog grows by less than BOUND_S of arrivals and ends below twice
#: that. The first rate tried is FIRST_TRY of the drain rate; each step halves the interval.
BOUND_S: Final = 0.25
FIRST_TRY: Final = 0.35
SEARCH_STEPS: Final = 5
#: How long the backlog of a rate that was not sustained may take to drain before the next.
SETTLE_MAX_S: Final = 60.0
#: A quiet broker (``quiet_broker``): under this many cores over a second, waited for at most
#: QUIET_MAX_S (an idle broker here uses ~0.02).
QUIET_CORES: Final = 0.1
QUIET_MAX_S: Final = 30.0


def live_capacity(
    bench: BenchKafka, drain_rate: float, quick: bool, kind: str = "switchboard"
) -> dict[str, Any]:
    """The highest open-loop rate the pipeline sustains (``BOUND_S``), searched by bisection
    between zero and ``drain_rate`` on one pipeline: each rate is one generator run, and the
    backlog it leaves drains before the next."""
    step_s = 6.0 if quick else 20.0
    lo, hi = 0.0, drain_rate
    rate = FIRST_TRY * drain_rate
    tried: list[dict[str, Any]] = []
    kafka = bench.config
    with bench.pipeline_topics(3) as topics:
        stages = [procs.start(*s) for s in stage_specs(kind, bench, topics, "chain")]
        sent = Watermarks(kafka, [topics.requests])
        seen = Watermarks(kafka, [topics.responses])
        try:
            procs.go(*stages)
            # Groups joined and caches warm before the first rate is judged.
            _try_rate(kafka, topics.requests, "warm", 50, 2.0, sent, seen)
            for i in range(SEARCH_STEPS):
                # Each step's request ids are its own: the same ids again would be skipped as
                # answered, and never counted as served.
                step = _try_rate(kafka, topics.requests, f"step{i}", rate, step_s, sent, seen)
                tried.append(step)
                if step["sustained"]:
                    lo = rate
                else:
                    hi = rate
                # Drained before the next rate (a rate that was not sustained left a backlog).
                settle_until = time.monotonic() + SETTLE_MAX_S
                while sent.total() - seen.total() > 0 and time.monotonic() < settle_until:
                    time.sleep(0.2)
                rate = (lo + hi) / 2
        finally:
            procs.stop_all(stages)
            sent.close()
            seen.close()
    return {
        "capacity": lo if lo > 0 else min(t["rate"] for t in tried) / 2,
        "found": lo > 0,
        "drain_rate": rounded(drain_rate, 0),
        "tried": tried,
        "method": f"bisection over {SEARCH_STEPS} open-loop steps of {step_s:.0f} s between 0 and "
        f"G2's drain rate; sustained: backlog growth after the first fifth < {BOUND_S} s of "
        f"arrivals and the final backlog < {2 * BOUND_S} s",
    }


def _try_rate(
    kafka: dict[str, Any],
    topic: str,
    label: str,
    rate: float,
    seconds: float,
    sent: Watermarks,
    seen: Watermarks,
) -> dict[str, Any]:
    """One open-loop step at ``rate`` (its request ids prefixed ``label``): whether the
    backlog stayed bounded."""
    gen = procs.start(
        "generator",
        "generator",
        {
            "kafka": kafka,
            "topic": topic,
            "phases": [{"label": label, "rate": rate, "seconds": seconds}],
        },
    )
    samples: list[tuple[float, int]] = []
    try:
        procs.go(gen)
        began = time.monotonic()
        while not gen.conn.poll(0.1):
            samples.append((time.monotonic() - began, sent.total() - seen.total()))
            if time.monotonic() - began > seconds + 30:
                raise RuntimeError("the generator did not finish its step")
        behind = float(gen.conn.recv()[1]["phases"][0]["max_behind_s"])
        samples.append((time.monotonic() - began, sent.total() - seen.total()))
    finally:
        procs.stop_all([gen])
    after_warm = [b for t, b in samples if t >= seconds / 5] or [samples[-1][1]]
    growth = after_warm[-1] - after_warm[0]
    final = samples[-1][1]
    # A rate the generator itself fell behind is a rate that was not offered: not sustained
    # (its backlog, counted from what was sent, would look bounded).
    sustained = growth < BOUND_S * rate and final < 2 * BOUND_S * rate and behind < BOUND_S
    return {
        "rate": rounded(rate, 0),
        "sustained": sustained,
        "generator_max_behind_s": behind,
        "backlog_growth": growth,
        "final_backlog": final,
        "peak_backlog": max(b for _t, b in samples),
    }


def live_step(bench: BenchKafka, quick: bool, state: dict[str, Any], only: set[str]) -> None:
    """The live capacities the open-loop goals run at, into ``state``: the pipeline's (G3's
    ``sbhalf`` phase, G9) and, for G3, the raw chain's."""
    state["pipeline_live"] = live_capacity(bench, state["pipeline_capacity"], quick)
    if "G3" in only and "raw_chain_capacity" in state:
        state["raw_chain_live"] = live_capacity(
            bench, state["raw_chain_capacity"], quick, kind="raw"
        )


def run(bench: BenchKafka, quick: bool, state: dict[str, Any]) -> dict[str, Any]:
    live = state.get("pipeline_live") or live_capacity(bench, state["pipeline_capacity"], quick)
    capacity = live["capacity"]
    over_s = 8.0 if quick else 60.0
    under_s = 2.5 * over_s + 4
    phases = [
        {"label": "warm", "rate": 50, "seconds": 2.0},
        {"label": "over", "rate": round(2 * capacity), "seconds": over_s},
        {"label": "under", "rate": round(capacity / 2), "seconds": under_s},
    ]
    total = sum(int(p["rate"] * p["seconds"]) for p in phases)
    kafka = bench.config
    with bench.pipeline_topics(3) as topics:
        stages = [procs.start(*s) for s in stage_specs("switchboard", bench, topics, "chain")]
        obs = procs.start("observer", "observer", {"kafka": kafka, "topics": [topics.responses]})
        gen = procs.start(
            "generator", "generator", {"kafka": kafka, "topic": topics.requests, "phases": phases}
        )
        rss: list[tuple[float, float]] = []
        # CPU seconds of every process that shares the two cores (the stages, the generator,
        # the observer, and the Kafka broker JVMs on this machine), sampled with the RSS:
        # what holds the drain back is read from their use per phase.
        watched = [*stages, gen, obs]
        brokers = _brokers()
        cpu: list[tuple[float, dict[str, float]]] = []
        sampling = threading.Event()

        def sample() -> None:
            while not sampling.is_set():
                rss.append((time.time(), sum(s.rss_mb() for s in stages)))
                cpu.append(
                    (
                        time.time(),
                        {**{p.name: p.cpu_s() for p in watched}, **_cpu_of(brokers)},
                    )
                )
                time.sleep(0.25)

        sampler = threading.Thread(target=sample, daemon=True)
        wm = Watermarks(kafka, [topics.responses])
        try:
            rss_go = sum(s.rss_mb() for s in stages)
            procs.go(*stages, obs, gen)
            sampler.start()
            if not gen.conn.poll(over_s + under_s + 60):
                raise RuntimeError("the generator did not finish")
            report = gen.conn.recv()[1]["phases"]
            # The backlog left at the generator's end drains for as long as answers keep
            # coming: "lost" counts only requests unanswered once they stop (a stall), not
            # ones still on their way when a fixed window closed.
            drain_began = time.monotonic()
            count, last = 0, -1
            while count < total and count != last:
                if time.monotonic() - drain_began > DRAIN_WAIT_MAX_S:
                    break
                last = count
                count, _ = wm.wait_for(total, STALL_S, alive=lambda: procs.all_alive(stages))
            drain_wait = time.monotonic() - drain_began
        finally:
            sampling.set()
            results = procs.stop_all([*stages, obs, gen])
            wm.close()
        sent = sorted(
            ts / 1000
            for k, ts, _t in read_topics(kafka, [topics.requests])
            if not k.startswith(b"warm-")
        )
    seen_map: dict[bytes, float] = results["observer"].get("seen", {})
    seen = sorted(t for k, t in seen_map.items() if not k.startswith(b"warm-"))
    lost = len(sent) - len(seen)
    over, under = report[1], report[2]
    # Backlog on a 0.1 s grid from the start of "over" to the end of "under".
    grid, backlog = [], []
    i = j = 0
    t = over["start"]
    while t <= under["end"] + 0.05:
        while i < len(sent) and sent[i] <= t:
            i += 1
        while j < len(seen) and seen[j] <= t:
            j += 1
        grid.append(t)
        backlog.append(i - j)
        t += 0.1
    peak_i = max(range(len(backlog)), key=lambda k: backlog[k]) if backlog else 0
    peak = backlog[peak_i] if backlog else 0
    floor = max(10, int(under["rate"] * 0.25))  # a quarter second of arrivals: "drained"
    drained_i = next((k for k in range(peak_i, len(backlog)) if backlog[k] <= floor), None)
    if drained_i is not None and drained_i > peak_i:
        drain_rate = (peak - backlog[drained_i]) / (grid[drained_i] - grid[peak_i])
    else:
        last = len(backlog) - 1
        drain_rate = (peak - backlog[last]) / max(1e-9, grid[last] - grid[peak_i])
    spare = capacity - under["sent"] / max(1e-9, under["end"] - under["start"])
    over_seen = [x for x in seen if over["start"] + 1 <= x <= over["end"]]
    in_run_capacity = len(over_seen) / max(1e-9, over["end"] - over["start"] - 1)
    growth = (max((m for _t, m in rss), default=rss_go) - rss_go) if rss else float("nan")
    served = {
        label: rounded(
            sum(1 for x in seen if ph["start"] <= x <= ph["end"])
            / max(1e-9, ph["end"] - ph["start"]),
            0,
        )
        for label, ph in (("over", over), ("under", under))
    }
    ratio = drain_rate / spare if spare > 0 else float("nan")
    return {
        "value": f"drain {ratio:.2f} of spare; +{growth:.0f} MB; lost {lost}",
        "target": ">= 0.8 of spare capacity; <= 200 MB; nothing lost",
        "passed": ratio >= 0.8 and growth <= 200 and lost == 0,
        "detail": {
            "capacity": rounded(capacity, 0),
            "live_capacity": live,
            "offered": [p["rate"] for p in phases],
            "phase_seconds": {"over": over_s, "under": under_s},
            "quick_note": "--quick shortens the 60 s overload phase to 8 s" if quick else None,
            "peak_backlog": peak,
            "drained": drained_i is not None,
            "drain_rate_per_s": rounded(drain_rate, 0),
            "spare_per_s": rounded(spare, 0),
            "drain_over_spare": rounded(ratio),
            "served_during_overload_per_s": rounded(in_run_capacity, 0),
            "served_per_s_by_phase": served,
            "cores_used_by_phase": {
                label: _cores(cpu, ph["start"], ph["end"])
                for label, ph in (("over", over), ("under", under))
            },
            "rss_growth_mb": rounded(growth, 1),
            "rss_at_go_mb": rounded(rss_go, 1),
            "requests": len(sent),
            "answered": len(seen),
            "lost": lost,
            # Seconds the backlog drained after the generator's end (until all were answered,
            # or answers stopped for STALL_S).
            "drain_wait_after_load_s": rounded(drain_wait, 1),
            "duplicates": results["observer"].get("duplicates"),
            "generator": report,
            # Pauses (backpressure) and each runtime's counters, per stage process.
            "stages": {
                s.name: {k: results.get(s.name, {}).get(k) for k in ("pauses", "runtimes")}
                for s in stages
            },
        },
    }


def _cores(
    samples: list[tuple[float, dict[str, float]]], start: float, end: float
) -> dict[str, float]:
    """Each process's CPU use between ``start`` and ``end``, in cores (1.0: one core busy)."""
    inside = [(t, c) for t, c in samples if start <= t <= end]
    if len(inside) < 2:
        return {}
    (t0, c0), (t1, c1) = inside[0], inside[-1]
    span = max(1e-9, t1 - t0)
    used = {name: round((c1[name] - c0.get(name, 0.0)) / span, 2) for name in c1}
    used["total"] = round(sum(used.values()), 2)
    return used


def quiet_broker(max_s: float = QUIET_MAX_S) -> float:
    """Wait until the broker JVMs use under ``QUIET_CORES`` over a second (at most ``max_s``);
    returns the seconds waited. After heavy phases (the live-capacity search offers up to
    ~80k req/s) the broker keeps working for a while, and a latency phase started then
    measures that work, not the pipeline."""
    brokers = _brokers()
    began = time.monotonic()
    last = _cpu_of(brokers).get("broker", 0.0)
    while time.monotonic() - began < max_s:
        time.sleep(1.0)
        now = _cpu_of(brokers).get("broker", 0.0)
        if now - last < QUIET_CORES:
            break
        last = now
    return round(time.monotonic() - began, 1)


def _brokers() -> list[psutil.Process]:
    """The Kafka broker JVMs on this machine (their CPU shares the cores with the stages)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if "kafka.Kafka" in " ".join(proc.info["cmdline"] or []):
            found.append(proc)
    return found


def _cpu_of(brokers: list[psutil.Process]) -> dict[str, float]:
    out: dict[str, float] = {}
    for proc in brokers:
        try:
            t = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        out["broker"] = out.get("broker", 0.0) + t.user + t.system
    return out
