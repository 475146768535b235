"""The bench environment: which broker, uuid-named topics per run, payloads, machine facts."""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import confluent_kafka
import psutil
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from producers.client import build_request
from switchboard.cli.bootstrap import local_broker
from switchboard.core.admin import ensure_topics
from switchboard.core.kafka_clients import producer_config
from switchboard.core.routing import routing_headers
from switchboard.core.serde import REQUEST, SingleObjectCodec
from switchboard.core.settings import SPECIALISTS, Settings
from switchboard.core.topics import Topics, TopicSpec

#: Tenants the generated load spreads over. The router allows each tenant 1,000 requests/s by
#: default (``TenantLimiter``); one tenant would turn a capacity test into a rate-limit test.
TENANTS = 256

PROMPTS = (
    "design microservices handling 50K RPS with circuit breakers",
    "review this REST pagination scheme for consistency",
    "model a time-series schema for 1B rows a day",
    "why is p99 latency 40x p50 on this endpoint",
    "threat-model a webhook receiver that accepts signed payloads",
)


@dataclass
class BenchKafka:
    """The broker of this run and an admin client; ``started`` when the harness started it."""

    bootstrap: str
    started: bool
    note: str | None = None
    admin: AdminClient = field(init=False)

    def __post_init__(self) -> None:
        self.admin = AdminClient(self.config)

    @property
    def config(self) -> dict[str, Any]:
        return {"bootstrap.servers": self.bootstrap}

    @classmethod
    def connect(cls) -> BenchKafka:
        """``KAFKA_BOOTSTRAP_SERVERS`` if set, else the local broker (started if not running)."""
        settings = Settings()
        if settings.bootstrap_servers:
            return cls(settings.bootstrap_servers, started=False)
        bootstrap, started, note = local_broker(settings).start()
        return cls(bootstrap, started=started, note=note)

    def broker_cpu_s(self) -> float | None:
        """The CPU seconds the broker's process has used so far, when the broker of this run is
        the local one (``switchboard kafka start``, or the one the harness started); None for a
        broker elsewhere, whose process this machine cannot see."""
        status = local_broker(Settings()).status()
        if status.pid is None or status.bootstrap != self.bootstrap:
            return None
        try:
            times = psutil.Process(status.pid).cpu_times()
        except psutil.Error:
            return None
        return float(times.user + times.system)

    def broker_idle_cores(self, seconds: float = 2.0) -> float | None:
        """The broker's CPU while nothing of the run talks to it, in cores, over ``seconds``
        (its own timers, the controller, GC; on these machines 0.05-0.16 of a core). A drain's
        window includes it: ``capacity.broker_us_per_msg`` takes it out."""
        before = self.broker_cpu_s()
        if before is None:
            return None
        time.sleep(seconds)
        after = self.broker_cpu_s()
        return (after - before) / seconds if after is not None else None

    def stop_if_started(self) -> None:
        if self.started:
            local_broker(Settings()).stop()

    @contextlib.contextmanager
    def pipeline_topics(
        self, partitions: int, tasks_partitions: int | None = None
    ) -> Iterator[Topics]:
        """Every topic of the pipeline under a fresh uuid prefix, deleted afterwards."""
        topics = Topics(f"bench-{uuid.uuid4().hex[:10]}")
        specs = [
            # Outputs carry the broker's append time: a rate or a hop latency then never
            # depends on what timestamp a framework copies onto its output (Quix Streams keeps
            # the input's). Requests keep CreateTime: the generator's scheduled send time.
            s
            if s.name == topics.requests
            else TopicSpec(s.role, s.name, {**s.config, "message.timestamp.type": "LogAppendTime"})
            for s in topics.specs(retention_ms=3_600_000, dlq_retention_ms=3_600_000)
        ]
        tasks = {topics.tasks(s) for s in SPECIALISTS}
        plain = [s for s in specs if s.name not in tasks]
        task_specs = [s for s in specs if s.name in tasks]
        ensure_topics(self.admin, plain, partitions=partitions, replication_factor=1)
        ensure_topics(
            self.admin, task_specs, partitions=tasks_partitions or partitions, replication_factor=1
        )
        # A caller's own reply topic (outside the pipeline's names: the router would refuse
        # those), under the run's prefix so that it is deleted with the rest.
        ensure_topics(
            self.admin,
            [
                TopicSpec(
                    "replies", reply_topic(topics), {"message.timestamp.type": "LogAppendTime"}
                )
            ],
            partitions=partitions,
            replication_factor=1,
        )
        try:
            yield topics
        finally:
            # Every topic of the run, the frameworks' own too (Faust's assignor topics, Quix's
            # changelogs): a broker that keeps thousands of topics slows every later run.
            names = [s.name for s in specs]
            with contextlib.suppress(Exception):
                names += [
                    t
                    for t in self.admin.list_topics(timeout=30).topics
                    if t.startswith(topics.prefix) and t not in names
                ]
            with contextlib.suppress(Exception):
                for future in self.admin.delete_topics(names, operation_timeout=30).values():
                    with contextlib.suppress(Exception):
                        future.result(timeout=30)


def reply_topic(topics: Topics) -> str:
    """The reply topic of a run's callers (``BenchKafka.pipeline_topics`` makes it)."""
    return f"{topics.prefix}-replies"


class Payloads:
    """Encoded SpecialistRequest values: requests (``/cmd text``) and routed tasks.

    Encoded once per run and reused: every run has its own topics and processes, so reusing
    request ids across runs never meets the deduplication of another run.
    """

    def __init__(self) -> None:
        self.codec = SingleObjectCodec()

    def requests(
        self, n: int, prefix: str = "r", *, headers: bool = False, reply_to: str | None = None
    ) -> list[Any]:
        """``n`` (key, value) pairs; commands cycle over the five specialists. ``headers``:
        (key, value, headers) triples instead, with the routing headers the client writes
        (``routing_headers``, the client's own function), as users' requests carry them.
        ``reply_to``: every request asks for its answer on that topic."""
        out: list[Any] = []
        for i in range(n):
            specialist = SPECIALISTS[i % len(SPECIALISTS)]
            request = build_request(
                f"/{specialist} {PROMPTS[i % len(PROMPTS)]}",
                tenant=f"tenant-{i % TENANTS}",
                request_id=f"{prefix}{i:08d}",
                reply_to=reply_to,
            )
            key, value = request["request_id"].encode(), self.codec.encode(REQUEST, request, "")
            out.append((key, value, routing_headers(request)) if headers else (key, value))
        return out

    def tasks(self, n: int, specialist: str, prefix: str = "t") -> list[tuple[bytes, bytes]]:
        """``n`` routed tasks for ``specialist``, as the router writes them."""
        out = []
        for i in range(n):
            request = build_request(
                f"/{specialist} {PROMPTS[i % len(PROMPTS)]}",
                tenant=f"tenant-{i % TENANTS}",
                specialist=specialist,
                request_id=f"{prefix}{i:08d}",
            )
            request["prompt"] = PROMPTS[i % len(PROMPTS)]
            request["metadata"] = {"routed_at_ms": str(request["created_at_ms"]), "route_ms": "0"}
            out.append((request["request_id"].encode(), self.codec.encode(REQUEST, request, "")))
        return out


def preload(kafka: dict[str, Any], topic: str, records: Sequence[Sequence[Any]]) -> None:
    """Write ``records`` ((key, value) pairs or (key, value, headers) triples) to ``topic`` as
    fast as the client allows, and wait for every ack."""
    producer = Producer(producer_config(kafka, **{"linger.ms": 20, "batch.size": 1_000_000}))
    for key, value, *rest in records:
        headers = rest[0] if rest else None
        while True:
            try:
                producer.produce(topic, value, key, headers=headers)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    if producer.flush(60) != 0:
        raise RuntimeError(f"could not preload {len(records)} records into {topic}")


def machine() -> dict[str, Any]:
    """What ran this: cores, memory, Python, librdkafka, JVM, kernel."""
    mem_kb = 0
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    cpu = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    java = ""
    with contextlib.suppress(Exception):
        proc = subprocess.run(["java", "-version"], capture_output=True, text=True, timeout=10)
        java = (proc.stderr or proc.stdout).splitlines()[0]
    return {
        "nproc": os.cpu_count(),
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "cpu": cpu,
        "python": sys.version.split()[0],
        "confluent_kafka": getattr(confluent_kafka, "__version__", None)
        or str(confluent_kafka.version()),
        "librdkafka": confluent_kafka.libversion()[0],
        "java": java,
        "kernel": platform.release(),
    }
