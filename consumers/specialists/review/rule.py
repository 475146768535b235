"""A review rule: what it reports (id, severity, advice) and how it finds it.

Two shapes cover most rules. A *presence* rule quotes a line that says the problem out loud
("retries forever", ``verify: false``), unless the sentence negates it ("we never retry
immediately") or the line sits in a section about rejected options. An *absence* rule fires
when a part describes something (calls to other services, consuming a topic) and nothing the
part or its context can see addresses it (no "timeout" anywhere); it anchors to the first line
that describes the thing, once per part. Spec rules walk a parsed OpenAPI/AsyncAPI tree.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from consumers.specialists.review.view import PartView
from switchboard.core.findings import Effort, Severity


@dataclass(frozen=True)
class Hit:
    """Lines ``first``..``last`` (indices into the part) that show a rule's problem."""

    first: int
    last: int
    confidence: float = 0.8


Detect = Callable[[PartView], Iterable[Hit]]


@dataclass(frozen=True)
class ReviewRule:
    """One check: a stable id, what it reports, which specialists report it, and its detector."""

    rule_id: str
    title: str
    severity: Severity
    category: str
    recommendation: str
    specialists: frozenset[str]
    effort: Effort
    detect: Detect


# Words that, before a match in the same sentence, say the text rejects the problem.
_NEGATION = re.compile(
    r"\b(no|not|never|avoid\w*|prevent\w*|eliminat\w*|instead of|rather than|don't|do not|"
    r"does not|must not|mustn't|cannot|forbid\w*|prohibit\w*|replac\w*|without|nor|neither|"
    r"reject\w*|disallow\w*|ban\w*|guard\w* against|protect\w* against)\b",
    re.IGNORECASE,
)
# A clause ends at punctuation: "If no reply arrives, the client retries at once" is not negated.
_CLAUSE_END = re.compile(r"[.!?;:,(](\s|$)|\s[-\u2013\u2014]\s")
#: Document-wide absence rules apply to documents of at least this many non-blank lines.
MIN_DOCUMENT_LINES = 5
# Only the last few words before a match can negate it.
_NEGATION_WINDOW_WORDS = 8


def clause_before(view: PartView, index: int, column: int) -> str:
    """The words of the clause holding column ``column`` of line ``index``, up to it; a
    clause wrapped from the previous line of the same paragraph counts."""
    prefix = view.lines[index][:column]
    if not _CLAUSE_END.search(prefix) and index > 0 and view.lines[index - 1].strip():
        prefix = view.lines[index - 1] + " " + prefix
    ends = list(_CLAUSE_END.finditer(prefix))
    clause = prefix[ends[-1].end() :] if ends else prefix
    return " ".join(clause.split()[-_NEGATION_WINDOW_WORDS:])


def negated(view: PartView, index: int, column: int) -> bool:
    return bool(_NEGATION.search(clause_before(view, index, column)))


def presence(
    *patterns: str,
    guard: bool = True,
    anywhere: bool = False,
    unless_after: str | None = None,
    when: Callable[[PartView], bool] | None = None,
) -> Detect:
    """A detector quoting each line that matches any of ``patterns`` (case-insensitive).

    ``guard`` skips matches a preceding negation rejects; ``anywhere`` keeps lines in sections
    about rejected options too (a leaked secret is leaked wherever it is written);
    ``unless_after`` skips a match followed in its line by that pattern ("unauthenticated
    requests get a 401"); ``when`` limits the rule to parts it applies to.
    """
    compiled = [re.compile(p, re.IGNORECASE) for p in patterns]
    after = re.compile(unless_after, re.IGNORECASE) if unless_after else None

    def detect(view: PartView) -> Iterator[Hit]:
        if when is not None and not when(view):
            return
        for index, line in enumerate(view.lines):
            if not anywhere and view.discusses_rejected(index):
                continue
            for pattern in compiled:
                match = pattern.search(line)
                if match is None:
                    continue
                if guard and negated(view, index, match.start()):
                    continue
                if after is not None and after.search(line, match.end()):
                    continue
                yield Hit(index, index)
                break

    return detect


def absence(trigger: str, addressed: str, *, document_wide: bool = False) -> Detect:
    """A prose detector: fires once, on the first line matching ``trigger``, when nothing in
    the part or its context matches ``addressed``. ``document_wide`` rules need no trigger
    line: they anchor to the title of the part holding line 1, so a split document reports
    them once."""
    trigger_re = re.compile(trigger, re.IGNORECASE)
    addressed_re = re.compile(addressed, re.IGNORECASE)

    def detect(view: PartView) -> Iterator[Hit]:
        if not view.is_prose or view.mentions(addressed_re):
            return
        if document_wide:
            # A snippet of a few lines is not a design whose SLOs could be missing.
            substantial = sum(1 for line in view.lines if line.strip()) >= MIN_DOCUMENT_LINES
            if view.holds_document_start and substantial and trigger_re.search(view.text):
                index = view.title_index()
                yield Hit(index, index, confidence=0.6)
            return
        for index, line in enumerate(view.lines):
            match = trigger_re.search(line)
            if (
                match
                and not view.discusses_rejected(index)
                and not negated(view, index, match.start())
            ):
                yield Hit(index, index, confidence=0.6)
                return

    return detect
