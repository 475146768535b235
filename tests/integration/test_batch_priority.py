"""Batch priority on a real broker, with the real SDK against the fake model server: a worker
with a small cap and a slow model, a burst of batch (review) records queued first, then
interactive requests: the interactive ones are answered before most of the batch, and every
batch record is still answered exactly once."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from consumers.app import Pipeline
from producers.client import SwitchboardClient
from switchboard.core.serde import RESPONSE, make_codec
from switchboard.devtools.fake_anthropic import FakeAnthropic

from .harness import RunningPipeline, create_topics, settings_for_test
from .helpers import read_topic

pytestmark = pytest.mark.integration

#: A cap of 8 with a 25% batch share: 2 batch calls at once, 6 slots always left interactive.
CAP = 8
BATCH_SHARE = 0.25
MODEL_MS = 200
BATCH = 40
INTERACTIVE = 10


def _router_and_backend(p: Pipeline) -> None:
    p.add_router()
    p.add_worker("backend", CAP)


def test_interactive_requests_after_a_batch_burst_are_answered_before_most_of_it(
    kafka_bootstrap: str, kafka_config: dict[str, str]
) -> None:
    """40 batch records (4 s of model calls at 2 in flight) queued, then 10 interactive ones: all 10 are answered while at most half the burst is; the burst is answered whole,
    once per record, and never more than 2 batch calls ran at once."""
    with FakeAnthropic(latency_ms=MODEL_MS) as fake:
        settings = settings_for_test(
            kafka_bootstrap,
            fake=fake,
            batch_share=BATCH_SHARE,
        )
        topics = create_topics(settings, kafka_config)
        with (
            RunningPipeline(settings, kafka_config, _router_and_backend) as running,
            SwitchboardClient(kafka_config, topic_prefix=settings.topic_prefix) as client,
        ):
            batch_ids = client.submit_many(
                [
                    {"text": f"/backend review design doc {i}", "priority": "BATCH"}
                    for i in range(BATCH)
                ]
            )
            # The burst is routed and the worker has started on it before interactive work.
            deadline = time.monotonic() + 60
            while fake.stats().total_calls < 2:
                assert time.monotonic() < deadline, "the batch burst never reached the model"
                time.sleep(0.02)
            sent = time.monotonic()
            interactive_ids = [
                client.submit(f"/backend interactive question {i}") for i in range(INTERACTIVE)
            ]
            for rid in interactive_ids:
                assert client.result(rid, 60).status == "answered"
            interactive_s = time.monotonic() - sent
            for rid in batch_ids:
                assert client.result(rid, 120).status == "answered"
            stats = running.pipeline.runtimes["worker.backend"].stats
        codec = make_codec(None)
        records = read_topic(
            kafka_config,
            topics.responses,
            until=lambda got: len(got) >= BATCH + INTERACTIVE,
            timeout_s=30,
        )
    records.sort(key=lambda m: m.timestamp()[1])  # when each answer was written
    order = [
        codec.decode(RESPONSE, m.value() or b"", topics.responses)["request_id"] for m in records
    ]
    counts = Counter(order)
    assert all(counts[r] == 1 for r in [*batch_ids, *interactive_ids]), counts
    last_interactive = max(order.index(r) for r in interactive_ids)
    batch_before = sum(1 for r in order[:last_interactive] if r in set(batch_ids))
    # Without priority the cap would be full of batch calls in read order: the interactive
    # requests would wait for ~all 40 (1 s at 8 in flight). With it, 2 batch calls run at a
    # time (10 a second), so only a handful finish while the interactive ones are answered.
    assert batch_before <= BATCH // 2, (batch_before, order)
    assert interactive_s < 5.0, interactive_s
    assert stats.max_batch_in_flight == int(CAP * BATCH_SHARE)
