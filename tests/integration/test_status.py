"""``switchboard status --json`` against a real broker: lag, retry backlog, DLQ depth, and the
reports of a running pipeline (which disappear when it stops cleanly)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import Consumer, Message, Producer, TopicPartition

from consumers.app import Pipeline
from consumers.outcomes import Outcomes, Stage, now_ms
from consumers.replay.ledgers import acknowledge
from consumers.replay.store import DeadLetterStore
from switchboard.cli.main import main
from switchboard.core import headers as h
from switchboard.core.aio_producer import AsyncProducer
from switchboard.core.classify import Failure
from switchboard.core.errors import ErrorClass
from switchboard.core.kafka_clients import producer_config
from switchboard.core.serde import make_codec
from switchboard.core.settings import Settings
from switchboard.core.topics import GroupRole, Topics

from .harness import RunningPipeline, create_topics, settings_for_test

pytestmark = pytest.mark.integration

PERMANENT = Failure(ErrorClass.PERMANENT, "invalid_request", "bad prompt", "BadRequestError")
TRANSIENT = Failure(ErrorClass.TRANSIENT, "overloaded", "Overloaded", "OverloadedError")


def _produce(
    kafka: dict[str, Any], topic: str, partition: int, records: list[dict[str, Any]]
) -> None:
    producer = Producer(kafka)
    for record in records:
        producer.produce(
            topic,
            record.get("value", b"x"),
            record.get("key", b"k"),
            partition=partition,
            headers=record.get("headers"),
        )
    assert producer.flush(30) == 0


def _commit(kafka: dict[str, Any], group: str, offsets: list[tuple[str, int, int]]) -> None:
    consumer = Consumer({**kafka, "group.id": group, "enable.auto.commit": False})
    try:
        consumer.commit(
            offsets=[TopicPartition(t, p, o) for t, p, o in offsets], asynchronous=False
        )
    finally:
        consumer.close()


async def _dead_letters(settings: Settings, kafka: dict[str, Any], topics: Topics) -> None:
    """Three permanent dead letters (one then acknowledged) and two transient ones."""
    codec = make_codec(None)
    producer = AsyncProducer(producer_config(kafka))
    outcomes = Outcomes(codec, topics, producer, topics.group(GroupRole.WORKER, "api"), Stage.MODEL)
    try:
        for i, failure in enumerate([PERMANENT] * 3 + [TRANSIENT] * 2):
            msg = Message(
                topic=topics.tasks("api"),
                partition=0,
                offset=i,
                key=f"r{i}".encode(),
                value=b"not a request",
                headers=[(h.REQUEST_ID, f"r{i}".encode())],
                timestamp=(1, now_ms()),
            )
            await outcomes.dead_letter(msg, failure)
        store = DeadLetterStore(kafka, topics, codec)
        store.ensure_ledgers(replication_factor=1, retention_ms=settings.dlq_retention_ms)
        first = await asyncio.to_thread(store.scan)
        await acknowledge(producer, topics, first[:1])
    finally:
        await asyncio.to_thread(producer.close)


@pytest.fixture
def status_json(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], kafka_bootstrap: str
) -> Callable[[Settings], dict[str, Any]]:
    def run(settings: Settings) -> dict[str, Any]:
        monkeypatch.setenv("SWITCHBOARD_TOPIC_PREFIX", settings.topic_prefix)
        monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
        capsys.readouterr()
        assert main(["status", "--json"]) == 0
        return json.loads(capsys.readouterr().out)

    return run


def test_status_reports_lag_retry_backlog_and_dlq_depth(
    kafka_bootstrap: str,
    kafka_config: dict[str, str],
    status_json: Callable[[Settings], dict[str, Any]],
) -> None:
    """With 5 + 3 tasks on the data topic and the data group committed at 2 on partition 0
    only, the data group's lag is 3 and 3 (and 0 on the third partition); with three retry
    records past the relay's committed offset on the 10 s tier (due in 30, 60 and 90 s) and
    two uncommitted on the 60 s tier, the backlog is 3 and 2 with the earliest due times; with
    five dead letters of two classes, one acknowledged, the DLQ depth is 2 permanent and
    2 transient; a report not renewed for more than three intervals is flagged stale."""
    settings = settings_for_test(kafka_bootstrap)
    topics = create_topics(settings, kafka_config)
    data, relay = topics.group(GroupRole.WORKER, "data"), topics.group(GroupRole.RELAY)
    _produce(kafka_config, topics.tasks("data"), 0, [{}] * 5)
    _produce(kafka_config, topics.tasks("data"), 1, [{}] * 3)
    _commit(kafka_config, data, [(topics.tasks("data"), 0, 2)])

    now = now_ms()
    due = [now - 1_000, now + 30_000, now + 60_000, now + 90_000]
    _produce(
        kafka_config,
        topics.retry(10),
        0,
        [{"headers": [(h.RETRY_DUE_MS, str(d).encode())]} for d in due],
    )
    _produce(
        kafka_config,
        topics.retry(60),
        1,
        [{"headers": [(h.RETRY_DUE_MS, str(now + 120_000 + i).encode())]} for i in range(2)],
    )
    _commit(kafka_config, relay, [(topics.retry(10), 0, 1)])  # the first one was relayed

    asyncio.run(_dead_letters(settings, kafka_config, topics))
    ghost = {"process_id": "ghost:1:relay", "roles": ["relay"], "interval_s": 1.0}
    ghost["reported_at_ms"] = now - 10_000
    _produce(
        kafka_config,
        topics.status,
        0,
        [{"key": b"ghost:1:relay", "value": json.dumps(ghost).encode()}],
    )

    status = status_json(settings)

    groups = {g["role"]: g for g in status["groups"]}
    # The group reads its interactive and its batch task topic; the tasks are on the first.
    data_parts = [
        p for p in groups["worker.data"]["partitions"] if p["topic"] == topics.tasks("data")
    ]
    lag = {p["partition"]: p["lag"] for p in data_parts}
    assert lag == {0: 3, 1: 3, 2: 0}
    assert groups["worker.data"]["lag"] == 6
    committed = {p["partition"]: p["committed"] for p in data_parts}
    assert committed == {0: 2, 1: None, 2: None}
    assert groups["worker.backend"]["lag"] == 0

    tiers = {t["tier_s"]: t for t in status["retry"]}
    assert (tiers[10]["backlog"], tiers[10]["oldest_due_ms"], tiers[10]["due_now"]) == (
        3,
        now + 30_000,
        0,
    )
    assert (tiers[60]["backlog"], tiers[60]["oldest_due_ms"]) == (2, now + 120_000)
    assert tiers[1]["backlog"] == tiers[600]["backlog"] == 0
    assert tiers[1]["oldest_due_ms"] is None
    assert all(t["complete"] for t in status["retry"])
    # The relay group's lag is the same backlog, seen from the offsets.
    assert groups["relay"]["lag"] == 5

    dlq = {d["topic"]: d for d in status["dlq"]}[topics.dlq]
    assert dlq["by_error_class"] == {"permanent": 2, "transient": 2}
    assert (dlq["depth"], dlq["acknowledged"]) == (4, 1)

    procs = {p["process_id"]: p for p in status["processes"]}
    assert procs["ghost:1:relay"]["stale"] is True


def test_a_running_pipeline_reports_itself_and_a_clean_stop_removes_it(
    kafka_bootstrap: str,
    kafka_config: dict[str, str],
    status_json: Callable[[Settings], dict[str, Any]],
) -> None:
    """A process running the router and the backend worker appears with its roles, its
    members (their ids tie group members to the process), its partitions and the backend
    breaker closed; after a graceful stop its report is gone (a tombstone)."""
    settings = settings_for_test(kafka_bootstrap, status_interval_s=0.5)
    topics = create_topics(settings, kafka_config)

    def setup(p: Pipeline) -> None:
        p.add_router()
        p.add_worker("backend", concurrency=4)

    running = RunningPipeline(settings, kafka_config, setup)
    with running:
        asyncio.run_coroutine_threadsafe(running.pipeline.wait_ready(), _loop(running)).result(60)
        status = _until(
            lambda: status_json(settings),
            lambda s: (
                _live(s)
                and len(_members(s)) == 2
                and all(m["process_id"] for m in _members(s))
                and len(_owned(s, "worker.backend")) == settings.partitions
            ),
        )
        [proc] = _live(status)
        assert sorted(proc["roles"]) == ["router", "worker.backend"]
        assert proc["report"]["consumers"][0]["group"] in {
            topics.group(GroupRole.ROUTER),
            topics.group(GroupRole.WORKER, "backend"),
        }
        groups = {g["role"]: g for g in status["groups"]}
        for role in ("router", "worker.backend"):
            [member] = groups[role]["members"]
            assert member["process_id"] == proc["process_id"]
            # Every partition of every topic the group reads (a worker: interactive and batch).
            assert len(member["partitions"]) == settings.partitions * len(groups[role]["topics"])
        assert groups["worker.api"]["members"] == []
        assert status["breakers"]["backend"]["state"] == "closed"
        assert status["usage"]["backend"]["model_calls"] == 0
    after = status_json(settings)
    assert after["processes"] == []
    assert all(g["members"] == [] for g in after["groups"])


def _loop(running: RunningPipeline) -> asyncio.AbstractEventLoop:
    loop = running._loop
    assert loop is not None
    return loop


def _live(status: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in status["processes"] if not p["stale"]]


def _members(status: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for g in status["groups"] for m in g["members"]]


def _owned(status: dict[str, Any], role: str) -> list[dict[str, Any]]:
    [group] = [g for g in status["groups"] if g["role"] == role]
    return [p for p in group["partitions"] if p["process_id"]]


def _until(
    read: Callable[[], dict[str, Any]],
    ok: Callable[[dict[str, Any]], Any],
    timeout_s: float = 20.0,
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        status = read()
        if ok(status) or time.monotonic() > deadline:
            return status
        time.sleep(0.3)
