"""``python -m benchmarks [--quick] [--json OUT.json] [--only G1,G7] [--profile]``."""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import report
from benchmarks.env import BenchKafka, Payloads, machine
from benchmarks.report import GOALS


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a subset that ends in < 5 minutes")
    parser.add_argument("--json", type=Path, help="also write the results object here")
    parser.add_argument("--only", help="comma-separated goals, e.g. G1,G7 (default: all)")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="py-spy the router and worker during a drain; nothing else",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    only = {g.strip().upper() for g in args.only.split(",")} if args.only else set(GOALS)
    unknown = only - set(GOALS)
    if unknown:
        print(f"unknown goals {sorted(unknown)}; use {', '.join(GOALS)}", file=sys.stderr)
        return 2
    began = time.monotonic()
    command = "python -m benchmarks " + " ".join(argv if argv is not None else sys.argv[1:])
    results: dict[str, Any] = {
        "command": command.strip(),
        "quick": args.quick,
        "started": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "loadavg_at_start": _loadavg(),
        "baselines": {},
        "errors": {},
        "timings_s": {},
    }
    bench = BenchKafka.connect()
    results["broker"] = bench.bootstrap + (" (started by the harness)" if bench.started else "")
    payloads = Payloads()
    state: dict[str, Any] = {"runs": []}
    if args.profile:
        from benchmarks import profiling

        results["profile"] = profiling.run(bench, payloads)
        print(_profile_text(results["profile"]))
        bench.stop_if_started()
        return 0

    def step(name: str, goals: set[str], fn: Callable[[], dict[str, Any]]) -> None:
        if not goals & only:
            return
        t0 = time.monotonic()
        print(f"[{time.monotonic() - began:6.1f}s] {name} ...", flush=True)
        try:
            out = fn()
            for key, value in out.items():
                if key in ("RAW-1", "RAW-CHAIN"):
                    results["baselines"][key] = value
                elif key in only:
                    results[key] = value
        except Exception as exc:  # one failed scenario must not lose the others' numbers
            traceback.print_exc()
            results["errors"][name] = f"{type(exc).__name__}: {exc}"
            for goal in goals & only:
                results.setdefault(
                    goal,
                    {
                        "value": None,
                        "target": "",
                        "passed": False,
                        "error": results["errors"][name],
                    },
                )
        results["timings_s"][name] = round(time.monotonic() - t0, 1)
        for goal in sorted(goals & only, key=lambda g: int(g[1:])):
            if goal in results:
                r = results[goal]
                print(
                    f"    {goal}: {r.get('value')}  (target {r.get('target')}) "
                    f"{'PASS' if r.get('passed') else 'FAIL'}",
                    flush=True,
                )

    from benchmarks import capacity, codec, frameworks, inflight, latency, overload, priority
    from benchmarks.venvs import PeerEnvError

    peer_envs = None
    if "G10" in only:
        # Before anything is measured: G10 is never judged without every peer, so a peer
        # that cannot be installed ends the run here, loudly, with pip's own message.
        try:
            peer_envs = frameworks.prepare()
        except PeerEnvError as exc:
            print(f"benchmarks: {exc}", file=sys.stderr)
            bench.stop_if_started()
            return 1

    step("codec", {"G11"}, lambda: {"G11": codec.run(payloads, args.quick)})
    step(
        "capacity",
        {"G1", "G2", "G3", "G5", "G6", "G9"},
        lambda: capacity.run(bench, payloads, args.quick, state, only),
    )
    if "pipeline_capacity" in state:

        def live() -> dict[str, Any]:
            overload.live_step(bench, args.quick, state, only)
            return {}

        step("live capacity", {"G3", "G9"}, live)
    if "raw_chain_capacity" in state:
        step("latency", {"G3", "G4"}, lambda: latency.run(bench, args.quick, state, only))
    elif {"G4"} & only:
        state["raw_chain_capacity"] = 2000.0  # G4 alone needs no capacity; G3's phase is extra
        step("latency", {"G4"}, lambda: latency.run(bench, args.quick, state, only))
    if "pipeline_capacity" in state:
        step("overload", {"G9"}, lambda: {"G9": overload.run(bench, args.quick, state)})
    step("inflight", {"G7", "G8"}, lambda: inflight.run(bench, payloads, args.quick, only))
    step(
        "frameworks",
        {"G10"},
        lambda: {"G10": frameworks.run(bench, payloads, args.quick, peer_envs)},
    )
    step("priority", {"G12"}, lambda: {"G12": priority.run(bench, args.quick)})
    from benchmarks import index_memory

    step("index", {"G13"}, lambda: {"G13": index_memory.run(bench, args.quick)})

    results["duration_s"] = round(time.monotonic() - began, 1)
    print(f"[{results['duration_s']:6.1f}s] done\n")
    print(report.goals_table(results))
    if "G7" in results:
        print("\nG7 cells:\n" + report.g7_table(results["G7"]))
    full_set = only == set(GOALS)
    report.write(results, args.json, update_readme=full_set)
    bench.stop_if_started()
    if results["errors"]:
        # A scenario that raised (a peer that failed to start, say) fails the run.
        for name, error in results["errors"].items():
            print(f"benchmarks: {name} failed: {error}", file=sys.stderr)
        return 1
    return 0


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def _profile_text(profile: dict[str, Any]) -> str:
    lines = [f"drain rate under the profiler: {profile.get('rate_under_profiler')}"]
    for name, data in profile.items():
        if not isinstance(data, dict):
            continue
        lines.append(f"\n== {name} ({data.get('main_thread_samples')} event-loop samples)")
        lines.append("self time (event-loop thread):")
        lines += [f"  {pct:5.1f}%  {fn}" for fn, pct in data.get("self_pct", [])[:20]]
        lines.append("inclusive:")
        lines += [f"  {pct:5.1f}%  {fn}" for fn, pct in data.get("inclusive_pct", [])[:30]]
    return "\n".join(lines)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
