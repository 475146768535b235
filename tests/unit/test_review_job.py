"""The review job without a broker: request ids, the plan, review metadata and the prompt's
markers as the worker reads them, the offline backend's findings, the estimate, collecting
responses into a result, progress lines and the command's one-line errors."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from consumers.specialists.backends import OfflineBackend
from consumers.specialists.review import detect_findings, offline_answer
from producers.client import Response
from producers.review.job import (
    CHARS_PER_TOKEN,
    ESTIMATED_OUTPUT_TOKENS,
    REVIEW_OVERHEAD_TOKENS,
    Outcome,
    Pricing,
    collect,
    estimate,
    job_name,
    plan,
    request_id,
)
from producers.review.progress import LiveProgress, PlainProgress, progress_for
from switchboard.cli.main import main
from switchboard.core.findings import ReviewMeta, parse_findings_answer
from tests.unit.review_corpus import CORPUS, corpus_documents


def test_request_ids_change_with_job_text_part_and_specialist_and_nothing_else() -> None:
    base = request_id("job", "hash", 0, "backend")
    assert base == request_id("job", "hash", 0, "backend")
    others = {
        request_id("job2", "hash", 0, "backend"),
        request_id("job", "hash2", 0, "backend"),
        request_id("job", "hash", 1, "backend"),
        request_id("job", "hash", 0, "perf"),
    }
    assert base not in others and len(others) == 4
    assert base.startswith("review-") and len(base) == len("review-") + 32


def test_the_default_job_name_is_stable_and_readable() -> None:
    assert job_name(["docs/design/"]) == job_name(["docs/design"])
    assert job_name(["docs/design"]).startswith("design-")
    assert job_name(["a", "b"]) == job_name(["b", "a"]) != job_name(["a"])


def test_a_plan_asks_every_part_of_every_document_each_specialist_once() -> None:
    documents = corpus_documents()
    job = plan("j", documents, ("backend", "perf"))
    assert len(job.items) == 2 * sum(job.part_counts.values())
    assert len({item.request_id for item in job.items}) == len(job.items)
    assert max(job.part_counts.values()) > 1  # the large document is split
    again = plan("j", documents, ("backend", "perf"))
    assert [i.request_id for i in again.items] == [i.request_id for i in job.items]


def test_the_worker_reads_back_each_parts_text_and_place_from_the_request() -> None:
    """The router strips the request text; the markers still give the part's exact text, and
    the metadata its path, first line, headings and format, within the router's 8 KiB."""
    job = plan("j", corpus_documents(), ("backend",))
    for item in job.items:
        metadata = item.metadata("j")
        assert sum(len(k) + len(v.encode()) for k, v in metadata.items()) < 8_192
        meta = ReviewMeta.from_metadata(metadata)
        assert meta is not None
        assert (meta.path, meta.start_line, meta.heading_path, meta.format) == (
            item.part.path,
            item.part.start_line,
            item.part.heading_path,
            item.part.format,
        )
        assert meta.part_text(item.prompt.strip()) == item.part.text
    assert ReviewMeta.from_metadata({"source": "ticket"}) is None
    assert (
        ReviewMeta.from_metadata({"kind": "review", "review.path": "x", "review.start_line": "?"})
        is None
    )


def test_the_offline_backend_answers_a_review_request_with_the_parts_findings() -> None:
    backend = OfflineBackend()
    job = plan("j", corpus_documents(), ("backend",))
    item = next(i for i in job.items if i.part.count > 1 and i.part.index > 0)
    request = {"metadata": item.metadata("j")}
    answer = backend.answer_now("backend", item.prompt.strip(), request)
    got = parse_findings_answer(answer.content)
    want = offline_answer(
        "backend",
        detect_findings(
            item.part.text,
            path=item.part.path,
            specialist="backend",
            start_line=item.part.start_line,
            heading_path=item.part.heading_path,
            doc_format=item.part.format,
            context=item.part.context(),
        ),
    )
    assert got == want
    plain = backend.answer_now("backend", "design a rate limiter", {"metadata": {}})
    with pytest.raises(ValueError):
        parse_findings_answer(plain.content)  # not a review request: prose, as before


def test_the_estimate_is_characters_over_four_plus_persona_and_overhead_at_the_price() -> None:
    job = plan("j", corpus_documents()[:2], ("backend",))
    pricing = Pricing({"backend": "m"}, {"backend": (2.0, 10.0)}, {"backend": 500})
    got = estimate(job.items, pricing)
    tokens_in = sum(
        len(i.prompt) // CHARS_PER_TOKEN + 500 + REVIEW_OVERHEAD_TOKENS for i in job.items
    )
    assert got.input_tokens == tokens_in
    assert got.output_tokens == ESTIMATED_OUTPUT_TOKENS * len(job.items)
    assert got.cost_micro_usd == sum(
        round(
            (len(i.prompt) // CHARS_PER_TOKEN + 500 + REVIEW_OVERHEAD_TOKENS) * 2.0
            + ESTIMATED_OUTPUT_TOKENS * 10.0
        )
        for i in job.items
    )


def _response(request_id: str, status: str, content: str, **record: object) -> Response:
    return Response(request_id, status, "backend", "offline", content, record=dict(record))


def test_collect_keeps_findings_notes_failures_timeouts_and_cost() -> None:
    documents = [d for d in corpus_documents() if d.path == "checkout-design.md"]
    job = plan("j", documents, ("backend", "perf", "security", "api"))
    backend, perf, security, api = job.items
    answer = offline_answer(
        "backend", detect_findings(backend.part.text, path=backend.part.path, specialist="backend")
    )
    outcome = Outcome(
        responses={
            backend.request_id: _response(
                backend.request_id,
                "answered",
                answer.model_dump_json(),
                usage={"input_tokens": 100, "output_tokens": 20},
                cost_micro_usd=400,
            ),
            perf.request_id: _response(perf.request_id, "answered", "just prose"),
            security.request_id: _response(
                security.request_id, "failed", "", error_message="dead-lettered: 400"
            ),
        },
        timed_out=[api],
    )
    result = collect(job, outcome, fail_on=None)
    assert len(result.findings) == len(answer.findings) > 0
    (document,) = result.documents
    assert len(document.notes) == 1 and "just prose" in document.notes[0]
    assert {(f.specialist, f.status) for f in result.failed} == {
        ("security", "failed"),
        ("api", "timeout"),
    }
    assert document.usage_by_specialist["backend"].cost_micro_usd == 400
    assert result.usage.total_tokens == 120
    assert result.exit_code == 2


def test_plain_progress_prints_counts_rate_eta_and_spend() -> None:
    job = plan("j", corpus_documents()[:1], ("backend", "perf"))
    out = io.StringIO()
    progress = PlainProgress(out, interval_s=0)
    progress.start(len(job.items), 0, len(job.items))
    first, second = job.items[:2]
    progress.settled(first, _response(first.request_id, "answered", "{}", cost_micro_usd=2500))
    progress.settled(second, None)
    progress.stop()
    lines = out.getvalue().splitlines()
    assert lines[0] == f"review: {len(job.items)} requests, 0 answered before, 2 to send"
    assert "2/2 done, 1 failed" in lines[-1] and "/s, ETA" in lines[-1]
    assert "spent $0.0025" in lines[-1]


def test_estimate_sends_nothing_and_needs_no_broker(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")  # nothing listens there
    code = main(["review", str(CORPUS), "--exclude", "expected.json", "--estimate"])
    out = capsys.readouterr().out
    assert code == 0
    assert "nothing sent" in out and "45 requests (11 documents, 15 parts" in out
    code = main(
        ["review", str(CORPUS), "--exclude", "expected.json", "--estimate", "--budget", "0.01"]
    )
    assert code == 0 and "over --budget $0.01" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--format", "md,pdf"], "pdf is not a report format list"),
        (["--specialists", "backend,ops"], "ops is not a specialist list"),
        (["--fail-on", "severe"], "'severe' is not a severity"),
        (["--budget", "-1"], "'-1' must be more than 0"),
        (["--job", "my job"], "has spaces or slashes"),
        (["--baseline", "missing.json"], "missing.json is not a file"),
        (["--timeout", "soon"], "'soon' is not a number of seconds"),
    ],
)
def test_bad_arguments_are_one_line_errors(
    args: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["review", str(CORPUS), *args])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and says in err and err.count("\n") == 1


def test_inputs_that_name_nothing_are_one_line_errors_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["review"]) == 2
    assert "give PATH... or --manifest FILE" in capsys.readouterr().err
    assert main(["review", str(tmp_path / "nope")]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    (tmp_path / "image.png").write_bytes(b"\x89PNG")
    assert main(["review", str(tmp_path)]) == 2
    assert "no document to review" in capsys.readouterr().err
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"text": "no id"}) + "\n")
    assert main(["review", "--manifest", str(manifest), "--estimate"]) == 2
    assert "a text item needs an id" in capsys.readouterr().err


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_the_live_bar_and_anything_else_plain_lines() -> None:
    assert isinstance(progress_for(io.StringIO()), PlainProgress)
    live = progress_for(_Terminal())
    assert isinstance(live, LiveProgress)
    job = plan("j", corpus_documents()[:1], ("backend",))
    live.start(len(job.items), 0, len(job.items))
    live.settled(job.items[0], None)
    live.stop()
