"""G10: the same route-and-respond pipeline in Quix Streams, FastStream and Faust, drained on
the same broker in the same run, interleaved with Switchboard (Switchboard first and last).

Each system gets the same preloaded requests and the same two-process topology; capacity is
the drain rate of responses (broker append time, 10th-90th percentile). A peer that cannot be
imported or crashes is recorded as "not run" with the reason, never given a number.
"""

from __future__ import annotations

import importlib
from typing import Any

from benchmarks.capacity import PEERS, drain
from benchmarks.env import BenchKafka, Payloads
from benchmarks.measure import median, rounded

_IMPORTS = {"quix": "quixstreams", "faststream": "faststream.kafka", "faust": "faust"}
#: Records per drain, sized so each system drains for a few seconds at the rates seen here.
_SIZES = {"switchboard": 6_000, "quix": 12_000, "faststream": 3_000, "faust": 3_000}


def available(peer: str) -> str | None:
    """None if ``peer`` can run here, else why not."""
    try:
        importlib.import_module(_IMPORTS[peer])
        importlib.import_module(f"benchmarks.peers.{peer}_app")
    except Exception as exc:  # any import failure means the same: not runnable here
        return f"{type(exc).__name__}: {exc}"
    return None


def run(bench: BenchKafka, payloads: Payloads, quick: bool) -> dict[str, Any]:
    scale = 1 if quick else 4
    records = payloads.requests(max(_SIZES.values()) * scale)
    rates: dict[str, list[float]] = {"switchboard": []}
    notes: dict[str, str] = {}
    rounds = 1 if quick else 2

    def one(system: str) -> None:
        n = _SIZES[system] * scale
        result = drain(bench, records[:n], system, "chain", timeout_s=60 if quick else 240)
        if not result["complete"]:
            errors = {k: v.get("error", "")[-300:] for k, v in result["stage_results"].items()}
            notes[system] = f"did not finish {n} records: {result['delivered']} delivered; {errors}"
            return
        rates.setdefault(system, []).append(result["rate"])

    for _ in range(rounds):
        one("switchboard")
        for peer in PEERS:
            why = available(peer)
            if why is not None:
                notes[peer] = f"not run: {why}"
                continue
            one(peer)
    one("switchboard")
    sb = median(rates["switchboard"])
    peers = {p: median(rates[p]) for p in PEERS if rates.get(p)}
    best_name, best = max(peers.items(), key=lambda kv: kv[1]) if peers else ("none", float("nan"))
    ratio = sb / best if peers else float("nan")
    return {
        "value": rounded(ratio, 2),
        "target": ">= 2.0x",
        "passed": bool(peers) and ratio >= 2.0,
        "detail": {
            "switchboard_msg_s": rounded(sb, 0),
            "best_peer": best_name,
            "peers_msg_s": {p: rounded(v, 0) for p, v in peers.items()},
            "runs_msg_s": {k: [rounded(x, 0) for x in v] for k, v in rates.items()},
            "not_run": notes,
        },
    }
