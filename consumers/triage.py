"""Which specialist should answer a request: an explicit /command, or keyword triage.

``parse_command`` splits "/backend design X" into ("backend", "design X") and leaves validation
of the command word to the caller. ``KeywordTriage.classify`` scores free text against weighted
keyword tables, one per specialist, and falls back to backend (the generalist) when nothing
matches. Both are deterministic and pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from consumers.triage_keywords import KEYWORDS, Keywords
from consumers.weighted_patterns import PatternGroups, normalise
from switchboard.core.routing import parse_command
from switchboard.core.settings import SPECIALISTS

DEFAULT_SPECIALIST = "backend"
# Added to the total before dividing, so a single weak keyword never reads as certainty.
CONFIDENCE_PRIOR = 2.0


@dataclass(frozen=True)
class TriageResult:
    """The chosen specialist, how sure the scoring is (0-1), and which keywords decided it."""

    specialist: str
    confidence: float
    reason: str


__all__ = ["DEFAULT_SPECIALIST", "KeywordTriage", "TriageResult", "parse_command"]


class KeywordTriage:
    """Deterministic weighted-keyword routing of free text to one of the specialists."""

    def __init__(
        self,
        keywords: Mapping[str, Keywords] = KEYWORDS,
        default: str = DEFAULT_SPECIALIST,
    ) -> None:
        unknown = (set(keywords) | {default}) - set(SPECIALISTS)
        if unknown:
            raise ValueError(f"keywords name unknown specialists {sorted(unknown)}")
        # Ties go to the earlier specialist in SPECIALISTS: backend first, as the generalist.
        self._patterns = PatternGroups(keywords.get(name, ()) for name in SPECIALISTS)
        self._default = default

    def classify(self, text: str) -> TriageResult:
        """Pick the specialist whose keywords weigh most in ``text``; backend when none match."""
        text = normalise(text)
        scores = [
            (sum(weight for _, weight in hits), name, [hit for hit, _ in hits])
            for name, hits in zip(SPECIALISTS, self._patterns.matches(text), strict=True)
        ]
        total = sum(score for score, _, _ in scores)
        if total == 0:
            return TriageResult(
                specialist=self._default,
                confidence=0.0,
                reason=f"no specialist keywords matched; defaulted to {self._default}",
            )
        best_score, best_name, best_hits = max(scores, key=lambda s: s[0])  # first max wins
        runner_up = sorted((s for s in scores if s[1] != best_name), key=lambda s: -s[0])[0]
        reason = f"{best_name} {best_score} ({', '.join(best_hits)})"
        if runner_up[0]:
            reason += f" vs {runner_up[1]} {runner_up[0]} ({', '.join(runner_up[2])})"
        return TriageResult(
            specialist=best_name,
            confidence=round(best_score / (total + CONFIDENCE_PRIOR), 2),
            reason=reason,
        )
