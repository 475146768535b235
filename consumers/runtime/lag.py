"""Consumer lag per group and partition, read through the admin API.

Lag is the partition's high watermark minus the group's committed offset, both asked of the
broker (``ListOffsets`` and ``OffsetFetch``). Neither depends on this member fetching, so the
figure stays right while a partition is paused: the retry relay pauses partitions by design,
and a paused partition gets no fetch responses, so librdkafka's statistics (``consumer_lag``
from ``statistics.interval.ms``), which take the high watermark from fetch responses, go stale
exactly then (tests/integration/test_lag.py shows both).

Each member exports only the partitions it holds, so summing over members never counts a
partition twice; a partition it no longer holds is dropped from the gauge. ``refresh`` blocks
(admin round trips): run it off the event loop (``asyncio.to_thread``).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any, Final

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import OffsetSpec

from switchboard.core import metrics
from switchboard.core.kafka_clients import make_admin

log = logging.getLogger(__name__)

TP = tuple[str, int]

#: Budget of one admin round trip; a refresh that takes longer says the broker is unreachable.
LAG_TIMEOUT_S: Final = 5.0


class LagMonitor:
    """Reads and exports the lag of the partitions each group's member holds."""

    def __init__(self, kafka: dict[str, Any], *, timeout_s: float = LAG_TIMEOUT_S) -> None:
        self._admin = make_admin(kafka)
        self._timeout_s = timeout_s
        self._exported: dict[str, set[TP]] = {}
        #: When the last refresh reached the broker (monotonic), and the last error.
        self.last_ok: float | None = None
        self.last_error: str | None = None
        self.lag: dict[str, dict[TP, int]] = {}

    def refresh(self, assignments: Mapping[str, Sequence[TP]]) -> dict[str, dict[TP, int]]:
        """Read, export and return group -> (topic, partition) -> lag for ``assignments``."""
        try:
            lag = {group: self._group_lag(group, tps) for group, tps in assignments.items()}
            if not assignments:
                # Still prove the broker answers (readiness), with the cheapest request.
                self._admin.list_topics(timeout=self._timeout_s)
        except KafkaException as exc:
            metrics.LAG_SCRAPE_ERRORS.inc()
            self.last_error = str(exc.args[0] if exc.args else exc)
            log.warning("lag refresh failed: %s", self.last_error)
            return self.lag
        for group, values in lag.items():
            for (topic, partition), n in values.items():
                metrics.CONSUMER_LAG.labels(group, topic, str(partition)).set(n)
        for group, previous in self._exported.items():
            for topic, partition in previous - set(lag.get(group, {})):
                with contextlib.suppress(KeyError):  # never exported: nothing to drop
                    metrics.CONSUMER_LAG.remove(group, topic, str(partition))
        self._exported = {group: set(values) for group, values in lag.items()}
        self.lag = lag
        self.last_ok = time.monotonic()
        self.last_error = None
        return lag

    def _group_lag(self, group: str, tps: Sequence[TP]) -> dict[TP, int]:
        if not tps:
            return {}
        parts = [TopicPartition(t, p) for t, p in tps]
        futures = self._admin.list_consumer_group_offsets(
            [ConsumerGroupTopicPartitions(group, parts)], request_timeout=self._timeout_s
        )
        listed = futures[group].result(timeout=self._timeout_s)
        committed = {(tp.topic, tp.partition): tp.offset for tp in listed.topic_partitions}
        ends = self._offsets(parts, OffsetSpec.latest())
        # No commit yet: the group starts from the earliest offset (auto.offset.reset).
        uncommitted = [TopicPartition(t, p) for (t, p), o in committed.items() if o < 0]
        starts = self._offsets(uncommitted, OffsetSpec.earliest()) if uncommitted else {}
        lag = {}
        for tp in tps:
            done = committed.get(tp, -1)
            if done < 0:
                done = starts.get(tp, 0)
            lag[tp] = max(0, ends.get(tp, done) - done)
        return lag

    def _offsets(self, parts: list[TopicPartition], spec: OffsetSpec) -> dict[TP, int]:
        futures = self._admin.list_offsets(
            {tp: spec for tp in parts}, request_timeout=self._timeout_s
        )
        return {
            (tp.topic, tp.partition): f.result(timeout=self._timeout_s).offset
            for tp, f in futures.items()
        }
