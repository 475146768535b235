"""Choosing dead letters, all pure: ``ReplayFilter`` picks records, ``select`` hides acknowledged
ones, ``plan_replay`` drops what must not be sent again, ``group_counts`` sums up a selection."""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Final

from consumers.replay.parsing import iso
from consumers.replay.view import DeadLetterView
from switchboard.core.errors import ConfigError

#: Group name of a missing field (no tenant, no specialist) in ``group_counts``.
NONE_GROUP: Final = "(none)"
#: Age buckets of ``group_counts``: (upper bound in ms, name); older ones are ">7d".
AGE_BUCKETS: Final = (
    (5 * 60_000, "<5m"),
    (3_600_000, "5m-1h"),
    (86_400_000, "1h-1d"),
    (7 * 86_400_000, "1d-7d"),
)
OLDEST_BUCKET: Final = ">7d"

#: Why ``plan_replay`` leaves a record out (the keys of ``ReplayPlan.skipped``), in the order
#: ``ReplayPlan.skipped`` lists them.
SKIP_UNDECODABLE: Final = "undecodable"
SKIP_TRUNCATED: Final = "truncated"
SKIP_REPLAYED: Final = "already_replayed"
SKIP_ANSWERED: Final = "already_answered"
SKIP_DUPLICATE: Final = "duplicate_request"
SKIP_LIMIT: Final = "over_limit"
SKIP_REASONS: Final = (
    SKIP_UNDECODABLE,
    SKIP_TRUNCATED,
    SKIP_REPLAYED,
    SKIP_ANSWERED,
    SKIP_DUPLICATE,
    SKIP_LIMIT,
)


@dataclass(frozen=True)
class ReplayFilter:
    """Which dead letters a command acts on; empty fields match everything.

    Values within one field are alternatives (``--specialist api --specialist data``); fields
    combine with AND. ``since_ms``/``until_ms`` bound when the record was dead-lettered.
    """

    error_classes: frozenset[str] = frozenset()
    error_codes: frozenset[str] = frozenset()
    specialists: frozenset[str] = frozenset()
    tenants: frozenset[str] = frozenset()
    request_ids: frozenset[str] = frozenset()
    #: Full pointers (``topic/partition/offset``).
    pointers: frozenset[str] = frozenset()
    since_ms: int | None = None
    until_ms: int | None = None

    def __post_init__(self) -> None:
        since, until = self.since_ms, self.until_ms
        if since is not None and until is not None and since > until:
            raise ConfigError(f"--since ({iso(since)}) is after --until ({iso(until)}): swap them")

    @property
    def is_empty(self) -> bool:
        """True when the filter matches every record."""
        return not (
            self.error_classes
            or self.error_codes
            or self.specialists
            or self.tenants
            or self.request_ids
            or self.pointers
            or self.since_ms is not None
            or self.until_ms is not None
        )

    def matches(self, letter: DeadLetterView) -> bool:
        checks: tuple[tuple[Collection[str], str | None], ...] = (
            (self.pointers, letter.pointer),
            (self.error_classes, letter.error_class),
            (self.error_codes, letter.error_code),
            (self.specialists, letter.specialist),
            (self.tenants, letter.tenant),
            (self.request_ids, letter.request_id),
        )
        if any(wanted and value not in wanted for wanted, value in checks):
            return False
        at = letter.failed_at_ms
        if self.since_ms is not None and at < self.since_ms:
            return False
        return self.until_ms is None or at <= self.until_ms


@dataclass(frozen=True)
class Selection:
    """The records a filter matched, and how many acknowledged ones it hid."""

    records: list[DeadLetterView]
    hidden_acked: int


def select(
    letters: Iterable[DeadLetterView],
    flt: ReplayFilter,
    acked: Collection[str] = (),
    *,
    include_acked: bool = False,
) -> Selection:
    """The letters ``flt`` matches, without acknowledged ones unless ``include_acked``."""
    chosen, hidden = [], 0
    for letter in letters:
        if not flt.matches(letter):
            continue
        if letter.pointer in acked and not include_acked:
            hidden += 1
            continue
        chosen.append(letter)
    return Selection(chosen, hidden)


@dataclass(frozen=True)
class ReplayPlan:
    """What a replay sends, oldest failure first, and what it leaves out and why."""

    to_send: list[DeadLetterView]
    skipped: dict[str, list[DeadLetterView]]

    def skipped_counts(self) -> dict[str, int]:
        return {reason: len(items) for reason, items in self.skipped.items() if items}


def plan_replay(
    letters: Iterable[DeadLetterView],
    *,
    replayed: Collection[str] = (),
    settled: Collection[str] = (),
    limit: int | None = None,
) -> ReplayPlan:
    """Which of ``letters`` (already selected) to send.

    Left out: undecodable records (no origin to send to), truncated copies (replaying a prefix
    would only fail again: the full original is at the letter's origin pointer), records
    whose pointer is in the replays ledger (``replayed``), requests with a response other than
    ``failed`` (``settled``), older dead letters of a request that is replayed from a newer
    one, and everything past ``limit``.
    """
    skipped: dict[str, list[DeadLetterView]] = {reason: [] for reason in SKIP_REASONS}
    newest: dict[str, DeadLetterView] = {}
    candidates: list[DeadLetterView] = []
    for letter in sorted(letters, key=lambda x: (x.failed_at_ms, x.topic, x.partition, x.offset)):
        if letter.undecodable or not letter.origin_topic:
            skipped[SKIP_UNDECODABLE].append(letter)
        elif letter.truncated:
            skipped[SKIP_TRUNCATED].append(letter)
        elif letter.pointer in replayed:
            skipped[SKIP_REPLAYED].append(letter)
        elif letter.request_id is not None and letter.request_id in settled:
            skipped[SKIP_ANSWERED].append(letter)
        else:
            candidates.append(letter)
            if letter.request_id is not None:
                newest[letter.request_id] = letter  # sorted oldest first: the last one wins
    to_send: list[DeadLetterView] = []
    for letter in candidates:
        if letter.request_id is not None and newest[letter.request_id] is not letter:
            skipped[SKIP_DUPLICATE].append(letter)
        elif limit is not None and len(to_send) >= limit:
            skipped[SKIP_LIMIT].append(letter)
        else:
            to_send.append(letter)
    return ReplayPlan(to_send, skipped)


def age_bucket(age_ms: int) -> str:
    """The ``group_counts`` age bucket of a record dead-lettered ``age_ms`` ago."""
    for bound, name in AGE_BUCKETS:
        if age_ms < bound:
            return name
    return OLDEST_BUCKET


def group_counts(letters: Iterable[DeadLetterView], now: int) -> dict[str, dict[str, int]]:
    """Counts by error class, specialist, tenant and age (at epoch ms ``now``), largest first
    (age buckets youngest first)."""
    counters: dict[str, Counter[str]] = {
        "error_class": Counter(),
        "specialist": Counter(),
        "tenant": Counter(),
        "age": Counter(),
    }
    for letter in letters:
        counters["error_class"][letter.error_class] += 1
        counters["specialist"][letter.specialist or NONE_GROUP] += 1
        counters["tenant"][letter.tenant or NONE_GROUP] += 1
        counters["age"][age_bucket(now - letter.failed_at_ms)] += 1
    order = [name for _bound, name in AGE_BUCKETS] + [OLDEST_BUCKET]
    result = {key: dict(c.most_common()) for key, c in counters.items() if key != "age"}
    result["age"] = {name: counters["age"][name] for name in order if counters["age"][name]}
    return result
