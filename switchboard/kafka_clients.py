"""Kafka client factories: one place decides how producers, consumers and admins are configured."""

from __future__ import annotations

from typing import Any

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from switchboard.errors import ConfigError
from switchboard.local_kafka import LocalKafka
from switchboard.settings import Settings


def local_broker(settings: Settings) -> LocalKafka:
    """The local broker manager for these settings' state directory."""
    return LocalKafka(
        settings.kafka_state_dir,
        port=settings.kafka_port,
        heap=settings.kafka_heap,
        start_timeout_s=settings.kafka_start_timeout_s,
    )


def resolve_bootstrap(settings: Settings) -> str:
    """Where Kafka is: ``KAFKA_BOOTSTRAP_SERVERS`` always wins, else the local broker."""
    if settings.bootstrap_servers:
        return settings.bootstrap_servers
    status = local_broker(settings).status()
    if status.running and status.bootstrap:
        return status.bootstrap
    raise ConfigError(
        "no Kafka broker: run `switchboard kafka start` or set KAFKA_BOOTSTRAP_SERVERS"
    )


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


def make_producer(base: dict[str, Any], **overrides: Any) -> Producer:
    return Producer(producer_config(base, **overrides))


def make_consumer(base: dict[str, Any], group_id: str, **overrides: Any) -> Consumer:
    return Consumer(consumer_config(base, group_id, **overrides))


def make_admin(base: dict[str, Any]) -> AdminClient:
    return AdminClient(dict(base))
