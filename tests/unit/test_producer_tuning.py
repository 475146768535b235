"""A deployment may change the producers' batching through ``SWITCHBOARD_KAFKA_CONFIG``
(``linger.ms``, ``compression.type``), never their guarantees (idempotence, ``acks=all``) or
the partitioner the co-partitioned task and response topics rely on."""

from __future__ import annotations

import pytest
from confluent_kafka import Producer

from switchboard.core.kafka_clients import PARTITIONER, PRODUCER_TUNING, producer_config
from switchboard.core.settings import Settings


def test_the_batching_defaults_apply_when_the_passthrough_says_nothing() -> None:
    config = producer_config({"bootstrap.servers": "127.0.0.1:1"})
    assert config["linger.ms"] == PRODUCER_TUNING["linger.ms"]
    assert config["compression.type"] == PRODUCER_TUNING["compression.type"]


def test_the_passthrough_changes_the_batching(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "SWITCHBOARD_KAFKA_CONFIG", '{"linger.ms": "10", "compression.type": "zstd"}'
    )
    base = Settings().client_config("127.0.0.1:1")
    config = producer_config(base)
    assert (config["linger.ms"], config["compression.type"]) == ("10", "zstd")
    Producer(config).flush(0)  # librdkafka takes it as given


def test_the_passthrough_cannot_weaken_the_guarantees_or_move_the_partitions() -> None:
    base = {
        "bootstrap.servers": "127.0.0.1:1",
        "acks": "1",
        "enable.idempotence": False,
        "partitioner": "murmur2_random",
    }
    config = producer_config(base)
    assert config["acks"] == "all"
    assert config["enable.idempotence"] is True
    assert config["partitioner"] == PARTITIONER
