"""Run the offline review rules over one document part for one specialist.

``detect_findings`` is what an offline review worker calls per request: the part's text, where
it sits in its document, and the specialist; it returns findings anchored to the exact lines
they quote, in line order. ``offline_answer`` wraps them in the ``FindingsAnswer`` envelope a
worker puts in its response. Deterministic: same input, same findings, no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence

from consumers.specialists.review import backend_rules, security_rules, spec_rules
from consumers.specialists.review.rule import Hit, ReviewRule
from consumers.specialists.review.view import PartView, guess_format
from switchboard.core.findings import Finding, FindingsAnswer, Location

#: Every rule, in rule-id order.
RULES: tuple[ReviewRule, ...] = tuple(
    sorted(
        (*backend_rules.RULES, *security_rules.RULES, *spec_rules.RULES), key=lambda r: r.rule_id
    )
)
#: The specialists that have offline review rules.
REVIEW_SPECIALISTS: tuple[str, ...] = tuple(sorted({s for r in RULES for s in r.specialists}))
_BY_ID = {rule.rule_id: rule for rule in RULES}
# Evidence is a verbatim quote; a quote longer than this is cut at a line boundary's worth.
MAX_EVIDENCE_CHARS = 600


def rules_for(specialist: str) -> tuple[ReviewRule, ...]:
    """The rules a specialist reports; empty for a specialist with none (e.g. ``data``)."""
    return tuple(rule for rule in RULES if specialist in rule.specialists)


def rule_by_id(rule_id: str) -> ReviewRule:
    return _BY_ID[rule_id]


def detect_findings(
    text: str,
    *,
    path: str,
    specialist: str,
    start_line: int = 1,
    heading_path: Sequence[str] = (),
    doc_format: str | None = None,
    context: str = "",
) -> list[Finding]:
    """Findings of ``specialist``'s rules in one part.

    ``start_line`` is the original line number of the part's first line; ``heading_path`` the
    headings it starts under; ``doc_format`` (markdown, rst, asciidoc, text, yaml, json, openapi,
    asyncapi) is guessed from the path and text when not given; ``context`` is what the job sent
    besides the part (title, outline of the rest), read only to see whether a topic is
    addressed elsewhere in the document.
    """
    view = PartView(
        text=text,
        path=path,
        start_line=start_line,
        heading_path=tuple(heading_path),
        doc_format=doc_format or guess_format(path, text),
        context=context,
    )
    findings = [
        _finding(rule, specialist, view, hit)
        for rule in rules_for(specialist)
        for hit in rule.detect(view)
    ]
    return sorted(findings, key=lambda f: (f.location.start_line, f.rule_id))


def offline_answer(specialist: str, findings: list[Finding]) -> FindingsAnswer:
    """``detect_findings``' findings as the envelope a worker answers with
    (``backend='offline'``)."""
    summary = (
        f"{len(findings)} finding(s) by the offline {specialist} rules."
        if findings
        else f"No problems found by the offline {specialist} rules."
    )
    return FindingsAnswer(findings=findings, summary=summary, backend="offline")


def _finding(rule: ReviewRule, specialist: str, view: PartView, hit: Hit) -> Finding:
    evidence = "\n".join(line.strip() for line in view.lines[hit.first : hit.last + 1]).strip()
    return Finding(
        rule_id=rule.rule_id,
        specialist=specialist,
        severity=rule.severity,
        category=rule.category,
        title=rule.title,
        evidence=evidence[:MAX_EVIDENCE_CHARS] or view.lines[hit.first],
        location=Location(
            path=view.path,
            start_line=view.line_number(hit.first),
            end_line=view.line_number(hit.last),
            heading=view.heading_of(hit.first),
        ),
        recommendation=rule.recommendation,
        effort=rule.effort,
        confidence=hit.confidence,
    )
