"""What runs inside a stage process: baselines, Switchboard's stages, load, observer, fake provider.

Each stage is ``def NAME(spec, ctl)``: build clients, ``ctl.ready(info)``, ``ctl.wait_go()``, run
until ``ctl.stopping()``, then ``ctl.finish(result)`` (which ends the process at once: nothing
after a stop is ever measured, so no stage spends time on a graceful close).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping
from multiprocessing.connection import Connection
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from benchmarks.control import Control, run_stage
from switchboard.core.kafka_clients import consumer_config, producer_config


def entry(kind: str, spec: dict[str, Any], conn: Connection) -> None:
    """The target of every forked stage process: ``kind`` is a name here or ``module:function``."""
    run_stage(kind, spec, conn, globals())


# --- the baselines ----------------------------------------------------------------------


def raw_hop(spec: dict[str, Any], ctl: Control) -> None:
    """RAW-1 (performance.md): ``consume(500, 0.1)``, then ``produce(out, value, key)``, ``poll(0)``.

    ``out`` cycles over ``spec["outputs"]`` so the raw router stand-in fills the same five task
    topics as the router (no decode: it cannot read the command).
    """
    kafka = spec["kafka"]
    consumer = Consumer(consumer_config(kafka, spec["group"], **{"enable.auto.offset.store": True}))
    producer = Producer(producer_config(kafka))
    outputs = list(spec["outputs"])
    ctl.ready()
    ctl.wait_go()
    consumer.subscribe(list(spec["inputs"]))
    n = 0
    width = len(outputs)
    while not ctl.stopping():
        for msg in consumer.consume(num_messages=500, timeout=0.1):
            if msg.error() is not None:
                continue
            producer.produce(outputs[n % width], msg.value(), key=msg.key())
            producer.poll(0)
            n += 1
    ctl.finish({"handled": n, "flushes": 0})


# --- Switchboard's own stages -----------------------------------------------------------


class InstantBackend:
    """A specialist that answers at once: the pipeline's own cost, no model."""

    name = "instant"

    def __init__(self) -> None:
        # Imported here, once: the stage module is imported before a stage picks its parts.
        from consumers.specialists.backends import Answer

        self._answer = Answer

    def answer_now(self, specialist: str, prompt: str, request: Mapping[str, Any]) -> Any:
        return self._answer(status="answered", content="ok", backend="instant")

    async def answer(self, specialist: str, prompt: str, request: Mapping[str, Any]) -> Any:
        return self.answer_now(specialist, prompt, request)


class SleepBackend:
    """A specialist whose model takes ``seconds``: ``await asyncio.sleep`` and nothing else."""

    name = "sleep"

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    async def answer(self, specialist: str, prompt: str, request: Mapping[str, Any]) -> Any:
        from consumers.specialists.backends import Answer

        await asyncio.sleep(self.seconds)
        return Answer(
            status="answered", content="ok", backend="sleep", model_ms=int(self.seconds * 1000)
        )


def _count_flushes() -> dict[str, int]:
    """Swap confluent-kafka's Producer for a subclass counting ``flush`` calls, everywhere
    Switchboard builds one (G6)."""
    import switchboard.core.aio_producer
    import switchboard.core.kafka_clients

    counts = {"flush": 0}

    class CountingProducer(Producer):  # type: ignore[misc]
        def flush(self, *args: Any, **kwargs: Any) -> int:
            counts["flush"] += 1
            return int(super().flush(*args, **kwargs))

    switchboard.core.aio_producer.Producer = CountingProducer  # type: ignore[misc]
    switchboard.core.kafka_clients.Producer = CountingProducer  # type: ignore[misc]
    return counts


def _count_pauses() -> dict[str, int]:
    """Count partition pauses: each one drops librdkafka's prefetched records for it."""
    from consumers.runtime import loop as rt

    counts = {"pause": 0}
    original = rt.ConsumerRuntime._set_paused

    def _set_paused(self: Any, ctx: Any, paused: bool) -> None:
        counts["pause"] += int(paused)
        original(self, ctx, paused)

    rt.ConsumerRuntime._set_paused = _set_paused  # type: ignore[method-assign]
    return counts


def switchboard(spec: dict[str, Any], ctl: Control) -> None:
    """Switchboard's own consumers (``Pipeline``): ``spec["roles"]`` of router, worker:NAME,
    worker:all, relay; ``spec["backend"]`` instant, sleep:SECONDS or sdk (the real
    ``AsyncAnthropic`` against ``spec["base_url"]``)."""
    from consumers.app import Pipeline, make_backend
    from switchboard.core.settings import SPECIALISTS, Settings

    flushes = _count_flushes()
    pauses = _count_pauses()
    backend_kind = spec.get("backend", "instant")
    sdk = backend_kind == "sdk"
    settings = Settings(
        bootstrap_servers=spec["kafka"]["bootstrap.servers"],
        topic_prefix=spec["prefix"],
        anthropic_api_key="sk-bench" if sdk else None,
        anthropic_base_url=spec.get("base_url"),
        drain_timeout_s=1.0,
        # One tenant sends everything here: the per-tenant limit (1,000 req/s by default)
        # would turn capacity runs into rejection runs. The raw baselines have no limiter.
        tenant_rate_per_s=0.0,
        **spec.get("settings", {}),
    )

    def backend_factory(s: Settings, limiter: Any) -> Any:
        if sdk:
            return make_backend(s, limiter)
        if backend_kind.startswith("sleep:"):
            return SleepBackend(float(backend_kind.split(":", 1)[1]))
        return InstantBackend()

    pipeline = Pipeline(
        settings,
        settings.client_config(settings.bootstrap_servers or ""),
        backend_factory=backend_factory,
    )
    concurrency = spec.get("concurrency")
    for role in spec["roles"]:
        if role == "router":
            pipeline.add_router()
        elif role == "relay":
            pipeline.add_relay()
        elif role == "worker:all":
            for specialist in SPECIALISTS:
                pipeline.add_worker(specialist, concurrency)
        else:
            pipeline.add_worker(role.split(":", 1)[1], concurrency)
    ctl.ready({"pid": os.getpid()})
    ctl.wait_go()
    snapshot: dict[str, Any] = {}

    def take_snapshot() -> None:
        # Taken before the stop begins: only the hot path counts (close() flushes by design).
        snapshot["flushes_hot_path"] = flushes["flush"]
        snapshot["pauses"] = pauses["pause"]
        snapshot["runtimes"] = {
            role: {
                "received": r.stats.received,
                "completed": r.stats.completed,
                "handler_errors": r.stats.handler_errors,
                "delivery_retries": r.stats.delivery_retries,
                # One assignment at start is expected; anything more is a rebalance.
                "rebalances": r.stats.rebalances,
                "max_in_flight": r.stats.max_in_flight,
                "max_batch_in_flight": r.stats.max_batch_in_flight,
            }
            for role, r in pipeline.runtimes.items()
        }
        snapshot["model_calls"] = {s: w.model_calls for s, w in pipeline.workers.items()}
        # Replies to callers' own topics and their ledger copies, one transaction per batch.
        snapshot["transactions"] = pipeline.atomic.committed

    async def main() -> None:
        loop = asyncio.get_running_loop()

        def on_stop() -> None:
            def stop() -> None:
                take_snapshot()
                ctl.finish(snapshot)

            loop.call_soon_threadsafe(stop)

        ctl.watch(on_stop)
        # Pipeline.run, as `switchboard run` does: it also freezes start-up objects out of the
        # collector (without it, the first full collection scans the fork server's imports:
        # 155-265 ms in each process, at a batch job's first burst in G12).
        await pipeline.run()

    asyncio.run(main())
    take_snapshot()
    ctl.finish(snapshot)


# --- load and observation ---------------------------------------------------------------


def generator(spec: dict[str, Any], ctl: Control) -> None:
    """Open-loop load: ``spec["phases"]`` of {label, rate, seconds}; each record's CreateTime is
    its *scheduled* send time, so a generator that falls behind cannot hide queueing
    (no coordinated omission)."""
    from benchmarks.env import Payloads

    payloads = Payloads()
    phases = spec["phases"]
    loads = [
        payloads.requests(int(p["rate"] * p["seconds"]), prefix=f"{p['label']}-", headers=True)
        for p in phases
    ]
    producer = Producer(producer_config(spec["kafka"]))
    topic = spec["topic"]
    ctl.ready()
    ctl.wait_go()
    report = []
    for phase, records in zip(phases, loads, strict=True):
        rate = float(phase["rate"])
        start_wall = time.time()
        start = time.perf_counter()
        sent = 0
        behind_max = 0.0
        total = len(records)
        while sent < total and not ctl.stopping():
            elapsed = time.perf_counter() - start
            due = min(total, int(elapsed * rate) + 1)
            behind_max = max(behind_max, (due - sent) / rate)
            while sent < due:
                key, value, headers = records[sent]
                ts = int((start_wall + sent / rate) * 1000)
                try:
                    producer.produce(topic, value, key, timestamp=ts, headers=headers)
                except BufferError:
                    producer.poll(0.01)
                    continue
                sent += 1
            producer.poll(0)
            wait = sent / rate - (time.perf_counter() - start)
            if wait > 0:
                time.sleep(min(wait, 0.05))
        report.append(
            {
                "label": phase["label"],
                "rate": rate,
                "sent": sent,
                "start": start_wall,
                "end": time.time(),
                "max_behind_s": round(behind_max, 4),
            }
        )
    producer.flush(30)
    ctl.ready({"phases": report})  # "ready" again: the load is done
    while not ctl.stopping():
        time.sleep(0.05)
    ctl.finish({"phases": report})


def observer(spec: dict[str, Any], ctl: Control) -> None:
    """Reads ``spec["topics"]`` from the beginning and stamps each key's first arrival (wall
    clock): ``poll`` wakes on the first record, ``consume(…, 0)`` takes what is already here."""
    kafka = spec["kafka"]
    consumer = Consumer(
        {
            **kafka,
            "group.id": f"bench-observer-{os.getpid()}",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 5,
        }
    )
    meta = consumer.list_topics(timeout=10)
    consumer.assign(
        [
            TopicPartition(t, p, OFFSET_BEGINNING)
            for t in spec["topics"]
            for p in meta.topics[t].partitions
        ]
    )
    seen: dict[bytes, float] = {}
    dups = 0
    ctl.ready()
    ctl.wait_go()
    while not ctl.stopping():
        first = consumer.poll(0.05)
        if first is None:
            continue
        now = time.time()
        for msg in [first, *consumer.consume(2000, 0)]:
            if msg.error() is not None:
                continue
            key = msg.key()
            if key in seen:
                dups += 1
            else:
                seen[key] = now
    ctl.finish({"seen": seen, "duplicates": dups})


def fake_provider(spec: dict[str, Any], ctl: Control) -> None:
    """``FakeAnthropic`` in its own process, so the worker's event loop has its core to itself."""
    from switchboard.devtools.fake_anthropic import FakeAnthropic

    fake = FakeAnthropic(
        latency_ms=spec.get("latency_ms", 0.0),
        rpm=spec.get("rpm"),
        tpm=spec.get("tpm"),
        cache_min_tokens=spec.get("cache_min_tokens", 0),
    ).start()
    ctl.ready({"base_url": fake.base_url})
    ctl.wait_go()
    if spec.get("prespend_key"):
        # The buckets start full (a minute's worth); spend that burst at "go", as steady
        # traffic from this key would have, so the run measures the sustained limit (spent
        # before "go", the worker's start-up time would refill part of it).
        from switchboard.devtools.fake_anthropic.prompts import PromptSplit

        one = PromptSplit(cache_key=None, cached_tokens=0, uncached_tokens=1, cache_ttl_s=0.0)
        while fake.state.admit(spec["prespend_key"], one).admitted:
            pass
    while not ctl.stopping():
        time.sleep(0.05)
    stats = fake.stats()
    ctl.finish(
        {
            "total_calls": stats.total_calls,
            "max_in_flight": stats.max_in_flight,
            "calls": [(c.at, c.status, c.outcome, c.tokens) for c in stats.calls],
        }
    )
