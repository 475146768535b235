"""One finding once: merging what several specialists saw, and comparing with a baseline.

Two findings are the same when they have the same rule id and either the same fingerprint
(rule, path, normalised evidence) or the same path and line range. Different rule ids never
merge, even on the same line: "no timeouts" and "no circuit breaker" at one call are two
things to fix. The merged finding keeps the worst severity, the highest confidence, and every
specialist that reported it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from producers.review.result import BaselineStatus, ReviewedFinding
from switchboard.core.findings import Finding


def _specialist_order(specialist: str) -> tuple[int, str]:
    return (0 if specialist == "security" else 1, specialist)


def merge_findings(findings: Iterable[tuple[str, Finding]]) -> list[ReviewedFinding]:
    """``(document_id, finding)`` pairs from every specialist -> merged findings, in
    document, line and rule order."""
    groups: list[list[tuple[str, Finding]]] = []
    by_key: dict[tuple[str, ...], int] = {}
    for document_id, finding in findings:
        loc = finding.location
        keys = [
            (document_id, finding.rule_id, finding.fingerprint),
            (document_id, finding.rule_id, loc.path, str(loc.start_line), str(loc.end_line)),
        ]
        slot = next((by_key[k] for k in keys if k in by_key), None)
        if slot is None:
            slot = len(groups)
            groups.append([])
        groups[slot].append((document_id, finding))
        for key in keys:
            by_key.setdefault(key, slot)
    merged = [_merge(group) for group in groups]
    return sorted(
        merged, key=lambda f: (f.document_id, f.location.start_line, f.location.end_line, f.rule_id)
    )


def _merge(group: list[tuple[str, Finding]]) -> ReviewedFinding:
    document_id = group[0][0]
    members = [finding for _, finding in group]
    worst = max(members, key=lambda f: (f.severity.rank, f.confidence))
    specialists = sorted({f.specialist for f in members}, key=_specialist_order)
    return ReviewedFinding(
        **worst.model_dump(exclude={"confidence", "specialist"}),
        specialist=specialists[0],
        confidence=max(f.confidence for f in members),
        document_id=document_id,
        specialists=sorted(specialists),
    )


def load_baseline(report: str | Path | Mapping[str, Any]) -> list[ReviewedFinding]:
    """The findings of a previous report.json (a path or its parsed content)."""
    data = report if isinstance(report, Mapping) else json.loads(Path(report).read_text())
    return [
        ReviewedFinding.model_validate(raw)
        for document in data.get("documents", [])
        for raw in document.get("findings", [])
    ]


def compare_with_baseline(
    current: Iterable[ReviewedFinding],
    baseline: Iterable[ReviewedFinding],
    *,
    reviewed_paths: Iterable[str] | None = None,
) -> tuple[list[ReviewedFinding], list[ReviewedFinding]]:
    """Mark each current finding ``new`` or ``unchanged`` by fingerprint, and return the
    baseline findings that are ``fixed``: gone from a document this run reviewed again (a
    document left out of this run fixes nothing). Returns ``(current, fixed)``."""
    previous = list(baseline)
    known = {f.fingerprint for f in previous}
    marked = [
        f.model_copy(
            update={
                "baseline": BaselineStatus.UNCHANGED
                if f.fingerprint in known
                else BaselineStatus.NEW
            }
        )
        for f in current
    ]
    found = {f.fingerprint for f in marked}
    paths = None if reviewed_paths is None else set(reviewed_paths)
    fixed = [
        f.model_copy(update={"baseline": BaselineStatus.FIXED})
        for f in previous
        if f.fingerprint not in found and (paths is None or f.location.path in paths)
    ]
    return marked, fixed
