"""Kafka client factories: one place decides how producers, consumers and admins are configured.

Every factory routes librdkafka's own log lines (``%3|...|FAIL|...``) through Python logging,
to the ``switchboard.librdkafka`` logger, instead of letting librdkafka write them to stderr in
the middle of a command's output. confluent-kafka forwards them when the client is polled, so
they come out on the polling thread. A ``logger`` in ``base`` wins over ours.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any, Final

from confluent_kafka.admin import AdminClient

#: Where librdkafka's log lines go (syslog levels mapped: 3 ERROR, 4 WARNING, 5-6 INFO, 7 DEBUG).
LIBRDKAFKA_LOGGER: Final = "switchboard.librdkafka"


def with_logger(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` plus the ``logger`` key that sends librdkafka's log to Python logging.

    For clients built from a hand-made config; the factories below already include it.
    """
    return {"logger": logging.getLogger(LIBRDKAFKA_LOGGER), **config}


def producer_config(base: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    """Idempotent, fully acknowledged producer: a retried send is never duplicated in the log."""
    return {
        **with_logger(base),
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 2,
        "compression.type": "lz4",
        **overrides,
    }


def consumer_config(base: dict[str, Any], group_id: str, **overrides: Any) -> dict[str, Any]:
    """At-least-once consumer: offsets are stored by the runtime only after outputs are delivered."""
    return {
        **with_logger(base),
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
        **with_logger(base),
        "group.id": f"switchboard-{name}-{uuid.uuid4().hex}",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        **overrides,
    }


def make_admin(base: dict[str, Any]) -> AdminClient:
    """An admin client; its log lines are forwarded only while it is polled (``admin.poll``),
    so a one-shot admin stays quiet rather than writing to stderr."""
    return AdminClient(with_logger(base))
