"""Kafka client factories: one place decides how producers, consumers and admins are configured."""

from __future__ import annotations

import uuid
from typing import Any

from confluent_kafka.admin import AdminClient


def producer_config(base: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    """Idempotent, fully acknowledged producer: a retried send is never duplicated in the log."""
    return {
        **base,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 2,
        "compression.type": "lz4",
        **overrides,
    }


def consumer_config(base: dict[str, Any], group_id: str, **overrides: Any) -> dict[str, Any]:
    """At-least-once consumer: offsets are stored by the runtime only after outputs are delivered."""
    return {
        **base,
        "group.id": group_id,
        "partition.assignment.strategy": "cooperative-sticky",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": True,
        # The runtime stores an offset only when the record's outputs are delivered and every
        # earlier offset of its partition is done; librdkafka then commits what was stored.
        "enable.auto.offset.store": False,
        "auto.commit.interval.ms": 1000,
        "session.timeout.ms": 10_000,
        "heartbeat.interval.ms": 1_000,
        **overrides,
    }


def reader_config(base: dict[str, Any], name: str, **overrides: Any) -> dict[str, Any]:
    """A consumer outside any consumer group's work: it assigns partitions itself and never
    commits (tails, scans, one-record fetches). librdkafka still wants a ``group.id``: a fresh
    one per reader, which no broker-side group ever holds."""
    return {
        **base,
        "group.id": f"switchboard-{name}-{uuid.uuid4().hex}",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        **overrides,
    }


def make_admin(base: dict[str, Any]) -> AdminClient:
    return AdminClient(dict(base))
