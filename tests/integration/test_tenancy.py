"""Tenants end to end, on a real broker with the real SDK against the fake model server: every
refusal is `rejected` with its reason by the router and costs no model call (the fake's own
count), and a `reply_to` request survives worker SIGKILLs answered exactly once on its topic."""

from __future__ import annotations

import random
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from consumers.app import Pipeline
from producers.client import SwitchboardClient
from switchboard.core import headers as h
from switchboard.core.topics import Topics
from switchboard.devtools.fake_anthropic import FakeAnthropic

from .harness import (
    RunningPipeline,
    create_topics,
    router_only,
    settings_for_test,
    unthrottled_settings,
)
from .helpers import read_topic
from .test_runtime_scenarios import WorkerProcess

pytestmark = pytest.mark.integration

SECRET = "0123456789abcdef-acme-k1"


def _tenants_file(tmp_path: Path, reply_prefix: str) -> Path:
    path = tmp_path / "tenants.yaml"
    path.write_text(
        f"""
unknown_tenants: reject
tenants:
  acme:
    specialists: [backend, security]
    models: [claude-sonnet-5-5]
    max_prompt_bytes: 300
    reply_to_prefix: "{reply_prefix}"
    require_signature: true
    signing_keys: {{k1: "{SECRET}"}}
  bursty:
    rate_per_s: 0.5
    burst: 2
"""
    )
    return path


def _create(kafka: dict[str, str], *topics: str) -> None:
    admin = AdminClient(kafka)  # held until the futures resolve (else its handle is destroyed)
    for future in admin.create_topics([NewTopic(t, 3, 1) for t in topics]).values():
        future.result(30)


def test_every_refusal_is_rejected_with_its_reason_and_no_model_call(
    kafka_bootstrap: str, kafka_config: dict[str, str], tmp_path: Path
) -> None:
    """A signed, allowed request is answered by the model (one call: the path is live); then
    an unauthorised specialist, an unauthorised model, an unknown tenant, a bad signature, an
    unsigned request, an oversize prompt, a forbidden reply_to and one over the tenant's rate
    are each `rejected` with their reason, and the fake counts no further call."""
    with FakeAnthropic() as fake:
        reply_prefix = f"acme-{uuid.uuid4().hex[:8]}."
        settings = settings_for_test(
            kafka_bootstrap,
            fake=fake,
            tenants_file=_tenants_file(tmp_path, reply_prefix),
        )
        create_topics(settings, kafka_config)

        def setup(p: Pipeline) -> None:
            p.add_router()
            p.add_worker("backend")
            p.add_worker("security")
            p.add_worker("api")

        prefix = settings.topic_prefix
        with (
            RunningPipeline(settings, kafka_config, setup),
            SwitchboardClient(
                kafka_config, topic_prefix=prefix, tenant="acme", signing_key=("k1", SECRET)
            ) as signed,
            SwitchboardClient(kafka_config, topic_prefix=prefix, tenant="acme") as unsigned,
            SwitchboardClient(
                kafka_config, topic_prefix=prefix, tenant="acme", signing_key=("k1", "x" * 24)
            ) as forged,
            SwitchboardClient(kafka_config, topic_prefix=prefix, tenant="mallory") as stranger,
            SwitchboardClient(kafka_config, topic_prefix=prefix, tenant="bursty") as bursty,
        ):
            ok = signed.ask("/backend size the connection pool", timeout=60)
            assert ok.status == "answered" and ok.backend != "offline"
            calls_before = fake.stats().total_calls
            assert calls_before == 1
            cases: list[tuple[str, SwitchboardClient, dict[str, Any]]] = [
                ("specialist_not_allowed", signed, {"text": "/api design cursor paging"}),
                ("model_not_allowed", signed, {"text": "/security threat model the login"}),
                ("unknown_tenant", stranger, {"text": "/backend size a pool"}),
                ("bad_signature", forged, {"text": "/backend size a pool"}),
                ("unsigned", unsigned, {"text": "/backend size a pool"}),
                ("prompt_too_large", signed, {"text": "/backend " + "x" * 400}),
            ]
            ids = {code: client.submit(**kwargs) for code, client, kwargs in cases}
            got = {code: client.result(ids[code], 60) for code, client, _ in cases}
            with SwitchboardClient(
                kafka_config,
                topic_prefix=prefix,
                tenant="acme",
                signing_key=("k1", SECRET),
                reply_topic=f"{prefix}.tasks.backend",  # a pipeline topic: never a reply topic
            ) as sneaky:
                rid = sneaky.submit("/backend size a pool")
                # Rejected on the shared responses topic, never written into the task topic.
                got["forbidden_reply_to"] = signed.result(_expect(signed, rid), 60)
            over = [bursty.submit("/backend size a pool") for _ in range(4)]
            rates = [bursty.result(r, 60) for r in over]
            for code, response in got.items():
                assert response.status == "rejected", (code, response)
                assert response.record["error_code"] == code, (code, response.content)
            assert [r.record["error_code"] for r in rates].count("rate_limited") >= 1
            answered_bursty = sum(r.status == "answered" for r in rates)
            time.sleep(0.5)  # nothing is in flight; let a stray call (a bug) show up
            assert fake.stats().total_calls == calls_before + answered_bursty


def _completed(fake: FakeAnthropic) -> int:
    stats = fake.stats()
    return stats.total_calls - stats.in_flight


def _expect(client: SwitchboardClient, request_id: str) -> str:
    client.expect(request_id)
    return request_id


def test_sigkilled_worker_never_answers_a_reply_to_request_twice(
    kafka_bootstrap: str, kafka_config: dict[str, str], tmp_path: Path
) -> None:
    """400 requests with their own reply topic, model latency 50-800 ms; the worker is
    SIGKILLed twice mid-run and restarted. Each request has exactly one response on the reply
    topic and one copy on the responses topic (what the restarted worker's index reads)."""
    with FakeAnthropic(latency_ms=(50, 800)) as fake:
        settings = unthrottled_settings(kafka_bootstrap, kafka_config, fake, partitions=3)
        reply = f"replies-{uuid.uuid4().hex[:10]}"
        _create(kafka_config, reply)
        worker = WorkerProcess(settings, fake.base_url, tmp_path, concurrency=100, instance="w1")
        with (
            RunningPipeline(settings, kafka_config, router_only),
            SwitchboardClient(
                kafka_config, topic_prefix=settings.topic_prefix, reply_topic=reply
            ) as client,
        ):
            worker.start()
            ids = client.submit_many(
                [
                    {"text": f"/backend reply {i}: size the pool", "request_id": f"rk-{i}"}
                    for i in range(400)
                ]
            )
            rng = random.Random(7)
            in_flight_at_kills = []
            try:
                for _ in range(2):
                    worker.wait_running()
                    # Kill once this worker has answered some (later offsets finish before
                    # earlier ones, so answered records wait uncommitted behind slower ones:
                    # the redelivered ones are what the index must recognise) and others are
                    # in flight.
                    done_at_start = _completed(fake)
                    time.sleep(rng.uniform(0.05, 0.3))
                    deadline = time.monotonic() + 60
                    while time.monotonic() < deadline and (
                        fake.stats().in_flight < 10 or _completed(fake) < done_at_start + 40
                    ):
                        time.sleep(0.01)
                    in_flight_at_kills.append(fake.stats().in_flight)
                    worker.kill()
                    worker.start()
                # The ledger (the responses topic) holds every request's one copy: wait for all
                # 400 there rather than on the reply topic (see below for why).
                wanted = {r.encode() for r in ids}
                ledger = read_topic(
                    kafka_config,
                    Topics(settings.topic_prefix).responses,
                    until=lambda m: wanted <= {x.key() for x in m},
                    timeout_s=180,
                )
            finally:
                worker.kill()
        copies = Counter(
            m.key() for m in ledger if h.header_value(m.headers(), h.REPLY_COPY_OF) == reply
        )  # the one record per request the index reads
        uncopied = wanted - set(copies)
        assert set(copies) == wanted, [  # which lack one, and what else the ledger holds of them
            (k, [h.header_value(m.headers(), h.STATUS) for m in ledger if m.key() == k])
            for k in sorted(uncopied)[:5]
        ]
        twice = {k for k, n in copies.items() if n > 1}
        assert not twice, [  # each copy's status, partition and offset, to say which path wrote it
            (m.key(), h.header_value(m.headers(), h.STATUS), m.partition(), m.offset())
            for m in ledger
            if m.key() in twice
        ]
        time.sleep(1)  # let any late duplicate land, then count everything on the reply topic
        everything = read_topic(
            kafka_config, reply, until=lambda m: wanted <= {x.key() for x in m}, timeout_s=5
        )
        per_key = Counter(m.key() for m in everything)
        # Exactly once on the reply topic: the copy and the reply are written in one
        # transaction, so a kill at any point leaves both or neither, never the copy alone.
        assert set(per_key.values()) <= {1}, per_key.most_common(3)
        only_in_ledger = wanted - set(per_key)
        assert not only_in_ledger, sorted(only_in_ledger)[:5]
        statuses = {
            h.header_value(m.headers(), h.STATUS)
            for m in ledger
            if h.header_value(m.headers(), h.REPLY_COPY_OF) == reply
        }
        assert statuses == {"answered"}
        stats = fake.stats()
        repeated = sum(n - 1 for n in stats.billed_by_key.values() if n > 1)
        print(
            f"\n2 SIGKILLs (in flight at each: {in_flight_at_kills}), 400 reply_to requests: "
            f"{repeated} model calls billed twice, no request answered twice, every reply "
            "delivered once"
        )
        assert min(in_flight_at_kills) >= 10  # the kills did abandon model calls
