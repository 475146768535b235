"""Where Kafka is for a command: ``KAFKA_BOOTSTRAP_SERVERS`` always wins, else the local broker."""

from __future__ import annotations

from switchboard.core.errors import ConfigError
from switchboard.core.settings import Settings
from switchboard.devtools.local_kafka import LocalKafka


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
