"""Review findings: the one shape every specialist answer for a review is turned into.

A review worker (offline detectors or a model asked for structured output) answers a document
part with a ``FindingsAnswer`` serialised as JSON in the response's ``content``; the review job
parses it back with ``parse_findings_answer``, which validates with pydantic and says why an
answer does not fit, so the job can retry once and then keep the text as an unstructured note.
``findings_tool()`` hands the same schema to Claude as a tool ``input_schema``, so the model is
asked for exactly what the parser accepts.

It sits in the kernel because both sides need it: the workers that write findings and the
review job (a producer) that reads them.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

#: The version of the ``FindingsAnswer`` envelope; bump it when a reader must tell shapes apart.
FINDINGS_VERSION: Literal[1] = 1

#: The name of the Claude tool a model calls to hand in its findings.
FINDINGS_TOOL_NAME = "report_findings"


class Severity(StrEnum):
    """How much a finding matters, from ``critical`` down to ``info``. Members compare by
    ``rank`` (``Severity.HIGH > Severity.LOW``), so a CI gate reads ``finding.severity >= gate``."""

    CRITICAL = "critical"
    """Exploitable or data-losing as designed (a leaked secret, no authentication); block the release."""
    HIGH = "high"
    """Will fail under load or partial failure (no timeouts, a shared database); fix before launch."""
    MEDIUM = "medium"
    """A real weakness with a workaround or a bounded blast radius; schedule it."""
    LOW = "low"
    """A gap in rigour (an undocumented limit); fix when the area is next touched."""
    INFO = "info"
    """An observation worth knowing; nothing to fix."""

    @property
    def rank(self) -> int:
        """4 for critical down to 0 for info: larger is worse."""
        return _RANKS[self]

    def __ge__(self, other: object) -> bool:
        return self.rank >= Severity(other).rank if isinstance(other, str) else NotImplemented

    def __gt__(self, other: object) -> bool:
        return self.rank > Severity(other).rank if isinstance(other, str) else NotImplemented

    def __le__(self, other: object) -> bool:
        return self.rank <= Severity(other).rank if isinstance(other, str) else NotImplemented

    def __lt__(self, other: object) -> bool:
        return self.rank < Severity(other).rank if isinstance(other, str) else NotImplemented


_RANKS = {
    Severity.CRITICAL: 4,
    Severity.HIGH: 3,
    Severity.MEDIUM: 2,
    Severity.LOW: 1,
    Severity.INFO: 0,
}

#: Worst first: the order reports list findings in.
SEVERITIES_WORST_FIRST: tuple[Severity, ...] = tuple(sorted(Severity, key=lambda s: -s.rank))

#: Extension -> format of the documents a review reads: what the review job walks for and how
#: a worker's detectors read a part (any other extension reads as ``text``).
DOCUMENT_FORMATS: dict[str, str] = {
    ".md": "markdown",
    ".markdown": "markdown",
    ".rst": "rst",
    ".adoc": "asciidoc",
    ".asciidoc": "asciidoc",
    ".txt": "text",
    ".text": "text",
    ".yaml": "yaml",
    ".yml": "yaml",
    ".json": "json",
}


class Effort(StrEnum):
    """A rough size of the fix, so a reader can pick the cheap wins first."""

    TRIVIAL = "trivial"
    """A line or a setting (turn TLS verification back on)."""
    SMALL = "small"
    """Hours: one component changes (add a timeout and a breaker to a client)."""
    MEDIUM = "medium"
    """Days: a few components or a contract change (add pagination to a list endpoint)."""
    LARGE = "large"
    """Weeks: the design changes (split a shared database per service)."""


class Location(BaseModel):
    """Where in a document a finding's evidence is: 1-based, inclusive line numbers."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str = Field(description="The document's path as the review job named it (POSIX).")
    start_line: int = Field(ge=1, description="First line of the evidence, 1-based.")
    end_line: int = Field(ge=1, description="Last line of the evidence, inclusive.")
    heading: str = Field(
        default="",
        description="The heading path of the section holding the evidence, ' > '-joined.",
    )

    @model_validator(mode="after")
    def _ordered(self) -> Location:
        if self.end_line < self.start_line:
            raise ValueError(f"end_line {self.end_line} is before start_line {self.start_line}")
        return self


class Finding(BaseModel):
    """One problem a specialist found in a document, anchored to the lines it quotes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rule_id: str = Field(
        min_length=1,
        max_length=64,
        description="A stable rule id such as SB-BE-004; a model invents a short one if none fits.",
    )
    specialist: str = Field(min_length=1, description="The specialist that reported it.")
    severity: Severity
    category: str = Field(
        min_length=1, description="resilience, security, performance, api-design, ..."
    )
    title: str = Field(min_length=1, max_length=200, description="One line: what is wrong.")
    evidence: str = Field(
        min_length=1, description="A verbatim quote of the document lines the finding is about."
    )
    location: Location
    recommendation: str = Field(min_length=1, description="What to do instead, concretely.")
    effort: Effort = Effort.SMALL
    confidence: float = Field(
        default=0.8, ge=0.0, le=1.0, description="How sure the specialist is, 0 to 1."
    )

    @property
    def fingerprint(self) -> str:
        """A stable identity across runs: rule, path and the quoted text, never line numbers."""
        return fingerprint(self.rule_id, self.location.path, self.evidence)


class FindingsAnswer(BaseModel):
    """The envelope a review worker puts in a response's ``content`` (as JSON)."""

    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = Field(
        default=FINDINGS_VERSION, description="Envelope version; always 1 for now."
    )
    findings: list[Finding] = Field(
        default_factory=list, description="Every problem found; empty when the part is sound."
    )
    summary: str = Field(default="", description="One or two sentences on the part as a whole.")
    backend: str = Field(
        default="", description="Who answered: 'offline' for the detectors, else the model id."
    )


class FindingsParseError(ValueError):
    """Raised when an answer is not a valid ``FindingsAnswer``; the message says why."""


_SPACES = re.compile(r"\s+")
# Markup that moves with reformatting but does not change what a line says.
_MARKUP = re.compile(r"[`*_>#|]+")


def normalise_anchor(text: str) -> str:
    """The quoted text as a fingerprint sees it: NFKC, case-folded, markup and runs of
    whitespace collapsed, so re-indenting or re-wrapping a quote keeps its identity."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return _SPACES.sub(" ", _MARKUP.sub(" ", text)).strip()


def fingerprint(rule_id: str, path: str, anchor_text: str) -> str:
    """sha256 over rule id, path and normalised anchor text: 32 hex digits."""
    material = "\0".join((rule_id.strip().upper(), path.strip(), normalise_anchor(anchor_text)))
    return hashlib.sha256(material.encode()).hexdigest()[:32]


def findings_answer_schema() -> dict[str, Any]:
    """The JSON schema of ``FindingsAnswer``, self-contained (``$defs`` inline)."""
    return FindingsAnswer.model_json_schema()


def findings_tool() -> dict[str, Any]:
    """A Claude tool definition whose ``input_schema`` is the ``FindingsAnswer`` schema: pass it
    in ``tools`` with ``tool_choice={"type": "tool", "name": FINDINGS_TOOL_NAME}``."""
    return {
        "name": FINDINGS_TOOL_NAME,
        "description": (
            "Report every problem found in the document part as structured findings. Quote the "
            "evidence verbatim and give the 1-based line numbers it spans in the original file."
        ),
        "input_schema": findings_answer_schema(),
    }


def parse_findings_answer(raw: str | bytes | dict[str, Any]) -> FindingsAnswer:
    """Validate a worker's answer (JSON text or a tool call's ``input`` dict).

    Raises ``FindingsParseError`` naming the first problems (JSON syntax, or each invalid field
    with its path), short enough to put in a retry prompt or a report's failure reason.
    """
    if isinstance(raw, bytes | str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise FindingsParseError(f"not JSON: {exc.msg} at line {exc.lineno}") from exc
    if not isinstance(raw, dict):
        raise FindingsParseError(f"expected a JSON object, got {type(raw).__name__}")
    try:
        return FindingsAnswer.model_validate(raw)
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}"
            for err in exc.errors()[:5]
        ]
        more = f" (+{exc.error_count() - 5} more)" if exc.error_count() > 5 else ""
        raise FindingsParseError("invalid findings: " + "; ".join(problems) + more) from exc


# --- What a review request carries -------------------------------------------------------
#: ``metadata["kind"]`` of a review request: the worker answers it with a ``FindingsAnswer``.
REVIEW_KIND = "review"
#: The metadata keys of a review request (SpecialistRequest v2 ``metadata``, strings only).
META_KIND = "kind"
META_JOB = "review.job"
META_PATH = "review.path"
META_START_LINE = "review.start_line"
META_HEADING_PATH = "review.heading_path"  # a JSON list of strings
META_FORMAT = "review.format"
META_CONTEXT = "review.context"
#: The router's metadata limit is 8 KiB; the context (title, section, outline) stays well
#: under it, and the full context is in the prompt anyway.
MAX_META_CONTEXT_BYTES = 6_000
#: The lines around a part's text in its prompt (``DocumentPart.request_text``).
PART_START_MARKER = "----- {path} from line {start_line} -----\n"
PART_END_MARKER = "\n----- end of part -----"


class ReviewMeta(BaseModel):
    """Where a review request's part sits: what the worker needs besides the prompt."""

    model_config = ConfigDict(frozen=True)

    job: str = ""
    path: str
    start_line: int = Field(default=1, ge=1)
    heading_path: tuple[str, ...] = ()
    format: str = "text"
    context: str = ""

    def to_metadata(self) -> dict[str, str]:
        context = self.context.encode()[:MAX_META_CONTEXT_BYTES].decode("utf-8", "ignore")
        return {
            META_KIND: REVIEW_KIND,
            META_JOB: self.job,
            META_PATH: self.path,
            META_START_LINE: str(self.start_line),
            META_HEADING_PATH: json.dumps(list(self.heading_path)),
            META_FORMAT: self.format,
            META_CONTEXT: context,
        }

    @classmethod
    def from_metadata(cls, metadata: dict[str, str] | None) -> ReviewMeta | None:
        """The review fields of a request's metadata; None when it is not a review request
        (or its review fields are unreadable: the worker then answers it as plain text)."""
        meta = metadata or {}
        if meta.get(META_KIND) != REVIEW_KIND or not meta.get(META_PATH):
            return None
        try:
            headings = json.loads(meta.get(META_HEADING_PATH) or "[]")
            return cls(
                job=meta.get(META_JOB, ""),
                path=meta[META_PATH],
                start_line=int(meta.get(META_START_LINE) or 1),
                heading_path=tuple(str(h) for h in headings),
                format=meta.get(META_FORMAT) or "text",
                context=meta.get(META_CONTEXT, ""),
            )
        except (ValueError, TypeError):
            return None

    def part_text(self, prompt: str) -> str:
        """The part's own text out of its prompt (context, start marker, text, end marker);
        the whole prompt when the markers are missing (a review request sent by hand)."""
        start = PART_START_MARKER.format(path=self.path, start_line=self.start_line)
        at = prompt.find(start)
        if at < 0:
            return prompt
        body = prompt[at + len(start) :]
        end = body.rfind(PART_END_MARKER)
        return body[:end] if end >= 0 else body
