"""Where the time goes: py-spy sampling the router and worker processes during a drain.

``python -m benchmarks --profile`` writes ``results/profile-<stage>.txt`` (collapsed stacks,
flamegraph input), ``results/profile-<stage>.svg`` (py-spy's flame graph) and prints the top
functions by self time and by inclusive time. Not part of ``--quick``: a sampler costs CPU
and would skew the ratios.
"""

from __future__ import annotations

import collections
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from benchmarks import procs
from benchmarks.capacity import _task_topics, stage_specs
from benchmarks.env import BenchKafka, Payloads, preload
from benchmarks.measure import Watermarks, middle_rate, read_topics

RESULTS = Path(__file__).resolve().parent / "results"


def _spy(
    pid: int, out: Path, seconds: float, fmt: str, native: bool = False
) -> subprocess.Popen[bytes]:
    cmd = [
        "py-spy",
        "record",
        "--pid",
        str(pid),
        "--rate",
        "250",
        "--duration",
        str(int(seconds)),
        "--format",
        fmt,
        "--output",
        str(out),
        "--nonblocking",
        "--idle",
        "--threads",
    ]
    if native:
        cmd.append("--native")
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def summarize(collapsed: Path, top: int = 25) -> dict[str, Any]:
    """Self and inclusive sample shares per function from py-spy's raw (collapsed) output,
    on the event-loop thread only (``MainThread``; poll/producer threads listed apart)."""
    self_counts: collections.Counter[str] = collections.Counter()
    incl_counts: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    idle = 0
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        count = int(count_text)
        frames = stack.split(";")
        thread = frames[0]
        threads[thread.partition(": ")[2] or "?"] += count
        if "MainThread" not in thread:
            continue
        leaf = frames[-1]
        if "select (selectors.py" in leaf or ("_run_once" in leaf and "select" in leaf):
            idle += count
        total += count
        self_counts[_fn(leaf)] += count
        for fn in {_fn(f) for f in frames[1:]}:
            incl_counts[fn] += count
    share = lambda c: round(100 * c / max(1, total), 1)  # noqa: E731
    return {
        "main_thread_samples": total,
        "self_pct": [(fn, share(c)) for fn, c in self_counts.most_common(top)],
        "inclusive_pct": [(fn, share(c)) for fn, c in incl_counts.most_common(top)],
    }


def _fn(frame: str) -> str:
    # "name (path/to/file.py:123)" -> "name (file.py)"
    name, _, where = frame.partition(" (")
    path = where.split(":")[0]
    return f"{name} ({'/'.join(path.split('/')[-2:])})"


def run(
    bench: BenchKafka, payloads: Payloads, n: int = 200_000, seconds: float = 12.0
) -> dict[str, Any]:
    """Drain ``n`` requests through router + worker with py-spy attached to both."""
    if shutil.which("py-spy") is None:
        return {"error": "py-spy is not installed (pip install py-spy)"}
    RESULTS.mkdir(exist_ok=True)
    records = payloads.requests(n, headers=True)
    report: dict[str, Any] = {}
    with bench.pipeline_topics(3) as topics:
        preload(bench.config, topics.requests, records)
        stages = [procs.start(*s) for s in stage_specs("switchboard", bench, topics, "chain")]
        wm = Watermarks(bench.config, [topics.responses])
        spies = []
        try:
            procs.go(*stages)
            time.sleep(1.0)  # past the group join
            for stage in stages:
                for fmt, suffix in (("raw", "txt"), ("flamegraph", "svg")):
                    out = RESULTS / f"profile-{stage.name}.{suffix}"
                    spies.append((stage.name, fmt, out, _spy(stage.proc.pid, out, seconds, fmt)))
            wm.wait_for(n, 180, tick_s=0.2)
        finally:
            for _name, _fmt, _out, spy in spies:
                spy.wait(timeout=seconds + 30)
            procs.stop_all(stages)
            wm.close()
        stamps = [ts for _k, ts, _t in read_topics(bench.config, [topics.responses])]
    report["rate_under_profiler"] = middle_rate(stamps)
    for name, fmt, out, spy in spies:
        if fmt == "raw":
            if out.exists():
                report[name] = summarize(out)
            else:
                report[name] = {"error": (spy.stderr.read() if spy.stderr else b"").decode()[-500:]}
    _ = _task_topics
    return report
