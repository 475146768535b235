"""Offline detectors: every planted problem of the corpus at its lines, nothing else; the
controls produce no finding; negations and rejected alternatives do not fire."""

from __future__ import annotations

import json

import pytest

from consumers.specialists.review import RULES, detect_findings, rules_for
from tests.unit.review_corpus import CORPUS, corpus_documents, offline_review

EXPECTED = json.loads((CORPUS / "expected.json").read_text())["documents"]


def test_the_corpus_has_the_documents_the_issue_asks_for() -> None:
    documents = {d.path: d for d in corpus_documents()}
    assert set(documents) == set(EXPECTED)
    assert len(documents) >= 10
    formats = {d.format for d in documents.values()}
    assert formats >= {"markdown", "rst", "asciidoc", "text", "openapi", "asyncapi", "json"}
    assert max(d.size_bytes for d in documents.values()) > 32 * 1024
    assert [p for p, found in EXPECTED.items() if not found] == [
        "ledger-control.md",
        "catalog-api-control.yaml",
    ]


@pytest.fixture(scope="module")
def corpus_findings() -> dict[str, set[tuple[str, int, int]]]:
    result = offline_review(corpus_documents())
    return {
        d.path: {(f.rule_id, f.location.start_line, f.location.end_line) for f in d.findings}
        for d in result.documents
    }


@pytest.mark.parametrize("path", sorted(EXPECTED))
def test_each_planted_problem_is_found_at_its_lines_and_nothing_else(
    path: str, corpus_findings: dict[str, set[tuple[str, int, int]]]
) -> None:
    expected = {(e["rule_id"], e["lines"][0], e["lines"][1]) for e in EXPECTED[path]}
    found = corpus_findings[path]
    assert {"missed": expected - found, "unexpected": found - expected} == {
        "missed": set(),
        "unexpected": set(),
    }


def test_evidence_quotes_the_lines_it_points_at() -> None:
    result = offline_review(corpus_documents())
    texts = {d.path: d.text.splitlines() for d in corpus_documents()}
    for finding in result.findings:
        lines = texts[finding.location.path][
            finding.location.start_line - 1 : finding.location.end_line
        ]
        assert finding.evidence.splitlines()[0].strip() == lines[0].strip()


def test_rule_ids_are_unique_and_every_rule_has_advice() -> None:
    assert len({r.rule_id for r in RULES}) == len(RULES) == 20
    for rule in RULES:
        assert rule.rule_id.startswith(("SB-BE-", "SB-SEC-", "SB-API-", "SB-PERF-"))
        assert rule.title and rule.recommendation.endswith(".") and rule.specialists
    assert rules_for("data") == ()


def _found(text: str, specialist: str = "backend", path: str = "doc.md") -> list[str]:
    return [f.rule_id for f in detect_findings(text, path=path, specialist=specialist)]


@pytest.mark.parametrize(
    ("text", "specialist", "rule_id"),
    [
        ("Clients retry immediately on any error.", "backend", "SB-BE-006"),
        ("If no reply arrives, the client retries forever.", "backend", "SB-BE-006"),
        ("Orders and billing share the same database.", "backend", "SB-BE-003"),
        ("Login compares sha1(password) with the stored hash.", "security", "SB-SEC-002"),
        ("The metrics API is unauthenticated and open to anyone.", "security", "SB-SEC-005"),
        ("url: http://10.0.3.7:8080/score", "security", "SB-SEC-003"),
        ("token: ghp_abcdefghijklmnopqrstuvwxyz0123456789", "security", "SB-SEC-001"),
    ],
)
def test_a_stated_problem_fires(text: str, specialist: str, rule_id: str) -> None:
    assert rule_id in _found(text, specialist)


@pytest.mark.parametrize(
    ("text", "specialist"),
    [
        ("We never retry immediately: retries back off with jitter.", "backend"),
        ("Instead of a shared database, each service owns its schema.", "backend"),
        ("Passwords are hashed with Argon2id rather than MD5 or SHA-1.", "security"),
        ("Unauthenticated requests are rejected with 401.", "security"),
        ("No endpoint is reachable without authentication.", "security"),
        ("During development the API listens on http://localhost:8080/.", "security"),
        ("password: ${DB_PASSWORD}\napi_key: <your key>\nsecretName: orders-db", "security"),
        ("# Alternatives considered\n\nA shared database was simpler; we rejected it.", "backend"),
    ],
)
def test_a_rejected_or_safe_statement_does_not_fire(text: str, specialist: str) -> None:
    assert _found(text, specialist) == []


def test_absence_checks_read_the_context_of_a_split_document() -> None:
    part = "## Calls\n\nThe cart calls the Pricing service for totals.\n"
    assert {"SB-BE-004", "SB-BE-005"} <= set(_found(part))
    context = "Outline:\n  Timeouts and circuit breakers (line 80)"
    found = detect_findings(
        part, path="doc.md", specialist="backend", start_line=40, context=context
    )
    assert found == []


def test_findings_carry_the_original_line_numbers_and_heading_of_a_part() -> None:
    part = "### Retries\n\nWorkers retry forever.\n"
    [finding] = detect_findings(
        part,
        path="doc.md",
        specialist="backend",
        start_line=120,
        heading_path=("Design", "Retries"),
    )
    assert (finding.location.start_line, finding.location.end_line) == (122, 122)
    assert finding.location.heading == "Design > Retries"
