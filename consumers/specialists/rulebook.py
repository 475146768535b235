"""The offline rulebook: a deterministic expert answer when no model is configured.

``OfflineRulebook.answer(specialist, prompt)`` scores the specialist's rules against the prompt,
keeps the strongest few, computes capacity arithmetic from the figures the prompt states, and
renders one markdown answer in a fixed shape (title, Recommendation, Design, Numbers to hold,
Anti-patterns to avoid, Checklist, and an honest footer naming the rules used). The same input
always yields the same output: no randomness, no clock, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache

from consumers.specialists.personas import SPECIALISTS, unknown_specialist
from consumers.specialists.rules import api, backend, data, perf, security
from consumers.specialists.rules.figures import Figures, extract_figures
from consumers.specialists.rules.rule import Derived, Rule, SpecialistRules
from consumers.weighted_patterns import PatternGroups, normalise

MAX_RULES = 4
# A secondary rule joins the answer only if it scores at least a third of the best one and at
# least one strong trigger's worth, so passing mentions ("optimize", "response times") do not
# dilute a focused answer.
SECONDARY_SHARE = 3
SECONDARY_MIN_SCORE = 3
MAX_DESIGN_PER_RULE = 6
MAX_NUMBERS_PER_RULE = 3
MAX_ANTI_PATTERNS = 8
MAX_CHECKLIST = 10
MAX_PROMPT_ECHO = 160
# Only short prompts are cached: a bounded number of entries must also mean bounded memory.
MAX_CACHED_PROMPT_CHARS = 4096


@dataclass(frozen=True)
class OfflineAnswer:
    """A rulebook answer: markdown ``content`` and the ids of the rules it was built from."""

    content: str
    matched_rules: tuple[str, ...]
    backend: str = "offline"


def _compile(table: SpecialistRules) -> PatternGroups:
    seen: set[str] = set()
    for rule in table.rules:
        if not rule.id.startswith(f"{table.specialist}.") or rule.id in seen:
            raise ValueError(f"rule id {rule.id!r} is duplicated or lacks the specialist prefix")
        if not rule.triggers:
            raise ValueError(f"rule {rule.id!r} has no triggers")
        seen.add(rule.id)
    return PatternGroups(rule.triggers for rule in table.rules)


_TABLES: Mapping[str, SpecialistRules] = {
    table.specialist: table
    for table in (backend.RULES, api.RULES, data.RULES, perf.RULES, security.RULES)
}
# Compiled once at import: answer() must stay well under a millisecond on the worker hot path.
_COMPILED: Mapping[str, PatternGroups] = {name: _compile(table) for name, table in _TABLES.items()}
if set(_TABLES) != set(SPECIALISTS):
    raise RuntimeError(f"rule tables {sorted(_TABLES)} do not match SPECIALISTS {SPECIALISTS}")


class OfflineRulebook:
    """Deterministic, model-free answers for each specialist, built from curated rules."""

    def __init__(self, max_rules: int = MAX_RULES, cache_size: int = 1024) -> None:
        self._max_rules = max_rules
        # Answers are pure functions of (specialist, prompt): a bounded cache makes repeated
        # prompts (benchmarks, replays) free without changing any result.
        self._answer = lru_cache(maxsize=cache_size)(self._compose)

    def rule_ids(self, specialist: str) -> tuple[str, ...]:
        """The ids of a specialist's rules, in table order (the general fallback excluded)."""
        return tuple(rule.id for rule in self._table(specialist).rules)

    def select(self, specialist: str, prompt: str) -> tuple[Rule, ...]:
        """The rules an answer to ``prompt`` is built from, strongest first; may be empty."""
        table = self._table(specialist)
        scores = _COMPILED[specialist].scores(normalise(prompt))
        ranked = sorted(
            ((score, index) for index, score in enumerate(scores) if score > 0),
            key=lambda item: (-item[0], item[1]),
        )
        if not ranked:
            return ()
        best, first = ranked[0]
        kept = [first] + [
            index
            for score, index in ranked[1:]
            if score >= SECONDARY_MIN_SCORE and score * SECONDARY_SHARE >= best
        ]
        return tuple(table.rules[index] for index in kept[: self._max_rules])

    def answer(self, specialist: str, prompt: str) -> OfflineAnswer:
        """Answer ``prompt`` as ``specialist``; raises ``KeyError`` for an unknown specialist."""
        self._table(specialist)
        if len(prompt) > MAX_CACHED_PROMPT_CHARS:
            return self._compose(specialist, prompt)
        return self._answer(specialist, prompt)

    def _table(self, specialist: str) -> SpecialistRules:
        try:
            return _TABLES[specialist]
        except KeyError:
            raise unknown_specialist(specialist) from None

    def _compose(self, specialist: str, prompt: str) -> OfflineAnswer:
        table = self._table(specialist)
        rules = self.select(specialist, prompt) or (table.general,)
        figures = extract_figures(prompt)
        derived = [rule.calculate(figures) for rule in rules]
        ids = tuple(rule.id for rule in rules)
        content = _render(table, rules, derived, figures, ids)
        return OfflineAnswer(content=content, matched_rules=ids)


def _render(
    table: SpecialistRules,
    rules: tuple[Rule, ...],
    derived: list[Derived],
    figures: Figures,
    ids: tuple[str, ...],
) -> str:
    title = f"# {table.label}: {' · '.join(rule.title for rule in rules)}"
    headline = figures.headline()
    lines: list[str] = [f"{title} ({headline})" if headline else title, ""]
    if figures.text:
        echo = figures.text
        if len(echo) > MAX_PROMPT_ECHO:
            echo = echo[: MAX_PROMPT_ECHO - 1].rstrip() + "…"
        lines += [f"> {echo}", ""]

    lines += ["## Recommendation", "", rules[0].recommendation, ""]
    for rule in rules[1:]:
        lines += [f"**{rule.title}.** {rule.recommendation}", ""]

    lines += ["## Design", ""]
    for rule, extra in zip(rules, derived, strict=True):
        if len(rules) > 1:
            lines.append(f"**{rule.title}**")
        lines += [f"- {item}" for item in (*extra.design, *rule.design[:MAX_DESIGN_PER_RULE])]
        lines.append("")

    lines += ["## Numbers to hold", ""]
    mentions = figures.mentions()
    if mentions:
        lines.append(f"- From your request: {'; '.join(mentions)}.")
    paired = sorted(zip(rules, derived, strict=True), key=lambda pair: not pair[0].numbers_first)
    for _, extra in paired:
        lines += [f"- {item}" for item in extra.numbers]
    per_rule = MAX_NUMBERS_PER_RULE if len(rules) > 1 else None
    lines += [f"- {n}" for n in _unique(n for rule in rules for n in rule.numbers[:per_rule])]
    lines.append("")

    anti = _interleave(rule.anti_patterns for rule in rules)
    lines += ["## Anti-patterns to avoid", "", *(f"- {item}" for item in anti[:MAX_ANTI_PATTERNS])]
    lines.append("")

    checks = _interleave(rule.checklist for rule in rules)
    lines += ["## Checklist", "", *(f"- [ ] {item}" for item in checks[:MAX_CHECKLIST])]
    lines.append("")

    lines.append(
        f"_Answered offline by Switchboard's rulebook (rules: {', '.join(ids)}); "
        "set ANTHROPIC_API_KEY for a model-written answer._"
    )
    return "\n".join(lines) + "\n"


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _interleave(groups: Iterable[tuple[str, ...]]) -> list[str]:
    """First item of every rule, then the second of every rule, ...: caps stay balanced."""
    columns = list(groups)
    depth = max((len(column) for column in columns), default=0)
    return _unique(column[i] for i in range(depth) for column in columns if i < len(column))
