"""The console serves its pages in under 200 ms with 10,000 dead letters on the DLQ: the list is
served from the in-memory mirror, not from a rescan (decoding 10,000 letters takes ~0.8 s).

The 10,000 letters are one real dead letter (written by ``Outcomes.fail``) re-encoded with the
codec under 10,000 request ids, specialists and tenants, produced straight to the DLQ. Pages
are timed over HTTP (httpx against uvicorn on loopback), 20 requests each, after the mirror
has read them all; the figures are printed (``-s`` shows them).
"""

from __future__ import annotations

import json
import statistics
import time

import httpx
import pytest
from confluent_kafka import Producer

from consumers.replay.store import DeadLetterStore
from switchboard.core.serde import DEAD_LETTER, make_codec
from switchboard.core.settings import SPECIALISTS

from .console_kit import PERMANENT, Seed, ServedConsole, seed, until
from .harness import create_topics, settings_for_test

pytestmark = pytest.mark.integration

LETTERS = 10_000
REQUESTS_PER_PAGE = 20
BUDGET_MS = 200.0
USER = ("olga", "op-pass-speed")


def test_pages_answer_in_under_200_ms_with_10000_dead_letters(
    kafka_bootstrap: str, kafka_config: dict[str, str]
) -> None:
    settings = settings_for_test(
        kafka_bootstrap,
        console_users=json.dumps({USER[0]: {"password": USER[1], "role": "operator"}}),
    )
    kafka = dict(kafka_config)
    topics = create_topics(settings, kafka)
    seed(settings, kafka, [Seed("speed-0", "api", "acme", PERMANENT)])
    codec = make_codec(None)
    [template] = DeadLetterStore(kafka, topics, codec).scan()
    assert template.record is not None
    producer = Producer({**kafka, "linger.ms": 20})
    for i in range(1, LETTERS):
        record = dict(
            template.record,
            request_id=f"speed-{i}",
            specialist=SPECIALISTS[i % len(SPECIALISTS)],
            tenant=f"tenant-{i % 7}",
        )
        producer.produce(topics.dlq, codec.encode(DEAD_LETTER, record, topics.dlq), f"speed-{i}")
        if i % 1000 == 0:
            producer.poll(0)
    assert producer.flush(60) == 0

    with (
        ServedConsole(settings, kafka) as console,
        httpx.Client(base_url=console.url, auth=USER, timeout=30) as client,
    ):
        began = time.monotonic()
        until(lambda: f"{LETTERS}</strong> of {LETTERS}" in client.get("/dlq").text, 60)
        loaded_s = time.monotonic() - began
        figures = {}
        for path in ("/dlq", "/dlq?specialist=api&tenant=tenant-3", "/dlq?page=100", "/", "/audit"):
            times = []
            for _ in range(REQUESTS_PER_PAGE):
                start = time.perf_counter()
                response = client.get(path)
                times.append((time.perf_counter() - start) * 1000)
                assert response.status_code == 200
            figures[path] = (statistics.median(times), max(times))
        print(f"\n{LETTERS} dead letters listed {loaded_s:.2f}s after the console first answered")
        for path, (median, worst) in figures.items():
            print(
                f"  GET {path}: median {median:.0f} ms, max {worst:.0f} ms ({REQUESTS_PER_PAGE} requests)"
            )
        assert all(median < BUDGET_MS for median, _worst in figures.values()), figures
