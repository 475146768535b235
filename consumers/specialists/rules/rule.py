"""What one offline rule is: triggers that pick it, and the expert content it contributes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from consumers.specialists.rules.figures import Figures


@dataclass(frozen=True)
class Derived:
    """Content a rule computes from the request's own figures (capacity maths, saga steps)."""

    design: tuple[str, ...] = ()
    numbers: tuple[str, ...] = ()


Calculator = Callable[[Figures], Derived]


def no_derivation(_figures: Figures) -> Derived:
    """The calculator of rules whose content does not depend on the request's figures."""
    return Derived()


@dataclass(frozen=True)
class Rule:
    """One entry of a specialist's rulebook.

    ``triggers`` are ``(regex, weight)`` pairs matched case-insensitively against the prompt;
    a rule's score is the sum of the weights of the distinct triggers that match. Use weight 3
    for phrases that name the topic outright ("circuit breaker"), 2 for strong hints, 1 for
    words that only lean that way.
    """

    id: str
    title: str
    triggers: tuple[tuple[str, int], ...]
    recommendation: str
    design: tuple[str, ...]
    numbers: tuple[str, ...]
    anti_patterns: tuple[str, ...]
    checklist: tuple[str, ...]
    calculate: Calculator = no_derivation
    # The fleet-sizing rule's arithmetic opens "Numbers to hold": other rules' figures (per-pod
    # rates, bulkhead sizes) are derived from the fleet it sizes.
    numbers_first: bool = False


@dataclass(frozen=True)
class SpecialistRules:
    """A specialist's rule table (order breaks score ties) and its no-match fallback."""

    specialist: str
    label: str
    rules: tuple[Rule, ...]
    general: Rule
