"""Writing results: ``results/latest.json`` and ``.csv``, a PNG chart, and the table in
``benchmarks/README.md`` between its result markers."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
README = HERE / "README.md"
START, END = "<!-- results:start -->", "<!-- results:end -->"
GOALS = [f"G{i}" for i in range(1, 14)]

WHAT = {
    "G1": "router hop capacity / RAW-1",
    "G2": "pipeline capacity (instant specialist) / RAW-CHAIN",
    "G3": "latency at 50% of RAW-CHAIN capacity / raw chain's",
    "G4": "at 100 req/s: added latency per hop; e2e p99",
    "G5": "CPU per delivered response / RAW-CHAIN's",
    "G6": "flushes on the hot path",
    "G7": "1 worker, 1 partition, model W s, cap C: achieved / (C/W)",
    "G8": "fake provider rate limits: achieved / binding limit",
    "G9": "2x overload then half: drain, memory, loss",
    "G10": "Switchboard / best peer framework",
    "G11": "Avro decode + validate + encode per message",
    "G12": "interactive e2e p99 with a 500-item batch job / without (same run)",
    "G13": "answered index RSS per process, 1,000 answers/s over a 7-day horizon",
}


def _cell(value: Any) -> str:
    if value is None:
        return "not run"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def goals_table(results: dict[str, Any]) -> str:
    lines = ["| # | what | value | target | pass |", "| --- | --- | --- | --- | --- |"]
    for goal in GOALS:
        entry = results.get(goal)
        if entry is None:
            continue
        passed = entry.get("passed")
        mark = "not run" if entry.get("value") is None else ("yes" if passed else "**no**")
        lines.append(
            f"| {goal} | {WHAT[goal]} | {_cell(entry.get('value'))} | "
            f"{entry.get('target', '')} | {mark} |"
        )
    return "\n".join(lines)


def g7_table(entry: dict[str, Any] | None) -> str:
    if not entry or "detail" not in entry:
        return ""
    cells = entry["detail"]["cells"] + entry["detail"].get("sdk_cells", [])
    lines = [
        "| backend | W (s) | C | target C/W per s | achieved per s | ratio | rebalances | max in flight |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for c in cells:
        lines.append(
            f"| {c['backend']} | {c['W_s']:g} | {c['C']} | {c['target_per_s']:g} | "
            f"{c['achieved_per_s']:g} | {c['ratio']:.3f} | {c['rebalances']} | {c['max_in_flight']} |"
        )
    return "\n".join(lines)


def write(results: dict[str, Any], json_out: Path | None, update_readme: bool) -> None:
    RESULTS.mkdir(exist_ok=True)
    text = json.dumps(results, indent=2, default=str)
    if update_readme:
        (RESULTS / "latest.json").write_text(text)
        _csv(results, RESULTS / "latest.csv")
        _chart(results, RESULTS / "latest.png")
        _readme(results)
    if json_out is not None:
        json_out.write_text(text)


def _csv(results: dict[str, Any], path: Path) -> None:
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["goal", "what", "value", "target", "passed", "detail"])
        for goal in GOALS:
            if goal in results:
                e = results[goal]
                out.writerow(
                    [
                        goal,
                        WHAT[goal],
                        e.get("value"),
                        e.get("target"),
                        e.get("passed"),
                        json.dumps(e.get("detail"), default=str),
                    ]
                )
        for name in ("RAW-1", "RAW-CHAIN"):
            if name in results.get("baselines", {}):
                b = results["baselines"][name]
                out.writerow(
                    [name, "baseline capacity (msg/s)", b.get("value"), "", "", b.get("runs")]
                )


def _chart(results: dict[str, Any], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        results.setdefault("notes", []).append("no PNG: matplotlib is not installed")
        return
    bars: list[tuple[str, float]] = []
    base = results.get("baselines", {})
    for name in ("RAW-1", "RAW-CHAIN"):
        if base.get(name, {}).get("value"):
            bars.append((name, base[name]["value"]))
    g1 = results.get("G1", {}).get("detail", {})
    if g1.get("router_msg_s"):
        bars.append(("router hop", g1["router_msg_s"]))
    g2 = results.get("G2", {}).get("detail", {})
    if g2.get("pipeline_msg_s"):
        bars.append(("pipeline", g2["pipeline_msg_s"]))
    g10 = results.get("G10", {}).get("detail", {})
    for peer, rate in (g10.get("peers_msg_s") or {}).items():
        if rate:
            bars.append((f"{peer} (peer)", rate))
    cells = (results.get("G7", {}).get("detail") or {}).get("cells", []) + (
        (results.get("G7", {}).get("detail") or {}).get("sdk_cells", [])
    )
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    if bars:
        names, values = zip(*bars, strict=True)
        colors = [
            "#999999" if n.startswith("RAW") else "#d08c2c" if "peer" in n else "#2b6cb0"
            for n in names
        ]
        axes[0].barh(names, values, color=colors)
        axes[0].set_xscale("log")
        axes[0].set_xlabel("drain capacity, msg/s (log)")
        axes[0].set_title("Capacity, same broker, same run")
        for i, v in enumerate(values):
            axes[0].text(v, i, f" {v:,.0f}", va="center", fontsize=8)
    if cells:
        labels = [f"{c['backend']} W={c['W_s']:g} C={c['C']}" for c in cells]
        axes[1].barh(labels, [c["ratio"] for c in cells], color="#2b6cb0")
        axes[1].axvline(0.9, color="red", linestyle="--", label="target 0.90")
        axes[1].set_xlim(0, 1.1)
        axes[1].set_xlabel("achieved / (C/W)")
        axes[1].set_title("G7: one worker, one partition")
        axes[1].legend(loc="lower right")
    fig.suptitle(
        f"Switchboard benchmarks ({'quick' if results.get('quick') else 'full'}) "
        f"{results.get('started', '')}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _readme(results: dict[str, Any]) -> None:
    m = results.get("machine", {})
    body = [
        START,
        f"Latest run: `{results.get('command')}`, {results.get('started')}, "
        f"{results.get('duration_s', 0):.0f} s{' (quick)' if results.get('quick') else ''}.",
        "",
        f"Machine: {m.get('nproc')} cores ({m.get('cpu')}), {m.get('memory_gib')} GiB, "
        f"Python {m.get('python')}, confluent-kafka {m.get('confluent_kafka')}, "
        f"librdkafka {m.get('librdkafka')}, {m.get('java')}, Linux {m.get('kernel')}; "
        f"broker {results.get('broker')} (Apache Kafka 4.1, KRaft, 1 node); "
        f"load average at start {results.get('loadavg_at_start')}.",
        "",
        goals_table(results),
        "",
    ]
    base = results.get("baselines", {})
    if base:
        body.append(
            "Baselines (same run, medians): "
            + ", ".join(
                f"{k} {v.get('value'):,.0f} msg/s" for k, v in base.items() if v.get("value")
            )
            + "."
        )
        body.append("")
    g7 = g7_table(results.get("G7"))
    if g7:
        body += ["G7 cells (also the consumer runtime's benchmark):", "", g7, ""]
    if results.get("errors"):
        body += ["Errors: " + "; ".join(f"{k}: {v}" for k, v in results["errors"].items()), ""]
    body.append(END)
    block = "\n".join(body)
    text = README.read_text() if README.exists() else f"# Benchmarks\n\n{START}\n{END}\n"
    if START in text and END in text:
        head, _, rest = text.partition(START)
        _, _, tail = rest.partition(END)
        text = head + block + tail
    else:
        text += "\n" + block + "\n"
    README.write_text(text)
