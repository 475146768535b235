"""``confluent_kafka.aio.AIOProducer`` against Switchboard's ``AsyncProducer``: produce and
acknowledge the same records on the same broker, interleaved, and compare the cost.

    python -m benchmarks.aio_producers [--records 50000] [--reps 3]

Each run produces ``--records`` records of the pipeline's response size (400 bytes, keyed,
three partitions) and waits until every one is acknowledged:

- ``switchboard-batch``: ``AsyncProducer.batch`` in batches of 500, as the runtime's fast path
  delivers a fetched batch's outputs (one callback per batch on the event loop);
- ``switchboard-send``: ``AsyncProducer.send``, a future per record (the slow path's way);
- ``confluent-aio``: ``AIOProducer.produce``, a future per record (its own batching of
  ``produce_batch`` calls in an executor).

No headers: ``AIOProducer`` refuses them (``NotImplementedError``, "Headers are not supported
in AIOProducer batch mode", confluent-kafka 2.16), and Switchboard writes headers on every
task and response (routing facts, status, retry and replay). So it could not replace
``AsyncProducer`` whatever it costs. This measures the cost anyway.
Reported per mode: the median of the runs' records per second (wall clock) and the process
CPU per record (all threads, librdkafka's included).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

from confluent_kafka.admin import AdminClient, NewTopic
from confluent_kafka.aio import AIOProducer

from benchmarks.env import BenchKafka
from switchboard.core.aio_producer import AsyncProducer, Outbound
from switchboard.core.kafka_clients import producer_config

VALUE = b"r" * 400
BATCH = 500


async def _switchboard_batch(config: dict[str, Any], topic: str, n: int) -> None:
    producer = AsyncProducer(producer_config(config))
    try:
        done: list[asyncio.Future[None]] = []
        loop = asyncio.get_running_loop()
        for start in range(0, n, BATCH):
            future: asyncio.Future[None] = loop.create_future()

            def settled(failed: list[Any], future: asyncio.Future[None] = future) -> None:
                if failed:
                    future.set_exception(RuntimeError(f"{len(failed)} records failed"))
                else:
                    future.set_result(None)

            batch = producer.batch(settled)
            for i in range(start, min(n, start + BATCH)):
                batch.add(Outbound(topic, VALUE, str(i).encode(), ()))
            batch.seal()
            done.append(future)
            await asyncio.sleep(0)  # the runtime yields between fetched batches too
        await asyncio.gather(*done)
    finally:
        producer.close()


async def _switchboard_send(config: dict[str, Any], topic: str, n: int) -> None:
    producer = AsyncProducer(producer_config(config))
    try:
        futures = [producer.send(Outbound(topic, VALUE, str(i).encode(), ())) for i in range(n)]
        await asyncio.gather(*futures)
    finally:
        producer.close()


async def _confluent_aio(config: dict[str, Any], topic: str, n: int) -> None:
    conf = producer_config(config)
    conf.pop("logger", None)  # AIOProducer wraps the common callbacks itself
    producer = AIOProducer(conf)
    try:
        futures = [await producer.produce(topic, VALUE, str(i).encode()) for i in range(n)]
        await producer.flush()
        await asyncio.gather(*futures)
    finally:
        await producer.close()


MODES: dict[str, Callable[[dict[str, Any], str, int], Coroutine[Any, Any, None]]] = {
    "switchboard-batch": _switchboard_batch,
    "switchboard-send": _switchboard_send,
    "confluent-aio": _confluent_aio,
}


def _headers_refused(config: dict[str, Any], topic: str) -> str:
    async def attempt() -> str:
        producer = AIOProducer(dict(config))
        try:
            await producer.produce(topic, b"v", headers=[("h", b"v")])
        except NotImplementedError as exc:
            return str(exc)
        finally:
            await producer.close()
        return "accepted"

    return asyncio.run(attempt())


def run(records: int, reps: int, config: dict[str, Any] | None = None) -> dict[str, Any]:
    """``config``: the broker's client config (default: the benchmarks' broker, started if
    none is configured)."""
    bench = BenchKafka.connect() if config is None else None
    if bench is not None:
        config = bench.config
    assert config is not None
    admin = AdminClient(config)
    topic = f"bench-aio-{uuid.uuid4().hex[:8]}"
    admin.create_topics([NewTopic(topic, 3, 1)])[topic].result(30)
    runs: dict[str, list[tuple[float, float]]] = {m: [] for m in MODES}
    try:
        refused = _headers_refused(config, topic)
        for _ in range(reps):
            for mode, produce in MODES.items():
                cpu0, wall0 = time.process_time(), time.perf_counter()
                asyncio.run(produce(config, topic, records))
                cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
                runs[mode].append((records / wall, cpu / records * 1e6))
    finally:
        admin.delete_topics([topic])
        if bench is not None:
            bench.stop_if_started()
    return {
        "records": records,
        "reps": reps,
        "aio_headers": refused,
        "modes": {
            mode: {
                "records_per_s": round(statistics.median(r for r, _ in got)),
                "cpu_us_per_record": round(statistics.median(c for _, c in got), 2),
                "runs": [[round(r), round(c, 2)] for r, c in got],
            }
            for mode, got in runs.items()
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.aio_producers")
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args(argv)
    if args.records < 1 or args.reps < 1:
        parser.error("--records and --reps must be at least 1")
    print(json.dumps(run(args.records, args.reps), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
