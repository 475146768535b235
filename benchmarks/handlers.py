"""The two hot handlers' own CPU per record, on their fast path, without the runtime: a
stable figure for changes to ``Router.handle`` and ``SpecialistWorker.handle``.

``python -m benchmarks.handlers [--records N] [--reps K] [--json OUT]``

Both handlers are the ones ``Pipeline`` builds (``add_router``, ``add_worker``: the settings'
codec, rules, metrics, the answered index on disk, synced against the real broker) with the
benchmark's instant backend. The router handles N header-routed requests as the client writes
them; the worker handles the N tasks the router returned, as a worker's consumer reads them.
Records are ``MemoryRecord`` (no fetch, no produce, no delivery report): what is timed is the
handler alone, in the calling thread's CPU time (``time.thread_time``), best of K repetitions
with fresh request ids each (``timeit``'s advice: the fastest is the least disturbed). A drain
(``benchmarks.capacity.drain``) measures the whole process and varies by 10-30% from run to
run on two shared cores; this varies by about 2%, so it shows a change of a microsecond.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.env import BenchKafka, Payloads
from benchmarks.stages import InstantBackend
from consumers.app import GC_YOUNG_THRESHOLD, Pipeline
from consumers.runtime.loop import Context
from consumers.runtime.message import MemoryRecord
from switchboard.core.aio_producer import Outbound
from switchboard.core.settings import SPECIALISTS, Settings


def _records(outs: list[Outbound]) -> list[MemoryRecord]:
    """The router's outputs as the worker's consumer reads them (partition 0)."""
    records = []
    for i, out in enumerate(outs):
        headers: Any = list(out.headers or ())  # the router's are bytes values
        records.append(MemoryRecord(out.topic, out.value, out.key, headers, 0, i, 0))
    return records


async def _measure(pipeline: Pipeline, requests: list[list[Any]]) -> dict[str, Any]:
    router = pipeline.router
    assert router is not None
    index = pipeline.index
    assigned = time.monotonic()
    for role in ("router", *(f"worker.{s}" for s in SPECIALISTS)):
        index.follow(role, range(index.partitions))
    await index.sync(time.monotonic())
    topics = pipeline.topics
    router_ctx = Context(topics.requests, 0, assigned)
    worker_ctx = {s: Context(topics.tasks(s), 0, assigned) for s in SPECIALISTS}
    by_topic = {topics.tasks(s): s for s in SPECIALISTS}
    router_us: list[float] = []
    worker_us: list[float] = []
    answered = 0
    for batch in requests:
        incoming = [
            MemoryRecord(topics.requests, value, key, list(headers), 0, i, 0)
            for i, (key, value, headers) in enumerate(batch)
        ]
        handle = router.handle
        outs: list[Outbound] = []
        began = time.thread_time()
        for record in incoming:
            outs += handle(record, router_ctx)  # type: ignore[arg-type]  # always at once here
        router_us.append(1e6 * (time.thread_time() - began) / len(incoming))
        tasks = _records(outs)
        if len(tasks) != len(incoming):
            raise RuntimeError(f"the router routed {len(tasks)} of {len(incoming)} requests")
        workers = [(pipeline.workers[by_topic[t.topic()]], t) for t in tasks]
        began = time.thread_time()
        for worker, task in workers:
            answered += len(worker.handle(task, worker_ctx[worker.specialist]))  # type: ignore[arg-type]
        worker_us.append(1e6 * (time.thread_time() - began) / len(tasks))
    return {"router_us": router_us, "worker_us": worker_us, "answered": answered}


def run(records: int, reps: int, config: dict[str, Any] | None = None) -> dict[str, Any]:
    """``records`` requests per repetition through each handler, ``reps`` times; ``config``:
    the broker's client settings (default: ``BenchKafka.connect()``)."""
    bench = (
        BenchKafka(config["bootstrap.servers"], started=False) if config else BenchKafka.connect()
    )
    payloads = Payloads()
    requests = [payloads.requests(records, f"h{rep}-", headers=True) for rep in range(reps)]
    loadavg = os.getloadavg()
    with bench.pipeline_topics(1) as topics, tempfile.TemporaryDirectory() as state:
        settings = Settings(
            bootstrap_servers=bench.bootstrap,
            topic_prefix=topics.prefix,
            state_dir=Path(state),
            tenant_rate_per_s=0.0,  # as the capacity drains: one tenant sends everything
        )
        pipeline = Pipeline(
            settings,
            settings.client_config(bench.bootstrap),
            backend_factory=lambda _s, _limiter: InstantBackend(),
        )
        pipeline.add_router()
        for specialist in SPECIALISTS:
            pipeline.add_worker(specialist)

        async def measure_and_close() -> dict[str, Any]:
            # The collector as ``Pipeline.run`` sets it: start-up objects frozen out of its
            # view, a young threshold of GC_YOUNG_THRESHOLD (else collections weigh in).
            gc.collect()
            gc.freeze()
            thresholds = gc.get_threshold()
            gc.set_threshold(GC_YOUNG_THRESHOLD, *thresholds[1:])
            try:
                return await _measure(pipeline, requests)
            finally:
                gc.set_threshold(*thresholds)
                gc.unfreeze()
                await pipeline.close()

        measured = asyncio.run(measure_and_close())
    if config is None:
        bench.stop_if_started()
    result: dict[str, Any] = {"records": records, "reps": reps, "answered": measured["answered"]}
    for part in ("router_us", "worker_us"):
        runs = measured[part]
        result[part] = {
            "best": round(min(runs), 2),
            "median": round(statistics.median(runs), 2),
            "runs": [round(r, 2) for r in runs],
        }
    result["loadavg_at_start"] = [round(x, 2) for x in loadavg]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.handlers", description=__doc__)
    parser.add_argument("--records", type=int, default=30_000, help="requests per repetition")
    parser.add_argument("--reps", type=int, default=5, help="repetitions (best is reported)")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args(argv)
    if args.records < 1 or args.reps < 1:
        parser.error("--records and --reps must be at least 1")
    result = run(args.records, args.reps)
    for part, name in (("router_us", "Router.handle"), ("worker_us", "SpecialistWorker.handle")):
        fig = result[part]
        print(
            f"{name}: {fig['best']:.2f} µs CPU a record (best of {args.reps}; "
            f"median {fig['median']:.2f}; runs {', '.join(f'{r:.2f}' for r in fig['runs'])})"
        )
    print(f"{result['answered']} answered; load average at start {result['loadavg_at_start']}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
