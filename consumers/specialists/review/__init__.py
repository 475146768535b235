"""Offline review: deterministic detectors that turn a document part into findings.

The review job sends each part of each document to each chosen specialist; with no model, the
worker answers with ``offline_answer(specialist, detect_findings(...))`` (a ``FindingsAnswer``), built from the rules here:
the seed's backend anti-patterns, security basics and OpenAPI/AsyncAPI checks.
"""

from consumers.specialists.review.detect import (
    REVIEW_SPECIALISTS,
    RULES,
    detect_findings,
    offline_answer,
    rule_by_id,
    rules_for,
)
from consumers.specialists.review.rule import ReviewRule
from consumers.specialists.review.view import guess_format

__all__ = [
    "REVIEW_SPECIALISTS",
    "RULES",
    "ReviewRule",
    "detect_findings",
    "guess_format",
    "offline_answer",
    "rule_by_id",
    "rules_for",
]
