"""``--batch-api`` review jobs, on a real broker, with the real SDK against the fake server's
Message Batches endpoints.

The story: a job's items go out in one batch; what succeeds is published as an ordinary
``answered`` response carrying a validated ``FindingsAnswer`` at half price; an item that
errored for a server reason and one that expired go out again in a second batch and are then
answered; an invalid request and a canceled item are dead-lettered with a ``failed`` response
pointing at the dead letter. Every request ends with exactly one terminal response. A job
stopped while its batch is in progress resumes polling that batch when it runs again (no second
create), publishes each result once, and a rerun of an answered job sends nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import pytest
from prometheus_client import REGISTRY

from consumers.batches import BatchItem, PollPolicy, custom_id_for, run_batch_job
from consumers.batches.ledger import BatchLedger, BatchState, LedgerBatch
from consumers.batches.results import batch_cost_micro_usd
from producers.client import build_request
from switchboard.core import headers as h
from switchboard.core.admin import end_offsets, ensure_topics
from switchboard.core.aio_producer import AsyncProducer
from switchboard.core.findings import parse_findings_answer
from switchboard.core.kafka_clients import make_admin, producer_config
from switchboard.core.serde import DEAD_LETTER, RESPONSE, make_codec
from switchboard.core.settings import Settings
from switchboard.core.topics import Topics, TopicSpec
from switchboard.devtools.fake_anthropic import FakeAnthropic
from tests.unit.review_corpus import CORPUS

from .harness import settings_for_test
from .helpers import read_topic

pytestmark = pytest.mark.integration

DOCUMENT = "# Orders service\n\nThe orders service calls payments synchronously, with no timeout.\n"
#: Fast polling, so each story takes a second or two, not minutes.
FAST = PollPolicy(initial_s=0.05, factor=2.0, max_s=0.2, max_wait_s=30.0)


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(batch_seconds=0.3) as server:
        yield server


@pytest.fixture
def settings(kafka_bootstrap: str, kafka_config: dict[str, str], fake: FakeAnthropic) -> Settings:
    settings = settings_for_test(
        kafka_bootstrap,
        fake=fake,
        max_attempts=3,
    )
    topics = Topics(settings.topic_prefix)
    specs = [TopicSpec("test", name, {}) for name in (topics.responses, topics.dlq)]
    ensure_topics(make_admin(kafka_config), specs, partitions=2, replication_factor=1)
    return settings


def item(job: str, name: str, specialist: str = "backend", prompt: str = "") -> BatchItem:
    """A review item; request ids hold ':' as the review job's do, so custom ids are mapped."""
    digest = hashlib.sha256(DOCUMENT.encode()).hexdigest()[:12]
    request_id = f"{job}:{digest}:{name}:{specialist}"
    request = build_request(
        f"/{specialist} review part {name}",
        specialist=specialist,
        request_id=request_id,
        priority="BATCH",
    )
    request["prompt"] = prompt or f"Review part {name} of the document for {specialist} problems."
    return BatchItem(request_id, specialist, request, DOCUMENT)


def run(items: list[BatchItem], settings: Settings, kafka: dict[str, str], **kw: Any) -> Any:
    return asyncio.run(run_batch_job(items, settings, kafka, poll=kw.pop("poll", FAST), **kw))


def read_all(kafka: dict[str, str], topic: str, contract: str) -> list[dict[str, Any]]:
    """Every record of ``topic`` to its end offsets. A job returns only once its responses and
    dead letters are delivered, so a duplicate would be in there already."""
    total = sum(end_offsets(make_admin(kafka), topic).values())
    msgs = read_topic(kafka, topic, until=lambda m: len(m) >= total, timeout_s=20)
    assert len(msgs) == total
    return [make_codec(None).decode(contract, m.value(), topic) for m in msgs]


def responses(settings: Settings, kafka: dict[str, str]) -> list[dict[str, Any]]:
    return read_all(kafka, Topics(settings.topic_prefix).responses, RESPONSE)


def dead_letters(settings: Settings, kafka: dict[str, str]) -> list[dict[str, Any]]:
    return read_all(kafka, Topics(settings.topic_prefix).dlq, DEAD_LETTER)


def test_every_outcome_ends_in_one_terminal_response(
    fake: FakeAnthropic, settings: Settings, kafka_config: dict[str, str]
) -> None:
    """Six items, one batch: ok and ok-security succeed; err (a 500 inside the batch) and exp
    (expired) are resubmitted in a second batch and answered there; bad (invalid_request_error)
    and can (canceled) are dead-lettered, with ``failed`` responses pointing at their DLQ
    records. One response per request id; only successes are billed, each once."""
    job = "job1"
    items = [
        item(job, "ok"),
        item(job, "ok", "security"),
        item(job, "err"),
        item(job, "bad"),
        item(job, "exp"),
        item(job, "can"),
    ]
    ids = {it.request_id.split(":")[2] + "/" + it.specialist: it for it in items}
    fake.script_batch_items(
        {
            ids["err/backend"].custom_id: "errored",
            ids["bad/backend"].custom_id: "invalid",
            ids["exp/backend"].custom_id: "expired",
            ids["can/backend"].custom_id: "canceled",
        }
    )
    summary = run(items, settings, kafka_config, job=job)

    got = responses(settings, kafka_config)
    by_id = {r["request_id"]: r for r in got}
    assert Counter(r["request_id"] for r in got) == Counter(it.request_id for it in items)
    status = {name: by_id[it.request_id]["status"] for name, it in ids.items()}
    assert status == {
        "ok/backend": "answered",
        "ok/security": "answered",
        "err/backend": "answered",
        "bad/backend": "failed",
        "exp/backend": "answered",
        "can/backend": "failed",
    }
    answered = by_id[ids["ok/backend"].request_id]
    findings = parse_findings_answer(answered["content"])
    assert findings.backend == "claude-sonnet-5-5" == answered["model"] == answered["backend"]
    assert {f.specialist for f in findings.findings} == {"backend"}
    usage = answered["usage"]
    assert usage["output_tokens"] > 0
    assert answered["cost_micro_usd"] == batch_cost_micro_usd(
        "claude-sonnet-5-5", usage, one_hour_writes=usage["cache_creation_input_tokens"]
    )
    # The document is one cached prefix for every backend item (one model): written once, read
    # by the rest, the resubmitted ones included.
    backend = [
        by_id[ids[n].request_id]["usage"] for n in ("ok/backend", "err/backend", "exp/backend")
    ]
    assert sorted(u["cache_creation_input_tokens"] > 0 for u in backend) == [False, False, True]
    assert sum(u["cache_read_input_tokens"] > 0 for u in backend) == 2
    assert by_id[ids["err/backend"].request_id]["attempts"] == 2
    assert by_id[ids["exp/backend"].request_id]["attempts"] == 2

    letters = {d["request_id"]: d for d in dead_letters(settings, kafka_config)}
    assert set(letters) == {ids["bad/backend"].request_id, ids["can/backend"].request_id}
    bad = letters[ids["bad/backend"].request_id]
    assert bad["error_code"] == "invalid_request_error" and bad["provider_status"] == 400
    assert bad["origin_topic"] == Topics(settings.topic_prefix).tasks("backend")
    assert letters[ids["can/backend"].request_id]["error_code"] == "batch_canceled"
    failed = by_id[ids["bad/backend"].request_id]
    assert failed["dlq"]["topic"] == Topics(settings.topic_prefix).dlq
    assert failed["error_code"] == "invalid_request_error"

    stats = fake.stats()
    assert stats.batches_created == 2 == summary.batches_created
    assert stats.batched_by_custom_id == {
        it.custom_id: 2 if name in ("err/backend", "exp/backend") else 1 for name, it in ids.items()
    }
    billed = {key: n for key, n in stats.billed_by_key.items()}
    assert billed == {
        ids[name].custom_id: 1
        for name in ("ok/backend", "ok/security", "err/backend", "exp/backend")
    }
    assert (summary.answered, summary.failed, summary.resubmitted) == (4, 2, 2)
    assert (
        ids["ok/backend"].custom_id
        == custom_id_for(ids["ok/backend"].request_id)
        != (ids["ok/backend"].request_id)
    )


def test_a_restarted_job_resumes_its_batch_and_publishes_each_result_once(
    fake: FakeAnthropic, settings: Settings, kafka_config: dict[str, str]
) -> None:
    """The first run stops (its wait budget spent) while the batch is in progress: nothing is
    published and the batch stays open in the ledger. The rerun creates nothing, polls the same
    batch and publishes each result once. A run that finds the batch open again (a crash after
    publishing, before the ledger said done) publishes nothing more, and a rerun of the answered
    job sends no batch at all."""
    job = "job2"
    items = [item(job, f"p{n}") for n in range(4)]
    fake.set_batch_seconds(2.0)
    first = run(items, settings, kafka_config, job=job, poll=PollPolicy(0.05, 2.0, 0.1, 0.4))
    assert (first.batches_created, first.unfinished, first.answered) == (1, 4, 0)

    second = run(items, settings, kafka_config, job=job)
    assert (second.batches_resumed, second.batches_created, second.answered) == (1, 0, 4)
    assert fake.stats().batches_created == 1
    got = responses(settings, kafka_config)
    assert Counter(r["request_id"] for r in got) == Counter(it.request_id for it in items)

    # The crash window: results published, the ledger's `done` lost. Put the head back open.
    reopen(settings, kafka_config, job, first.batch_ids[0], items)
    third = run(items, settings, kafka_config, job=job)
    assert (third.batches_resumed, third.already_answered, third.answered) == (1, 4, 0)
    fourth = run(items, settings, kafka_config, job=job)
    assert (fourth.batches_resumed, fourth.batches_created, fourth.already_answered) == (0, 0, 4)
    assert fake.stats().batches_created == 1
    assert len(responses(settings, kafka_config)) == 4


def test_batch_results_for_a_reply_topic_commit_with_their_ledger_copies(
    fake: FakeAnthropic, settings: Settings, kafka_config: dict[str, str]
) -> None:
    """Items asking for a reply topic of their own: each result goes to that topic once and to
    the ledger once, the pair in one transaction (a few transactions for all of them), under
    the job's transactional id; a rerun of the answered job writes nothing more."""
    job = "jobreply"
    reply = f"replies-{settings.topic_prefix}"
    ensure_topics(
        make_admin(kafka_config), [TopicSpec("test", reply, {})], partitions=2, replication_factor=1
    )
    items = [item(job, f"r{n}") for n in range(6)]
    for it in items:
        it.request["reply_to"] = reply  # type: ignore[index]
    committed = (
        REGISTRY.get_sample_value("switchboard_reply_transactions_total", {"outcome": "committed"})
        or 0.0
    )
    summary = run(items, settings, kafka_config, job=job)
    assert summary.answered == 6
    wanted = {it.request_id.encode() for it in items}
    replies = read_topic(
        kafka_config, reply, until=lambda m: wanted <= {x.key() for x in m}, timeout_s=20
    )
    ledger = read_topic(
        kafka_config,
        Topics(settings.topic_prefix).responses,
        until=lambda m: wanted <= {x.key() for x in m},
        timeout_s=20,
    )
    assert Counter(m.key() for m in replies) == Counter(wanted)
    copies = [m for m in ledger if h.header_value(m.headers(), h.REPLY_COPY_OF) == reply]
    assert Counter(m.key() for m in copies) == Counter(wanted)
    after = REGISTRY.get_sample_value(
        "switchboard_reply_transactions_total", {"outcome": "committed"}
    )
    assert after is not None and 1 <= after - committed <= 6
    rerun = run(items, settings, kafka_config, job=job)
    assert (rerun.already_answered, rerun.answered) == (6, 0)
    time.sleep(0.5)
    again = read_topic(kafka_config, reply, until=lambda m: len(m) > 6, timeout_s=3)
    assert len(again) == 6


def test_a_batch_canceled_from_outside_fails_its_items_with_a_pointer(
    fake: FakeAnthropic, settings: Settings, kafka_config: dict[str, str]
) -> None:
    """An operator cancels the batch while it runs: its items are not resubmitted (that would
    undo the cancel) but dead-lettered and answered ``failed``, so no caller waits forever."""
    job = "job3"
    items = [item(job, "a"), item(job, "b")]
    fake.set_batch_seconds(30.0)
    operator = anthropic.Anthropic(api_key="sk-test", base_url=fake.base_url, max_retries=0)
    canceled = threading.Thread(target=cancel_when_created, args=(fake, operator), daemon=True)
    canceled.start()
    summary = run(items, settings, kafka_config, job=job)
    canceled.join(10)
    assert (summary.failed, summary.resubmitted, fake.stats().batches_created) == (2, 0, 1)
    got = responses(settings, kafka_config)
    assert [r["status"] for r in got] == ["failed", "failed"]
    assert {r["error_code"] for r in got} == {"batch_canceled"}
    assert all(r["dlq"] is not None for r in got)


def cancel_when_created(fake: FakeAnthropic, operator: anthropic.Anthropic) -> None:
    deadline = time.monotonic() + 15
    while fake.stats().batches_created == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    (batch,) = operator.messages.batches.list(limit=1).data
    operator.messages.batches.cancel(batch.id)


def reopen(
    settings: Settings, kafka: dict[str, str], job: str, batch_id: str, items: list[BatchItem]
) -> None:
    """Write ``batch_id``'s ledger records as a job that crashed before ``mark_done`` left them."""
    from consumers.batches.runner import _ledger_item

    async def write() -> None:
        producer = AsyncProducer(producer_config(kafka))
        try:
            ledger = BatchLedger(kafka, Topics(settings.topic_prefix), producer, job)
            batch = LedgerBatch(
                batch_id,
                job,
                1,
                BatchState.SUBMITTED,
                int(time.time() * 1000),
                {it.custom_id: _ledger_item(it, 1) for it in items},
            )
            await ledger.record(batch)
        finally:
            producer.close()

    asyncio.run(write())


def review_cli(settings: Settings, fake: FakeAnthropic, out: Path, *args: str) -> Any:
    """``switchboard review --batch-api`` on one corpus document, as CI would run it."""
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": str(settings.bootstrap_servers),
        "SWITCHBOARD_TOPIC_PREFIX": settings.topic_prefix,
        "ANTHROPIC_API_KEY": "sk-test",
        "ANTHROPIC_BASE_URL": fake.base_url,
    }
    command = [sys.executable, "-m", "switchboard.cli.main", "-v", "review", "--batch-api"]
    return subprocess.run(
        [
            *command,
            "checkout-design.md",
            "--specialists",
            "backend,security",
            "--job",
            "cli",
            "--out",
            str(out),
            "--fail-on",
            "none",
            "--timeout",
            "30",
            *args,
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=CORPUS,
        timeout=120,
    )


def test_switchboard_review_batch_api_reports_and_a_rerun_sends_nothing(
    fake: FakeAnthropic, settings: Settings, kafka_config: dict[str, str], tmp_path: Path
) -> None:
    """The command sends the job's requests in one batch and writes its reports from the
    answers; the same job run again finds every item answered and creates no batch."""
    first = review_cli(settings, fake, tmp_path / "one")
    assert first.returncode == 0, first.stderr
    report = json.loads((tmp_path / "one" / "report.json").read_text())
    (document,) = report["documents"]
    assert report["failed"] == [] and document["findings"]
    assert set(document["usage_by_specialist"]) == {"backend", "security"}
    assert report["usage"]["cost_micro_usd"] > 0
    assert "review: batch msgbatch_" in first.stderr and " ended: 2 succeeded" in first.stderr
    stats = fake.stats()
    assert stats.batches_created == 1 and len(stats.batched_by_custom_id) >= 2
    assert sum(stats.billed_by_key.values()) == len(stats.batched_by_custom_id)

    second = review_cli(settings, fake, tmp_path / "two")
    assert second.returncode == 0, second.stderr
    assert fake.stats().batches_created == 1
    assert "0 sent" in second.stdout


def test_batch_api_without_a_key_says_what_to_set(settings: Settings, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": str(settings.bootstrap_servers),
        "SWITCHBOARD_TOPIC_PREFIX": settings.topic_prefix,
    }
    env.pop("ANTHROPIC_API_KEY", None)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "switchboard.cli.main",
            "review",
            "--batch-api",
            "checkout-design.md",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=CORPUS,
        timeout=60,
    )
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert "set ANTHROPIC_API_KEY" in line and line.startswith("switchboard review: error:")


def test_a_request_larger_than_a_batch_is_dead_lettered_not_truncated(
    fake: FakeAnthropic, settings: Settings, kafka_config: dict[str, str]
) -> None:
    """With a 60 KB batch limit, a 100 KB request can never be sent: it is answered ``failed``
    (``request_too_large``) with a pointer, while its small sibling goes out and is answered."""
    job = "job4"
    small, large = item(job, "small"), item(job, "large", prompt="x" * 100_000)
    summary = run([small, large], settings, kafka_config, job=job, max_bytes=60_000)
    by_id = {r["request_id"]: r for r in responses(settings, kafka_config)}
    assert by_id[small.request_id]["status"] == "answered"
    too_large = by_id[large.request_id]
    assert too_large["status"] == "failed" and too_large["error_code"] == "request_too_large"
    assert too_large["dlq"] is not None
    assert fake.stats().batched_by_custom_id == {small.custom_id: 1}
    assert (summary.answered, summary.failed) == (1, 1)
