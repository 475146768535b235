"""Putting a review's answers together into one ``ReviewResult``.

The review command collects, per document, the ``FindingsAnswer`` of each (part, specialist)
request plus what failed and what it cost; ``assemble_result`` merges findings across
specialists and parts, compares them with the baseline, and orders everything for the reports.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from producers.review.documents import Document
from producers.review.merge import compare_with_baseline, load_baseline, merge_findings
from producers.review.result import DocumentResult, FailedItem, ReviewedFinding, ReviewResult, Usage
from switchboard.core.findings import FindingsAnswer, Severity


def assemble_result(
    *,
    job: str,
    specialists: Sequence[str],
    documents: Sequence[Document],
    answers: Iterable[tuple[str, FindingsAnswer]],
    part_counts: Mapping[str, int] | None = None,
    failed: Sequence[FailedItem] = (),
    notes: Mapping[str, Sequence[str]] | None = None,
    usage: Mapping[tuple[str, str], Usage] | None = None,
    fail_on: Severity | None = Severity.HIGH,
    baseline: str | Path | Mapping[str, Any] | None = None,
    created_at: str | None = None,
) -> ReviewResult:
    """``answers`` are ``(document_id, answer)`` pairs; ``usage`` is keyed by
    ``(document_id, specialist)``; ``part_counts`` and ``notes`` by document id."""
    merged = merge_findings(
        (document_id, finding) for document_id, answer in answers for finding in answer.findings
    )
    fixed: list[ReviewedFinding] = []
    if baseline is not None:
        merged, fixed = compare_with_baseline(
            merged, load_baseline(baseline), reviewed_paths=[d.path for d in documents]
        )
    by_document: dict[str, list[ReviewedFinding]] = {d.doc_id: [] for d in documents}
    for finding in merged:
        by_document.setdefault(finding.document_id, []).append(finding)
    costs = usage or {}
    results = [
        DocumentResult(
            document_id=d.doc_id,
            path=d.path,
            title=d.title,
            format=d.format,
            content_hash=d.content_hash,
            parts=(part_counts or {}).get(d.doc_id, 1),
            findings=by_document[d.doc_id],
            notes=list((notes or {}).get(d.doc_id, ())),
            usage_by_specialist={
                specialist: cost
                for (doc_id, specialist), cost in sorted(costs.items())
                if doc_id == d.doc_id
            },
        )
        for d in sorted(documents, key=lambda d: d.path)
    ]
    return ReviewResult(
        job=job,
        created_at=created_at or datetime.now(UTC).isoformat(timespec="seconds"),
        specialists=list(specialists),
        fail_on=fail_on,
        baseline=str(baseline) if isinstance(baseline, str | Path) else None,
        documents=results,
        failed=list(failed),
        fixed=fixed,
    )
