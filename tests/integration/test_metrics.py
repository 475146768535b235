"""Metrics that move: a real pipeline (router, relay, five workers calling the real SDK against
the loopback fake) serves /metrics, /healthz and /readyz over HTTP, and the counts scraped
during the run are exactly the ones this test caused."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Callable

import pytest
from confluent_kafka import Producer
from prometheus_client.parser import text_string_to_metric_families

from consumers.app import Pipeline
from producers.client import SwitchboardClient
from switchboard.core.ops_http import OpsServer
from switchboard.core.settings import SPECIALISTS
from switchboard.core.topics import GroupRole
from switchboard.devtools.fake_anthropic import FakeAnthropic
from tests.support import get_json

from .harness import RunningPipeline, create_topics, settings_for_test

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> Samples:
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum of ``name``'s samples whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def until(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _all(p: Pipeline) -> None:
    p.add_all(concurrency=16)


def test_scraped_metrics_count_what_the_run_sent(
    kafka_bootstrap: str, kafka_config: dict[str, str]
) -> None:
    """10 answered requests (two per specialist, through the real SDK), 3 rejected ones and 4
    undecodable records (one with a request id header, so it also gets a ``failed`` answer):
    /metrics shows 17 records at the router, 10 at the workers, responses by status, 4 dead
    letters of class permanent, 10 e2e observations, and the tokens and cost the responses
    report; /healthz and /readyz answer 200 while it runs."""
    with FakeAnthropic(latency_ms=10) as fake:
        settings = settings_for_test(
            kafka_bootstrap,
            fake=fake,
            lag_interval_s=0.5,
        )
        topics = create_topics(settings, kafka_config)
        running = RunningPipeline(settings, kafka_config, _all)
        server = OpsServer(
            0, health=running.pipeline.health.health, ready=running.pipeline.health.readiness
        ).start()
        try:
            before = scrape(server.url)
            with running, SwitchboardClient(kafka_config, topic_prefix=topics.prefix) as client:
                until(lambda: get_json(f"{server.url}/readyz")[0] == 200, 60, "/readyz 200")
                answered = [
                    client.submit(f"/{s} design request {i} for the metrics test")
                    for s in SPECIALISTS
                    for i in range(2)
                ]
                rejected = [
                    client.submit("/frontend make the button blue"),
                    client.submit("/nope x"),
                    client.submit("/api " + "y" * (settings.max_prompt_bytes + 1)),
                ]
                producer = Producer(kafka_config)
                for value in (b"", b'{"json": "not avro"}', bytes(range(64))):
                    producer.produce(topics.requests, value, b"k")
                producer.produce(
                    topics.requests,
                    b"\x00garbage",
                    b"k2",
                    headers=[("sb-request-id", b"corrupt-metrics"), ("sb-tenant", b"acme")],
                )
                assert producer.flush(10) == 0
                client.expect("corrupt-metrics")
                responses = [client.result(r, timeout=60) for r in answered + rejected]
                assert client.result("corrupt-metrics", timeout=60).status == "failed"
                router_group = topics.group(GroupRole.ROUTER)

                def router_done() -> bool:
                    seen = scrape(server.url)
                    return total(seen, "switchboard_records_total", group=router_group) >= 17

                until(router_done, 30, "the router to finish 17 records")
                health = get_json(f"{server.url}/healthz")
                ready = get_json(f"{server.url}/readyz")
                during = scrape(server.url)
        finally:
            server.stop()

    def delta(name: str, **labels: str) -> float:
        return total(during, name, **labels) - total(before, name, **labels)

    assert [r.status for r in responses] == ["answered"] * 10 + ["rejected"] * 3
    assert delta("switchboard_records_total", group=router_group) == 17
    worker_records = sum(
        delta("switchboard_records_total", group=f"{topics.prefix}.worker.{s}") for s in SPECIALISTS
    )
    assert worker_records == 10
    assert delta("switchboard_responses_total", stage="model", status="answered") == 10
    assert delta("switchboard_responses_total", stage="route", status="rejected") == 3
    assert delta("switchboard_responses_total", stage="route", status="failed") == 1
    assert delta("switchboard_dead_letters_total", stage="route", error_class="permanent") == 4
    assert delta("switchboard_failure_decisions_total", stage="route", decision="dead") == 4
    assert delta("switchboard_e2e_duration_seconds_count") == 10
    for s in SPECIALISTS:
        assert delta("switchboard_model_calls_total", specialist=s, outcome="answered") == 2
    usage: dict[str, int] = defaultdict(int)
    cost_micro = 0
    for r in responses[:10]:
        for key, n in r.record["usage"].items():
            usage[key] += n
        cost_micro += r.record["cost_micro_usd"]
    assert usage["input_tokens"] > 0 and usage["output_tokens"] > 0
    assert delta("switchboard_model_tokens_total", type="input") == usage["input_tokens"]
    assert delta("switchboard_model_tokens_total", type="output") == usage["output_tokens"]
    assert (
        delta("switchboard_model_tokens_total", type="cache_read")
        == (usage["cache_read_input_tokens"])
    )
    assert delta("switchboard_model_cost_usd_total") == pytest.approx(cost_micro / 1e6)
    assert delta("gen_ai_client_operation_duration_seconds_count") == 10
    # Lag is exported per partition this process holds, and is 0 once all is committed.
    lag = {
        ls: v
        for (n, ls), v in during.items()
        if n == "switchboard_consumer_lag_records" and ("group", router_group) in ls
    }
    assert len(lag) == settings.partitions
    assert health[0] == 200 and health[1]["ok"] is True
    assert ready[0] == 200 and ready[1]["failing"] == [], ready
    assert set(ready[1]["checks"]) == {
        "assigned",
        "broker",
        "index_synced",
        "breakers",
        "heartbeat",
    }


def test_retries_and_rate_limits_are_counted_by_tier_class_and_code(
    kafka_bootstrap: str, kafka_config: dict[str, str]
) -> None:
    """Two backend requests meet one HTTP 429 each (retry-after 200 ms): /metrics shows two
    rate-limited model errors, two retries to the 1 s tier of class transient, two records
    through the relay, then two answered calls; the breaker gauge reads closed."""
    with FakeAnthropic(latency_ms=10, faults=["429:retry-after-ms=200:count=2"]) as fake:
        settings = settings_for_test(kafka_bootstrap, fake=fake)
        topics = create_topics(settings, kafka_config)
        running = RunningPipeline(settings, kafka_config, _all)
        server = OpsServer(0).start()
        try:
            before = scrape(server.url)
            with running, SwitchboardClient(kafka_config, topic_prefix=topics.prefix) as client:
                ids = [client.submit(f"/backend size the pool ({i}) after a 429") for i in range(2)]
                responses = [client.result(r, timeout=60) for r in ids]
                after = scrape(server.url)
        finally:
            server.stop()

    def delta(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    assert [(r.status, r.record["attempts"]) for r in responses] == [("answered", 2)] * 2
    model = settings.models["backend"]
    assert delta("switchboard_model_errors_total", specialist="backend", code="rate_limited") == 2
    assert delta("switchboard_model_calls_total", specialist="backend", outcome="error") == 2
    assert delta("switchboard_model_calls_total", specialist="backend", outcome="answered") == 2
    assert (
        delta("switchboard_retries_total", stage="model", tier="1s", error_class="transient") == 2
    )
    assert delta("switchboard_failure_decisions_total", stage="model", decision="retry") == 2
    assert delta("switchboard_records_total", group=topics.group(GroupRole.RELAY)) == 2
    assert delta("switchboard_dead_letters_total") == 0
    assert total(after, "switchboard_breaker_state", breaker=f"backend:{model}") == 0
