"""Session-scoped Kafka for the whole suite, and uuid-named topics and groups per test.

Where the broker comes from, in order: ``KAFKA_BOOTSTRAP_SERVERS`` (an existing cluster);
else testcontainers' Apache Kafka when a Docker engine answers; else the local jar broker
(``switchboard kafka start``), started here and stopped at the end if this session started it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from switchboard.core.admin import ensure_topics
from switchboard.core.kafka_clients import make_admin
from switchboard.core.topics import TopicSpec
from switchboard.devtools.local_kafka import LocalKafka
from switchboard.devtools.secure_kafka import SecureKafka

REPO = Path(__file__).resolve().parents[1]
STATE_DIR = Path(os.environ.get("SWITCHBOARD_STATE_DIR", REPO / ".switchboard")).resolve()


def _docker_answers() -> bool:
    try:
        import docker  # type: ignore[import-untyped]

        docker.from_env(timeout=2).ping()
        return True
    except Exception:  # no engine, no socket, no permission: all mean "not here"
        return False


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """A bootstrap address of a real Apache Kafka broker for the whole session."""
    if env := os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield env
        return
    if _docker_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer("apache/kafka:4.1.1").with_kraft() as container:
            yield container.get_bootstrap_server()
        return
    broker = LocalKafka(STATE_DIR / "kafka")
    bootstrap, started, _note = broker.start()
    admin = make_admin({"bootstrap.servers": bootstrap})
    before = set(admin.list_topics(timeout=30).topics)
    marker = _mark_session()
    try:
        yield bootstrap
    finally:
        marker.unlink(missing_ok=True)
        if _other_sessions():
            # Another test session shares this broker: its topics are among the new ones, and
            # deleting them would break its tests. The last session to end tidies up.
            print("\nanother test session uses this broker: its topics and ours are kept")
        else:
            _delete_new_topics(admin, before)
        if started:
            broker.stop()


SESSIONS = STATE_DIR / "test-sessions"


def _mark_session() -> Path:
    """A file per running test session (named by pid), so sessions on one broker see each other."""
    SESSIONS.mkdir(parents=True, exist_ok=True)
    marker = SESSIONS / str(os.getpid())
    marker.touch()
    return marker


def _other_sessions() -> bool:
    """Whether another test session is running now (a marker whose process is alive)."""
    alive = False
    for marker in SESSIONS.glob("*"):
        try:
            os.kill(int(marker.name), 0)
            alive = True
        except (ValueError, ProcessLookupError):
            marker.unlink(missing_ok=True)  # a session that died without tidying
        except PermissionError:
            alive = True
    return alive


def _delete_new_topics(admin: AdminClient, before: set[str]) -> None:
    """Delete the topics this session created on the local broker, which keeps its data
    between sessions: thousands of leftover uuid topics would slow every later start and run.
    Topics of a pipeline a developer runs alongside (the default prefix) are kept, and so are
    a benchmark run's (``bench-<uuid>.*``, which the harness deletes itself): deleting them
    under a running benchmark fails its drain with "unknown topic"."""
    try:
        created = [
            name
            for name in admin.list_topics(timeout=30).topics
            if name not in before and not name.startswith(("__", "switchboard.", "bench-"))
        ]
        if created:
            for future in admin.delete_topics(created, operation_timeout=30).values():
                future.result(timeout=60)
    except Exception as exc:  # tidying must never fail the run
        print(f"\nleft some test topics on the local broker: {exc}")


@pytest.fixture(scope="session")
def kafka_config(kafka_bootstrap: str) -> dict[str, str]:
    return {"bootstrap.servers": kafka_bootstrap}


@pytest.fixture(scope="session")
def admin(kafka_config: dict[str, str]) -> AdminClient:
    return make_admin(kafka_config)


@pytest.fixture
def unique() -> Callable[[str], str]:
    """A factory of uuid-suffixed names, so tests never share topics or groups."""
    suffix = uuid.uuid4().hex[:10]
    return lambda base: f"{base}-{suffix}"


@pytest.fixture
def make_topic(admin: AdminClient, unique: Callable[[str], str]) -> Callable[..., str]:
    """Create a uuid-named topic, through the same admin path as ``topics ensure`` (so it has
    its leaders when this returns), and return its name."""

    def create(base: str = "t", partitions: int = 1) -> str:
        name = unique(base)
        ensure_topics(
            admin, [TopicSpec("test", name, {})], partitions=partitions, replication_factor=1
        )
        return name

    return create


@pytest.fixture(scope="session")
def secure_kafka() -> Iterator[SecureKafka]:
    """The secure local broker (SASL_SSL, mTLS, ACLs) for the tests that ask for it: the one
    ``switchboard kafka start --secure`` runs (its own state directory and ports beside the
    plain broker), reused when it runs, else started here and stopped (by its pid) at the end.
    About 10 s to start."""
    broker = SecureKafka(STATE_DIR / "secure-kafka", jars=STATE_DIR / "kafka" / "jars")
    _bootstrap, started, _note = broker.start()
    try:
        yield broker
    finally:
        if started:
            broker.stop()
