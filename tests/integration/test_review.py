"""``switchboard review`` end to end: the CLI, the real broker, a real pipeline of offline
workers (and Claude's path against the fake server over HTTP), reports on disk, exit codes,
resuming a killed job."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from consumers.app import Pipeline
from switchboard.core.settings import Settings
from switchboard.devtools.fake_anthropic import FakeAnthropic
from tests.unit.review_corpus import CORPUS, corpus_documents, offline_review

from .harness import RunningPipeline, create_topics, running_pipeline, settings_for_test
from .helpers import topic_end_total

pytestmark = pytest.mark.integration

SPECIALISTS = "backend,security,perf,api"


@pytest.fixture(scope="module")
def running(kafka_bootstrap: str, kafka_config: dict[str, str]) -> Iterator[Settings]:
    with running_pipeline(kafka_bootstrap, kafka_config, concurrency=32) as settings:
        yield settings


def _env(settings: Settings, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": str(settings.bootstrap_servers),
        "SWITCHBOARD_TOPIC_PREFIX": settings.topic_prefix,
        **extra,
    }
    env.pop("ANTHROPIC_API_KEY", None)
    return env


def _review(settings: Settings, *args: str, cwd: Path = CORPUS) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "switchboard.cli.main", "review", *args],
        capture_output=True,
        text=True,
        env=_env(settings),
        cwd=cwd,
        timeout=180,
    )


def _responses_by_id(kafka: dict[str, str], topic: str) -> Counter[str]:
    """How many responses the topic holds per request id, read to its end now."""
    consumer = Consumer({**kafka, "group.id": f"count-{uuid.uuid4().hex}"})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {}
        for p in partitions:
            _low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            ends[p] = high
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        counts: Counter[str] = Counter()
        done = {p for p, high in ends.items() if high == 0}
        deadline = time.monotonic() + 30
        while len(done) < len(ends) and time.monotonic() < deadline:
            for msg in consumer.consume(500, 0.2):
                if msg.error() is None:
                    counts[(msg.key() or b"").decode()] += 1
                    partition, offset = msg.partition() or 0, msg.offset() or 0
                    if offset + 1 >= ends[partition]:
                        done.add(partition)
        assert len(done) == len(ends), "could not read the response topic to its end"
        return counts
    finally:
        consumer.close()


def test_an_offline_review_writes_every_report_with_the_corpus_findings(
    running: Settings, tmp_path: Path
) -> None:
    """The corpus through the pipeline finds what the broker-free offline review finds, at the
    same lines: every planted problem of expected.json, nothing on the controls; md, html, json
    and sarif are written; a rerun of the job sends nothing and gives the same findings."""
    out = tmp_path / "report"
    job = f"corpus-{uuid.uuid4().hex[:8]}"
    args = (".", "--exclude", "expected.json", "--specialists", SPECIALISTS, "--job", job)
    proc = _review(running, *args, "--out", str(out), "--fail-on", "none")
    assert proc.returncode == 0, proc.stderr
    assert {p.name for p in out.iterdir()} == {
        "report.md",
        "report.html",
        "report.json",
        "report.sarif",
    }
    report = json.loads((out / "report.json").read_text())
    assert report["job"] == job and report["failed"] == []
    found = {
        (
            f["location"]["path"],
            f["rule_id"],
            f["location"]["start_line"],
            f["location"]["end_line"],
        )
        for d in report["documents"]
        for f in d["findings"]
    }
    broker_free = offline_review(corpus_documents(), SPECIALISTS.split(","))
    assert found == {
        (f.location.path, f.rule_id, f.location.start_line, f.location.end_line)
        for f in broker_free.findings
    }
    expected = json.loads((CORPUS / "expected.json").read_text())["documents"]
    for path, planted in expected.items():
        at = {(rule, start, end) for p, rule, start, end in found if p == path}
        assert {(e["rule_id"], *e["lines"]) for e in planted} <= at, path
        if not planted:
            assert at == set(), f"a control document has findings: {path}"
    sarif = json.loads((out / "report.sarif").read_text())
    assert len(sarif["runs"][0]["results"]) == len(found)
    assert "SB-" in (out / "report.md").read_text()
    assert f"{len(found)} findings" in proc.stdout

    again = _review(running, *args, "--out", str(tmp_path / "again"), "--fail-on", "none")
    assert again.returncode == 0, again.stderr
    assert "0 sent" in again.stdout and "answered before" in again.stdout
    rerun = json.loads((tmp_path / "again" / "report.json").read_text())
    assert [d["findings"] for d in rerun["documents"]] == [
        d["findings"] for d in report["documents"]
    ]


def test_exit_codes_gate_on_new_findings_and_on_unanswered_items(
    running: Settings, tmp_path: Path
) -> None:
    """--fail-on high exits 1 on the corpus (it has high findings); the same documents against
    their own report as --baseline exit 0 (nothing new); the control document alone exits 0 even
    at --fail-on info; an item that cannot be answered in time exits 2."""
    job = f"gate-{uuid.uuid4().hex[:8]}"
    base = (".", "--exclude", "expected.json", "--job", job, "--format", "json")
    first = _review(running, *base, "--out", str(tmp_path / "a"), "--fail-on", "high")
    assert first.returncode == 1, first.stderr
    assert ": fail:" in first.stdout
    baseline = tmp_path / "a" / "report.json"
    again = _review(
        running,
        *base,
        "--out",
        str(tmp_path / "b"),
        "--fail-on",
        "high",
        "--baseline",
        str(baseline),
    )
    assert again.returncode == 0, again.stderr
    statuses = {
        f["baseline"]
        for d in json.loads((tmp_path / "b" / "report.json").read_text())["documents"]
        for f in d["findings"]
    }
    assert statuses == {"unchanged"}

    control = _review(
        running,
        "ledger-control.md",
        "--job",
        job,
        "--out",
        str(tmp_path / "c"),
        "--fail-on",
        "info",
    )
    assert control.returncode == 0, control.stderr

    rushed = _review(
        running,
        "checkout-design.md",
        "--job",
        f"rushed-{uuid.uuid4().hex[:8]}",
        "--out",
        str(tmp_path / "d"),
        "--timeout",
        "0.001",
        "--fail-on",
        "none",
    )
    assert rushed.returncode == 2, rushed.stderr
    failed = json.loads((tmp_path / "d" / "report.json").read_text())["failed"]
    assert failed and {f["status"] for f in failed} == {"timeout"}


def test_a_budget_stops_submitting_before_the_estimate_passes_it(
    running: Settings, tmp_path: Path
) -> None:
    """With --budget below the job's estimate, only what fits is sent; the rest is reported
    skipped (exit 2) and stderr says where it stopped."""
    estimate = _review(running, ".", "--exclude", "expected.json", "--estimate")
    total_usd = float(estimate.stdout.split("~$")[1].split()[0])
    budget = total_usd / 3
    job = f"budget-{uuid.uuid4().hex[:8]}"
    proc = _review(
        running,
        ".",
        "--exclude",
        "expected.json",
        "--job",
        job,
        "--budget",
        f"{budget:.4f}",
        "--out",
        str(tmp_path / "r"),
        "--fail-on",
        "none",
    )
    assert proc.returncode == 2, proc.stderr
    assert "stopped submitting at --budget" in proc.stderr
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    skipped = [f for f in report["failed"] if f["status"] == "skipped"]
    sent = int(proc.stdout.split(" sent")[0].rsplit(" ", 1)[-1])
    requests = int(estimate.stdout.split(" requests")[0].rsplit(" ", 1)[-1])
    assert skipped and sent > 0 and sent + len(skipped) == requests


def _many_documents(folder: Path, count: int) -> None:
    """``count`` distinct design docs, each with planted problems for the offline rules."""
    folder.mkdir()
    for n in range(count):
        (folder / f"service-{n:03}.md").write_text(
            f"# Service {n}\n\n## Calls\n\nService {n} calls the pricing service synchronously "
            "on every request, with no timeout.\n\n## Storage\n\nIt shares the orders database "
            f"with the billing service; build {n}.\n"
        )


def test_a_killed_job_resumes_and_no_part_is_answered_twice(
    running: Settings, kafka_config: dict[str, str], tmp_path: Path
) -> None:
    """SIGKILL a review job once some responses are in; the rerun of the same job sends only
    what has no response yet, and in the end the response topic holds exactly one response per
    request of the job."""
    docs = tmp_path / "docs"
    _many_documents(docs, 120)
    job = f"resume-{uuid.uuid4().hex[:8]}"
    args = [
        sys.executable,
        "-m",
        "switchboard.cli.main",
        "review",
        str(docs),
        "--job",
        job,
        "--format",
        "json",
        "--fail-on",
        "none",
    ]
    topic = f"{running.topic_prefix}.responses"
    before = _responses_by_id(kafka_config, topic)
    first = subprocess.Popen(
        [*args, "--out", str(tmp_path / "first")],
        env=_env(running),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    total = 120 * 3
    deadline = time.monotonic() + 60
    answered = 0
    while time.monotonic() < deadline:
        answered = sum((_responses_by_id(kafka_config, topic) - before).values())
        if answered >= 20:
            break
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    assert 20 <= answered < total, f"not killed midway: {answered} of {total} answered"

    second = subprocess.run(
        [*args, "--out", str(tmp_path / "second")],
        env=_env(running),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert second.returncode == 0, second.stderr
    reused = int(second.stdout.split(" answered before")[0].rsplit(" ", 1)[-1])
    print(f"killed at {answered} responses; the rerun reused {reused}: {second.stdout}")
    assert reused >= answered
    counts = _responses_by_id(kafka_config, topic) - before
    assert len(counts) == total
    assert set(counts.values()) == {1}, "a part was answered twice"
    report = json.loads((tmp_path / "second" / "report.json").read_text())
    assert report["failed"] == [] and len(report["documents"]) == 120


def test_claude_answers_review_requests_with_the_findings_tool(
    kafka_bootstrap: str, kafka_config: dict[str, str], tmp_path: Path
) -> None:
    """Against the fake Messages API over HTTP: a forced report_findings call that validates
    becomes findings (path and specialist set by the worker); an invalid one is retried once and
    then validates; one invalid every time ends as an unstructured note after two calls; cost is
    in the report; a rerun of the job makes no model call."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "good.md").write_text("# Good\n\nA service with retries.\n")
    (docs / "once.md").write_text('# Once\n\nFAKE_TOOL_INPUT_ONCE: {"findings": 5}\n')
    (docs / "never.md").write_text('# Never\n\nFAKE_TOOL_INPUT: {"findings": "none"}\n')
    with FakeAnthropic(latency_ms=5) as fake:
        settings = settings_for_test(kafka_bootstrap, fake=fake)
        create_topics(settings, kafka_config)

        def setup(p: Pipeline) -> None:
            p.add_router()
            p.add_worker("backend", concurrency=8)

        args = (str(docs), "--specialists", "backend", "--fail-on", "none", "--format", "json")
        with RunningPipeline(settings, kafka_config, setup):
            proc = _review(settings, *args, "--out", str(tmp_path / "r"), cwd=tmp_path)
            calls = fake.stats().total_calls
            rerun = _review(settings, *args, "--out", str(tmp_path / "again"), cwd=tmp_path)
        calls_after_rerun = fake.stats().total_calls
    assert proc.returncode == 0, proc.stderr
    assert calls == 1 + 2 + 2
    assert rerun.returncode == 0 and "0 sent, 3 answered before" in rerun.stdout, rerun.stderr
    assert calls_after_rerun == calls  # the rerun made no model call
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    by_name = {Path(d["path"]).name: d for d in report["documents"]}
    for name in ("good.md", "once.md"):
        findings = by_name[name]["findings"]
        assert findings and {f["specialists"][0] for f in findings} == {"backend"}
        assert {f["location"]["path"] for f in findings} == {by_name[name]["path"]}
    never = by_name["never.md"]
    assert never["findings"] == []
    assert len(never["notes"]) == 1 and "did not validate" in never["notes"][0]
    assert report["usage"]["input_tokens"] > 0 and report["usage"]["cost_micro_usd"] > 0


def test_an_answered_id_is_looked_up_not_resubmitted_and_switchboard_result_prints_it(
    running: Settings, kafka_config: dict[str, str]
) -> None:
    """A new client's lookup finds a response written before it started; submit of that id
    sends nothing and result() returns the earlier answer at once; `switchboard result ID`
    prints it, and an id with no response is a one-line error, exit 1."""
    from producers.client import SwitchboardClient

    prefix = running.topic_prefix
    request = f"res-{uuid.uuid4().hex[:8]}"
    with SwitchboardClient(kafka_config, topic_prefix=prefix) as client:
        client.submit("/backend design a rate limiter", request_id=request)
        earlier = client.result(request, 60)
    requests_before = topic_end_total(kafka_config, f"{prefix}.requests")
    with SwitchboardClient(kafka_config, topic_prefix=prefix) as client:
        assert set(client.lookup([request, "never-sent"])) == {request}
        assert client.submit("/backend design a rate limiter", request_id=request) == request
        assert client.result(request, 0.1).content == earlier.content
    assert topic_end_total(kafka_config, f"{prefix}.requests") == requests_before

    run = [sys.executable, "-m", "switchboard.cli.main", "result"]
    shown = subprocess.run(
        [*run, request, "--json"], capture_output=True, text=True, env=_env(running), timeout=60
    )
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["content"] == earlier.content
    missing = subprocess.run(
        [*run, "never-sent", "--timeout", "0.5"],
        capture_output=True,
        text=True,
        env=_env(running),
        timeout=60,
    )
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1
    assert "no response for never-sent" in missing.stderr
