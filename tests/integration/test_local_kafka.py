"""The local jar broker: start from nothing, idempotent start/stop, restarts keep data,
a taken port is avoided, and missing Java is one clear line."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer

from switchboard.devtools.local_kafka import BrokerError, LocalKafka
from tests.support import one_error_line, run_cli

from ..conftest import STATE_DIR

pytestmark = pytest.mark.integration


@pytest.fixture
def fresh_broker(tmp_path: Path, kafka_bootstrap: str) -> Iterator[LocalKafka]:
    """A second broker in its own empty state directory, sharing the session's jar cache."""
    del kafka_bootstrap  # the session broker resolved the jars; reuse them
    state = tmp_path / "kafka"
    state.mkdir()
    jars = STATE_DIR / "kafka" / "jars"
    if jars.is_dir():
        (state / "jars").symlink_to(jars)
    broker = LocalKafka(state, port=_free_port(), heap="256m")
    yield broker
    broker.stop()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _round_trip(bootstrap: str, topic: str, value: bytes) -> list[bytes]:
    producer = Producer({"bootstrap.servers": bootstrap})
    producer.produce(topic, value)
    assert producer.flush(15) == 0
    return _read_all(bootstrap, topic)


def _read_all(bootstrap: str, topic: str) -> list[bytes]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": uuid.uuid4().hex,
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    values: list[bytes] = []
    try:
        for _ in range(60):
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                values.append(msg.value())
            elif values:
                break
    finally:
        consumer.close()
    return values


def test_lifecycle_start_idempotent_restart_keeps_data(fresh_broker: LocalKafka) -> None:
    """From an empty state dir: start, round trip, a second start is a no-op, stop (twice),
    start again and the earlier record is still there; a foreign cluster id is refused."""
    bootstrap, started, _ = fresh_broker.start()
    assert started
    assert fresh_broker.status().running
    assert _round_trip(bootstrap, "durable", b"before-restart") == [b"before-restart"]
    # The JVM's GC log, as Kafka's start script writes it: the collector and its heap (the
    # -Xms/-Xmx this broker was given) are in it from the start.
    gc_log = fresh_broker.gc_log_file.read_text()
    assert "Using G1" in gc_log and "Heap Max Capacity: 256M" in gc_log

    again, started_again, _ = fresh_broker.start()
    assert (again, started_again) == (bootstrap, False)

    assert fresh_broker.stop() is True
    assert fresh_broker.status().running is False
    assert fresh_broker.stop() is False  # stopping a stopped broker is fine

    bootstrap, started, _ = fresh_broker.start()
    assert started
    assert _read_all(bootstrap, "durable") == [b"before-restart"]

    fresh_broker.stop()
    fresh_broker.cluster_id_file.write_text("AAAAAAAAAAAAAAAAAAAAAA")
    with pytest.raises(BrokerError, match="--reset"):
        fresh_broker.start()


def test_taken_port_is_avoided(fresh_broker: LocalKafka) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", fresh_broker.port))
        blocker.listen()
        bootstrap, started, note = fresh_broker.start()
    assert started
    assert not bootstrap.endswith(f":{fresh_broker.port}")
    assert note is not None and str(fresh_broker.port) in note


def test_missing_java_is_one_clear_line(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("JAVA_HOME", "KAFKA_BOOTSTRAP_SERVERS")}
    env["PATH"] = str(bin_dir)  # nothing there: no java, no mvn
    env["SWITCHBOARD_STATE_DIR"] = str(tmp_path / "state")
    env["SWITCHBOARD_KAFKA_PORT"] = str(_free_port())
    line = one_error_line(run_cli("kafka", "start", env=env), 1)
    assert "no Java found" in line and "JAVA_HOME" in line
