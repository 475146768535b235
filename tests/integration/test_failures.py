"""The failure paths, on a real broker, with the real SDK against the fake model server's
scripted faults: retries follow the provider's signals, what cannot succeed is dead-lettered
once with a pointer in its `failed` answer, systemic failures pause the workers instead of
filling the DLQ, and every request still ends in exactly one terminal response."""

from __future__ import annotations

import itertools
import math
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from confluent_kafka import Consumer, Message, TopicPartition

from consumers.app import Pipeline
from consumers.resilience.breaker import BreakerState
from consumers.worker import SpecialistWorker
from producers.client import Response, SwitchboardClient
from switchboard.core.routing import parse_command
from switchboard.core.serde import DEAD_LETTER, REQUEST, make_codec
from switchboard.core.settings import Settings
from switchboard.devtools.fake_anthropic import FakeAnthropic
from switchboard.devtools.fake_anthropic.faults import Fault
from switchboard.devtools.fake_anthropic.prompts import request_key
from switchboard.devtools.fake_anthropic.state import CallRecord
from tests.support import wait_for

from .harness import RunningPipeline, create_topics, settings_for_test

pytestmark = pytest.mark.integration


#: The breaker's first cooldown and its overload threshold (the settings' defaults).
OPEN_S = 5.0
THRESHOLD = 5


# --- the stage: router, retry relay and the backend worker, talking to one fake ---------------


def _router_relay_backend(p: Pipeline) -> None:
    p.add_router()
    p.add_relay()
    p.add_worker("backend")


@dataclass
class Stage:
    settings: Settings
    running: RunningPipeline
    client: SwitchboardClient

    @property
    def worker(self) -> SpecialistWorker:
        return self.running.pipeline.workers["backend"]

    @property
    def dlq(self) -> str:
        return f"{self.settings.topic_prefix}.dlq"

    def ask_all(self, prompts: list[str], timeout_s: float = 60.0, **kwargs: Any) -> list[Response]:
        """Submit ``/backend <prompt>`` for each prompt, then await every terminal response."""
        ids = [self.client.submit(f"/backend {p}", **kwargs) for p in prompts]
        deadline = time.monotonic() + timeout_s
        return [self.client.result(r, max(0.1, deadline - time.monotonic())) for r in ids]


@contextmanager
def _stage(
    kafka_bootstrap: str, kafka_config: dict[str, str], fake: FakeAnthropic, **overrides: Any
) -> Iterator[Stage]:
    settings = settings_for_test(
        kafka_bootstrap,
        fake=fake,
        **overrides,
    )
    create_topics(settings, kafka_config)
    with (
        RunningPipeline(settings, kafka_config, _router_relay_backend) as running,
        SwitchboardClient(kafka_config, topic_prefix=settings.topic_prefix) as client,
    ):
        yield Stage(settings, running, client)


# --- reading what happened ------------------------------------------------------------------


def _calls(fake: FakeAnthropic, prompt: str) -> list[CallRecord]:
    """The fake's calls for ``prompt`` (its request key is a hash of the messages), in order."""
    key = request_key({"messages": [{"role": "user", "content": prompt}]})
    return sorted((c for c in fake.stats().calls if c.key == key), key=lambda c: c.at)


def _topic_size(kafka: dict[str, str], topic: str) -> int:
    """Records in ``topic`` now, from its watermarks (no waiting for records to show up)."""
    consumer = Consumer({**kafka, "group.id": f"size-{uuid.uuid4().hex}"})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        total = 0
        for p in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            total += high - low
        return total
    finally:
        consumer.close()


def _read_at(kafka: dict[str, str], topic: str, partition: int, offset: int) -> Message:
    """The one record at ``topic``/``partition``/``offset``."""
    consumer = Consumer(
        {**kafka, "group.id": f"at-{uuid.uuid4().hex}", "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(topic, partition, offset)])
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                assert msg.offset() == offset
                return msg
        raise AssertionError(f"nothing at {topic}/{partition}/{offset} within 30s")
    finally:
        consumer.close()


# --- transient failures: retried on the provider's word, then answered ---------------------


def test_a_429_is_retried_no_earlier_than_its_retry_after(
    kafka_bootstrap: str, kafka_config: dict[str, str]
) -> None:
    """Two requests meet one 429 each, one with retry-after-ms=300 and one with 1500. Each waits
    in a retry tier until due and is answered on its second call: the fake's log shows the
    second call at least retry-after after the first, and exactly two calls (the SDK does not
    retry on its own)."""
    prompts = {300: "size the pool (ra-300)", 1500: "size the pool (ra-1500)"}
    with FakeAnthropic(latency_ms=20) as fake:
        for wait_ms, prompt in prompts.items():
            fake.script(Fault.http(429, retry_after_ms=wait_ms, match=prompt, count=1))
        with _stage(kafka_bootstrap, kafka_config, fake) as stage:
            responses = stage.ask_all(list(prompts.values()))
            dlq_size = _topic_size(kafka_config, stage.dlq)
        for response in responses:
            assert (response.status, response.record["attempts"]) == ("answered", 2)
        for wait_ms, prompt in prompts.items():
            calls = _calls(fake, prompt)
            assert [c.status for c in calls] == [429, 200]
            gap_s = calls[1].at - calls[0].at
            print(f"\nretry-after-ms={wait_ms}: second call {gap_s * 1000:.0f} ms after the first")
            assert gap_s >= wait_ms / 1000
    assert dlq_size == 0


def test_a_529_storm_opens_the_breaker_which_closes_when_it_clears(
    kafka_bootstrap: str, kafka_config: dict[str, str]
) -> None:
    """Five requests at once meet five consecutive 529s: the breaker opens, so the retries (each
    backed off at least 0.75 s) wait out its cooldown; one probe succeeds and closes it, and all
    five are answered on their second call. Nothing is dead-lettered."""
    prompts = [f"design a bulkhead (storm-{i})" for i in range(5)]
    with FakeAnthropic(latency_ms=20, faults=["529:count=5"]) as fake:
        with _stage(kafka_bootstrap, kafka_config, fake) as stage:
            responses = stage.ask_all(prompts)
            dlq_size = _topic_size(kafka_config, stage.dlq)
        breaker = stage.worker.breaker
        assert breaker.opened_count >= 1
        assert breaker.state is BreakerState.CLOSED
    assert {(r.status, r.record["attempts"]) for r in responses} == {("answered", 2)}
    calls = sorted((c for p in prompts for c in _calls(fake, p)), key=lambda c: c.at)
    assert [c.status for c in calls] == [529] * 5 + [200] * 5
    quiet_s = calls[5].at - calls[4].at
    print(f"\n529 storm: no call for {quiet_s:.2f}s after the fifth 529 (breaker cooldown)")
    assert quiet_s >= OPEN_S * 0.9  # the breaker's cooldown, measured on the fake's clock
    assert dlq_size == 0


def test_a_timed_out_call_is_retried_then_answered(
    kafka_bootstrap: str, kafka_config: dict[str, str]
) -> None:
    """The model stalls past the SDK's 1 s timeout once: the SDK gives up, the request is
    retried after a backoff and answered by the second call. (The fake counts the stalled call
    as billed: no idempotency key exists, which is why timeouts are retried a capped number of
    times.)"""
    prompt = "profile the hot path (stall-once)"
    with FakeAnthropic(
        latency_ms=20, faults=[f"timeout:seconds=10:match={prompt}:count=1"]
    ) as fake:
        with _stage(kafka_bootstrap, kafka_config, fake, anthropic_timeout_s=1.0) as stage:
            (response,) = stage.ask_all([prompt])
        calls = _calls(fake, prompt)
    assert (response.status, response.record["attempts"]) == ("answered", 2)
    assert [(c.status, c.outcome) for c in calls] == [(0, "client_gone"), (200, "ok")]
    # The SDK's clock starts a little before the fake's: allow it 0.1 s of the 1 s timeout.
    assert calls[0].seconds >= 0.9
    assert calls[1].at - calls[0].at >= 0.9 + 0.75  # the timeout, then at least the backoff


def test_a_failure_that_never_clears_is_dead_lettered_when_attempts_run_out(
    kafka_bootstrap: str, kafka_config: dict[str, str]
) -> None:
    """Every call for one request meets a 500 (transient): it is retried with growing backoff
    until its three attempts are used, then dead-lettered with all three failures in the DLQ
    record's history and answered `failed` with the pointer."""
    prompt = "shard the orders table (always-500)"
    with FakeAnthropic(latency_ms=20, faults=[f"500:match={prompt}"]) as fake:
        with _stage(kafka_bootstrap, kafka_config, fake, max_attempts=3) as stage:
            (failed,) = stage.ask_all([prompt])
            pointer = failed.record["dlq"]
            letter_msg = _read_at(
                kafka_config, pointer["topic"], pointer["partition"], pointer["offset"]
            )
        calls = _calls(fake, prompt)
    assert (failed.status, failed.record["attempts"]) == ("failed", 3)
    assert [c.status for c in calls] == [500] * 3
    gaps = [b.at - a.at for a, b in itertools.pairwise(calls)]
    assert gaps[0] >= 0.75 and gaps[1] >= 1.5  # base 1 s doubling, jittered down at most 25%
    letter = make_codec(None).decode(DEAD_LETTER, letter_msg.value(), pointer["topic"])
    assert letter["request_id"] == failed.request_id
    assert [a["attempt"] for a in letter["attempts"]] == [1, 2, 3]
    assert {a["error_type"] for a in letter["attempts"]} == {"InternalServerError"}


# --- permanent failures: dead-lettered once, answered `failed` with the pointer -------------


def test_a_400_is_dead_lettered_at_once_with_the_providers_message(
    kafka_bootstrap: str, kafka_config: dict[str, str]
) -> None:
    """A 400 cannot be fixed by retrying: after exactly one model call the task goes to the DLQ
    (with the provider's message, status and request id, and the task's original bytes), and
    the caller gets a `failed` response whose pointer leads to exactly that DLQ record. The
    worker keeps answering other requests."""
    prompt = "review this schema (bad-400)"
    message = "messages.0.content: the prompt holds a token the model does not accept"
    with FakeAnthropic(latency_ms=20) as fake:
        fake.script(Fault.http(400, message=message, match=prompt))
        with _stage(kafka_bootstrap, kafka_config, fake) as stage:
            failed, healthy = stage.ask_all([prompt, "size the pool (healthy)"])
            assert failed.status == "failed" and healthy.status == "answered"
            pointer = failed.record["dlq"]
            assert pointer["topic"] == stage.dlq
            letter_msg = _read_at(
                kafka_config, pointer["topic"], pointer["partition"], pointer["offset"]
            )
            dlq_size = _topic_size(kafka_config, stage.dlq)
            tasks_topic = f"{stage.settings.topic_prefix}.tasks.backend"
        calls = _calls(fake, prompt)
    assert [c.status for c in calls] == [400]
    assert failed.record["error_code"] == "invalid_request"
    assert message in failed.record["error_message"]
    codec = make_codec(None)
    letter = codec.decode(DEAD_LETTER, letter_msg.value(), pointer["topic"])
    assert letter["request_id"] == failed.request_id
    assert (letter["error_class"], letter["provider_status"]) == ("permanent", 400)
    assert message in letter["error_message"]
    assert (letter["provider_request_id"] or "").startswith("req_fake_")
    assert (letter["origin_topic"], letter["stage"]) == (tasks_topic, "model")
    assert len(letter["attempts"]) == 1
    original = codec.decode(REQUEST, letter["original_value"], tasks_topic)
    # The task as the worker got it: routed from headers, the client's own bytes (the prompt
    # still in its `/backend ...` text); routed by decoding, with the prompt set.
    sent_prompt = original["prompt"] or parse_command(original["text"])[1]
    assert (original["request_id"], sent_prompt) == (failed.request_id, prompt)
    assert dlq_size == 1


# --- systemic failures: pause, probe, resume; never the DLQ ---------------------------------


def test_a_spend_limit_pauses_the_workers_until_it_is_lifted(
    kafka_bootstrap: str, kafka_config: dict[str, str]
) -> None:
    """Every call meets a spend limit. The calls already in flight fail, then the worker pauses:
    over the next 7 s only the breaker's probes (one per 5 s cooldown) reach the model, and
    nothing is dead-lettered or answered. Once the limit is lifted the next probe succeeds and
    all twenty requests are answered."""
    prompts = [f"plan capacity (spend-{i})" for i in range(20)]
    with (
        FakeAnthropic(latency_ms=50, faults=["spend-limit:sticky"]) as fake,
        _stage(kafka_bootstrap, kafka_config, fake, halt_pause_s=1.0) as stage,
    ):
        ids = [stage.client.submit(f"/backend {p}") for p in prompts]
        first = wait_for(
            lambda: [c for c in fake.stats().calls if c.status == 429],
            30,
            "the first spend-limit answer",
        )[0]
        window_s = 7.0
        # A measured interval, not synchronisation: count the calls made while paused.
        time.sleep(max(0.0, first.at + window_s - time.time()))
        during = [c for c in fake.stats().calls if c.at <= first.at + window_s]
        assert _topic_size(kafka_config, stage.dlq) == 0
        assert _topic_size(kafka_config, f"{stage.settings.topic_prefix}.responses") == 0
        fake.clear_faults()
        lifted_at = time.time()
        responses = [stage.client.result(r, 30) for r in ids]
        answered_in_s = time.time() - lifted_at
        dlq_size = _topic_size(kafka_config, stage.dlq)
    wave = [c for c in during if c.at < first.at + 1.0]
    probes = [c for c in during if c.at >= first.at + 1.0]
    print(
        f"\nspend limit: {len(wave)} calls in flight when it hit, then {len(probes)} probe(s) "
        f"in {window_s - 1:g}s; all answered {answered_in_s:.1f}s after it was lifted"
    )
    assert {c.status for c in during} == {429}
    assert len(wave) <= len(prompts)
    assert 1 <= len(probes) <= math.ceil(window_s / OPEN_S)
    assert {r.status for r in responses} == {"answered"}
    assert answered_in_s <= OPEN_S + 5
    assert dlq_size == 0


@pytest.mark.parametrize("failure", ["401", "sticky-529"])
def test_a_systemic_failure_stops_model_calls_within_a_bound(
    kafka_bootstrap: str, kafka_config: dict[str, str], failure: str
) -> None:
    """200 requests wait while every call fails alike: a bad key (401, fatal: halt) or sticky
    529s (overload: retried). The calls admitted before the breaker opens fail (the in-flight
    cap, plus for 529s the few started before the fifth failure), then only the breaker's
    probes reach the model, one per cooldown, counted over 10 s. Nothing is dead-lettered and
    nothing is answered."""
    cap = 32
    options: dict[str, Any] = (
        {"api_keys": ["sk-live"]} if failure == "401" else {"faults": ["529:sticky"]}
    )
    with (
        FakeAnthropic(latency_ms=50, **options) as fake,
        _stage(
            kafka_bootstrap,
            kafka_config,
            fake,
            concurrency=cap,
            halt_pause_s=1.0,
            drain_timeout_s=1.0,
        ) as stage,
    ):
        for i in range(200):
            stage.client.submit(f"/backend design a queue (systemic-{i})")
        first = wait_for(lambda: fake.stats().calls, 30, "the first model call")[0]
        window_s = 10.0
        # A measured interval, not synchronisation: count the calls made in it.
        time.sleep(max(0.0, first.at + window_s - time.time()))
        calls = [c for c in fake.stats().calls if c.at <= first.at + window_s]
        dlq_size = _topic_size(kafka_config, stage.dlq)
        responses = _topic_size(kafka_config, f"{stage.settings.topic_prefix}.responses")
    # Calls admitted while the breaker was still closed: the in-flight cap, plus (for 529s) the
    # calls started in the slots freed by the first threshold-1 failures; then the probes.
    early = cap if failure == "401" else cap + THRESHOLD - 1
    bound = early + math.ceil(window_s / OPEN_S)
    print(
        f"\n{failure}: {len(calls)} model calls in {window_s:g}s while 200 requests wait "
        f"(bound {bound}: {early} before the breaker opens + one probe per {OPEN_S:g}s)"
    )
    assert {c.status for c in calls} == {401 if failure == "401" else 529}
    assert len(calls) <= bound
    assert dlq_size == 0 and responses == 0


# --- deadlines ------------------------------------------------------------------------------


def test_a_deadline_that_passes_during_retries_ends_expired(
    kafka_bootstrap: str, kafka_config: dict[str, str]
) -> None:
    """Sticky 529s and a 2 s deadline: the request is retried while a retry can still make the
    deadline, then answered `expired` (not failed, not dead-lettered) by about its deadline."""
    prompt = "tune the GC (deadline-2s)"
    with FakeAnthropic(latency_ms=20, faults=["529:sticky"]) as fake:
        with _stage(kafka_bootstrap, kafka_config, fake) as stage:
            submitted = time.monotonic()
            (response,) = stage.ask_all([prompt], deadline_s=2.0)
            took_s = time.monotonic() - submitted
            dlq_size = _topic_size(kafka_config, stage.dlq)
        calls = _calls(fake, prompt)
    print(f"\ndeadline 2 s under sticky 529s: expired after {took_s:.2f}s and {len(calls)} call(s)")
    assert response.status == "expired"
    assert response.record["error_code"] == "deadline_exceeded"
    assert calls and {c.status for c in calls} == {529}
    assert response.record["attempts"] == len(calls)
    # By about its deadline: well before the next retry tier (10 s) could have run.
    assert took_s < 2.0 + 3.0
    assert dlq_size == 0


def test_a_deadline_that_passes_while_the_workers_are_halted_ends_expired_on_time(
    kafka_bootstrap: str, kafka_config: dict[str, str]
) -> None:
    """A bad key halts the worker for 30 s; a request with a 3 s deadline caught in that pause
    is answered `expired` at its deadline, not when the pause ends."""
    prompt = "threat model the login (halted-3s)"
    with (
        FakeAnthropic(latency_ms=20, api_keys=["sk-live"]) as fake,
        _stage(
            kafka_bootstrap, kafka_config, fake, halt_pause_s=30.0, drain_timeout_s=1.0
        ) as stage,
    ):
        submitted = time.monotonic()
        (response,) = stage.ask_all([prompt], timeout_s=15, deadline_s=3.0)
        took_s = time.monotonic() - submitted
    assert response.status == "expired"
    # At its deadline, not when the 30 s pause ends (slack for a loaded 2-core CI machine).
    assert took_s < 3.0 + 4.0
    assert fake.stats().total_calls == 1
