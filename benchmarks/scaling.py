"""Router scale-out on this machine: the router hop's drain rate with 1 and with 2 router
processes on the same requests topic (4 partitions: 2 each), interleaved A/B/A/B.

``python -m benchmarks.scaling [--records N] [--reps K] [--json OUT]``; docs/capacity.md
takes its per-process figures from here. Every router process is its own OS process, as in
production; on a 2-core machine the broker's JVM and the load generator's preload share the
cores, so 2 processes cannot double the rate here: the figure says how much of a second core
a second router turns into throughput.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.capacity import drain
from benchmarks.env import BenchKafka, Payloads
from benchmarks.measure import interleave, median, rounded

PARTITIONS = 4


def run(records: int, reps: int) -> dict[str, Any]:
    bench = BenchKafka.connect()
    payloads = Payloads()
    batch = payloads.requests(records, headers=True)  # as the client writes them
    loadavg_at_start = os.getloadavg()
    began = time.monotonic()

    def one(routers: int) -> dict[str, Any]:
        return drain(bench, batch, "switchboard", "router", partitions=PARTITIONS, routers=routers)

    singles, doubles = interleave(lambda: one(1), lambda: one(2), reps)
    bench.stop_if_started()
    one_rate = median(r["rate"] for r in singles)
    two_rate = median(r["rate"] for r in doubles)
    return {
        "command": "python -m benchmarks.scaling " + " ".join(sys.argv[1:]),
        "records": records,
        "partitions": PARTITIONS,
        "loadavg_at_start": [round(x, 2) for x in loadavg_at_start],
        "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
        "seconds": round(time.monotonic() - began, 1),
        "one_router_msg_s": rounded(one_rate, 0),
        "two_routers_msg_s": rounded(two_rate, 0),
        "speedup": rounded(two_rate / one_rate if one_rate else float("nan"), 2),
        "one_router_runs": [rounded(r["rate"], 0) for r in singles],
        "two_routers_runs": [rounded(r["rate"], 0) for r in doubles],
        "cpu_us_per_msg": {
            "one": [rounded(r["cpu_us_per_msg"], 1) for r in singles],
            "two": [rounded(r["cpu_us_per_msg"], 1) for r in doubles],
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scaling", description=__doc__)
    parser.add_argument("--records", type=int, default=40_000, help="requests per drain")
    parser.add_argument("--reps", type=int, default=2, help="A/B pairs (medians are reported)")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args(argv)
    result = run(args.records, args.reps)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
