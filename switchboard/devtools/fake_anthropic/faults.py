"""Scripted faults for the fake Anthropic server, and the one-line spec that names each.

A spec is ``HEAD[:OPTION]...``; the same text works for ``--fault``, ``POST /_fake/script``,
``FakeAnthropic.script`` and an inline ``FAULT:<spec>`` marker in a user prompt.

HEAD is an HTTP status (400, 401, 403, 404, 413, 429, 500, 529 or any other 4xx/5xx),
``spend-limit`` (429 that the SDK raises as ``EnforcedSpendLimitReachedError``), ``timeout``
(stall ``seconds``, then answer), ``drop`` (close the connection without a response) or
``refusal`` (200 with ``stop_reason`` "refusal").

OPTIONs: ``retry-after-ms=N``, ``retry-after=S``, ``should-retry=true|false`` (the
``x-should-retry`` header), ``type=ERROR_TYPE``, ``code=ERROR_CODE`` (``error.details.error_code``),
``message=TEXT``, ``seconds=S`` (timeout stall, default 60), ``count=N``, ``sticky``,
``match=TEXT``. Examples: ``429:retry-after-ms=200:count=3``, ``529:sticky``,
``400:match=POISON``, ``timeout:seconds=5``.

Where a fault goes: with ``match`` it is a rule for calls whose last user message contains
TEXT (``count`` then limits it to the first N such calls per request key); with ``sticky`` it
applies to every call until cleared; otherwise it joins the FIFO queue ``count`` times (once by
default), one entry consumed per ``/v1/messages`` call. A call meets the first of: a matching
rule, an inline ``FAULT:`` marker, the queue head, the sticky fault.
"""

from __future__ import annotations

import logging
import re
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any, Final, Literal

log = logging.getLogger(__name__)

FaultKind = Literal["status", "timeout", "drop", "refusal"]

ERROR_TYPES: Final[dict[int, str]] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "request_too_large",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}

SPEND_LIMIT_CODE: Final = "enforced_spend_limit_reached"
INLINE_MARKER: Final = re.compile(r"FAULT:(\S+)")


class FaultSpecError(ValueError):
    """Raised when a fault spec cannot be read; the message says what to change."""


def error_type_for(status: int) -> str:
    """The Anthropic ``error.type`` the real API sends with ``status``."""
    return ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")


@dataclass(frozen=True)
class Fault:
    """One scripted misbehaviour of the fake server; see the module docstring for the spec."""

    kind: FaultKind = "status"
    status: int = 500
    error_type: str | None = None
    error_code: str | None = None
    message: str | None = None
    retry_after_ms: int | None = None
    retry_after_s: float | None = None
    should_retry: bool | None = None
    seconds: float = 60.0
    count: int | None = None
    sticky: bool = False
    match: str | None = None

    def __post_init__(self) -> None:
        if self.kind == "status" and not 400 <= self.status <= 599:
            raise FaultSpecError(f"fault status {self.status}: use an HTTP status from 400 to 599")
        if self.count is not None and self.count < 1:
            raise FaultSpecError(f"fault count {self.count}: use count=1 or more")
        if self.sticky and self.match is not None:
            raise FaultSpecError("a fault is either sticky or a match rule: drop one of the two")

    @classmethod
    def http(cls, status: int, **options: Any) -> Fault:
        """An error response with ``status`` (and the error type the API uses for it)."""
        return cls(kind="status", status=status, **options)

    @classmethod
    def spend_limit(cls, **options: Any) -> Fault:
        """A 429 carrying the ``error_code`` the SDK maps to ``EnforcedSpendLimitReachedError``.

        ``x-should-retry: false`` by default, as retrying a spent limit cannot help.
        """
        defaults: dict[str, Any] = {
            "error_code": SPEND_LIMIT_CODE,
            "should_retry": False,
            "message": "Your organization has reached its enforced monthly spend limit.",
        }
        return cls(kind="status", status=429, **{**defaults, **options})

    @classmethod
    def parse(cls, spec: str) -> Fault:
        """Read a spec such as ``429:retry-after-ms=200:count=3``."""
        head, *options = spec.strip().split(":")
        fault = _parse_head(head, spec)
        changes: dict[str, Any] = {}
        for option in options:
            name, has_value, value = option.partition("=")
            if name == "sticky" and not has_value:
                changes["sticky"] = True
                continue
            if name not in _OPTIONS or not has_value:
                raise FaultSpecError(
                    f"fault {spec!r}: unknown option {option!r}; use one of "
                    f"{', '.join(f'{n}=...' for n in _OPTIONS)} or sticky"
                )
            field, convert = _OPTIONS[name]
            try:
                changes[field] = convert(value)
            except ValueError:
                raise FaultSpecError(f"fault {spec!r}: {name}={value!r} is not valid") from None
        return replace(fault, **changes)

    @property
    def resolved_error_type(self) -> str:
        return self.error_type or error_type_for(self.status)

    def response_headers(self) -> dict[str, str]:
        """The retry hints this fault adds to its error response."""
        headers: dict[str, str] = {}
        if self.retry_after_ms is not None:
            headers["retry-after-ms"] = str(self.retry_after_ms)
        if self.retry_after_s is not None:
            headers["retry-after"] = f"{self.retry_after_s:g}"
        if self.should_retry is not None:
            headers["x-should-retry"] = "true" if self.should_retry else "false"
        return headers


def _parse_head(head: str, spec: str) -> Fault:
    if head.isdigit():
        return Fault.http(int(head))
    if head == "spend-limit":
        return Fault.spend_limit()
    if head in ("timeout", "drop", "refusal"):
        return Fault(kind=head)  # type: ignore[arg-type]  # narrowed by the membership test
    raise FaultSpecError(
        f"fault {spec!r}: start with an HTTP status (e.g. 429) or one of "
        "spend-limit, timeout, drop, refusal"
    )


def _bool(value: str) -> bool:
    if value not in ("true", "false"):
        raise ValueError(value)
    return value == "true"


def _non_negative(convert: Callable[[str], Any]) -> Callable[[str], Any]:
    def checked(value: str) -> Any:
        number = convert(value)
        if number < 0:
            raise ValueError(value)
        return number

    return checked


def _non_empty(value: str) -> str:
    if not value:
        raise ValueError(value)
    return value


_OPTIONS: Final[dict[str, tuple[str, Callable[[str], Any]]]] = {
    "retry-after-ms": ("retry_after_ms", _non_negative(int)),
    "retry-after": ("retry_after_s", _non_negative(float)),
    "should-retry": ("should_retry", _bool),
    "type": ("error_type", _non_empty),
    "code": ("error_code", _non_empty),
    "message": ("message", _non_empty),
    "seconds": ("seconds", _non_negative(float)),
    "count": ("count", int),
    "match": ("match", _non_empty),
}


@lru_cache(maxsize=4096)
def _inline_fault(spec: str) -> Fault | None:
    try:
        return Fault.parse(spec.rstrip(".,;:)]}\"'"))
    except FaultSpecError as exc:
        log.warning("ignoring inline fault marker: %s", exc)
        return None


class FaultPlan:
    """Which fault, if any, the next call meets. Not thread-safe: the owner holds a lock."""

    def __init__(self, *, inline: bool = True) -> None:
        self.inline = inline
        self._queue: deque[Fault] = deque()
        self._sticky: Fault | None = None
        self._rules: list[Fault] = []
        self._rule_uses: Counter[tuple[Fault, str]] = Counter()

    def add(self, fault: Fault) -> None:
        if fault.match is not None:
            self._rules.append(fault)
        elif fault.sticky:
            self._sticky = fault
        else:
            self._queue.extend([fault] * (fault.count or 1))

    def clear(self) -> None:
        self._queue.clear()
        self._sticky = None
        self._rules.clear()
        self._rule_uses.clear()

    @property
    def queued(self) -> int:
        return len(self._queue)

    def pick(self, prompt: str, key: str, *, use_queue: bool = True) -> Fault | None:
        """The fault for a call whose last user message is ``prompt``; consumes what it uses.

        Batch items pass ``use_queue=False``: the queue and the sticky fault script
        ``/v1/messages`` calls, while rules and inline markers follow the prompt anywhere.
        """
        candidates = [rule for rule in self._rules if rule.match and rule.match in prompt]
        if self.inline and "FAULT:" in prompt:
            parsed = (_inline_fault(spec) for spec in INLINE_MARKER.findall(prompt))
            candidates.extend(fault for fault in parsed if fault is not None)
        for rule in candidates:
            if rule.count is None:
                return rule
            if self._rule_uses[rule, key] < rule.count:
                self._rule_uses[rule, key] += 1
                return rule
        if not use_queue:
            return None
        if self._queue:
            return self._queue.popleft()
        return self._sticky


class ApiError(Exception):
    """Raised inside a handler to answer with an Anthropic-shaped error response."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        error_type: str | None = None,
        error_code: str | None = None,
        headers: dict[str, str] | None = None,
        outcome: str = "error",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type or error_type_for(status)
        self.error_code = error_code
        self.headers = headers or {}
        self.outcome = outcome

    @classmethod
    def from_fault(cls, fault: Fault, headers: dict[str, str]) -> ApiError:
        return cls(
            fault.status,
            fault.message or f"Scripted fault: HTTP {fault.status} {fault.resolved_error_type}.",
            error_type=fault.resolved_error_type,
            error_code=fault.error_code,
            headers={**headers, **fault.response_headers()},
            outcome="fault",
        )

    def error_object(self) -> dict[str, Any]:
        """The ``error`` member of the body; ``details.error_code`` picks the SDK's subclass."""
        error: dict[str, Any] = {"type": self.error_type, "message": self.message}
        if self.error_code is not None:
            error["details"] = {"error_code": self.error_code}
        return error
