"""Topic administration through Kafka's admin API (never shell tools)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from switchboard.topics import TopicSpec


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
    timeout_s: float = 30.0,
) -> EnsureResult:
    """Create every missing topic; topics that already exist are left as they are."""
    existing_names = set(admin.list_topics(timeout=timeout_s).topics)
    missing = [s for s in specs if s.name not in existing_names]
    created: list[str] = []
    if missing:
        futures = admin.create_topics(
            [
                NewTopic(s.name, num_partitions=partitions,
                         replication_factor=replication_factor, config=s.config)
                for s in missing
            ],
            operation_timeout=timeout_s,
            request_timeout=timeout_s,
        )  # fmt: skip
        for name, future in futures.items():
            try:
                future.result()
                created.append(name)
            except KafkaException as exc:
                # Another process created it between our list and create: that is success.
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise
    _wait_for_leaders(admin, [s.name for s in specs], timeout_s)
    return EnsureResult(
        created=sorted(created),
        existing=sorted(s.name for s in specs if s.name in existing_names),
    )


def _wait_for_leaders(admin: AdminClient, names: list[str], timeout_s: float) -> None:
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
        time.sleep(0.1)
    raise TimeoutError(f"topics had no leaders after {timeout_s:.0f}s: {', '.join(names)}")
