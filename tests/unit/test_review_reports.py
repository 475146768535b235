"""The four reports render from a review result: report.md, report.html (self-contained, data
embedded), report.json (valid against its shipped schema, which matches the models) and
report.sarif (valid against the shipped SARIF 2.1.0 schema)."""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from producers.review.report import ALL_FORMATS, write_reports
from producers.review.report_json import generated_report_schema, report_schema
from producers.review.report_sarif import FINGERPRINT_KEY, render_sarif
from producers.review.result import FailedItem, ReviewResult, Usage
from tests.unit.review_corpus import corpus_documents, offline_review


@pytest.fixture(scope="module")
def result() -> ReviewResult:
    documents = corpus_documents()
    first = documents[0]
    return offline_review(
        documents,
        failed=[
            FailedItem(
                document_id=first.doc_id,
                path=first.path,
                part=0,
                specialist="perf",
                status="expired",
                reason="deadline of 120 s passed before an answer",
            )
        ],
        usage={
            (first.doc_id, "backend"): Usage(
                input_tokens=12_000, output_tokens=900, cost_micro_usd=49_500
            )
        },
    )


def _sarif_schema() -> dict[str, Any]:
    text = (
        resources.files("producers.review").joinpath("schemas/sarif-2.1.0-rtm.5.json").read_text()
    )
    schema: dict[str, Any] = json.loads(text)
    return schema


def test_sarif_validates_against_the_shipped_schema(result: ReviewResult) -> None:
    sarif = render_sarif(result)
    jsonschema.Draft4Validator(_sarif_schema()).validate(sarif)
    run = sarif["runs"][0]
    rules = [rule["id"] for rule in run["tool"]["driver"]["rules"]]
    assert rules == sorted(set(rules)) and len(run["results"]) == len(result.findings)
    first = run["results"][0]
    assert rules[first["ruleIndex"]] == first["ruleId"]
    region = first["locations"][0]["physicalLocation"]["region"]
    assert region["startLine"] <= region["endLine"]
    assert len(first["partialFingerprints"][FINGERPRINT_KEY]) == 32
    levels = {r["properties"]["severity"]: r["level"] for r in run["results"]}
    assert levels["critical"] == levels["high"] == "error" and levels["medium"] == "warning"
    assert levels["low"] == "note"
    assert run["invocations"][0]["executionSuccessful"] is False


def test_the_shipped_schema_rejects_a_broken_log(result: ReviewResult) -> None:
    # Guard against a validator that accepts anything.
    sarif = render_sarif(result)
    sarif["runs"][0]["results"][0]["level"] = "fatal"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft4Validator(_sarif_schema()).validate(sarif)


def test_report_json_is_versioned_valid_and_reads_back(
    result: ReviewResult, tmp_path: Path
) -> None:
    written = write_reports(result, tmp_path, ["json"])
    data = json.loads(written["json"].read_text())
    jsonschema.Draft202012Validator(report_schema()).validate(data)
    assert data["version"] == 1 and data["verdict"] == "fail"
    assert data["summary"] == result.severity_counts()
    assert all("fingerprint" in f for d in data["documents"] for f in d["findings"])
    assert ReviewResult.model_validate(data).findings == result.findings


def test_the_shipped_report_schema_matches_the_models() -> None:
    # Regenerate: python -m producers.review.report_json > producers/review/schemas/review-report.schema.json
    assert report_schema() == generated_report_schema()


def test_report_md_has_verdict_summary_findings_failures_and_cost(
    result: ReviewResult, tmp_path: Path
) -> None:
    written = write_reports(result, tmp_path, ["md"])
    text = written["md"].read_text()
    assert "**Verdict: FAIL**" in text
    assert "| checkout-design.md | 0 | 7 | 0 | 0 | 0 |" in text
    assert "#### HIGH · SB-BE-003 · Database shared between services" in text
    assert "> Checkout, Inventory and Fulfilment share the same Postgres database" in text
    assert "deadline of 120 s passed" in text and "| backend | 12,000 | 900 | 0.0495 |" in text


def test_report_html_is_one_self_contained_page_with_table_findings_and_data(
    result: ReviewResult, tmp_path: Path
) -> None:
    html = write_reports(result, tmp_path, ["html"])["html"].read_text()
    assert not re.search(
        r"""(?:src|href)=["']?(?:https?:)?//""", html
    )  # nothing fetched from outside
    assert '<table id="summary">' in html and '<table id="findings">' in html
    assert html.count('<tr class="finding"') == len(result.findings)
    assert (
        'id="filter-severity"' in html
        and 'id="filter-specialist"' in html
        and 'id="filter-document"' in html
    )
    assert "Database shared between services" in html
    assert "deadline of 120 s passed" in html
    for document in result.documents:
        assert f'id="doc-{document.document_id}"' in html
    embedded = re.search(
        r'<script type="application/json" id="review-data">(.*?)</script>', html, re.S
    )
    assert embedded is not None
    data = json.loads(embedded.group(1))
    assert len(data["findings"]) == len(result.findings) and data["verdict"] == "fail"


def test_evidence_is_escaped_in_html(tmp_path: Path) -> None:
    from producers.review.documents import Document

    hostile = "# Doc\n\nThe <script>alert(1)</script> worker retries forever.\n"
    html = write_reports(offline_review([Document.from_text("x.md", hostile)]), tmp_path, ["html"])[
        "html"
    ].read_text()
    assert (
        "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    )


def test_all_formats_are_written_and_unknown_ones_refused(
    result: ReviewResult, tmp_path: Path
) -> None:
    written = write_reports(result, tmp_path / "out")
    assert sorted(p.name for p in written.values()) == [
        "report.html",
        "report.json",
        "report.md",
        "report.sarif",
    ]
    assert tuple(written) == ALL_FORMATS
    with pytest.raises(ValueError, match="unknown report format"):
        write_reports(result, tmp_path, ["pdf"])
