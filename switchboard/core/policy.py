"""The retry decision, as one pure function: a classified failure in, what to do with it out.

| failure                                   | decision                                      |
| ----------------------------------------- | --------------------------------------------- |
| skip                                      | ``Drop``: logged, offset committed            |
| fatal                                     | ``Halt``: pause the worker (never the DLQ)    |
| permanent                                 | ``Dead``: to the DLQ now                      |
| transient, attempts used up               | ``Dead("attempts exhausted")``                |
| transient, the retry would miss deadline  | ``Expire``: answer ``expired``                |
| transient                                 | ``Retry(delay, retry topic of that tier)``    |

The delay is the provider's ``retry-after`` when it gave one (used as is: never earlier than
told), else our own exponential backoff with jitter that only ever shortens it. ``Retry.delay_s``
is the due time to honour; the tier topic only holds the record until then.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar, Final

from switchboard.core.classify import Failure
from switchboard.core.errors import ErrorClass
from switchboard.core.settings import DEFAULTS
from switchboard.core.topics import Topics

__all__ = [
    "ATTEMPTS_EXHAUSTED",
    "BASE_DELAY_S",
    "DEADLINE_REACHED",
    "DEFAULT_HALT_S",
    "JITTER",
    "MAX_DELAY_S",
    "Dead",
    "Decision",
    "DecisionKind",
    "Drop",
    "Expire",
    "Halt",
    "Retry",
    "RetryPolicy",
]

#: How long a fatal failure pauses the worker when the provider named no time (the setting's
#: default, ``SWITCHBOARD_HALT_PAUSE_S``).
DEFAULT_HALT_S: Final = DEFAULTS.halt_pause_s
#: Our own backoff: the first delay, doubling per attempt up to the longest.
BASE_DELAY_S: Final = 1.0
MAX_DELAY_S: Final = 600.0
#: Our own backoff is shortened by a random fraction of up to this much.
JITTER: Final = 0.25
#: Past this many attempts the backoff is at its cap anyway; keeps 2**n a sane size.
_MAX_EXPONENT: Final = 62
ATTEMPTS_EXHAUSTED: Final = "attempts exhausted"
DEADLINE_REACHED: Final = "deadline reached"


class DecisionKind(StrEnum):
    """What the failure strategy does with a failed record: the name of each decision type."""

    RETRY = "retry"
    """Write a retry record to a delay tier topic; the relay sends it back when it is due."""
    DEAD = "dead"
    """Write a dead letter and answer ``failed`` with its pointer."""
    DROP = "drop"
    """Write nothing: the record is dropped on purpose, its offset committed."""
    HALT = "halt"
    """Write nothing yet: stop calling the dependency for a while, then try the record again."""
    EXPIRE = "expire"
    """Answer ``expired``: the request's deadline passes before it could be answered."""


@dataclass(frozen=True)
class Retry:
    """Send the record to ``topic``, not to be processed again before ``delay_s`` has passed."""

    kind: ClassVar[DecisionKind] = DecisionKind.RETRY
    delay_s: float
    topic: str


@dataclass(frozen=True)
class _Reasoned:
    """A decision that writes no retry: ``reason`` says why (logged, and kept by the dead
    letter or the response it leads to)."""

    reason: str


class Dead(_Reasoned):
    """Dead-letter the record (its original bytes and origin headers) and answer ``failed``."""

    kind: ClassVar[DecisionKind] = DecisionKind.DEAD


class Drop(_Reasoned):
    """Drop the record on purpose: log it and commit its offset."""

    kind: ClassVar[DecisionKind] = DecisionKind.DROP


@dataclass(frozen=True)
class Halt(_Reasoned):
    """Stop consuming for ``pause_s`` (then probe); the record is neither retried nor dead."""

    kind: ClassVar[DecisionKind] = DecisionKind.HALT
    pause_s: float


class Expire(_Reasoned):
    """The deadline passes before the record could be retried: answer ``expired``."""

    kind: ClassVar[DecisionKind] = DecisionKind.EXPIRE


Decision = Retry | Dead | Drop | Halt | Expire


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry; ``decide`` is pure and, given ``rng``, deterministic."""

    topics: Topics
    max_attempts: int = DEFAULTS.max_attempts
    base_delay_s: float = BASE_DELAY_S
    max_delay_s: float = MAX_DELAY_S
    #: Our own backoff is shortened by a random fraction of up to this much (0: no jitter).
    jitter: float = JITTER
    #: How long a fatal failure halts the worker when the provider named no time.
    halt_pause_s: float = DEFAULT_HALT_S

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, not {self.max_attempts}")
        if not 0 < self.base_delay_s <= self.max_delay_s:
            raise ValueError(
                f"need 0 < base_delay_s <= max_delay_s, got {self.base_delay_s} and "
                f"{self.max_delay_s}"
            )
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError(f"jitter is a fraction in [0, 1], not {self.jitter}")
        if not self.halt_pause_s > 0:
            raise ValueError(f"halt_pause_s must be positive, not {self.halt_pause_s}")

    def backoff_s(self, attempt: int, rng: random.Random | None = None) -> float:
        """Our own delay after failed attempt ``attempt`` (1-based), jittered downwards only."""
        exponent = min(attempt - 1, _MAX_EXPONENT)
        delay = min(self.base_delay_s * 2.0**exponent, self.max_delay_s)
        draw = rng.random() if rng is not None else random.random()
        return delay * (1.0 - self.jitter * draw)

    def decide(
        self,
        failure: Failure,
        attempt: int,
        now_ms: int,
        deadline_ms: int | None,
        rng: random.Random | None = None,
    ) -> Decision:
        """What to do after attempt number ``attempt`` (1-based) failed with ``failure``.

        ``deadline_ms`` is the request's deadline (epoch milliseconds) or None for none.
        """
        if attempt < 1:
            raise ValueError(f"attempt is 1-based (the attempt that just failed), not {attempt}")
        match failure.error_class:
            case ErrorClass.SKIP:
                return Drop(failure.code)
            case ErrorClass.FATAL:
                pause = failure.retry_after_s if failure.retry_after_s else self.halt_pause_s
                return Halt(failure.code, pause)
            case ErrorClass.PERMANENT:
                return Dead(failure.code)
        if attempt >= self.max_attempts:
            return Dead(ATTEMPTS_EXHAUSTED)
        if failure.retry_after_s is not None and failure.retry_after_s > 0:
            # The provider's delay, as is: no jitter (jitter would retry earlier than told) and
            # no cap (the relay holds the record until it is due, past the longest tier).
            delay = failure.retry_after_s
        else:
            delay = self.backoff_s(attempt, rng)
        if deadline_ms is not None and now_ms + delay * 1000.0 >= deadline_ms:
            return Expire(DEADLINE_REACHED)
        return Retry(delay, self.topics.retry(self.topics.tier_for_delay(delay)))
