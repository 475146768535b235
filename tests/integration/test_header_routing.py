"""Header routing on a real broker: requests the client writes (routing headers, routed from
them alone, original bytes forwarded) and records without the headers (decoded by the router)
each end in exactly one terminal response; a bad body routed by its headers is refused by the
worker (a `rejected` with the router's reason, or the DLQ with the original bytes), never
answered by the model; a forged routing header on a signed tenant's request is refused."""

from __future__ import annotations

import uuid
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka import Message, Producer

from consumers.app import Pipeline
from producers.client import SwitchboardClient, build_request
from switchboard.core import headers as h
from switchboard.core.routing import routing_headers, signed_routing
from switchboard.core.serde import DEAD_LETTER, REQUEST, RESPONSE, SingleObjectCodec
from switchboard.core.tenants import sign
from switchboard.core.topics import Topics

from .harness import RunningPipeline, create_topics, settings_for_test
from .helpers import read_topic

pytestmark = pytest.mark.integration

SECRET = "0123456789abcdef-acme-k1"
CODEC = SingleObjectCodec()


def _tenants_file(tmp_path: Path) -> Path:
    path = tmp_path / "tenants.yaml"
    path.write_text(
        f"""
unknown_tenants: allow
tenants:
  acme:
    specialists: [backend]
    require_signature: true
    signing_keys: {{k1: "{SECRET}"}}
"""
    )
    return path


def _by_id(messages: list[Message]) -> dict[str, list[dict[str, object]]]:
    out: dict[str, list[dict[str, object]]] = {}
    for msg in messages:
        body = CODEC.decode(RESPONSE, msg.value(), "")
        out.setdefault(str(body["request_id"]), []).append(body)
    return out


def test_header_routed_and_plain_records_each_get_one_terminal_response(
    kafka_bootstrap: str, kafka_config: dict[str, str], tmp_path: Path
) -> None:
    settings = settings_for_test(kafka_bootstrap, tenants_file=_tenants_file(tmp_path))
    topics: Topics = create_topics(settings, kafka_config)
    raw = Producer({**kafka_config, "linger.ms": 5})

    def send(record: dict[str, object], value: bytes, headers: list[tuple[str, bytes]]) -> None:
        raw.produce(
            topics.requests, value, str(record["request_id"]).encode(), headers=list(headers)
        )

    expected: dict[str, str] = {}  # request id -> status (error code for refusals)
    # 1. Through the client: routing headers, the header path (and its free text: decoded).
    client = SwitchboardClient(kafka_config, topic_prefix=settings.topic_prefix, tenant="open")
    # 2. Plain records as another producer writes them: the request id header only.
    plain = [build_request(f"/{s} size the pool", tenant="open") for s in ("api", "data")]
    # 3. Bad bodies with honest routing headers: refused by the worker, never by the model.
    control = build_request("/backend size\x07 the pool", tenant="open")
    mismatch = build_request("/perf size the pool", tenant="open")
    garbage = build_request("/backend size the pool", tenant="open")
    # 4. A signed tenant that may ask backend only: a /security request with its specialist
    # header rewritten to backend (signed honestly before the rewrite).
    sneaky = build_request("/security audit the login", tenant="acme")
    with RunningPipeline(settings, kafka_config, _stages):
        # Until the router's answered index is in sync it decodes every record: one answer
        # first, so what follows meets the header path.
        assert client.ask("/backend warm up", timeout=60).answered
        ids = [client.submit(f"/{s} size the pool") for s in ("backend", "api", "perf")]
        ids.append(client.submit("how do I make my postgres queries faster"))
        expected.update(dict.fromkeys(ids, "answered"))
        for record in plain:
            value = CODEC.encode(REQUEST, record, topics.requests)
            send(record, value, [(h.REQUEST_ID, str(record["request_id"]).encode())])
            expected[str(record["request_id"])] = "answered"
        send(control, CODEC.encode(REQUEST, control, ""), routing_headers(control))
        expected[str(control["request_id"])] = "control_characters"
        forged = [(k, b"backend" if k == h.SPECIALIST else v) for k, v in routing_headers(mismatch)]
        send(mismatch, CODEC.encode(REQUEST, mismatch, ""), forged)
        expected[str(mismatch["request_id"])] = "routing_mismatch"
        garbage_value = CODEC.encode(REQUEST, garbage, "")[:12] + b"\xff\x00 not avro"
        send(garbage, garbage_value, routing_headers(garbage))
        expected[str(garbage["request_id"])] = "failed"
        sneaky_value = CODEC.encode(REQUEST, sneaky, "")
        honest = routing_headers(sneaky)
        signature = sign(
            sneaky_value,
            str(sneaky["request_id"]),
            "acme",
            "k1",
            SECRET.encode(),
            signed_routing(honest),
        )
        rewritten = [(k, b"backend" if k == h.SPECIALIST else v) for k, v in honest]
        send(
            sneaky,
            sneaky_value,
            [*rewritten, (h.KEY_ID, b"k1"), (h.SIGNATURE, signature.encode())],
        )
        expected[str(sneaky["request_id"])] = "bad_signature"
        assert raw.flush(30) == 0
        responses = _by_id(
            read_topic(
                kafka_config,
                topics.responses,
                until=lambda ms: expected.keys() <= _by_id(ms).keys(),
            )
        )
        dead = read_topic(kafka_config, topics.dlq, until=lambda ms: len(ms) >= 1)
        tasks = read_topic(
            kafka_config, topics.tasks("backend"), until=lambda ms: len(ms) >= 5, timeout_s=10
        )
        # A moment for any second response to show up before counting.
        again = _by_id(
            read_topic(kafka_config, topics.responses, until=lambda _ms: False, timeout_s=2)
        )
    client.close()
    assert set(expected) <= set(responses)
    assert Counter(len(again[i]) for i in expected) == {1: len(expected)}
    outcome = {
        i: str(r[0]["error_code"] if r[0]["status"] == "rejected" else r[0]["status"])
        for i, r in again.items()
        if i in expected
    }
    assert outcome == expected, {i: again[i] for i in expected if outcome.get(i) != expected[i]}
    # The forged request never reached a task topic; the bad bodies did (header path), with
    # their original bytes, and the worker refused them.
    routed = {(m.key() or b"").decode(): m for m in tasks}
    assert str(sneaky["request_id"]) not in routed
    assert routed[str(garbage["request_id"])].value() == garbage_value
    assert h.header_value(routed[str(control["request_id"])].headers(), h.ROUTED)
    # The undecodable body is dead-lettered by the worker with its original bytes.
    [letter] = [CODEC.decode(DEAD_LETTER, m.value(), "") for m in dead]
    assert letter["original_value"] == garbage_value and letter["stage"] == "model"
    # Header-routed answers were not decoded by the router: their tasks carry sb-routed.
    answered_task = routed[ids[0]]
    assert h.header_value(answered_task.headers(), h.ROUTED) is not None


def _stages(p: Pipeline) -> None:
    p.add_all(concurrency=8)


def test_forged_routing_headers_reach_no_specialist_and_no_model(
    kafka_bootstrap: str, kafka_config: dict[str, str], tmp_path: Path
) -> None:
    """A signed tenant that may ask backend only. Its client's own /backend request is routed
    from its headers and answered. Two forgeries on the requests topic: an honest /backend
    record whose signature was made with a guessed secret is refused `bad_signature` by the
    router and routed nowhere; a /security body under a backend specialist header, signed with
    the tenant's real key (a key holder lying in its headers), passes the router's fences on
    the headers, and the worker refuses it `routing_mismatch` before any model call. Nothing
    reaches the security task topic; each request has exactly one response."""
    settings = settings_for_test(kafka_bootstrap, tenants_file=_tenants_file(tmp_path))
    topics = create_topics(settings, kafka_config)
    client = SwitchboardClient(
        kafka_config,
        topic_prefix=settings.topic_prefix,
        tenant="acme",
        signing_key=("k1", SECRET),
    )
    raw = Producer({**kafka_config, "linger.ms": 5})

    def send_signed(
        record: dict[str, object], headers: list[tuple[str, bytes]], secret: str
    ) -> None:
        value = CODEC.encode(REQUEST, record, "")
        signature = sign(
            value, str(record["request_id"]), "acme", "k1", secret.encode(), signed_routing(headers)
        )
        signed: list[tuple[str, str | bytes | None]] = [
            *headers,
            (h.KEY_ID, b"k1"),
            (h.SIGNATURE, signature.encode()),
        ]
        raw.produce(topics.requests, value, str(record["request_id"]).encode(), headers=signed)

    guessed = build_request("/backend size the pool", tenant="acme")
    lying = build_request(f"/security audit {uuid.uuid4().hex}", tenant="acme")
    lying_headers = [(k, b"backend" if k == h.SPECIALIST else v) for k, v in routing_headers(lying)]
    assert (h.SPECIALIST, b"backend") in lying_headers  # the forged routing fact
    try:
        with RunningPipeline(settings, kafka_config, _stages) as running:
            # Answered first: the router's index is in sync, so what follows meets the header
            # path.
            allowed = client.ask("/backend size the pool", timeout=60)
            worker = running.pipeline.workers["backend"]
            calls = worker.model_calls
            send_signed(guessed, routing_headers(guessed), "0123456789abcdef-guess")
            send_signed(lying, lying_headers, SECRET)
            assert raw.flush(30) == 0
            forged = {str(guessed["request_id"]), str(lying["request_id"])}
            read_topic(
                kafka_config,
                topics.responses,
                until=lambda ms: forged <= _by_id(ms).keys(),
            )
            # A moment for any second response to show up before counting.
            responses = _by_id(
                read_topic(kafka_config, topics.responses, until=lambda _ms: False, timeout_s=2)
            )
            backend = read_topic(
                kafka_config, topics.tasks("backend"), until=lambda ms: len(ms) >= 2
            )
            security = read_topic(
                kafka_config, topics.tasks("security"), until=lambda _ms: False, timeout_s=1
            )
            assert worker.model_calls == calls  # neither forgery reached the backend
    finally:
        client.close()
    assert allowed.status == "answered" and allowed.specialist == "backend"
    outcome = {rid: [(str(r["status"]), r["error_code"]) for r in responses[rid]] for rid in forged}
    assert outcome == {
        str(guessed["request_id"]): [("rejected", "bad_signature")],
        str(lying["request_id"]): [("rejected", "routing_mismatch")],
    }
    routed = {(m.key() or b"").decode(): m for m in backend}
    assert str(guessed["request_id"]) not in routed and security == []
    # The lie was routed from its (signed) headers, its bytes as sent: the worker refused it.
    assert h.header_value(routed[str(lying["request_id"])].headers(), h.ROUTED) is not None
