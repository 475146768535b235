"""What a review job produced: the one model every report renders from.

``ReviewResult`` is also ``report.json`` (``model_dump_json``), so a later run reads its
baseline back with the same model. The schema of that file is ``REPORT_SCHEMA_RESOURCE``,
generated from these models and checked against them by a test, so the two cannot drift.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field

from switchboard.core.findings import SEVERITIES_WORST_FIRST, Finding, Severity
from switchboard.core.findings import fingerprint as compute_fingerprint

#: The version of report.json; bump it when a reader must tell shapes apart.
REPORT_VERSION: Literal[1] = 1
#: report.json's JSON schema, package data of ``producers.review``.
REPORT_SCHEMA_RESOURCE = "schemas/review-report.schema.json"


class BaselineStatus(StrEnum):
    """Where a finding stands against the previous run's report (``--baseline``)."""

    NEW = "new"
    """Not in the baseline: introduced since, or first seen by this run."""
    UNCHANGED = "unchanged"
    """In the baseline with the same fingerprint (it may have moved lines)."""
    FIXED = "fixed"
    """In the baseline, in a document reviewed again, and no longer found."""


class Verdict(StrEnum):
    """The job's outcome, as the CI gate reads it."""

    PASS = "pass"
    """No new finding at or above the gate, and every item answered."""
    FAIL = "fail"
    """A new finding at or above ``fail_on``: exit 1."""
    INCOMPLETE = "incomplete"
    """No gate failure, but some items failed or timed out: exit 2."""


class ReviewedFinding(Finding):
    """A finding as the report holds it: merged across specialists, with its document and
    its standing against the baseline."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    document_id: str = Field(description="The id of the document the finding is in.")
    specialists: list[str] = Field(description="Every specialist that reported it, sorted.")
    baseline: BaselineStatus | None = Field(
        default=None, description="new, unchanged or fixed against --baseline; null without one."
    )

    @computed_field(description="sha256 of rule id, path and normalised evidence (32 hex).")  # type: ignore[prop-decorator]
    @property
    def fingerprint(self) -> str:
        return compute_fingerprint(self.rule_id, self.location.path, self.evidence)


class Usage(BaseModel):
    """Tokens and cost of the model calls behind a result (zero for offline answers)."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cost_micro_usd: int = Field(default=0, description="Cost in millionths of a US dollar.")

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            **{name: getattr(self, name) + getattr(other, name) for name in Usage.model_fields}
        )

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


class FailedItem(BaseModel):
    """A request of the job that ended without findings, and why."""

    document_id: str
    path: str
    part: int | None = Field(default=None, description="0-based part index; null: whole doc.")
    specialist: str | None = None
    status: str = Field(description="failed, expired, rejected, refused, timeout or skipped.")
    reason: str = Field(description="What went wrong, as the pipeline or loader said it.")


class DocumentResult(BaseModel):
    """One document's review: its identity, its findings and what reviewing it cost."""

    document_id: str
    path: str
    title: str
    format: str
    content_hash: str = Field(description="sha256 of the reviewed text (hex).")
    parts: int = Field(ge=1, description="How many parts the document was split into.")
    findings: list[ReviewedFinding] = Field(default_factory=list)
    notes: list[str] = Field(
        default_factory=list, description="Answers that were not valid findings, kept as text."
    )
    usage_by_specialist: dict[str, Usage] = Field(default_factory=dict)

    @computed_field(description="Tokens and cost of this document, all specialists.")  # type: ignore[prop-decorator]
    @property
    def usage(self) -> Usage:
        return sum(self.usage_by_specialist.values(), Usage())


class ToolInfo(BaseModel):
    name: str = "switchboard-review"
    version: str = "0.1.0"
    information_uri: str = "https://github.com/switchboard/switchboard"


class ReviewResult(BaseModel):
    """Everything a review job found; report.json is this model as JSON."""

    version: Literal[1] = REPORT_VERSION
    job: str = Field(description="The job name; request ids derive from it.")
    created_at: str = Field(description="When the report was written, ISO 8601 UTC.")
    specialists: list[str]
    fail_on: Severity | None = Field(
        default=Severity.HIGH, description="The CI gate: new findings at or above fail."
    )
    baseline: str | None = Field(default=None, description="The baseline report compared with.")
    tool: ToolInfo = Field(default_factory=ToolInfo)
    documents: list[DocumentResult] = Field(default_factory=list)
    failed: list[FailedItem] = Field(default_factory=list)
    fixed: list[ReviewedFinding] = Field(
        default_factory=list, description="Baseline findings no longer found."
    )

    @property
    def findings(self) -> list[ReviewedFinding]:
        return [finding for document in self.documents for finding in document.findings]

    @computed_field(description="Tokens and cost of the whole job.")  # type: ignore[prop-decorator]
    @property
    def usage(self) -> Usage:
        return sum((d.usage for d in self.documents), Usage())

    @computed_field(description="Findings per severity across documents, worst first.")  # type: ignore[prop-decorator]
    @property
    def summary(self) -> dict[str, int]:
        return self.severity_counts()

    def usage_by_specialist(self) -> dict[str, Usage]:
        totals: dict[str, Usage] = {}
        for document in self.documents:
            for specialist, usage in document.usage_by_specialist.items():
                totals[specialist] = totals.get(specialist, Usage()) + usage
        return dict(sorted(totals.items()))

    def gating(self) -> list[ReviewedFinding]:
        """The findings that fail the gate: new (or all, without a baseline) and at or above
        ``fail_on``."""
        if self.fail_on is None:
            return []
        gate = self.fail_on
        return [
            f
            for f in self.findings
            if f.severity >= gate and f.baseline in (None, BaselineStatus.NEW)
        ]

    @computed_field(description="pass, fail (exit 1) or incomplete (exit 2).")  # type: ignore[prop-decorator]
    @property
    def verdict(self) -> Verdict:
        if self.gating():
            return Verdict.FAIL
        return Verdict.INCOMPLETE if self.failed else Verdict.PASS

    @property
    def exit_code(self) -> int:
        """1 when the gate fails, else 2 when items failed or timed out, else 0."""
        return {Verdict.FAIL: 1, Verdict.INCOMPLETE: 2, Verdict.PASS: 0}[self.verdict]

    def severity_counts(self, findings: list[ReviewedFinding] | None = None) -> dict[str, int]:
        """Findings per severity, worst first, every severity present (zero included)."""
        chosen = self.findings if findings is None else findings
        return {s.value: sum(1 for f in chosen if f.severity is s) for s in SEVERITIES_WORST_FIRST}
