"""One finding once (merged across specialists) and new / unchanged / fixed against a baseline;
fingerprints survive lines inserted above."""

from __future__ import annotations

import json

from consumers.specialists.review import detect_findings
from producers.review.documents import Document
from producers.review.merge import compare_with_baseline, merge_findings
from producers.review.report_json import render_json
from producers.review.result import BaselineStatus, Verdict
from tests.unit.review_corpus import offline_review

DESIGN = """# Search indexer

## Flow

The indexer calls the Catalogue service for each batch, with a 200 ms timeout behind a
circuit breaker.
When the ranker is down the indexer retries forever.
The admin API has no authentication.
Indexing lag is a Prometheus metric with an alert at 15 minutes.
"""


def test_findings_of_several_specialists_on_the_same_lines_merge_into_one() -> None:
    pairs = [
        ("doc", finding)
        for specialist in ("backend", "security", "perf", "api")
        for finding in detect_findings(DESIGN, path="d.md", specialist=specialist)
    ]
    merged = merge_findings(pairs)
    by_rule = {f.rule_id: f for f in merged}
    assert len(merged) == len(by_rule)  # one per rule and place
    assert by_rule["SB-SEC-005"].specialists == ["api", "security"]
    assert by_rule["SB-SEC-005"].specialist == "security"
    assert by_rule["SB-BE-006"].specialists == ["backend"]
    # Different rules on one line stay apart: they are different things to fix.
    assert merge_findings(
        [("doc", pairs[0][1]), ("doc", pairs[0][1].model_copy(update={"rule_id": "SB-X-1"}))]
    )[1:]


def test_fingerprints_survive_lines_inserted_above() -> None:
    before = {
        f.fingerprint: f.location.start_line
        for f in detect_findings(DESIGN, path="d.md", specialist="backend")
    }
    shifted = DESIGN.replace("## Flow\n", "## Flow\n\nA new paragraph\nof two lines.\n\n")
    after = {
        f.fingerprint: f.location.start_line
        for f in detect_findings(shifted, path="d.md", specialist="backend")
    }
    assert before.keys() == after.keys() and before
    assert all(after[key] == line + 4 for key, line in before.items())


def test_baseline_marks_new_unchanged_and_fixed_and_gates_only_new() -> None:
    first = offline_review([Document.from_text("d.md", DESIGN)])
    previous = json.loads(render_json(first))
    assert first.verdict is Verdict.FAIL  # without a baseline every high finding gates

    edited = DESIGN.replace("When the ranker is down the indexer retries forever.\n", "").replace(
        "The admin API has no authentication.",
        "The admin API has no authentication.\nPasswords are stored as MD5 hashes.",
    )
    second = offline_review([Document.from_text("d.md", edited)], baseline=previous)
    status = {f.rule_id: f.baseline for f in second.findings}
    assert status == {"SB-SEC-005": BaselineStatus.UNCHANGED, "SB-SEC-002": BaselineStatus.NEW}
    assert [(f.rule_id, f.baseline) for f in second.fixed] == [("SB-BE-006", BaselineStatus.FIXED)]
    assert [f.rule_id for f in second.gating()] == ["SB-SEC-002"]

    unchanged = offline_review([Document.from_text("d.md", DESIGN)], baseline=previous)
    assert unchanged.verdict is Verdict.PASS and unchanged.exit_code == 0 and not unchanged.fixed


def test_a_document_left_out_of_the_run_fixes_nothing() -> None:
    previous = offline_review([Document.from_text("d.md", DESIGN)]).findings
    current, fixed = compare_with_baseline([], previous, reviewed_paths=["other.md"])
    assert (current, fixed) == ([], [])
