"""G10: the same route-and-respond pipeline in Quix Streams, FastStream and Faust, drained on
the same broker in the same run, interleaved with Switchboard (Switchboard first and last).

Each system gets the same preloaded requests and the same two-process topology; capacity is
the drain rate of responses (broker append time, 10th-90th percentile). Each peer runs in its
own virtual environment with its framework's own dependencies (``venvs``). Every peer runs:
one whose venv cannot be built, that cannot start or that does not finish its drain fails G10
(and the run's exit status) with the reason, never a number without it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from benchmarks import venvs
from benchmarks.capacity import PEERS, broker_us_per_msg, drain, median_or_none
from benchmarks.env import BenchKafka, Payloads
from benchmarks.measure import median, rounded
from benchmarks.procs import PeerPython
from switchboard.core.settings import Settings

#: Records per drain, sized so each system drains for two to three seconds at the rates seen
#: here (Switchboard had 6,000 until 2026-12-01: under a second, whose 10th-90th percentile
#: window a single slow fetch moved; its runs then spread 5.7-9.6k msg/s).
_SIZES = {"switchboard": 20_000, "quix": 24_000, "faststream": 3_000, "faust": 3_000}
#: The distributions whose versions G10 reports per peer (from the venv's ``pip freeze``).
_REPORTED = ("quixstreams", "confluent-kafka", "faststream", "aiokafka", "faust-streaming")


def prepare(log: Callable[[str], None] = print) -> dict[str, PeerPython]:
    """Every peer's interpreter, its venv built (or reused); ``PeerEnvError`` names a failure."""
    root = Settings().state_dir / "bench-venvs"
    return {peer: venvs.ensure(peer, root, log) for peer in PEERS}


def _versions(python: PeerPython) -> str:
    pins = [line for line in venvs.installed(python).splitlines() if "==" in line]
    return ", ".join(p for p in pins if p.split("==")[0].lower() in _REPORTED)


def run(
    bench: BenchKafka,
    payloads: Payloads,
    quick: bool,
    envs: dict[str, PeerPython] | None = None,
) -> dict[str, Any]:
    envs = envs if envs is not None else prepare()
    scale = 1 if quick else 4
    records = payloads.requests(max(_SIZES.values()) * scale, headers=True)
    rates: dict[str, list[float]] = {"switchboard": []}
    # What each system's drain costs the machine: its own processes' CPU and the broker's
    # (above its idle work), per response; reported, not judged.
    cpu: dict[str, list[float]] = {}
    broker: dict[str, list[float | None]] = {}
    idle = bench.broker_idle_cores()
    # Two rounds in --quick too: one Quix Streams run drained anywhere from 10.2k to 18.9k msg/s
    # within an hour here, and the ratio took that whole spread (0.35-0.78).
    rounds = 2

    def one(system: str) -> None:
        n = _SIZES[system] * scale
        result = drain(
            bench,
            records[:n],
            system,
            "chain",
            timeout_s=60 if quick else 240,
            python=envs.get(system),
        )
        if not result["complete"]:
            errors = {k: v.get("error", "")[-1500:] for k, v in result["stage_results"].items()}
            raise RuntimeError(
                f"G10: {system} did not finish {n} records ({result['delivered']} delivered): "
                f"{errors}"
            )
        rates.setdefault(system, []).append(result["rate"])
        cpu.setdefault(system, []).append(result["cpu_us_per_msg"])
        broker.setdefault(system, []).append(broker_us_per_msg(result, idle))

    for _ in range(rounds):
        one("switchboard")
        for peer in PEERS:
            one(peer)
    one("switchboard")
    sb = median(rates["switchboard"])
    peers = {p: median(rates[p]) for p in PEERS if rates.get(p)}
    best_name, best = max(peers.items(), key=lambda kv: kv[1])
    ratio = sb / best
    return {
        "value": rounded(ratio, 2),
        "target": ">= 2.0x",
        "passed": ratio >= 2.0,
        "detail": {
            "switchboard_msg_s": rounded(sb, 0),
            "best_peer": best_name,
            "peers_msg_s": {p: rounded(v, 0) for p, v in peers.items()},
            "runs_msg_s": {k: [rounded(x, 0) for x in v] for k, v in rates.items()},
            "peer_versions": {p: _versions(envs[p]) for p in PEERS},
            "cpu_us_per_response": {k: rounded(median(v), 1) for k, v in cpu.items()},
            "broker_cpu_us_per_response": {k: median_or_none(v) for k, v in broker.items()},
            "broker_idle_cores": rounded(idle, 3) if idle is not None else None,
        },
    }
