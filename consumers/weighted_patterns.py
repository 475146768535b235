"""Weighted keyword patterns, matched fast: a substring prefilter before each regex.

Both the rulebook and the triage score text against a few hundred small regexes. CPython's
regex engine tries every alternative at every position, so a miss costs microseconds; but a
pattern such as ``\\bcircuit[\\s-]*breakers?`` cannot match unless the text contains
"circuit". ``required_literals`` reads those literals off each pattern (conservatively: when
in doubt it returns ``None`` and the regex always runs), and ``PatternGroups`` runs a regex
only when one of its literals occurs in the text. The result is exactly the regex result.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

_META = frozenset("\\[](){}.*+?^$|")
_OPTIONAL = frozenset("?*{")
_MIN_LITERAL = 2


def _structure(pattern: str, start: int = 0) -> Iterator[tuple[int, str, int]]:
    """Each place of ``pattern`` from ``start`` outside escapes and character classes: its
    index, character and the group depth after it (a whole class counts as one ``[`` at the
    index of its ``]``). A class that never closes ends the walk with ``(-1, "", depth)``."""
    depth, i = 0, start
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            i += 2
            continue
        if char == "[":
            i = _class_end(pattern, i)
            if i < 0:
                yield -1, "", depth
                return
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        yield i, char, depth
        i += 1


def _split_alternatives(pattern: str) -> list[str] | None:
    """Top-level ``|`` branches of ``pattern``; ``None`` if its brackets do not balance."""
    branches, start, depth = [], 0, 0
    for i, char, depth in _structure(pattern):
        if i < 0:
            return None
        if char == "|" and depth == 0:
            branches.append(pattern[start:i])
            start = i + 1
    if depth != 0:
        return None
    branches.append(pattern[start:])
    return branches


def _class_end(pattern: str, start: int) -> int:
    i = start + 1
    if i < len(pattern) and pattern[i] == "]":
        i += 1
    while i < len(pattern):
        if pattern[i] == "\\":
            i += 2
            continue
        if pattern[i] == "]":
            return i
        i += 1
    return -1


def _group_end(pattern: str, start: int) -> int:
    """The index of the ``)`` closing the group opened at ``start``; -1 when none does."""
    for i, char, depth in _structure(pattern, start):
        if i < 0:
            return -1
        if char == ")" and depth == 0:
            return i
    return -1


def _leading_literals(branch: str) -> list[str] | None:
    i = 0
    while branch.startswith("\\b", i):  # zero-width: the literal still has to be there
        i += 2
    if branch.startswith("(?:", i):
        end = _group_end(branch, i)
        if end < 0 or branch[end + 1 : end + 2] in _OPTIONAL:
            return None  # unbalanced, or an optional group: nothing is required
        inner = required_literals(branch[i + 3 : end])
        return list(inner) if inner else None
    end = i
    while end < len(branch) and branch[end] not in _META:
        end += 1
    literal = branch[i:end]
    if end < len(branch) and branch[end] in _OPTIONAL:
        literal = literal[:-1]  # the last character is optional or repeated from zero
    return [literal] if len(literal) >= _MIN_LITERAL else None


def required_literals(pattern: str) -> tuple[str, ...] | None:
    """Substrings of which at least one must occur wherever ``pattern`` matches, or ``None``.

    Only handles what the rule tables use: alternations whose branches start (after any
    ``\\b``) with a literal or with a non-optional ``(?:...)`` group of such branches.
    """
    branches = _split_alternatives(pattern)
    if branches is None:
        return None
    literals: list[str] = []
    for branch in branches:
        found = _leading_literals(branch)
        if found is None:
            return None
        literals.extend(found)
    return tuple(dict.fromkeys(literals))


@dataclass(frozen=True)
class _Trigger:
    pattern: re.Pattern[str]
    weight: int
    literals: frozenset[str] | None


class PatternGroups:
    """Groups of weighted lowercase regexes (one group per rule or per specialist).

    Text must be normalised first (``normalise``): patterns run in ASCII mode without
    IGNORECASE, several times cheaper than Unicode-aware case-insensitive matching. Which
    literals occur in the text is computed once per call for all groups, and a regex runs only
    when one of its required literals is present.
    """

    def __init__(self, groups: Iterable[Iterable[tuple[str, int]]]) -> None:
        self._groups: tuple[tuple[_Trigger, ...], ...] = tuple(
            tuple(_trigger(pattern, weight) for pattern, weight in group) for group in groups
        )
        self._literals = frozenset(
            literal
            for group in self._groups
            for trigger in group
            for literal in trigger.literals or ()
        )

    def __len__(self) -> int:
        return len(self._groups)

    def matches(self, text: str) -> list[list[tuple[str, int]]]:
        """Per group, (matched text, weight) for each of its patterns that matches ``text``."""
        present = {literal for literal in self._literals if literal in text}
        found: list[list[tuple[str, int]]] = []
        for group in self._groups:
            hits = []
            for trigger in group:
                if trigger.literals is not None and trigger.literals.isdisjoint(present):
                    continue
                match = trigger.pattern.search(text)
                if match:
                    hits.append((match.group(0), trigger.weight))
            found.append(hits)
        return found

    def scores(self, text: str) -> list[int]:
        """Per group, the sum of the weights of its patterns that match ``text``."""
        return [sum(weight for _, weight in hits) for hits in self.matches(text)]


def _trigger(pattern: str, weight: int) -> _Trigger:
    literals = required_literals(pattern)
    return _Trigger(
        pattern=re.compile(pattern, re.ASCII),
        weight=weight,
        literals=frozenset(literals) if literals is not None else None,
    )


def normalise(text: str) -> str:
    """Lowercase and collapse whitespace: the form every pattern is matched against."""
    return " ".join(text.split()).lower()
