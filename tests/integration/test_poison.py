"""Poison input on the requests topic, on a real broker: malformed records of every kind mixed
into valid requests never stop the pipeline. Each undecodable record lands in the DLQ exactly
once with its original bytes; each valid request gets its terminal answer."""

from __future__ import annotations

import random
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from confluent_kafka import Message, Producer

from consumers.app import Pipeline
from consumers.outcomes import DLQ_VALUE_PREFIX_BYTES
from producers.client import SwitchboardClient, build_request
from switchboard.core import headers as h
from switchboard.core.errors import DecodeError
from switchboard.core.serde import (
    DEAD_LETTER,
    REQUEST,
    RESPONSE,
    SINGLE_OBJECT_MARKER,
    SingleObjectCodec,
)

from .harness import RunningPipeline, create_topics, settings_for_test
from .helpers import read_topic

pytestmark = pytest.mark.integration

VALID = 500
#: Malformed records by kind, 2,000 in all.
MALFORMED = {
    "random_bytes": 500,
    "truncated_avro": 500,
    "unknown_fingerprint": 300,
    "wrong_contract": 300,
    "empty": 100,
    "tombstone": 100,
    "foreign_framing": 200,
}
#: The DecodeError code each kind may earn (a 1-byte truncation loses the marker itself).
CODES = {
    "random_bytes": {"bad_marker"},
    "truncated_avro": {"corrupt_body", "bad_marker"},
    "unknown_fingerprint": {"unknown_schema"},
    "wrong_contract": {"wrong_contract"},
    "empty": {"empty"},
    "tombstone": {"empty"},
    "foreign_framing": {"bad_marker"},
}
COMMANDS = ("/backend", "/api", "/data", "/perf", "/security")
QUESTIONS = (
    "size the connection pool",
    "design idempotent retries",
    "cut p99 latency",
    "model the threat of token theft",
    "plan a schema migration",
)
ONE_MB = 1024 * 1024
#: Undecodable and just under the broker's limit: it fits the requests topic, but not inside a
#: DLQ record (original bytes plus context), so it is dead-lettered as a prefix and a pointer.
NEAR_LIMIT_BYTES = 999_900

Headers = list[tuple[str, str | bytes | None]]


@dataclass(frozen=True)
class Poison:
    kind: str
    key: bytes | None
    value: bytes | None
    headers: Headers
    #: Set when the record carries a request id header: that caller gets a `failed` answer.
    request_id: str | None = None


def _valid_request(rng: random.Random, i: int) -> dict[str, object]:
    question = rng.choice(QUESTIONS)
    return build_request(
        f"{rng.choice(COMMANDS)} poison run {i}: {question}",
        request_id=f"valid-{i}-{uuid.uuid4().hex[:8]}",
    )


def _malformed(rng: random.Random, codec: SingleObjectCodec, topic: str) -> list[Poison]:
    """The poison, by kind; each checked undecodable here, so the generator cannot cheat."""
    known = {v.fingerprint for versions in codec.versions.values() for v in versions}

    def request_bytes() -> bytes:
        return codec.encode(REQUEST, _valid_request(rng, rng.randrange(10**6)), topic)

    def make(kind: str) -> bytes | None:
        if kind == "random_bytes":
            while True:
                data = rng.randbytes(rng.randint(1, 400))
                if data[:2] != SINGLE_OBJECT_MARKER:
                    return data
        if kind == "truncated_avro":
            data = request_bytes()
            return data[: rng.randrange(1, len(data))]
        if kind == "unknown_fingerprint":
            while (fingerprint := rng.randbytes(8)) in known:
                pass
            return SINGLE_OBJECT_MARKER + fingerprint + request_bytes()[10:]
        if kind == "wrong_contract":
            response = {
                "request_id": uuid.uuid4().hex,
                "tenant": "default",
                "specialist": "api",
                "status": "answered",
                "content": "an answer",
                "responded_at_ms": int(time.time() * 1000),
            }
            return codec.encode(RESPONSE, response, topic)
        if kind == "empty":
            return b""
        if kind == "tombstone":
            return None
        # Another producer's framing: Confluent Schema Registry (magic 0, schema id) or JSON.
        if rng.random() < 0.5:
            return b"\x00" + rng.randbytes(4) + request_bytes()[10:]
        return b'{"request_id": "%d", "text": "/api as json"}' % rng.randrange(10**6)

    poison = []
    for kind, count in MALFORMED.items():
        for _ in range(count):
            value = make(kind)
            with pytest.raises(DecodeError):
                codec.decode(REQUEST, value, topic)
            key = rng.choice([None, rng.randbytes(8), uuid.uuid4().hex.encode()])
            headers: Headers = []
            if rng.random() < 0.3:
                headers += [("x-junk", rng.randbytes(4)), ("x-null", None)]
            request_id = None
            if rng.random() < 0.1:  # the request id header survived a corrupt body
                request_id = f"poisoned-{uuid.uuid4().hex[:12]}"
                headers += [(h.REQUEST_ID, request_id.encode()), (h.TENANT, b"acme")]
                if rng.random() < 0.5:  # no topic can have this name: answer on the shared one
                    headers.append((h.REPLY_TO, b"no such topic!"))
            poison.append(Poison(kind, key, value, headers, request_id))
    return poison


def _responses(
    kafka: dict[str, str], topic: str, wanted: set[str], codec: SingleObjectCodec
) -> dict[str, dict[str, Any]]:
    """The responses on ``topic`` by request id, read until every id in ``wanted`` has one."""

    def request_ids(messages: list[Message]) -> set[str]:
        return {key.decode() for m in messages if (key := m.key())}

    messages = read_topic(kafka, topic, timeout_s=60, until=lambda ms: wanted <= request_ids(ms))
    return {
        key.decode(): codec.decode(RESPONSE, m.value(), topic) for m in messages if (key := m.key())
    }


def _dead_letters(
    kafka: dict[str, str], topic: str, count: int, codec: SingleObjectCodec
) -> list[tuple[Message, dict[str, Any]]]:
    """At least ``count`` records of the DLQ ``topic``, each with its decoded DeadLetter."""
    messages = read_topic(kafka, topic, timeout_s=30, until=lambda ms: len(ms) >= count)
    return [(m, codec.decode(DEAD_LETTER, m.value(), topic)) for m in messages]


@pytest.fixture
def pipeline(kafka_bootstrap: str, kafka_config: dict[str, str]) -> Iterator[RunningPipeline]:
    settings = settings_for_test(kafka_bootstrap)
    create_topics(settings, kafka_config)

    def everything(p: Pipeline) -> None:
        p.add_all(concurrency=64)

    with RunningPipeline(settings, kafka_config, everything) as running:
        yield running


def test_poison_never_stops_the_pipeline(
    pipeline: RunningPipeline, kafka_config: dict[str, str]
) -> None:
    """2,000 malformed records (random bytes, truncated Avro, unknown fingerprints, responses
    sent as requests, empty values and tombstones, other producers' framing; some with a
    request id header, some of those with an illegal reply topic) mixed at random into 500
    valid requests, one of them with a 1 MB prompt, plus one undecodable record just under the
    size limit. No consumer crashes, falls back to its generic error path or retries a
    delivery; every malformed record is in the DLQ once with its original bytes (the near-limit
    one as a 64 KiB prefix and a pointer to the full record), and those whose request id
    survived are answered `failed` with the DLQ pointer; every valid request is answered, and
    the 1 MB one, decodable, is rejected rather than dead-lettered."""
    settings = pipeline.pipeline.settings
    prefix = settings.topic_prefix
    requests_topic = f"{prefix}.requests"
    rng = random.Random(20_000)
    codec = SingleObjectCodec()
    poison = _malformed(rng, codec, requests_topic)
    valid = [_valid_request(rng, i) for i in range(VALID - 1)]
    oversized = build_request("/backend " + "x" * ONE_MB, request_id=f"huge-{uuid.uuid4().hex}")
    valid.append(oversized)
    near_limit = rng.randbytes(NEAR_LIMIT_BYTES)
    records: list[tuple[bytes | None, bytes | None, Headers]] = [
        (p.key, p.value, p.headers) for p in poison
    ]
    records.append((b"near-limit", near_limit, []))
    records += [
        (
            str(r["request_id"]).encode(),
            codec.encode(REQUEST, r, requests_topic),
            [(h.REQUEST_ID, str(r["request_id"]).encode())],
        )
        for r in valid
    ]
    rng.shuffle(records)

    began = time.monotonic()
    # lz4 keeps the 1 MB prompt (one repeated byte) far under the broker's batch limit.
    producer = Producer(
        {**kafka_config, "compression.type": "lz4", "linger.ms": 5, "message.max.bytes": 2 * ONE_MB}
    )
    for key, value, headers in records:
        producer.produce(requests_topic, value, key, headers=headers or None)
        producer.poll(0)
    assert producer.flush(30) == 0

    expected_ids = {str(r["request_id"]) for r in valid} | {
        p.request_id for p in poison if p.request_id
    }
    responses = _responses(kafka_config, f"{prefix}.responses", expected_ids, codec)
    decoded = _dead_letters(kafka_config, f"{prefix}.dlq", len(poison) + 1, codec)
    took_s = time.monotonic() - began

    # No crash, and nothing fell through to a generic error handler.
    assert pipeline.error is None
    for role, runtime in pipeline.pipeline.runtimes.items():
        assert (runtime.stats.handler_errors, runtime.stats.delivery_retries) == (0, 0), role
    with SwitchboardClient(kafka_config, topic_prefix=prefix) as client:
        assert client.ask("/api design cursor pagination", timeout=30).status == "answered"

    # Every valid request answered; the oversized one (decodable) rejected, never dead-lettered.
    assert expected_ids <= responses.keys()
    statuses = Counter(responses[str(r["request_id"])]["status"] for r in valid)
    assert statuses == Counter({"answered": VALID - 1, "rejected": 1})
    huge = responses[str(oversized["request_id"])]
    assert (huge["status"], huge["error_code"]) == ("rejected", "prompt_too_large")

    # Every malformed record in the DLQ exactly once, with its original bytes (a tombstone's
    # null value is stored as empty bytes), and why it could not be read.
    ((big_msg, big),) = [(m, d) for m, d in decoded if m.key() == b"near-limit"]
    assert h.header_value(big_msg.headers(), h.DLQ_TRUNCATED) == str(len(near_limit))
    decoded = [(m, d) for m, d in decoded if m.key() != b"near-limit"]
    assert big["original_value"] == near_limit[:DLQ_VALUE_PREFIX_BYTES]
    where = f"{requests_topic}/{big['origin_partition']}/{big['origin_offset']}"
    assert (
        big["error_message"].startswith("[original record truncated")
        and where in big["error_message"]
    )
    assert Counter(d["original_value"] for _m, d in decoded) == Counter(
        p.value or b"" for p in poison
    )
    kind_of = {p.value or b"": p.kind for p in poison}
    for _m, letter in decoded:
        assert (letter["stage"], letter["error_class"]) == ("route", "permanent")
        assert letter["error_code"] in CODES[kind_of[letter["original_value"]]], letter
        assert letter["origin_topic"] == requests_topic
    by_place = {(m.partition(), m.offset()): d for m, d in decoded}
    for p in poison:
        if p.request_id is None:
            continue
        failed = responses[p.request_id]
        assert failed["status"] == "failed"
        letter = by_place[(failed["dlq"]["partition"], failed["dlq"]["offset"])]
        assert (letter["original_value"], letter["request_id"]) == (p.value or b"", p.request_id)
    print(f"\npoison: {len(poison)} malformed + {VALID} valid handled in {took_s:.1f}s")


def test_poison_on_a_retry_tier_is_dead_lettered_by_the_relay(
    pipeline: RunningPipeline, kafka_config: dict[str, str]
) -> None:
    """Records on a retry tier that the relay must not send back: no origin header, or an
    origin that is not the pipeline's requests or tasks topic (the DLQ itself, the retry tier,
    another pipeline's topic, an illegal name). Each goes to the DLQ with its bytes from stage
    `relay` and its caller is answered `failed`; a genuine retry whose due time is mangled is
    sent back at once and answered."""
    prefix = pipeline.pipeline.settings.topic_prefix
    tier = f"{prefix}.retry.1s"
    codec = SingleObjectCodec()
    origins: dict[str, bytes | None] = {
        "none": None,
        "dlq": f"{prefix}.dlq".encode(),
        "tier": tier.encode(),
        "foreign": b"another-pipeline.tasks.backend",
        "illegal": b"no such topic!",
    }
    run = uuid.uuid4().hex[:8]
    producer = Producer(kafka_config)
    for name, origin in origins.items():
        headers: Headers = [(h.REQUEST_ID, f"relay-{name}-{run}".encode())]
        if origin is not None:
            headers.append((h.RETRY_ORIGIN_TOPIC, origin))
        producer.produce(tier, f"poison via {name}".encode(), b"k", headers=headers)
    task = build_request("/backend size the pool", request_id=f"relay-ok-{run}")
    task.update(specialist="backend", prompt="size the pool", attempt=1)
    producer.produce(
        tier,
        codec.encode(REQUEST, task, tier),
        b"ok",
        headers=[
            (h.REQUEST_ID, str(task["request_id"]).encode()),
            (h.RETRY_ORIGIN_TOPIC, f"{prefix}.tasks.backend".encode()),
            (h.RETRY_DUE_MS, b"soon"),
        ],
    )
    assert producer.flush(10) == 0

    wanted = {f"relay-{name}-{run}" for name in origins} | {str(task["request_id"])}
    responses = _responses(kafka_config, f"{prefix}.responses", wanted, codec)
    letters = [d for _m, d in _dead_letters(kafka_config, f"{prefix}.dlq", len(origins), codec)]
    assert responses[str(task["request_id"])]["status"] == "answered"
    for name in origins:
        assert responses[f"relay-{name}-{run}"]["status"] == "failed", name
    assert sorted(d["original_value"] for d in letters) == sorted(
        f"poison via {name}".encode() for name in origins
    )
    assert {(d["stage"], d["origin_topic"], d["error_class"]) for d in letters} == {
        ("relay", tier, "permanent")
    }
    assert pipeline.error is None
