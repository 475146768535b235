"""What tracing costs per record on the router hop: the production router through the in-memory
runtime, tracing off (no SDK provider: the runtime keeps the bare handler) vs on (an SDK
provider with a batch processor and an exporter that drops spans, so only our cost and the
SDK's show, not a collector's).

    python -m benchmarks.trace_cost [--records 20000] [--rounds 5]

Prints the median per-record CPU time of each mode over the rounds, and their difference.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from consumers.answered import AnsweredLedger
from consumers.outcomes import Outcomes, Stage
from consumers.router import Router, RouterRules
from consumers.runtime.failures import FailureStrategy
from consumers.runtime.memory import MemoryRuntime, MemorySink
from producers.client import build_request
from switchboard.core import headers as h
from switchboard.core import tracing
from switchboard.core.policy import RetryPolicy
from switchboard.core.serde import REQUEST, SingleObjectCodec
from switchboard.core.topics import Topics


class _Drop(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def _runtime() -> tuple[MemoryRuntime, MemorySink]:
    topics, codec, sink = Topics("bench"), SingleObjectCodec(), MemorySink()
    outcomes = Outcomes(codec, topics, sink, "bench.router", Stage.ROUTE)
    failures = FailureStrategy(outcomes, RetryPolicy(topics))
    router = Router(
        codec=codec,
        topics=topics,
        outcomes=outcomes,
        index=AnsweredLedger(3600),
        rules=RouterRules(dedup_window_s=0.0),
    )
    return MemoryRuntime(router.handle, failures, sink), sink


async def _per_record_us(records: int) -> float:
    runtime, sink = _runtime()
    codec, topic = SingleObjectCodec(), "bench.requests"
    feeds = []
    for _ in range(records):
        request = build_request("/backend design a rate limiter", tenant="bench")
        headers = [(h.REQUEST_ID, request["request_id"].encode()), (h.TENANT, b"bench")]
        feeds.append((codec.encode(REQUEST, request, topic), headers))
    began = time.process_time()  # CPU time: the machine is shared, wall time is not ours
    for value, headers in feeds:
        await runtime.feed(topic, value, headers=headers)
    elapsed = time.process_time() - began
    sink.topics.clear()
    return elapsed / records * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.trace_cost")
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(_Drop()))
    off: list[float] = []
    on: list[float] = []
    for _ in range(args.rounds):  # interleaved, so drift hits both modes alike
        tracing.use(None)
        off.append(asyncio.run(_per_record_us(args.records)))
        tracing.use(provider)
        on.append(asyncio.run(_per_record_us(args.records)))
    tracing.use(None)
    provider.shutdown()
    m_off, m_on = statistics.median(off), statistics.median(on)
    print(f"router hop, in-memory runtime, {args.records} records x {args.rounds} rounds")
    print(f"tracing off: {m_off:.1f} us/record (rounds: {', '.join(f'{x:.1f}' for x in off)})")
    print(f"tracing on:  {m_on:.1f} us/record (rounds: {', '.join(f'{x:.1f}' for x in on)})")
    print(f"tracing on costs {m_on - m_off:.1f} us/record ({m_on / m_off:.2f}x)")


if __name__ == "__main__":
    main()
