"""The answered-request index: each process reads and holds only its own partitions' answers,
on disk, over the whole dedup horizon; a restart resumes from its store, and a request older
than the horizon is answered ``expired`` without a model call."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from consumers.answered import AnsweredIndex, partition_of
from consumers.answered_store import StateDir
from consumers.app import Pipeline
from producers.client import build_request
from switchboard.core import headers as h
from switchboard.core.kafka_clients import producer_config
from switchboard.core.serde import REQUEST, RESPONSE, make_codec
from switchboard.core.settings import Settings
from switchboard.core.status import ResponseStatus
from switchboard.core.topics import Topics
from switchboard.devtools.fake_anthropic import FakeAnthropic

from .harness import create_topics, settings_for_test
from .helpers import read_topic

pytestmark = pytest.mark.integration

HOUR_MS = 3_600_000


def _ids_by_partition(partitions: int, per: int, tag: str) -> dict[int, list[str]]:
    """``per`` request ids for each partition, found by the producers' partitioner."""
    out: dict[int, list[str]] = {p: [] for p in range(partitions)}
    n = 0
    while any(len(ids) < per for ids in out.values()):
        rid = f"{tag}-{n}"
        n += 1
        if len(out[partition_of(rid, partitions)]) < per:
            out[partition_of(rid, partitions)].append(rid)
    return out


def _produce_answers(
    kafka: dict[str, Any], topic: str, ids: list[str], *, timestamp_ms: int | None = None
) -> dict[str, int]:
    """An ``answered`` response record per id (the index reads keys and the status header);
    returns the partition each landed in."""
    producer = Producer(producer_config(kafka))
    landed: dict[str, int] = {}
    for rid in ids:
        producer.produce(
            topic,
            b"{}",
            rid.encode(),
            headers=[(h.STATUS, ResponseStatus.ANSWERED.encode())],
            timestamp=timestamp_ms or 0,
            on_delivery=lambda err, msg, rid=rid: landed.__setitem__(rid, msg.partition()),
        )
    assert producer.flush(30) == 0
    return landed


async def _sync(index: AnsweredIndex) -> None:
    await asyncio.wait_for(index.sync(time.monotonic()), 30)


def test_a_process_reads_and_holds_only_its_partitions_answers(
    kafka_config: dict[str, str], make_topic: Callable[..., str], tmp_path: Path
) -> None:
    topic = make_topic("responses", partitions=4)
    ids = _ids_by_partition(4, 5, "answered")
    landed = _produce_answers(kafka_config, topic, [r for rs in ids.values() for r in rs])
    # Every producer's partitioner is the index's: each answer is where the index looks.
    assert all(landed[rid] == p for p, rs in ids.items() for rid in rs)

    index = AnsweredIndex(kafka_config, topic, 3600, state=StateDir(tmp_path, topic))

    async def main() -> None:
        index.follow("worker.backend", {0, 2})
        await _sync(index)
        assert index.followed == {0, 2}
        assert index.assignment == {0, 2}
        held = index.holds()
        assert {p: sorted(rs) for p, rs in held.items()} == {0: sorted(ids[0]), 2: sorted(ids[2])}
        assert all(index.is_answered(rid) for rid in ids[0] + ids[2])
        assert not any(index.is_answered(rid) for rid in ids[1] + ids[3])
        assert sorted(p.name for p in index._state.path.glob("p*")) == ["p0", "p2"]

        # A rebalance: partition 2 goes, 3 comes (another owner's 1 is never read).
        index.follow("worker.backend", {0, 3})
        await _sync(index)
        assert index.assignment == {0, 3}
        assert set(index.holds()) == {0, 3}
        assert not any(index.is_answered(rid) for rid in ids[2])
        assert all(index.is_answered(rid) for rid in ids[3])

    try:
        asyncio.run(main())
    finally:
        index.close()


def test_two_processes_split_the_partitions_and_each_index_follows_its_own(
    kafka_bootstrap: str, kafka_config: dict[str, str], tmp_path: Path
) -> None:
    """Two pipelines in one worker group: each one's index reads exactly the response
    partitions of the task partitions its worker holds (of the interactive and the batch task
    topic, which the group assigns independently), never another's alone. Each process's
    stores share the block cache ``SWITCHBOARD_ANSWERED_CACHE_MB`` sets."""
    settings = settings_for_test(
        kafka_bootstrap, partitions=4, answered_dir=tmp_path, answered_cache_mb=48
    )
    create_topics(settings, kafka_config)
    tasks = Topics(settings.topic_prefix).tasks("backend")

    async def main() -> list[tuple[set[tuple[str, int]], frozenset[int], frozenset[int]]]:
        pipelines = [Pipeline(settings, kafka_config), Pipeline(settings, kafka_config)]
        for pipeline in pipelines:
            pipeline.add_worker("backend", 4)
        runs = [asyncio.create_task(p.run()) for p in pipelines]
        try:

            def held(p: Pipeline) -> set[tuple[str, int]]:
                return set(p.runtimes["worker.backend"].assignment)

            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                a, b = (held(p) for p in pipelines)
                if a and b and not (a & b) and len(a | b) == 8:  # 4 + 4 batch partitions
                    await asyncio.gather(*(_sync(p.index) for p in pipelines))
                    if all(p.index.followed == {n for _t, n in held(p)} for p in pipelines):
                        break
                await asyncio.sleep(0.1)
            assert pipelines[0].index._state.path != pipelines[1].index._state.path  # a slot each
            assert [p.index._budget.cache_bytes for p in pipelines] == [48 << 20] * 2
            return [(held(p), p.index.followed, p.index.assignment) for p in pipelines]
        finally:
            for pipeline in pipelines:
                pipeline.request_stop()
            await asyncio.gather(*runs)

    (held_a, followed_a, tail_a), (held_b, followed_b, tail_b) = asyncio.run(main())
    assert not (held_a & held_b) and len(held_a | held_b) == 8
    assert followed_a == tail_a == {p for _t, p in held_a}
    assert followed_b == tail_b == {p for _t, p in held_b}
    # Each task topic's partitions are split between the two (each may get all of one topic).
    assert {p for t, p in held_a | held_b if t == tasks} == set(range(4))


def _send_tasks(settings: Settings, kafka: dict[str, Any], requests: list[dict[str, Any]]) -> None:
    """Task records for the backend worker, as the router writes them (keyed by request id)."""
    topic = Topics(settings.topic_prefix).tasks("backend")
    codec = make_codec(None)
    producer = Producer(producer_config(kafka))
    for request in requests:
        task = {**request, "specialist": "backend", "prompt": request["text"]}
        rid = task["request_id"].encode()
        producer.produce(topic, codec.encode(REQUEST, task, topic), rid)
    assert producer.flush(30) == 0


async def _run_worker_until(
    settings: Settings, kafka: dict[str, Any], done: Callable[[Pipeline], bool]
) -> dict[int, str]:
    """Run a backend worker until ``done`` holds; returns how its index started each partition."""
    pipeline = Pipeline(settings, kafka)
    pipeline.add_worker("backend", 8)
    running = asyncio.create_task(pipeline.run())
    try:
        await pipeline.wait_ready()
        deadline = time.monotonic() + 60
        while not done(pipeline) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert done(pipeline), "the worker did not get there in 60 s"
        return dict(pipeline.index.started)
    finally:
        pipeline.request_stop()
        await running


def test_an_answer_older_than_an_hour_is_recognised_after_a_restart(
    kafka_bootstrap: str, kafka_config: dict[str, str], tmp_path: Path
) -> None:
    """A response written two hours ago (inside the 7-day horizon) keeps its request from the
    model: in a first process, after a restart on the same state (which resumes from the
    stored offsets), and in a process with no state at all (rebuilt from now - horizon)."""
    with FakeAnthropic(latency_ms=1) as fake:
        settings = settings_for_test(kafka_bootstrap, fake=fake, answered_dir=tmp_path / "a")
        topics = create_topics(settings, kafka_config)
        old = build_request("an old question", specialist="backend", request_id="old-1")
        new = build_request("a new question", specialist="backend", request_id="new-1")
        _produce_answers(
            kafka_config,
            topics.responses,
            ["old-1"],
            timestamp_ms=int(time.time() * 1000) - 2 * HOUR_MS,
        )

        def handled(n: int) -> Callable[[Pipeline], bool]:
            def check(p: Pipeline) -> bool:
                w = p.workers["backend"]
                return w.skipped + w.model_calls >= n

            return check

        _send_tasks(settings, kafka_config, [old, new])
        first = asyncio.run(_run_worker_until(settings, kafka_config, handled(2)))
        assert set(first.values()) == {"rebuilt"}
        calls_after_first = len(fake.stats().calls)
        assert calls_after_first == 1  # new-1 only: old-1 was answered two hours ago

        # Redeliveries of both, to a restarted process on the same state directory.
        _send_tasks(settings, kafka_config, [old, new])
        second = asyncio.run(_run_worker_until(settings, kafka_config, handled(2)))
        assert set(second.values()) == {"stored"}
        # And to a process that has no state: it rebuilds from the topic.
        _send_tasks(settings, kafka_config, [old, new])
        fresh = settings.model_copy(update={"answered_dir": tmp_path / "b"})
        third = asyncio.run(_run_worker_until(fresh, kafka_config, handled(2)))
        assert set(third.values()) == {"rebuilt"}
        assert len(fake.stats().calls) == calls_after_first

    responses = read_topic(
        kafka_config, topics.responses, until=lambda m: len(m) >= 2, timeout_s=10
    )
    assert sorted(m.key() for m in responses) == [b"new-1", b"old-1"]  # one each, ever


def test_a_request_older_than_the_horizon_is_answered_expired_without_a_model_call(
    kafka_bootstrap: str, kafka_config: dict[str, str], tmp_path: Path
) -> None:
    with FakeAnthropic(latency_ms=1) as fake:
        settings = settings_for_test(
            kafka_bootstrap, fake=fake, answered_dir=tmp_path, dedup_horizon_s=3600
        )
        topics = create_topics(settings, kafka_config)
        stale = build_request("asked long ago", specialist="backend", request_id="stale-1")
        stale["created_at_ms"] = int(time.time() * 1000) - 2 * HOUR_MS
        _send_tasks(settings, kafka_config, [stale])

        def answered(p: Pipeline) -> bool:
            return p.workers["backend"]._outcomes._counts.get(ResponseStatus.EXPIRED, 0) >= 1

        asyncio.run(_run_worker_until(settings, kafka_config, answered))
        assert len(fake.stats().calls) == 0
    (response,) = read_topic(kafka_config, topics.responses, until=lambda m: len(m) >= 1)
    record = make_codec(None).decode(RESPONSE, response.value(), response.topic())
    assert record["status"] == ResponseStatus.EXPIRED
    assert record["error_code"] == "beyond_dedup_horizon"
    assert response.key() == b"stale-1"
