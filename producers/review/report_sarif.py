"""report.sarif: SARIF 2.1.0, so GitHub code scanning and other SARIF viewers take findings.

Each rule is described once in ``runs[0].tool.driver.rules``; each finding is a result with
its ``ruleId``, a ``level`` from its severity, the region it quotes, and
``partialFingerprints`` (rule, path and quoted text, never line numbers), so a viewer keeps a
finding's identity when lines move. Against a baseline, ``baselineState`` says new or
unchanged. Failed items become tool execution notifications, not results.
"""

from __future__ import annotations

from typing import Any

from producers.review.result import BaselineStatus, ReviewedFinding, ReviewResult
from switchboard.core.findings import Severity

SARIF_VERSION = "2.1.0"
SARIF_SCHEMA_URI = "https://json.schemastore.org/sarif-2.1.0.json"
#: The partialFingerprints key: versioned, so a change of the hash is a new key, not a churn.
FINGERPRINT_KEY = "switchboardFingerprint/v1"

_LEVELS = {
    Severity.CRITICAL: "error",
    Severity.HIGH: "error",
    Severity.MEDIUM: "warning",
    Severity.LOW: "note",
    Severity.INFO: "none",
}
# GitHub ranks security alerts by this CVSS-like score in a rule's properties.
_SECURITY_SCORES = {
    Severity.CRITICAL: "9.5",
    Severity.HIGH: "8.0",
    Severity.MEDIUM: "5.5",
    Severity.LOW: "3.0",
    Severity.INFO: "0.0",
}
_BASELINE_STATES = {BaselineStatus.NEW: "new", BaselineStatus.UNCHANGED: "unchanged"}


def sarif_level(severity: Severity) -> str:
    return _LEVELS[severity]


def _rule(finding: ReviewedFinding) -> dict[str, Any]:
    properties: dict[str, Any] = {"category": finding.category, "tags": [finding.category]}
    if finding.category == "security":
        properties["security-severity"] = _SECURITY_SCORES[finding.severity]
    return {
        "id": finding.rule_id,
        "name": "".join(word.capitalize() for word in finding.rule_id.split("-")),
        "shortDescription": {"text": finding.title},
        "fullDescription": {"text": finding.title},
        "help": {"text": finding.recommendation, "markdown": finding.recommendation},
        "defaultConfiguration": {"level": sarif_level(finding.severity)},
        "properties": properties,
    }


def _result(finding: ReviewedFinding, rule_index: int) -> dict[str, Any]:
    result: dict[str, Any] = {
        "ruleId": finding.rule_id,
        "ruleIndex": rule_index,
        "level": sarif_level(finding.severity),
        "message": {"text": f"{finding.title}. {finding.recommendation}"},
        "locations": [
            {
                "physicalLocation": {
                    "artifactLocation": {"uri": finding.location.path, "uriBaseId": "%SRCROOT%"},
                    "region": {
                        "startLine": finding.location.start_line,
                        "endLine": finding.location.end_line,
                        "snippet": {"text": finding.evidence},
                    },
                }
            }
        ],
        "partialFingerprints": {FINGERPRINT_KEY: finding.fingerprint},
        "properties": {
            "severity": finding.severity.value,
            "specialists": finding.specialists,
            "confidence": finding.confidence,
            "effort": finding.effort.value,
            "heading": finding.location.heading,
        },
    }
    if finding.baseline in _BASELINE_STATES:
        result["baselineState"] = _BASELINE_STATES[finding.baseline]
    return result


def render_sarif(result: ReviewResult) -> dict[str, Any]:
    """The SARIF log of a review as a JSON-ready dict (one run)."""
    findings = result.findings
    rules: dict[str, dict[str, Any]] = {}
    for finding in findings:
        rules.setdefault(finding.rule_id, _rule(finding))
    order = {rule_id: index for index, rule_id in enumerate(sorted(rules))}
    notifications = [
        {
            "level": "error",
            "message": {
                "text": f"{item.path} part {item.part} ({item.specialist or 'all'}): "
                f"{item.status}: {item.reason}"
            },
        }
        for item in result.failed
    ]
    return {
        "$schema": SARIF_SCHEMA_URI,
        "version": SARIF_VERSION,
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": result.tool.name,
                        "version": result.tool.version,
                        "informationUri": result.tool.information_uri,
                        "rules": [rules[rule_id] for rule_id in sorted(rules)],
                    }
                },
                "automationDetails": {"id": f"switchboard-review/{result.job}/"},
                "originalUriBaseIds": {"%SRCROOT%": {"description": {"text": "The job's root."}}},
                "invocations": [
                    {
                        "executionSuccessful": not result.failed,
                        "toolExecutionNotifications": notifications,
                    }
                ],
                "results": [_result(f, order[f.rule_id]) for f in findings],
            }
        ],
    }
