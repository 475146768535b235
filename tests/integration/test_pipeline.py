"""The pipeline end to end on a real broker: client -> requests -> router -> tasks -> worker ->
responses -> client, with the offline rulebook and with the real SDK against the fake server."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import Producer

from consumers.app import Pipeline
from producers.client import SwitchboardClient
from switchboard.core.serde import DEAD_LETTER, make_codec
from switchboard.core.settings import SPECIALISTS, Settings
from switchboard.devtools.fake_anthropic import FakeAnthropic

from .harness import RunningPipeline, create_topics, running_pipeline, settings_for_test
from .helpers import read_topic, topic_end_total

pytestmark = pytest.mark.integration

SEED_BY_SPECIALIST = {
    "backend": "/backend design microservices handling 50K RPS with circuit breakers and bulkhead patterns",
    "api": "/api design a versioned REST API with idempotency keys and cursor pagination",
    "data": "/data build a CDC pipeline from PostgreSQL into a warehouse",
    "perf": "/perf profile and optimize Go service from 200ms to <50ms p99 latency",
    "security": "/security threat model OAuth2/OIDC login for a multi-tenant SaaS",
}


#: Workers per specialist in these tests' pipelines.
CONCURRENCY = 32


def _all(p: Pipeline) -> None:
    p.add_all(concurrency=CONCURRENCY)


def _model(fake: FakeAnthropic) -> dict[str, Any]:
    """Settings overrides that answer through ``fake`` with the real SDK."""
    return {"anthropic_api_key": "sk-test", "anthropic_base_url": fake.base_url}


@pytest.fixture
def offline(
    kafka_bootstrap: str, kafka_config: dict[str, str]
) -> Iterator[tuple[Settings, SwitchboardClient]]:
    settings = settings_for_test(kafka_bootstrap, tenants=frozenset({"acme", "default"}))
    create_topics(settings, kafka_config)
    with RunningPipeline(settings, kafka_config, _all):
        client = SwitchboardClient(kafka_config, topic_prefix=settings.topic_prefix, tenant="acme")
        try:
            yield settings, client
        finally:
            client.close()


def test_each_command_and_free_text_reach_the_right_specialist(
    offline: tuple[Settings, SwitchboardClient],
) -> None:
    """Each of the five commands and one free-text request come back answered by the right
    specialist, from the offline rulebook, which says what it is."""
    _settings, client = offline
    ids = {s: client.submit(text) for s, text in SEED_BY_SPECIALIST.items()}
    free = client.submit("How should we threat model our OAuth login against token theft and XSS?")
    for specialist, request_id in ids.items():
        response = client.result(request_id, timeout=60)
        assert response.status == "answered", response.content
        assert response.specialist == specialist
        assert response.backend == "offline"
        assert "offline" in response.content.lower()
        assert response.record["stage_latency_ms"]["total"] >= 0
    backend = client.result(ids["backend"], 1).content
    assert "50K" in backend or "50,000" in backend
    free_response = client.result(free, timeout=60)
    assert (free_response.status, free_response.specialist) == ("answered", "security")


def test_invalid_requests_are_rejected_with_a_reason(
    offline: tuple[Settings, SwitchboardClient],
) -> None:
    settings, client = offline
    cases = {
        "prompt_too_large": client.submit("/backend " + "x" * (settings.max_prompt_bytes + 1)),
        "unknown_specialist": client.submit("/frontend make the button blue"),
        "deadline_passed": client.submit("/api design pagination", deadline_s=0.001),
        "unknown_tenant": client.submit("/api design pagination", tenant="mallory"),
        "empty_prompt": client.submit("/perf   "),
    }
    for code, request_id in cases.items():
        response = client.result(request_id, timeout=60)
        assert response.status == "rejected", (code, response.content)
        assert response.record["error_code"] == code
        assert len(response.content) > 20  # a reason a person can act on
    assert "/backend" in client.result(cases["unknown_specialist"], 1).content


def test_undecodable_bytes_go_to_the_dlq_and_the_router_keeps_going(
    offline: tuple[Settings, SwitchboardClient], kafka_config: dict[str, str]
) -> None:
    settings, client = offline
    producer = Producer(kafka_config)
    garbage = [b"", b"\xc3\x01" + b"\x00" * 8 + b"junk", b'{"json": "not avro"}', bytes(range(256))]
    for value in garbage:
        producer.produce(f"{settings.topic_prefix}.requests", value, b"k")
    # The request id header survives a corrupt body: that caller still gets an answer.
    producer.produce(
        f"{settings.topic_prefix}.requests",
        b"\x00garbage",
        b"k2",
        headers=[("sb-request-id", b"corrupt-1"), ("sb-tenant", b"acme")],
    )
    assert producer.flush(10) == 0
    client.expect("corrupt-1")
    after = client.ask(SEED_BY_SPECIALIST["api"], timeout=60)
    assert after.status == "answered"

    failed = client.result("corrupt-1", timeout=30)
    assert (
        failed.status == "failed"
        and failed.record["dlq"]["topic"] == f"{settings.topic_prefix}.dlq"
    )
    codec = make_codec(None)
    dlq = read_topic(kafka_config, f"{settings.topic_prefix}.dlq", until=lambda m: len(m) >= 5)
    letters = [codec.decode(DEAD_LETTER, m.value(), m.topic()) for m in dlq]
    assert sorted(d["original_value"] for d in letters) == sorted([*garbage, b"\x00garbage"])
    assert {d["stage"] for d in letters} == {"route"}
    assert all(d["error_class"] == "permanent" and d["error_message"] for d in letters)
    headers = dict(dlq[0].headers())
    assert headers["__connect.errors.topic"] == f"{settings.topic_prefix}.requests".encode()


def test_a_request_submitted_twice_is_answered_once(
    offline: tuple[Settings, SwitchboardClient], kafka_config: dict[str, str]
) -> None:
    settings, client = offline
    first = client.submit(SEED_BY_SPECIALIST["data"], request_id="dup-1")
    second = client.submit(SEED_BY_SPECIALIST["data"], request_id="dup-1")
    assert first == second == "dup-1"
    assert client.result("dup-1", timeout=60).status == "answered"
    marker = client.ask(SEED_BY_SPECIALIST["data"], timeout=60)  # after the duplicate, surely
    assert marker.status == "answered"
    # The whole topic as it stands now, every partition to its end: stopping at the marker
    # alone could stop before dup-1's partition was fetched (they are different partitions).
    topic = f"{settings.topic_prefix}.responses"
    total = topic_end_total(kafka_config, topic)
    responses = read_topic(kafka_config, topic, until=lambda m: len(m) >= total)
    assert marker.request_id.encode() in [m.key() for m in responses]
    assert [m.key() for m in responses].count(b"dup-1") == 1


def test_claude_backend_through_the_real_sdk(
    kafka_bootstrap: str, kafka_config: dict[str, str]
) -> None:
    """With an API key the workers call Claude through the SDK (here the loopback fake): the
    response names the model and carries usage (with prompt-cache tokens) and cost."""
    with FakeAnthropic(latency_ms=20) as fake:
        with (
            running_pipeline(
                kafka_bootstrap, kafka_config, CONCURRENCY, **_model(fake)
            ) as settings,
            SwitchboardClient(kafka_config, topic_prefix=settings.topic_prefix) as client,
        ):
            ids = {s: client.submit(SEED_BY_SPECIALIST[s]) for s in SPECIALISTS}
            ids["free"] = client.submit(
                "What index should I add for a slow ORDER BY created_at query?"
            )
            results: dict[str, Any] = {k: client.result(v, timeout=60) for k, v in ids.items()}
            again = client.ask(SEED_BY_SPECIALIST["backend"] + " (second)", timeout=60)
        stats = fake.stats()
    for name, response in results.items():
        assert response.status == "answered", response.content
        if name != "free":
            assert response.specialist == name
        assert response.backend == settings.models[response.specialist]
        usage = response.record["usage"]
        assert usage["input_tokens"] > 0 and usage["output_tokens"] > 0
        assert response.record["cost_micro_usd"] > 0
    assert again.record["usage"]["cache_read_input_tokens"] > 0  # the persona was cached
    assert stats.total_calls == len(ids) + 1
    assert max(stats.billed_by_key.values()) == 1


def test_router_rejects_without_calling_the_model(
    kafka_bootstrap: str, kafka_config: dict[str, str]
) -> None:
    with FakeAnthropic() as fake:
        with (
            running_pipeline(
                kafka_bootstrap, kafka_config, CONCURRENCY, **_model(fake)
            ) as settings,
            SwitchboardClient(kafka_config, topic_prefix=settings.topic_prefix) as client,
        ):
            bad = [client.submit("/nope x"), client.submit("/api " + "y" * 40_000)]
            assert [client.result(r, 60).status for r in bad] == ["rejected", "rejected"]
            time.sleep(0.5)
        assert fake.stats().total_calls == 0


def test_model_triage_asks_the_cheap_model_and_falls_back_to_keywords(
    kafka_bootstrap: str, kafka_config: dict[str, str]
) -> None:
    """With triage=model, free text costs one call to the triage model (a Haiku); an answer
    that is not a specialist's name (the fake echoes the question) falls back to keywords."""
    with FakeAnthropic() as fake:
        settings = settings_for_test(
            kafka_bootstrap,
            fake=fake,
            triage="model",
        )
        create_topics(settings, kafka_config)
        with (
            RunningPipeline(settings, kafka_config, _all),
            SwitchboardClient(kafka_config, topic_prefix=settings.topic_prefix) as client,
        ):
            response = client.ask("How do we rotate signing keys for our OAuth tokens?", timeout=60)
        stats = fake.stats()
    assert response.status == "answered" and response.specialist == "security"
    assert stats.total_calls == 2  # one triage call, one specialist call
    assert sorted(stats.billed_by_key.values()) == [1, 1]


def test_async_client_many_in_flight_and_duplicate_responses_ignored(
    offline: tuple[Settings, SwitchboardClient], kafka_config: dict[str, str]
) -> None:
    """50 requests in flight from one AsyncSwitchboardClient all come back; a stray second
    response for an answered id is counted and ignored (the first one wins)."""
    import asyncio

    from producers.client import AsyncSwitchboardClient
    from switchboard.core.serde import RESPONSE

    settings, _client = offline

    async def main() -> tuple[list[Any], Any, int]:
        async with AsyncSwitchboardClient(
            kafka_config, topic_prefix=settings.topic_prefix, tenant="acme"
        ) as client:
            ids = [
                await client.submit(f"/perf tune the connection pool, case {i}") for i in range(50)
            ]
            answers = await asyncio.gather(*(client.result(i, timeout=60) for i in ids))
            codec = make_codec(None)
            fake = dict(answers[0].record, content="a duplicate that must be ignored")
            topic = f"{settings.topic_prefix}.responses"
            producer = Producer(kafka_config)
            producer.produce(topic, codec.encode(RESPONSE, fake, topic), ids[0].encode())
            assert producer.flush(10) == 0
            deadline = time.monotonic() + 15
            while client.duplicate_responses == 0 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            return answers, await client.result(ids[0], timeout=1), client.duplicate_responses

    answers, first, duplicates = asyncio.run(main())
    assert [a.status for a in answers] == ["answered"] * 50
    assert {a.specialist for a in answers} == {"perf"}
    assert duplicates == 1
    assert first.content == answers[0].content


def test_client_memory_is_bounded_by_keep_responses(
    offline: tuple[Settings, SwitchboardClient], kafka_config: dict[str, str]
) -> None:
    """A client keeping 5 responses holds 5 after 12 answers (the others are dropped, not
    kept forever); forget() drops one early; keep_responses=0 is refused."""
    settings, _client = offline
    with (
        SwitchboardClient(
            kafka_config, topic_prefix=settings.topic_prefix, tenant="acme", keep_responses=5
        ) as client,
        SwitchboardClient(kafka_config, topic_prefix=settings.topic_prefix) as watcher,
    ):
        ids = [uuid.uuid4().hex for _ in range(12)]
        for request_id in ids:
            watcher.expect(request_id)
        for i, request_id in enumerate(ids):
            client.submit(f"/data size the partitions for case {i}", request_id=request_id)
        # The watcher keeps everything: once it has all 12, they are on the topic; the barrier
        # makes sure the bounded client has read them too.
        assert {watcher.result(i, timeout=60).status for i in ids} == {"answered"}
        client._responses._tail.barrier().result(timeout=30)
        assert client.held_responses == 5
        held = []
        for request_id in ids:
            with contextlib.suppress(TimeoutError):
                held.append(client.result(request_id, timeout=0.01))
        assert len(held) == 5
        client.forget(held[0].request_id)
        assert client.held_responses == 4
        assert client.duplicate_responses == 0
    with pytest.raises(ValueError, match="keep_responses"):
        SwitchboardClient(kafka_config, topic_prefix=settings.topic_prefix, keep_responses=0)


@pytest.mark.parametrize("over_limit", ["reject", "delay"])
def test_tenant_rate_limit_rejects_with_a_retry_hint_or_delays(
    kafka_bootstrap: str, kafka_config: dict[str, str], over_limit: str
) -> None:
    """A tenant allowed 2 requests (burst 2, then 1/s) sends 6 at once: with "reject" the
    extra ones come back rejected with a retry hint; with "delay" all six are answered."""
    settings = settings_for_test(
        kafka_bootstrap, tenant_rate_per_s=1.0, tenant_burst=2, over_limit=over_limit
    )
    create_topics(settings, kafka_config)
    with (
        RunningPipeline(settings, kafka_config, _all),
        SwitchboardClient(
            kafka_config, topic_prefix=settings.topic_prefix, tenant="bursty"
        ) as client,
    ):
        ids = client.submit_many([{"text": f"/api design endpoint {i}"} for i in range(6)])
        results = [client.result(r, timeout=60) for r in ids]
    statuses = [r.status for r in results]
    if over_limit == "reject":
        assert statuses.count("answered") >= 2 and "rejected" in statuses
        rejected = next(r for r in results if r.status == "rejected")
        assert rejected.record["error_code"] == "rate_limited"
        assert "retry in" in rejected.content
    else:
        assert statuses == ["answered"] * 6
