"""Times and dead letter ids as operators type them, and as ledgers and JSON carry them."""

from __future__ import annotations

import contextlib
import re
import time
from datetime import UTC, datetime
from typing import Final

from switchboard.core.errors import ConfigError

_UNIT_S: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION_PART: Final = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_TIME_HELP: Final = "give ISO 8601 (2025-06-01T12:00Z) or a duration ago (90s, 30m, 2h, 7d, 1h30m)"


def parse_duration(text: str) -> float:
    """Seconds in a duration such as ``90s``, ``30m``, ``2h``, ``7d``, ``1w`` or ``1h30m``."""
    compact = text.strip().lower().replace(" ", "")
    total, position = 0.0, 0
    for part in _DURATION_PART.finditer(compact):
        if part.start() != position:
            break
        total += float(part.group(1)) * _UNIT_S[part.group(2)]
        position = part.end()
    if not compact or position != len(compact):
        raise ConfigError(f"{text!r} is not a duration: use e.g. 90s, 30m, 2h, 7d or 1h30m")
    return total


def parse_instant(text: str, now: int | None = None) -> int:
    """Epoch milliseconds of an ISO 8601 time (UTC when it names no offset), or of a duration
    before ``now`` (epoch ms, default the current time)."""
    stripped = text.strip()
    if _DURATION_PART.match(stripped.lower()):
        with contextlib.suppress(ConfigError):  # not a duration after all: try ISO 8601
            # The clock of consumers.outcomes.now_ms, which is not imported: this module is a
            # leaf, and the dlq parser's imports are paid by every `switchboard` start-up.
            now = int(time.time() * 1000) if now is None else now
            return now - int(parse_duration(stripped) * 1000)
    try:
        when = datetime.fromisoformat(stripped)
    except ValueError:
        raise ConfigError(f"{text!r} is not a time: {_TIME_HELP}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


def parse_record_id(text: str) -> tuple[str | None, int, int]:
    """``(topic or None, partition, offset)`` of ``P:O`` or ``topic/P/O``."""
    parts = text.strip().split("/")
    if len(parts) == 3:
        topic, numbers = parts[0] or None, parts[1:]
    else:
        topic, numbers = None, text.strip().split(":")
    try:
        partition, offset = (int(n) for n in numbers)
    except ValueError:
        raise ConfigError(
            f"{text!r} is not a dead letter id: use PARTITION:OFFSET (e.g. 2:1041) or "
            "TOPIC/PARTITION/OFFSET, as `switchboard dlq list` prints them"
        ) from None
    if partition < 0 or offset < 0:
        raise ConfigError(f"{text!r}: partition and offset cannot be negative")
    return topic, partition, offset


def pointer(topic: str, partition: int, offset: int) -> str:
    """The stable pointer of one record, as ledgers and ``sb-replay-of`` carry it."""
    return f"{topic}/{partition}/{offset}"


def iso(ms: int | None) -> str | None:
    """``ms`` (epoch milliseconds) as ISO 8601 UTC, for people and JSON."""
    if ms is None or ms < 0:
        return None
    text = datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")
    return text.replace("+00:00", "Z")
