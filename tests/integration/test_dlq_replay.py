"""``switchboard dlq`` against a real broker: 500 dead letters (plus 2 undecodable values), then
list, show, replay and purge through the CLI, with specialist workers calling the fake
Anthropic server.

The dead letters are written the way a worker writes them (``Outcomes.fail``: the DLQ record
and the caller's ``failed`` response), for records that look exactly like routed tasks:

- every specialist gets 100, tenants rotate over three, every seventh is a transient failure
  whose attempts ran out, the rest are permanent (HTTP 400);
- every ``data`` prompt carries an inline ``FAULT:400`` marker, so replaying one fails again;
- five ``backend`` requests also have an ``answered`` response (answered after all).

Each test works on its own slice (by specialist or tenant), so the order does not matter.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import pytest
from confluent_kafka import Consumer, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from consumers.outcomes import Outcomes, now_ms
from consumers.replay.store import DeadLetterStore
from consumers.replay.view import message_headers
from producers.client import SwitchboardClient, build_request
from switchboard.cli.main import main
from switchboard.core import headers as h
from switchboard.core.aio_producer import AsyncProducer, Outbound
from switchboard.core.classify import Failure
from switchboard.core.errors import ErrorClass
from switchboard.core.kafka_clients import producer_config
from switchboard.core.serde import DEAD_LETTER, REQUEST, make_codec
from switchboard.core.settings import SPECIALISTS, Settings
from switchboard.core.topics import Topics
from switchboard.devtools.fake_anthropic import FakeAnthropic
from tests.support import wait_for

from . import console_kit
from .console_kit import worker_failure
from .harness import RunningPipeline, create_topics, settings_for_test

pytestmark = pytest.mark.integration

TENANTS = ("acme", "globex", "initech")
SETTLED = 5  # backend requests that also have an `answered` response
GARBAGE = (b"not a dead letter", b"\xc3\x01" + b"\x00" * 12)


@dataclass(frozen=True)
class Seeded:
    """One dead-lettered request of the seed."""

    request_id: str
    specialist: str
    tenant: str
    error_class: str
    #: "model": a worker gave up on the routed task; "route": the router failed (a handler
    #: bug) on the client's request, before any specialist was chosen.
    stage: str = "model"

    @property
    def listed_specialist(self) -> str | None:
        return self.specialist if self.stage == "model" else None


ROUTED = "dl-route"


def seed_plan(n: int = 500) -> list[Seeded]:
    plan = [
        Seeded(
            f"dl-{i:03d}",
            SPECIALISTS[i % len(SPECIALISTS)],
            TENANTS[(i // len(SPECIALISTS)) % len(TENANTS)],
            "transient" if i % 7 == 0 else "permanent",
        )
        for i in range(n - 1)
    ]
    return [*plan, Seeded(ROUTED, "data", "initech", "permanent", stage="route")]


PERMANENT = replace(console_kit.PERMANENT, provider_request_id="req_fake")
EXHAUSTED = replace(console_kit.EXHAUSTED, overload=True)


async def _seed(settings: Settings, kafka: dict[str, Any], plan: list[Seeded]) -> None:
    topics = Topics(settings.topic_prefix)
    codec = make_codec(None)
    producer = AsyncProducer(producer_config(kafka))
    outcomes = {
        s: Outcomes(codec, topics, producer, f"{settings.topic_prefix}.worker:{s}", "model")
        for s in SPECIALISTS
    }
    router = Outcomes(codec, topics, producer, f"{settings.topic_prefix}.router", "route")
    now = now_ms()

    async def route_failure(i: int, item: Seeded) -> list[Outbound]:
        text = f"/{item.specialist} question {i} FAULT:400"
        request = build_request(text, tenant=item.tenant, request_id=item.request_id)
        headers: list[tuple[str, str | bytes | None]] = [
            (h.REQUEST_ID, item.request_id.encode()),
            (h.TENANT, item.tenant.encode()),
        ]
        msg = Message(
            topic=topics.requests,
            partition=0,
            offset=i,
            key=item.request_id.encode(),
            value=codec.encode(REQUEST, request, topics.requests),
            headers=headers,
            timestamp=(1, now),
        )
        bug = Failure(ErrorClass.PERMANENT, "internal", "'prompt'", "KeyError")
        return await router.fail(msg, bug)

    async def dead_letter(i: int, item: Seeded) -> list[Outbound]:
        if item.stage == "route":
            return await route_failure(i, item)
        text = f"{item.specialist} question {i}"
        if item.specialist == "data":
            text += " FAULT:400"
        request = build_request(
            text, tenant=item.tenant, specialist=item.specialist, request_id=item.request_id
        )
        request["prompt"] = text
        return await worker_failure(
            outcomes[item.specialist],
            codec,
            topics.tasks(item.specialist),
            request,
            EXHAUSTED if item.error_class == "transient" else PERMANENT,
            attempts=5 if item.error_class == "transient" else 1,
            partition=i % 3,
            offset=i,
            now=now,
        )

    try:
        responses = await asyncio.gather(*(dead_letter(i, x) for i, x in enumerate(plan)))
        settled = [x for x in plan if x.specialist == "backend"][:SETTLED]
        answered = [
            outcomes["backend"].response(
                {"request_id": x.request_id, "tenant": x.tenant}, "answered", "answered after all"
            )
            for x in settled
        ]
        await producer.send_all([r for rs in responses for r in rs] + answered)
        await producer.send_all([Outbound(topics.dlq, value, b"junk") for value in GARBAGE])
    finally:
        await asyncio.to_thread(producer.close)


def seed_dead_letters(settings: Settings, kafka: dict[str, Any], plan: list[Seeded]) -> None:
    """Write ``plan`` as dead letters (and `failed` responses), plus the undecodable values."""
    asyncio.run(_seed(settings, kafka, plan))


# --- fixtures ----------------------------------------------------------------------------------
@dataclass
class World:
    settings: Settings
    kafka: dict[str, Any]
    topics: Topics
    plan: list[Seeded]
    pipeline: RunningPipeline

    def ids(self, **match: str) -> list[str]:
        return [
            x.request_id for x in self.plan if all(getattr(x, k) == v for k, v in match.items())
        ]


def _workers(pipeline: Any) -> None:
    pipeline.add_router()
    for specialist in SPECIALISTS:
        pipeline.add_worker(specialist, 32)


@pytest.fixture(scope="module")
def world(kafka_bootstrap: str, kafka_config: dict[str, str]) -> Iterator[World]:
    plan = seed_plan()
    with FakeAnthropic(latency_ms=2, inline_faults=True) as fake:
        settings = settings_for_test(kafka_bootstrap, fake=fake)
        kafka = dict(kafka_config)
        topics = create_topics(settings, kafka)
        seed_dead_letters(settings, kafka, plan)
        with RunningPipeline(settings, kafka, _workers) as running:
            yield World(settings, kafka, topics, plan, running)


@pytest.fixture
def cli(
    world: World, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[..., tuple[int, Any]]:
    """Run ``switchboard ARGS``; returns (exit code, parsed JSON or the captured stdout)."""
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", world.kafka["bootstrap.servers"])
    monkeypatch.setenv("SWITCHBOARD_TOPIC_PREFIX", world.settings.topic_prefix)
    monkeypatch.delenv("SCHEMA_REGISTRY_URL", raising=False)

    def run(*argv: str) -> tuple[int, Any]:
        capsys.readouterr()
        code = main(list(argv))
        out = capsys.readouterr()
        if "--json" in argv and code == 0:
            return code, json.loads(out.out)
        return code, out.out + out.err

    return run


def end_offsets(kafka: dict[str, Any], topics: list[str]) -> dict[tuple[str, int], int]:
    """The high watermark of every partition of ``topics`` (missing topics are left out)."""
    admin = AdminClient(kafka)
    metadata = admin.list_topics(timeout=10).topics
    consumer = Consumer({**kafka, "group.id": f"offsets-{uuid.uuid4().hex}"})
    try:
        return {
            (t, p): consumer.get_watermark_offsets(TopicPartition(t, p), timeout=10)[1]
            for t in topics
            if t in metadata
            for p in metadata[t].partitions
        }
    finally:
        consumer.close()


def prefixed_topics(world: World) -> list[str]:
    """The pipeline's topics but the status topic, which the running processes write on a
    timer (a report every few seconds), whatever the DLQ tool does."""
    admin = AdminClient(world.kafka)
    return sorted(
        t
        for t in admin.list_topics(timeout=10).topics
        if t.startswith(world.topics.prefix + ".") and t != world.topics.status
    )


def read_all(kafka: dict[str, Any], topic: str) -> list[Message]:
    """Every record of ``topic`` now (a bounded scan, as the DLQ tool does it)."""
    records: list[Message] = []
    store = DeadLetterStore(kafka, Topics("unused"), make_codec(None))
    store.read(topic, records.append, None)
    return records


def key_of(msg: Message) -> str:
    return (msg.key() or b"").decode()


def status_of(msg: Message) -> str | None:
    """A response's status, from the ``sb-status`` header every response carries."""
    return h.header_value(message_headers(msg), h.STATUS)


# --- tests -------------------------------------------------------------------------------------
def test_list_json_has_every_record_and_counts_by_group(
    world: World, cli: Callable[..., tuple[int, Any]]
) -> None:
    """`list --json` reads all 502 records (two undecodable ones shown as such, not a crash),
    each with its pointer, request id, error class, stage, specialist and origin topic, and
    counts them by error class, specialist, tenant and age."""
    code, out = cli("dlq", "list", "--json", "--include-acked")
    assert code == 0
    assert out["topic"] == world.topics.dlq
    assert out["scanned"] == out["matched"] == len(world.plan) + len(GARBAGE)
    records = out["records"]
    assert len(records) == out["matched"]
    required = {"id", "pointer", "request_id", "error_class", "stage", "specialist", "origin_topic"}
    assert all(required <= set(r) for r in records)
    assert len({r["id"] for r in records}) == len(records)
    by_id = {r["request_id"]: r for r in records if r["request_id"]}
    first = by_id["dl-001"]
    assert (first["specialist"], first["tenant"], first["stage"]) == ("api", "acme", "model")
    assert first["origin_topic"] == world.topics.tasks("api")
    assert first["pointer"] == f"{world.topics.dlq}/{first['id'].replace(':', '/')}"
    expected_classes = Counter(x.error_class for x in world.plan)
    expected_classes["undecodable"] = len(GARBAGE)
    groups = out["groups"]
    assert groups["error_class"] == dict(expected_classes)
    specialists = Counter(x.listed_specialist or "(none)" for x in world.plan)
    specialists["(none)"] += len(GARBAGE)
    assert groups["specialist"] == dict(specialists)
    assert groups["tenant"] == {**Counter(x.tenant for x in world.plan), "(none)": 2}
    assert groups["age"] == {"<5m": out["matched"]}

    code, filtered = cli(
        "dlq",
        "list",
        "--json",
        "--specialist",
        "perf",
        "--error-class",
        "transient",
        "--include-acked",
    )
    want = world.ids(specialist="perf", error_class="transient")
    assert sorted(r["request_id"] for r in filtered["records"]) == sorted(want)

    code, text = cli("dlq", "list", "--tenant", "acme", "--limit", "3")
    assert code == 0 and "dead letters match" in text and "more" in text


def test_show_decodes_the_record_its_attempts_and_the_original_request(
    world: World, cli: Callable[..., tuple[int, Any]]
) -> None:
    _code, listing = cli("dlq", "list", "--json", "--request-id", "dl-000", "--include-acked")
    (row,) = listing["records"]
    code, detail = cli("dlq", "show", row["id"], "--json")
    assert code == 0
    assert detail["record"]["request_id"] == "dl-000"
    assert detail["record"]["error_class"] == "transient"  # 0 % 7 == 0: attempts ran out
    assert [a["attempt"] for a in detail["attempts"]] == [1, 2, 3, 4, 5]
    assert detail["original"]["request"]["request_id"] == "dl-000"
    assert detail["original"]["value_preview"].startswith("c3 01")
    assert detail["headers"][h.CONNECT_TOPIC] == world.topics.tasks("backend")
    code, text = cli("dlq", "show", row["id"])
    assert code == 0 and "dl-000" in text and "attempts" in text

    _code, junk = cli("dlq", "list", "--json", "--error-class", "undecodable", "--include-acked")
    assert len(junk["records"]) == len(GARBAGE)
    code, bad = cli("dlq", "show", junk["records"][0]["id"], "--json")
    assert code == 0 and bad["undecodable"] and bad["decode_error"]

    code, text = cli("dlq", "show", "0:999999")
    assert code == 1 and "no dead letter 0:999999" in text and len(text.strip().splitlines()) == 1


def test_a_dry_run_says_what_it_would_send_and_sends_nothing(
    world: World, cli: Callable[..., tuple[int, Any]]
) -> None:
    """Without --apply, replay and purge write nothing anywhere: every topic's end offsets
    stay as they were. Requests that were answered after all are left out, and said so."""
    before = end_offsets(world.kafka, prefixed_topics(world))
    code, plan = cli("dlq", "replay", "--specialist", "backend", "--json")
    assert code == 0 and plan["dry_run"] is True
    assert plan["would_send"] == 100 - SETTLED
    assert plan["skipped"] == {"already_answered": SETTLED}
    assert {r["origin_topic"] for r in plan["records"]} == {world.topics.tasks("backend")}
    code, text = cli("dlq", "replay", "--specialist", "backend")
    assert code == 0 and f"DRY RUN: would replay {100 - SETTLED}" in text
    code, purge = cli("dlq", "purge", "--specialist", "backend", "--json")
    assert code == 0 and purge["would_acknowledge"] == 100
    assert end_offsets(world.kafka, prefixed_topics(world)) == before


def test_replay_answers_each_matching_request_once_and_a_second_replay_sends_nothing(
    world: World, cli: Callable[..., tuple[int, Any]]
) -> None:
    """`replay --specialist api --apply` sends the 100 api dead letters back to the api tasks
    topic; each is answered (after its `failed` response) exactly once. Run again, it sends
    nothing. Other specialists' task topics are untouched."""
    api_ids = world.ids(specialist="api")
    others = [world.topics.tasks(s) for s in SPECIALISTS if s != "api"]
    untouched = end_offsets(world.kafka, others)
    with SwitchboardClient(world.kafka, topic_prefix=world.topics.prefix) as client:
        for request_id in api_ids:
            client.expect(request_id)
        code, result = cli("dlq", "replay", "--specialist", "api", "--apply", "--json")
        assert code == 0, result
        assert result["sent"] == len(api_ids) and result["failed"] == []
        assert {r["request_id"] for r in result["records"]} == set(api_ids)
        statuses = {rid: client.result(rid, timeout=60).status for rid in api_ids}
    assert set(statuses.values()) == {"answered"}

    api_end = end_offsets(world.kafka, [world.topics.tasks("api")])
    code, again = cli("dlq", "replay", "--specialist", "api", "--apply", "--json")
    assert code == 0 and again["sent"] == 0
    assert again["skipped"] == {"already_replayed": len(api_ids)}
    assert end_offsets(world.kafka, [world.topics.tasks("api")]) == api_end
    assert end_offsets(world.kafka, others) == untouched

    responses = Counter(
        (key_of(m), status_of(m))
        for m in read_all(world.kafka, world.topics.responses)
        if key_of(m) in set(api_ids)
    )
    assert responses == Counter(
        {**{(rid, "failed"): 1 for rid in api_ids}, **{(rid, "answered"): 1 for rid in api_ids}}
    )
    ledger = {key_of(m) for m in read_all(world.kafka, world.topics.dlq_replays)}
    assert {r["pointer"] for r in result["records"]} <= ledger

    code, listing = cli("dlq", "list", "--json", "--specialist", "api")
    assert {r["replayed"] for r in listing["records"]} == {result["replay_id"]}


def test_a_replayed_record_that_fails_again_is_parked_not_dead_lettered(
    world: World, cli: Callable[..., tuple[int, Any]]
) -> None:
    """The data prompts carry FAULT:400, so their replay fails again: each lands in the parking
    lot (with the replay headers), its caller gets a `failed` response pointing there, and the
    DLQ gains nothing: a replay never loops. That holds for a request the router failed on too:
    replayed to the requests topic, routed, then failed by the data worker."""
    chosen = [*world.ids(specialist="data", error_class="permanent", stage="model")[:3], ROUTED]
    dlq_end = end_offsets(world.kafka, [world.topics.dlq])
    with SwitchboardClient(world.kafka, topic_prefix=world.topics.prefix) as client:
        for request_id in chosen:
            client.expect(request_id)
        args = [arg for rid in chosen for arg in ("--request-id", rid)]
        code, result = cli("dlq", "replay", *args, "--apply", "--json")
        assert code == 0 and result["sent"] == len(chosen)
        assert world.topics.requests in {r["origin_topic"] for r in result["records"]}
        failed = [client.result(rid, timeout=60) for rid in chosen]
    assert {r.status for r in failed} == {"failed"}
    assert {r.record["dlq"]["topic"] for r in failed} == {world.topics.parking_lot}
    assert end_offsets(world.kafka, [world.topics.dlq]) == dlq_end

    code, parked = cli("dlq", "list", "--parking-lot", "--json")
    assert code == 0 and sorted(r["request_id"] for r in parked["records"]) == sorted(chosen)
    codec = make_codec(None)
    for msg in read_all(world.kafka, world.topics.parking_lot):
        letter = codec.decode(DEAD_LETTER, msg.value(), world.topics.parking_lot)
        original = {x["key"]: x["value"] for x in letter["original_headers"]}
        assert original[h.REPLAY_ID].decode() == result["replay_id"]
        assert original[h.REPLAY_OF].decode().startswith(world.topics.dlq + "/")


def test_a_replay_of_a_request_answered_meanwhile_is_skipped_by_the_worker(
    world: World,
) -> None:
    """Belt and braces: were a replay of an answered request sent anyway (say, a replay run
    before the answer arrived), the worker skips it; only a `failed` response lets it through."""
    store = DeadLetterStore(world.kafka, world.topics, make_codec(None))
    settled_id = world.ids(specialist="backend")[0]
    (letter,) = [x for x in store.scan() if x.request_id == settled_id]
    worker = world.pipeline.pipeline.workers["backend"]
    skipped = worker.skipped
    producer = Producer(producer_config(world.kafka))
    out = letter.replay_record("replay-test")
    producer.produce(out.topic, out.value, out.key, headers=list(out.headers))
    assert producer.flush(10) == 0
    wait_for(lambda: worker.skipped == skipped + 1, 30.0, "the worker to skip the record")
    statuses = [
        status_of(m)
        for m in read_all(world.kafka, world.topics.responses)
        if key_of(m) == settled_id
    ]
    assert sorted(map(str, statuses)) == ["answered", "failed"]


def test_purge_acknowledges_and_list_and_replay_hide_acknowledged_records(
    world: World, cli: Callable[..., tuple[int, Any]]
) -> None:
    wanted = world.ids(specialist="perf", error_class="transient")
    code, dry = cli("dlq", "purge", "--specialist", "perf", "--error-class", "transient", "--json")
    assert code == 0 and dry["would_acknowledge"] == len(wanted)
    code, done = cli(
        "dlq",
        "purge",
        "--specialist",
        "perf",
        "--error-class",
        "transient",
        "--reason",
        "provider outage, answered by hand",
        "--apply",
        "--json",
    )
    assert code == 0 and done["acknowledged"] == len(wanted)
    acks = read_all(world.kafka, world.topics.dlq_acks)
    assert len({m.key() for m in acks}) >= len(wanted)

    code, listing = cli("dlq", "list", "--specialist", "perf", "--json")
    assert listing["hidden_acked"] == len(wanted)
    assert not set(wanted) & {r["request_id"] for r in listing["records"]}
    code, everything = cli("dlq", "list", "--specialist", "perf", "--include-acked", "--json")
    acked = {r["request_id"] for r in everything["records"] if r["acked"]}
    assert acked == set(wanted)
    code, plan = cli("dlq", "replay", "--specialist", "perf", "--json")
    assert plan["skipped"]["acknowledged"] == len(wanted)
    assert not set(wanted) & {r["request_id"] for r in plan["records"]}
    code, again = cli(
        "dlq", "purge", "--specialist", "perf", "--error-class", "transient", "--apply", "--json"
    )
    assert again["acknowledged"] == 0


def test_rate_limits_the_replay(world: World, cli: Callable[..., tuple[int, Any]]) -> None:
    """At --rate 20 (a bucket of 2), 11 records cannot go out in less than 9/20 s."""
    chosen = world.ids(specialist="security", tenant="acme")
    with SwitchboardClient(world.kafka, topic_prefix=world.topics.prefix) as client:
        for request_id in chosen:
            client.expect(request_id)
        began = time.monotonic()
        code, result = cli(
            "dlq",
            "replay",
            "--specialist",
            "security",
            "--tenant",
            "acme",
            "--rate",
            "20",
            "--limit",
            "11",
            "--apply",
            "--json",
        )
        assert time.monotonic() - began >= 0.45
        assert code == 0 and result["sent"] == 11
        assert result["elapsed_s"] >= 0.45
        assert result["skipped"]["over_limit"] == len(chosen) - 11
        # Answered before the test ends, so no other test sees their responses arrive.
        sent = [r["request_id"] for r in result["records"]]
        assert {client.result(rid, timeout=60).status for rid in sent} == {"answered"}


def test_bad_arguments_get_one_line_that_says_what_to_change(
    cli: Callable[..., tuple[int, Any]],
) -> None:
    code, text = cli("dlq", "replay", "--apply")
    assert code == 1 and "--all" in text and len(text.strip().splitlines()) == 1
    code, text = cli("dlq", "list", "--since", "1h", "--until", "2h")
    assert code == 1 and "swap them" in text
    code, text = cli("dlq", "show", "dlq/1/2")
    assert code == 1 and "--parking-lot" in text
    with pytest.raises(SystemExit):
        cli("dlq", "replay", "--error-class", "boom")
