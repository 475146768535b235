"""What a live pipeline costs the machine at a steady rate: CPU per response and cores in use of
the router, the worker and the broker, for each open-loop rate given.

``python -m benchmarks.live_cpu [--rates 1,100,500,1000,2000] [--seconds 8] [--json OUT]``

A drain (``benchmarks.capacity.drain``) reads a backlog in full batches, the cheapest a
response gets. Live traffic arrives a few records at a time, and each arrival wakes the
router's and the worker's threads and the broker's: at low rates the cost of a response is
mostly the cost of those wake-ups. This is the figure to size a deployment's CPU requests by
(docs/capacity.md, "CPU at a steady rate").

Per rate: one router and one worker process of all five specialists (the benchmark's instant
backend), an open-loop generator at the rate, 2 s at 100 req/s and 4 s at the rate before the
window, then ``--seconds`` measured: process CPU (user + system) of each stage and of the
local broker (``BenchKafka.broker_cpu_s``; None for a broker elsewhere) over the responses
that reached the response topic in that window.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks import procs
from benchmarks.capacity import stage_specs
from benchmarks.env import BenchKafka
from benchmarks.measure import Watermarks, rounded

#: Before the window: the groups join at 100 req/s, then the rate settles.
WARM_S = 2.0
SETTLE_S = 4.0


def measure(bench: BenchKafka, rate: float, seconds: float) -> dict[str, Any]:
    """One pipeline at ``rate`` requests a second; CPU per response over ``seconds``."""
    load_s = SETTLE_S + seconds + 2.0
    phases = [
        {"label": "warm", "rate": 100, "seconds": WARM_S},
        {"label": f"r{rate:g}", "rate": rate, "seconds": load_s},
    ]
    with bench.pipeline_topics(3) as topics:
        stages = [procs.start(*s) for s in stage_specs("switchboard", bench, topics, "chain")]
        gen = procs.start(
            "generator",
            "generator",
            {"kafka": bench.config, "topic": topics.requests, "phases": phases},
        )
        seen = Watermarks(bench.config, [topics.responses])
        try:
            procs.go(*stages, gen)
            time.sleep(WARM_S + SETTLE_S)
            cpu0 = {s.name: s.cpu_s() for s in stages}
            broker0 = bench.broker_cpu_s()
            served0, began = seen.total(), time.monotonic()
            time.sleep(seconds)
            cpu1 = {s.name: s.cpu_s() for s in stages}
            broker1 = bench.broker_cpu_s()
            served1, ended = seen.total(), time.monotonic()
            if not gen.conn.poll(load_s + 60):
                raise RuntimeError("the generator did not finish its phases")
            behind = float(gen.conn.recv()[1]["phases"][1]["max_behind_s"])
        finally:
            procs.stop_all([*stages, gen])
            seen.close()
    served, window = served1 - served0, ended - began
    per = max(1, served)
    us = {name: rounded((cpu1[name] - cpu0[name]) / per * 1e6, 1) for name in cpu1}
    cores = {name: rounded((cpu1[name] - cpu0[name]) / window, 3) for name in cpu1}
    if broker0 is not None and broker1 is not None:
        us["broker"] = rounded((broker1 - broker0) / per * 1e6, 1)
        cores["broker"] = rounded((broker1 - broker0) / window, 3)
    return {
        "rate": rate,
        "served_per_s": rounded(served / window, 0),
        "generator_max_behind_s": behind,
        "cpu_us_per_response": us,
        "cores": cores,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.live_cpu", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--rates", default="1,100,500,1000,2000", help="requests a second, comma-separated"
    )
    parser.add_argument("--seconds", type=float, default=8.0, help="the measured window per rate")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    try:
        rates = [float(r) for r in args.rates.split(",") if r.strip()]
    except ValueError:
        parser.error(f"--rates takes numbers separated by commas, not {args.rates!r}")
    if not rates or any(r <= 0 for r in rates):
        parser.error("--rates needs at least one rate above 0")
    if args.seconds <= 0:
        parser.error("--seconds must be above 0")
    bench = BenchKafka.connect()
    results = []
    try:
        for rate in rates:
            result = measure(bench, rate, args.seconds)
            results.append(result)
            us, cores = result["cpu_us_per_response"], result["cores"]
            print(
                f"{rate:>8g} req/s  served {result['served_per_s']:>7,.0f}/s  "
                + "  ".join(f"{k} {us[k]:,.0f} us ({cores[k]:.2f} cores)" for k in us),
                flush=True,
            )
    finally:
        bench.stop_if_started()
    if args.json:
        args.json.write_text(json.dumps({"seconds": args.seconds, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
