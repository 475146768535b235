"""Tenant limits across the router group, on a real broker: two routers share one tenant's
request rate (a share per requests-topic partition) instead of allowing twice it, and a budget
spent on the response topic is known to a router that never saw the answer (zero model calls
after it: the fake model server's own count, with the real SDK)."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

import consumers.app
from consumers.app import Pipeline
from producers.client import SwitchboardClient
from switchboard.core.serde import RESPONSE, make_codec
from switchboard.devtools.fake_anthropic import FakeAnthropic

from .harness import RunningPipeline, create_topics, settings_for_test
from .helpers import read_topic

pytestmark = pytest.mark.integration

RATE = 50.0
BURST = 50  # one second's worth: 9 per partition of 6
OFFERED_PER_S = 3 * RATE
SECONDS = 6.0


def _wait_split(a: RunningPipeline, b: RunningPipeline, partitions: int) -> None:
    """Until the two routers hold every partition between them, each some."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        held = [len(p.pipeline.runtimes["router"].assignment) for p in (a, b)]
        if sum(held) == partitions and min(held) > 0:
            return
        time.sleep(0.1)
    raise AssertionError(f"the routers never split the partitions: {held}")


def test_the_router_reads_the_requests_partition_count_with_the_index_topics_once(
    kafka_bootstrap: str, kafka_config: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rate's per-partition shares use the count the answered index read with its other
    topics at start-up: the router asks for it again only on a later assignment (partitions
    may have been added), not at start-up nor at its first assignment."""
    settings = settings_for_test(kafka_bootstrap, partitions=4)
    create_topics(settings, kafka_config)
    asked: list[str] = []
    real = consumers.app.partition_count

    def counted(config: dict[str, str], topic: str, fallback: int = 1) -> int:
        asked.append(topic)
        return real(config, topic, fallback)

    monkeypatch.setattr(consumers.app, "partition_count", counted)
    with RunningPipeline(settings, kafka_config, Pipeline.add_router) as running:
        runtime, router = running.pipeline.runtimes["router"], running.pipeline.router
        deadline = time.monotonic() + 60
        while len(runtime.assignment) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(runtime.assignment) == 4
        assert router is not None and router.partitions == 4 and asked == []
        with RunningPipeline(settings, kafka_config, Pipeline.add_router) as joined:
            _wait_split(running, joined, 4)
            deadline = time.monotonic() + 30
            while not asked and time.monotonic() < deadline:
                time.sleep(0.05)
    assert asked and set(asked) == {running.pipeline.topics.requests} and router.partitions == 4


def test_two_routers_enforce_one_tenants_rate_not_twice_it(
    kafka_bootstrap: str, kafka_config: dict[str, str], tmp_path: Path
) -> None:
    """Two router group members on a 6-partition requests topic, one tenant at 50/s (burst
    50): a client offering 150/s for 6 s gets (routed - burst) / time within 10% of 50/s,
    not ~100/s; every other request is `rejected` rate_limited."""
    tenants = tmp_path / "tenants.yaml"
    tenants.write_text(f"tenants:\n  acme:\n    rate_per_s: {RATE}\n    burst: {BURST}\n")
    settings = settings_for_test(kafka_bootstrap, partitions=6, tenants_file=tenants)
    topics = create_topics(settings, kafka_config)

    def router_and_worker(p: Pipeline) -> None:
        p.add_router()
        p.add_worker("backend")  # offline: every routed request is answered, and counted

    with (
        RunningPipeline(settings, kafka_config, router_and_worker) as a,
        RunningPipeline(settings, kafka_config, Pipeline.add_router) as b,
        SwitchboardClient(kafka_config, topic_prefix=settings.topic_prefix, tenant="acme") as c,
    ):
        _wait_split(a, b, 6)
        began = time.monotonic()
        sent = 0
        while (elapsed := time.monotonic() - began) < SECONDS:
            while sent < elapsed * OFFERED_PER_S:
                c.submit(f"/backend size pool {uuid.uuid4().hex[:6]}")
                sent += 1
            time.sleep(0.005)
        duration = time.monotonic() - began
        responses = read_topic(kafka_config, topics.responses, until=lambda got: len(got) >= sent)
    codec = make_codec(None)
    bodies = [codec.decode(RESPONSE, m.value(), topics.responses) for m in responses]
    answered = sum(body["status"] == "answered" for body in bodies)
    rejected = [body["error_code"] for body in bodies if body["status"] != "answered"]
    assert len(bodies) == sent and set(rejected) == {"rate_limited"}
    rate = (answered - BURST) / duration
    print(
        f"offered {sent / duration:.0f}/s for {duration:.1f}s: {answered} answered ({rate:.1f}/s)"
    )
    assert abs(rate - RATE) <= 0.1 * RATE, rate


def test_a_spent_budget_is_known_from_the_response_topic_with_no_model_call(
    kafka_bootstrap: str, kafka_config: dict[str, str], tmp_path: Path
) -> None:
    """A tenant with 10 tokens a day: its first request is answered by the model (real usage,
    over the budget); a fresh router that never saw that answer reads the spend off the
    response topic and rejects the next three `over_budget`, naming the reset time, with no
    further model call."""
    tenants = tmp_path / "tenants.yaml"
    tenants.write_text("tenants:\n  tiny:\n    tokens_per_day: 10\n")
    with FakeAnthropic() as fake:
        settings = settings_for_test(
            kafka_bootstrap,
            fake=fake,
            tenants_file=tenants,
        )
        create_topics(settings, kafka_config)

        def first(p: Pipeline) -> None:
            p.add_router()
            p.add_worker("backend")

        def second(p: Pipeline) -> None:
            p.add_router()
            p.add_worker("backend")

        kw = {"topic_prefix": settings.topic_prefix, "tenant": "tiny"}
        with (
            RunningPipeline(settings, kafka_config, first),
            SwitchboardClient(kafka_config, **kw) as c,
        ):
            answer = c.ask("/backend size the connection pool", timeout=60)
            assert answer.status == "answered" and answer.backend != "offline"
            usage = answer.record["usage"]
            assert usage and usage["input_tokens"] + usage["output_tokens"] > 10
        assert fake.stats().total_calls == 1
        with (
            RunningPipeline(settings, kafka_config, second),
            SwitchboardClient(kafka_config, **kw) as c,
        ):
            ids = [c.submit(f"/backend size pool {i}") for i in range(3)]
            refused = [c.result(i, 60) for i in ids]
        for response in refused:
            assert (response.status, response.record["error_code"]) == ("rejected", "over_budget")
            assert "of 10 tokens used today" in response.content and "resets at" in response.content
        time.sleep(0.3)  # nothing is in flight; a stray call (a bug) would show up
        assert fake.stats().total_calls == 1
