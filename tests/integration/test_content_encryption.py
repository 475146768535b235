"""An encrypted run, end to end: content encryption on (a keyring file), the whole pipeline on
the real broker, the workers calling the fake Anthropic server through the real SDK.

The story: 12 requests sealed with ``k1`` are answered, and the fake quotes each prompt in its
answer. Mid-run ``k2`` is added to the keyring file, then made its primary (``k1`` kept):
every process reloads it, the next 12 requests and their answers are sealed with ``k2``, and
the ``k1`` records still open. One request meets an HTTP 400 once: it is dead-lettered with its
sealed bytes, ``dlq show`` opens it with the key (and says which key it lacks without one),
and ``dlq replay`` sends the sealed bytes as they were and it is answered. Then every record
of every topic is read raw: no prompt and no answer appears in clear, and every request has
exactly one terminal response.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Message
from starlette.testclient import TestClient

from consumers.app import Pipeline
from consumers.outcomes import Outcomes, now_ms
from producers.client import SwitchboardClient, build_request
from switchboard.cli.main import main
from switchboard.console.app import create_app
from switchboard.console.command import build_console
from switchboard.core import headers as h
from switchboard.core.aio_producer import AsyncProducer
from switchboard.core.envelope import (
    KeyringSource,
    KeyUnavailable,
    content_codec,
    load_keyring,
    sealed_key_id,
)
from switchboard.core.kafka_clients import producer_config
from switchboard.core.serde import REQUEST, RESPONSE
from switchboard.devtools.fake_anthropic import FakeAnthropic
from tests.support import wait_for
from tests.unit.review_corpus import CORPUS, corpus_documents, offline_review

from .console_kit import PERMANENT, until, worker_failure
from .harness import RunningPipeline, create_topics, running_pipeline, settings_for_test
from .helpers import read_topic, topic_bytes

POISON = "POISON-ENC"
BATCH = 12


def _write_keyring(path: Path, keys: dict[str, str], primary: str, stamp_ns: int) -> None:
    path.write_text(json.dumps({"keys": keys, "primary": primary}))
    os.utime(path, ns=(stamp_ns, stamp_ns))  # an mtime that surely moved, whatever the clock


def _count(n: int) -> Callable[[list[Message]], bool]:
    return lambda messages: len(messages) >= n


def _phrase(i: int) -> str:
    return f"zebra-{uuid.uuid4().hex[:8]}-{i}"


def test_an_encrypted_run_leaks_no_content_survives_rotation_and_replays_dead_letters(
    kafka_bootstrap: str,
    kafka_config: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    keys = {name: base64.b64encode(os.urandom(32)).decode() for name in ("k1", "k2")}
    keyring = tmp_path / "keyring.json"
    _write_keyring(keyring, {"k1": keys["k1"]}, "k1", 1_000_000_000)
    with FakeAnthropic(faults=[f"400:count=1:match={POISON}"]) as fake:
        settings = settings_for_test(kafka_bootstrap, fake=fake, keyring_file=keyring)
        topics = create_topics(settings, kafka_config)

        def setup(p: Pipeline) -> None:
            p.add_router()
            p.add_relay()
            p.add_worker("api", concurrency=8)

        kw: dict[str, Any] = {"topic_prefix": settings.topic_prefix}
        with (
            RunningPipeline(settings, kafka_config, setup) as running,
            SwitchboardClient(kafka_config, codec=content_codec(settings), **kw) as client,
        ):
            phrases = [_phrase(i) for i in range(2 * BATCH)]
            before = client.submit_many([{"text": f"/api {p}"} for p in phrases[:BATCH]])
            poisoned = client.submit(f"/api {POISON} {_phrase(99)}")
            answers = {i: client.result(i, 30) for i in before}

            # Rotate as docs/security.md says: k2 into every keyring first, then primary.
            codecs = (running.pipeline.codec, client.codec)
            _write_keyring(keyring, keys, "k1", 2_000_000_000)
            for codec in codecs:
                wait_for(lambda c=codec: "k2" in c.keys.keyring.keys, 10, "k2 in the keyring")
            _write_keyring(keyring, keys, "k2", 3_000_000_000)
            for codec in codecs:
                wait_for(lambda c=codec: c.keys.keyring.primary == "k2", 10, "k2 primary")
            after = client.submit_many([{"text": f"/api {p}"} for p in phrases[BATCH:]])
            answers |= {i: client.result(i, 30) for i in after}
            failed = client.result(poisoned, 30)

            # --- the dead letter: shown opened with the key, named without it, replayed
            assert failed.status == "failed" and failed.record["dlq"], failed
            monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
            monkeypatch.setenv("SWITCHBOARD_TOPIC_PREFIX", settings.topic_prefix)
            monkeypatch.delenv("SCHEMA_REGISTRY_URL", raising=False)
            monkeypatch.delenv("SWITCHBOARD_ENCRYPTION_KEYS", raising=False)

            def cli(*argv: str) -> dict[str, Any]:
                capsys.readouterr()
                assert main(list(argv)) == 0
                parsed: dict[str, Any] = json.loads(capsys.readouterr().out)
                return parsed

            pointer = failed.record["dlq"]
            letter = f"{pointer['partition']}:{pointer['offset']}"
            monkeypatch.setenv("SWITCHBOARD_KEYRING_FILE", str(keyring))
            shown = cli("dlq", "show", letter, "--json")
            assert POISON in shown["original"]["request"]["text"]
            assert shown["original"]["sealed_with"] == ["k1"]
            assert not [name for name in shown["original"]["headers"] if name.startswith("sb-enc")]
            monkeypatch.delenv("SWITCHBOARD_KEYRING_FILE")
            blind = cli("dlq", "show", letter, "--json")
            assert blind["original"]["request"] is None
            assert "key 'k1'" in blind["original"]["request_error"]
            assert POISON.encode() not in base64.b64decode(blind["original"]["value_base64"])
            monkeypatch.setenv("SWITCHBOARD_KEYRING_FILE", str(keyring))
            client.forget(poisoned)
            client.expect(poisoned)
            replay = cli("dlq", "replay", "--request-id", poisoned, "--apply", "--json")
            assert replay["sent"] == 1, replay
            replayed = client.result(poisoned, 30)
            assert replayed.status == "answered" and POISON in replayed.content

    # --- answers decrypt in the client, each sealed with the primary of its time
    assert all(r.status == "answered" for r in answers.values()), Counter(
        r.status for r in answers.values()
    )
    for request_id, phrase in zip([*before, *after], phrases, strict=True):
        assert phrase in answers[request_id].content  # the fake quotes the prompt
    raw = content_codec(settings).inner
    sealed_with: dict[str, str | None] = {}
    for msg in read_topic(
        kafka_config, topics.responses, until=_count(2 * BATCH + 2), timeout_s=20
    ):
        record = raw.decode(RESPONSE, msg.value(), topics.responses)
        sealed_with[record["request_id"]] = sealed_key_id(record["content"])
    assert {sealed_with[i] for i in before} == {"k1"}
    assert {sealed_with[i] for i in after} == {"k2"}
    for msg in read_topic(kafka_config, topics.requests, until=_count(2 * BATCH + 1), timeout_s=20):
        request = raw.decode(REQUEST, msg.value(), topics.requests)
        assert sealed_key_id(request["text"]) in ("k1", "k2")

    # --- nothing lost: one terminal response per request (the replay's answer follows the
    # poisoned request's `failed` one, by design), and no content in clear anywhere
    statuses = Counter(
        h.header_value(m.headers(), h.STATUS)
        for m in read_topic(
            kafka_config, topics.responses, until=_count(2 * BATCH + 2), timeout_s=20
        )
    )
    assert statuses == {"answered": 2 * BATCH + 1, "failed": 1}
    outputs = topic_bytes(kafka_config, settings.topic_prefix)
    assert outputs[f"topic {topics.dlq}"]  # the dead letter was read too
    plaintexts = [*phrases, POISON, *(a.content[:40] for a in answers.values())]
    leaks = [
        (p, where) for p in plaintexts for where, blob in outputs.items() if p.encode() in blob
    ]
    assert leaks == []
    # The negative control: the same search finds content written in clear.
    with SwitchboardClient(kafka_config, **kw) as plain:
        plain.submit(f"/api {phrases[0]}")
    time.sleep(0.2)
    again = topic_bytes(kafka_config, settings.topic_prefix)
    assert phrases[0].encode() in again[f"topic {topics.requests}"]


def test_a_worker_without_the_key_stops_and_leaves_the_record_for_one_that_has_it(
    kafka_bootstrap: str, kafka_config: dict[str, str], tmp_path: Path
) -> None:
    """A task sealed with ``k9`` reaches a worker whose keyring holds only ``k1``: the worker
    stops with ``KeyUnavailable`` naming k9 and the settings to fix, writes no dead letter and
    no response, and commits nothing past the record; a worker given k9 answers it, once; a
    client without k9 gets that error from ``result`` instead of a timeout, and the answer once
    its keyring gains k9."""
    keys = {name: base64.b64encode(os.urandom(32)).decode() for name in ("k1", "k9")}

    def keyring(*names: str) -> str:
        return json.dumps({"keys": {n: keys[n] for n in names}, "primary": names[-1]})

    with FakeAnthropic() as fake:
        settings = settings_for_test(kafka_bootstrap, fake=fake, encryption_keys=keyring("k9"))
        topics = create_topics(settings, kafka_config)
        lacking = settings_for_test(
            kafka_bootstrap,
            fake=fake,
            topic_prefix=settings.topic_prefix,
            encryption_keys=keyring("k1"),
        )
        phrase = _phrase(9)
        with SwitchboardClient(
            kafka_config, codec=content_codec(settings), topic_prefix=settings.topic_prefix
        ) as client:
            request_id = client.submit(f"/api {phrase}")

            def lacking_setup(p: Pipeline) -> None:
                p.add_worker("api")
                p.add_relay()  # stops with the worker: the process ends, drained

            stopped = RunningPipeline(lacking, kafka_config, lacking_setup)
            with RunningPipeline(settings, kafka_config, lambda p: p.add_router()):
                stopped.__enter__()
                wait_for(lambda: stopped.error is not None, 30, "the worker without k9 to stop")
            with pytest.raises(KeyUnavailable, match=r"'k9'.*SWITCHBOARD_KEYRING_FILE"):
                stopped.stop()
            assert fake.stats().total_calls == 0
            for topic in (topics.dlq, topics.responses):
                assert read_topic(kafka_config, topic, until=_count(1), timeout_s=2) == []
            with RunningPipeline(settings, kafka_config, lambda p: p.add_worker("api")):
                answer = client.result(request_id, 30)
    assert answer.status == "answered" and phrase in answer.content
    assert fake.stats().total_calls == 1
    # A client without k9 is told so by result(), at once, instead of a timeout; once its
    # keyring file gains k9, result() opens the answer it already holds.
    ring = tmp_path / "client-keyring.json"
    _write_keyring(ring, {"k1": keys["k1"]}, "k1", 1_000_000_000)
    source = KeyringSource(load_keyring(ring), ring)
    source.start(every_s=0.1)
    try:
        with SwitchboardClient(
            kafka_config, topic_prefix=settings.topic_prefix, keyring=source
        ) as blind:
            assert blind.lookup([request_id], timeout=20) == {}
            began = time.monotonic()
            with pytest.raises(KeyUnavailable, match="'k9'"):
                blind.result(request_id, 20)
            assert time.monotonic() - began < 1
            _write_keyring(ring, keys, "k1", 2_000_000_000)
            wait_for(lambda: "k9" in source.keyring.keys, 10, "k9 in the client's keyring")
            assert phrase in blind.result(request_id, 1).content
    finally:
        source.stop()


def test_an_encrypted_review_finds_what_the_offline_review_finds_and_leaks_no_document_text(
    kafka_bootstrap: str, kafka_config: dict[str, str], tmp_path: Path
) -> None:
    """``switchboard review`` of the corpus with a keyring: the workers open each part's prompt
    and sealed metadata (path, headings, context), the job opens the findings, and the report
    holds the broker-free review's findings; no document line appears in any topic."""
    keyring = tmp_path / "keyring.yaml"
    keyring.write_text(f"keys:\n  r1: {base64.b64encode(os.urandom(32)).decode()}\n")
    specialists = "backend,security"
    with running_pipeline(
        kafka_bootstrap, kafka_config, concurrency=16, keyring_file=keyring
    ) as settings:
        out = tmp_path / "report"
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "SWITCHBOARD_TOPIC_PREFIX": settings.topic_prefix,
            "SWITCHBOARD_KEYRING_FILE": str(keyring),
        }
        env.pop("ANTHROPIC_API_KEY", None)
        args = [".", "--exclude", "expected.json", "--specialists", specialists, "--out", str(out)]
        proc = subprocess.run(
            [sys.executable, "-m", "switchboard.cli.main", "review", *args, "--fail-on", "none"],
            capture_output=True,
            text=True,
            env=env,
            cwd=CORPUS,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        outputs = topic_bytes(kafka_config, settings.topic_prefix)
    report = json.loads((out / "report.json").read_text())
    assert report["failed"] == []
    found = {
        (f["location"]["path"], f["rule_id"], f["location"]["start_line"])
        for d in report["documents"]
        for f in d["findings"]
    }
    documents = corpus_documents()
    expected = offline_review(documents, specialists.split(","))
    assert found and found == {
        (f.location.path, f.rule_id, f.location.start_line) for f in expected.findings
    }
    lines = [
        line.strip() for d in documents for line in d.text.splitlines() if len(line.strip()) >= 30
    ]
    assert len(lines) > 50
    leaks = [line for line in lines if any(line.encode() in blob for blob in outputs.values())]
    assert leaks == []


def test_the_console_shows_a_sealed_dead_letter_opened_with_the_key_and_names_it_without(
    kafka_bootstrap: str, kafka_config: dict[str, str]
) -> None:
    """The console's dead-letter page opens the sealed original with the keyring, and without
    one shows which key it lacks in its place (the page still answers, with the hex dump)."""
    key = base64.b64encode(os.urandom(32)).decode()
    users = json.dumps({"olga": {"password": "console-pass-3f1", "role": "viewer"}})
    auth = ("olga", "console-pass-3f1")
    settings = settings_for_test(
        kafka_bootstrap,
        console_users=users,
        encryption_keys=json.dumps({"keys": {"c1": key}}),
        console_refresh_s=0.5,
    )
    topics = create_topics(settings, kafka_config)
    phrase = _phrase(7)

    async def dead_letter() -> None:
        codec = content_codec(settings)
        producer = AsyncProducer(producer_config(kafka_config))
        try:
            outcomes = Outcomes(codec, topics, producer, topics.prefix + ".worker.api", "model")
            request = build_request(f"/api {phrase}", specialist="api", request_id="enc-dl-1")
            outputs = await worker_failure(
                outcomes,
                codec,
                topics.tasks("api"),
                request,
                PERMANENT,
                attempts=1,
                partition=0,
                offset=0,
                now=now_ms(),
            )
            await producer.send_all(outputs)
        finally:
            await asyncio.to_thread(producer.close)

    asyncio.run(dead_letter())
    blind_settings = settings_for_test(
        kafka_bootstrap,
        topic_prefix=settings.topic_prefix,
        console_users=users,
        console_refresh_s=0.5,
    )
    pages = {}
    for name, s in (("keyed", settings), ("blind", blind_settings)):
        with TestClient(create_app(build_console(s, kafka_config))) as client:
            until(lambda c=client: "1</strong> of 1" in c.get("/dlq", auth=auth).text)
            listing = client.get("/dlq", auth=auth).text
            found = re.search(r'id=(\d+:\d+)">', listing)
            assert found, listing[-500:]
            page = client.get(f"/dlq/letter?id={found.group(1)}", auth=auth)
            assert page.status_code == 200
            pages[name] = page.text
    assert phrase in pages["keyed"]
    assert phrase not in pages["blind"] and "content encrypted with key" in pages["blind"]
    assert "&#39;c1&#39;" in pages["blind"] or "'c1'" in pages["blind"]
