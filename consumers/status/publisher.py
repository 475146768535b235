"""Every few seconds, one pipeline process's status report on the status topic.

The report is a small JSON object keyed by the process id (host, pid and the roles it runs), as
Karafka's Web UI does it: the broker is the store, and ``switchboard status`` (and the console)
read the latest report of every process from the compacted topic. A clean stop writes a
tombstone, so a stopped process disappears; one that dies keeps its last report, which the
readers flag as stale. Reading the runtimes and workers only reads their public state, on the
event loop they run on; a worker group's latency comes from the histograms the process
already keeps (``consumers.status.latency``).

The report is JSON rather than Avro: it is an operations record read by Switchboard's own tools,
not a contract with upstream services; readers ignore keys they do not know, and
``schema_version`` changes only if a key changes meaning.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, cast

from consumers.outcomes import now_ms
from consumers.status.latency import LatencyWindow
from consumers.status.usage import UsageWindow
from switchboard.core.aio_producer import AsyncProducer, Outbound
from switchboard.core.budgets import BROKER_REQUEST_TIMEOUT_S
from switchboard.core.kafka_clients import make_admin

if TYPE_CHECKING:
    from consumers.runtime import ConsumerRuntime
    from consumers.worker import SpecialistWorker

log = logging.getLogger(__name__)

#: Version of the report's shape (bumped only if a key changes meaning; new keys do not).
SCHEMA_VERSION: Final = 1
#: How long one report's delivery may take before the publisher moves on to the next.
SEND_TIMEOUT_S: Final = 10.0
#: How long the tombstone of a clean stop may take (the process is exiting).
TOMBSTONE_TIMEOUT_S: Final = 5.0
#: While the status topic is missing, it is looked for again every this many intervals.
#: Producing to a missing topic would have the broker auto-create it without compaction.
MISSING_TOPIC_RECHECK_INTERVALS: Final = 12


@dataclass(frozen=True)
class ProcessIdentity:
    """Who publishes: the key of its reports is ``host:pid:role+role...``."""

    host: str
    pid: int
    roles: tuple[str, ...]
    started_at_ms: int
    instance_id: str | None = None

    @classmethod
    def of_this_process(cls, roles: list[str], instance_id: str | None = None) -> ProcessIdentity:
        return cls(socket.gethostname(), os.getpid(), tuple(sorted(roles)), now_ms(), instance_id)

    @property
    def process_id(self) -> str:
        return f"{self.host}:{self.pid}:{'+'.join(self.roles)}"


@dataclass(eq=False, kw_only=True)
class StatusPublisher:
    """Publishes ``report()`` to ``topic`` every ``interval_s`` until cancelled."""

    producer: AsyncProducer
    kafka: dict[str, Any] = field(repr=False)  # may hold credentials
    topic: str
    interval_s: float
    runtimes: Mapping[str, ConsumerRuntime]
    workers: Mapping[str, SpecialistWorker]
    identity: ProcessIdentity
    published: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self._windows = {name: UsageWindow() for name in self.workers}
        #: Worker role -> its specialist's latency window (``worker.<name>``, as app.py names
        #: the role); the router and relay write no stage latencies.
        self._latency = {f"worker.{name}": LatencyWindow(name) for name in self.workers}
        self._topic_seen = False
        self._warned = False

    @property
    def key(self) -> bytes:
        return self.identity.process_id.encode()

    def report(self) -> dict[str, Any]:
        """This process's state now (read on the event loop the runtimes run on)."""
        ident = self.identity
        return {
            "schema_version": SCHEMA_VERSION,
            "process_id": ident.process_id,
            "host": ident.host,
            "pid": ident.pid,
            "roles": list(ident.roles),
            "instance_id": ident.instance_id,
            "started_at_ms": ident.started_at_ms,
            "reported_at_ms": now_ms(),
            "interval_s": self.interval_s,
            "consumers": [self._consumer(role, rt) for role, rt in sorted(self.runtimes.items())],
            "breakers": {
                name: {
                    "name": w.breaker.name,
                    "state": str(w.breaker.state),
                    "opened_count": w.breaker.opened_count,
                    "reopen_in_s": round(w.breaker.reopen_in_s, 3),
                }
                for name, w in sorted(self.workers.items())
            },
            "specialists": {name: self._usage(name, w) for name, w in sorted(self.workers.items())},
        }

    def _consumer(self, role: str, runtime: ConsumerRuntime) -> dict[str, Any]:
        stats = runtime.stats
        entry: dict[str, Any] = {
            "role": role,
            "group": runtime.config.group_id,
            "topics": list(runtime.config.topics),
            "member_id": runtime.member_id,
            "concurrency": runtime.config.concurrency,
            "in_flight": runtime.in_flight,
            "partitions": [
                {
                    "topic": ctx.topic,
                    "partition": ctx.partition,
                    "in_flight": ctx.tracker.outstanding,
                    "paused": ctx.paused,
                }
                for ctx in runtime.contexts
            ],
            "records": {
                "received": stats.received,
                "completed": stats.completed,
                "failures": stats.failures,
                "handler_errors": stats.handler_errors,
                "abandoned": stats.abandoned,
                "rebalances": stats.rebalances,
            },
        }
        if (latency := self._latency.get(role)) is not None:
            entry["latency"] = latency.report()
        return entry

    def _usage(self, name: str, worker: SpecialistWorker) -> dict[str, Any]:
        window = self._windows[name]
        totals = worker.usage.as_counts(worker.model_calls)
        last, covered_s = window.over_window(totals)
        return {"window_s": round(covered_s, 1), "last_hour": last, "total": totals}

    async def run(self) -> None:
        """Publish now and every ``interval_s`` until cancelled; a failed send is logged and the
        next report goes out on time (the topic holds the latest one only anyway)."""
        tick = 0
        while True:
            if self._topic_seen or tick % MISSING_TOPIC_RECHECK_INTERVALS == 0:
                await self.publish_once()
            tick += 1
            await asyncio.sleep(self.interval_s)

    async def publish_once(self) -> bool:
        """Send one report; False when the topic is missing or the send failed."""
        if not await self._topic_exists():
            return False
        value = json.dumps(self.report(), separators=(",", ":")).encode()
        try:
            await asyncio.wait_for(
                self.producer.send(Outbound(self.topic, value, self.key)), SEND_TIMEOUT_S
            )
        except Exception as exc:  # a report is best effort: never disturb the pipeline
            log.warning("status report to %s failed: %s", self.topic, exc)
            return False
        self.published += 1
        return True

    async def tombstone(self) -> None:
        """A clean stop: remove this process's report from the compacted topic."""
        if not self._topic_seen:
            return
        # librdkafka takes a None value as a tombstone; Outbound is typed for records.
        record = Outbound(self.topic, cast(bytes, None), self.key)
        with contextlib.suppress(Exception):  # exiting anyway: a stale report says the same
            await asyncio.wait_for(self.producer.send(record), TOMBSTONE_TIMEOUT_S)

    async def _topic_exists(self) -> bool:
        if self._topic_seen:
            return True
        # All topics' metadata, not the one topic's: a lookup by name may auto-create it.
        names = await asyncio.to_thread(self._list_topics)
        self._topic_seen = self.topic in names
        if not self._topic_seen and not self._warned:
            self._warned = True
            log.warning(
                "status topic %s does not exist: no status reports until `switchboard topics "
                "ensure` creates it",
                self.topic,
            )
        return self._topic_seen

    def _list_topics(self) -> set[str]:
        try:
            return set(make_admin(self.kafka).list_topics(timeout=BROKER_REQUEST_TIMEOUT_S).topics)
        except Exception as exc:  # broker unreachable: try again at the next interval
            log.debug("status topic lookup failed: %s", exc)
            return set()
