"""report.md: the review for a person reading it in a pull request or a terminal.

Verdict first, then a summary table across documents, then one section per document with
its findings worst first (evidence quoted, recommendation given), then failed items and cost.
"""

from __future__ import annotations

from producers.review.result import DocumentResult, ReviewedFinding, ReviewResult, Usage
from switchboard.core.findings import SEVERITIES_WORST_FIRST


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _cost(usage: Usage) -> str:
    return f"{usage.total_tokens:,} tokens, ${usage.cost_micro_usd / 1e6:.4f}"


def _worst_first(findings: list[ReviewedFinding]) -> list[ReviewedFinding]:
    return sorted(findings, key=lambda f: (-f.severity.rank, f.location.start_line, f.rule_id))


def _finding(finding: ReviewedFinding) -> list[str]:
    loc = finding.location
    lines = (
        f"{loc.start_line}"
        if loc.start_line == loc.end_line
        else f"{loc.start_line}-{loc.end_line}"
    )
    status = f" · {finding.baseline.value}" if finding.baseline else ""
    quote = "\n".join(f"> {line}" for line in finding.evidence.splitlines())
    return [
        f"#### {finding.severity.value.upper()} · {finding.rule_id} · {finding.title}",
        "",
        f"`{loc.path}` lines {lines}"
        + (f" ({loc.heading})" if loc.heading else "")
        + f" · {', '.join(finding.specialists)} · {finding.category} · effort {finding.effort.value}"
        + f" · confidence {finding.confidence:.0%}{status}",
        "",
        quote,
        "",
        f"**Recommendation:** {finding.recommendation}",
        "",
    ]


def _document(document: DocumentResult) -> list[str]:
    out = [
        f"### {document.title}",
        "",
        f"`{document.path}` · {document.format} · {document.parts} part(s)",
        "",
    ]
    if not document.findings:
        out += ["No findings.", ""]
    for finding in _worst_first(document.findings):
        out += _finding(finding)
    for note in document.notes:
        out += ["**Unstructured note:**", "", note, ""]
    return out


def render_markdown(result: ReviewResult) -> str:
    counts = result.severity_counts()
    gate = result.fail_on.value if result.fail_on else "none"
    out = [
        f"# Architecture review: {result.job}",
        "",
        f"**Verdict: {result.verdict.value.upper()}** (gate: new findings at {gate} or above) · "
        f"{len(result.findings)} finding(s) in {len(result.documents)} document(s) · "
        f"specialists: {', '.join(result.specialists)} · {result.created_at}",
        "",
        "| Document | " + " | ".join(s.value for s in SEVERITIES_WORST_FIRST) + " | Cost |",
        "| --- | " + " | ".join("---:" for _ in SEVERITIES_WORST_FIRST) + " | ---: |",
    ]
    for document in result.documents:
        row = result.severity_counts(document.findings)
        out.append(
            f"| {_cell(document.path)} | "
            + " | ".join(str(row[s.value]) for s in SEVERITIES_WORST_FIRST)
            + f" | {_cost(document.usage)} |"
        )
    out.append(
        "| **total** | "
        + " | ".join(f"**{counts[s.value]}**" for s in SEVERITIES_WORST_FIRST)
        + f" | **{_cost(result.usage)}** |"
    )
    out += ["", "## Findings by document", ""]
    for document in result.documents:
        out += _document(document)
    if result.fixed:
        out += ["## Fixed since the baseline", ""]
        out += [f"- {f.rule_id} {f.title} (`{f.location.path}`)" for f in result.fixed]
        out.append("")
    if result.failed:
        out += [
            "## Failed items",
            "",
            "| Document | Part | Specialist | Status | Reason |",
            "| --- | ---: | --- | --- | --- |",
        ]
        out += [
            f"| {_cell(i.path)} | {'' if i.part is None else i.part} | {i.specialist or ''} | {i.status} | {_cell(i.reason)} |"
            for i in result.failed
        ]
        out.append("")
    out += [
        "## Cost",
        "",
        "| Specialist | Input tokens | Output tokens | Cost (USD) |",
        "| --- | ---: | ---: | ---: |",
    ]
    for specialist, usage in result.usage_by_specialist().items():
        out.append(
            f"| {specialist} | {usage.input_tokens:,} | {usage.output_tokens:,} | {usage.cost_micro_usd / 1e6:.4f} |"
        )
    out.append(
        f"| **total** | {result.usage.input_tokens:,} | {result.usage.output_tokens:,} | {result.usage.cost_micro_usd / 1e6:.4f} |"
    )
    return "\n".join(out) + "\n"
