"""Topic administration through Kafka's admin API (never shell tools)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    ConfigResource,
    NewTopic,
    OffsetSpec,
    ResourceType,
    TopicMetadata,
)

from switchboard.core.budgets import ADMIN_TIMEOUT_S, LEADER_POLL_INTERVAL_S, SETTLE_RETRY_PAUSE_S
from switchboard.core.classify import kafka_access_problem
from switchboard.core.errors import KafkaAccessError
from switchboard.core.topics import TopicSpec

#: Errors a just-created topic gives while its leadership settles: the metadata already names
#: a leader, but that broker has not taken the partition over yet.
SETTLING_ERRORS = frozenset(
    {
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError._TIMED_OUT,
        KafkaError.UNKNOWN_LEADER_EPOCH,
        KafkaError.FENCED_LEADER_EPOCH,
        KafkaError.OFFSET_NOT_AVAILABLE,
    }
)


def is_settling(err: KafkaError) -> bool:
    """True for an error that goes away by itself once leadership settles: retry it."""
    return bool(err.retriable()) or err.code() in SETTLING_ERRORS


def listed_topic(admin: AdminClient, topic: str, timeout_s: float) -> TopicMetadata | None:
    """``topic``'s metadata, None when the broker does not list it.

    Read from the whole topic list: a metadata request that names a topic, from an admin or a
    producer client, asks the broker to create it when it is missing
    (``auto.create.topics.enable``, on by default), with the broker's defaults.
    """
    return admin.list_topics(timeout=timeout_s).topics.get(topic)


def end_offsets(
    admin: AdminClient, topic: str, *, timeout_s: float = ADMIN_TIMEOUT_S
) -> dict[int, int]:
    """Partition -> end offset of ``topic`` ({} when it does not exist), retrying while a new
    topic's leadership settles."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            found = listed_topic(admin, topic, timeout_s)
            parts = found.partitions if found is not None else {}
            offsets = admin.list_offsets(
                {TopicPartition(topic, p): OffsetSpec.latest() for p in parts},
                request_timeout=timeout_s,
            )
            return {tp.partition: f.result().offset for tp, f in offsets.items()}
        except KafkaException as exc:
            if not is_settling(exc.args[0]) or time.monotonic() > deadline:
                raise
            time.sleep(SETTLE_RETRY_PAUSE_S)


@dataclass(frozen=True)
class EnsureResult:
    created: list[str]
    existing: list[str]


def ensure_topics(
    admin: AdminClient,
    specs: list[TopicSpec],
    *,
    partitions: int,
    replication_factor: int,
    timeout_s: float = ADMIN_TIMEOUT_S,
) -> EnsureResult:
    """Create every missing topic; topics that already exist are left as they are."""
    existing_names = set(admin.list_topics(timeout=timeout_s).topics)
    missing = [s for s in specs if s.name not in existing_names]
    created: list[str] = []
    if missing:
        futures = admin.create_topics(
            [
                NewTopic(
                    s.name,
                    num_partitions=partitions,
                    replication_factor=replication_factor,
                    config=s.config,
                )
                for s in missing
            ],
            operation_timeout=timeout_s,
            request_timeout=timeout_s,
        )
        for name, future in futures.items():
            try:
                future.result()
                created.append(name)
            except KafkaException as exc:
                # Another process created it between our list and create: that is success.
                if exc.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
                    continue
                denied = kafka_access_problem(exc.args[0], operation="Create", resource=name)
                if denied is not None:
                    raise KafkaAccessError(denied) from exc
                raise
    wait_for_leaders(admin, [s.name for s in specs], timeout_s)
    return EnsureResult(
        created=sorted(created),
        existing=sorted(s.name for s in specs if s.name in existing_names),
    )


def wait_for_leaders(admin: AdminClient, names: list[str], timeout_s: float) -> None:
    """Return once every partition of ``names`` has a leader: usable, not just created."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        topics = admin.list_topics(timeout=timeout_s).topics
        if all(
            name in topics
            and topics[name].error is None
            and topics[name].partitions
            and all(p.leader >= 0 for p in topics[name].partitions.values())
            for name in names
        ):
            return
        time.sleep(LEADER_POLL_INTERVAL_S)
    raise TimeoutError(f"topics had no leaders after {timeout_s:.0f}s: {', '.join(names)}")


def partition_counts(
    admin: AdminClient, names: list[str], *, timeout_s: float = ADMIN_TIMEOUT_S
) -> dict[str, int]:
    """Topic -> partition count of each of ``names`` that exists (a missing one is left out)."""
    topics = admin.list_topics(timeout=timeout_s).topics
    return {
        name: len(topics[name].partitions)
        for name in names
        if name in topics and topics[name].error is None and topics[name].partitions
    }


def retention_ms(
    admin: AdminClient, names: list[str], *, timeout_s: float = ADMIN_TIMEOUT_S
) -> dict[str, int]:
    """Topic -> ``retention.ms`` of each of ``names`` the broker describes (-1: forever)."""
    futures = admin.describe_configs(
        [ConfigResource(ResourceType.TOPIC, name) for name in names], request_timeout=timeout_s
    )
    out = {}
    for resource, future in futures.items():
        try:
            entry = future.result(timeout=timeout_s).get("retention.ms")
        except KafkaException:
            continue  # missing, or not ours to describe: the caller's default applies
        if entry is not None and entry.value is not None:
            out[resource.name] = int(entry.value)
    return out
