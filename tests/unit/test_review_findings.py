"""The kernel's findings model: severities order, fingerprints ignore lines, answers validate."""

from __future__ import annotations

import json

import pytest

from switchboard.core.findings import (
    FINDINGS_TOOL_NAME,
    Finding,
    FindingsAnswer,
    FindingsParseError,
    Location,
    Severity,
    findings_tool,
    fingerprint,
    parse_findings_answer,
)


def _finding(**changes: object) -> Finding:
    fields: dict[str, object] = {
        "rule_id": "SB-BE-005",
        "specialist": "backend",
        "severity": "high",
        "category": "resilience",
        "title": "Calls to other services without timeouts",
        "evidence": "Checkout calls the Pricing service.",
        "location": {"path": "docs/checkout.md", "start_line": 14, "end_line": 14},
        "recommendation": "Set timeouts.",
    }
    fields.update(changes)
    return Finding.model_validate(fields)


def test_severities_compare_by_rank_not_by_spelling() -> None:
    assert Severity.CRITICAL > Severity.HIGH > Severity.MEDIUM > Severity.LOW > Severity.INFO
    assert Severity.LOW >= "low" and not Severity.INFO >= "low"
    assert sorted(Severity)[-1] is Severity.CRITICAL


def test_fingerprint_ignores_lines_whitespace_and_markup_but_not_rule_or_path() -> None:
    moved = _finding(location=Location(path="docs/checkout.md", start_line=40, end_line=41))
    rewrapped = _finding(evidence="Checkout  calls the\n**Pricing** service.")
    assert _finding().fingerprint == moved.fingerprint == rewrapped.fingerprint
    assert _finding().fingerprint != _finding(rule_id="SB-BE-004").fingerprint
    assert (
        _finding().fingerprint
        != _finding(location={"path": "b.md", "start_line": 14, "end_line": 14}).fingerprint
    )
    assert len(fingerprint("r", "p", "x")) == 32


def test_an_answer_round_trips_through_json() -> None:
    answer = FindingsAnswer(findings=[_finding()], summary="one", backend="offline")
    assert parse_findings_answer(answer.model_dump_json()) == answer
    assert parse_findings_answer(answer.model_dump(mode="json")) == answer


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("not json", "not JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"version": 2}', "version"),
        ('{"findings": [{"rule_id": "x"}]}', "findings.0.specialist: Field required"),
        (
            json.dumps({"findings": [{**_finding().model_dump(mode="json"), "severity": "major"}]}),
            "findings.0.severity",
        ),
        (
            json.dumps(
                {
                    "findings": [
                        {
                            **_finding().model_dump(mode="json"),
                            "location": {"path": "a", "start_line": 9, "end_line": 3},
                        }
                    ]
                }
            ),
            "end_line 3 is before start_line 9",
        ),
    ],
)
def test_an_invalid_answer_says_why(raw: str, reason: str) -> None:
    with pytest.raises(FindingsParseError, match=reason):
        parse_findings_answer(raw)


def test_the_tool_schema_is_the_answer_schema_and_is_self_contained() -> None:
    tool = findings_tool()
    schema = tool["input_schema"]
    assert tool["name"] == FINDINGS_TOOL_NAME
    assert schema["type"] == "object" and "findings" in schema["properties"]
    assert set(schema["$defs"]) >= {"Finding", "Location", "Severity"}
    assert schema["$defs"]["Severity"]["enum"] == ["critical", "high", "medium", "low", "info"]
    # Every $ref points inside the schema: Claude's input_schema cannot follow outside links.
    refs = [v for v in json.dumps(schema).split('"$ref": ')[1:]]
    assert all(ref.startswith('"#/$defs/') for ref in refs)
