"""Kafka header names, in one place. Values are UTF-8 bytes unless noted."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

REQUEST_ID = "sb-request-id"
TENANT = "sb-tenant"
SPECIALIST = "sb-specialist"
#: On responses: the terminal status (answered, rejected, ...), readable without decoding.
STATUS = "sb-status"
#: The topic the response should go to, so an undecodable request can still be answered.
REPLY_TO = "sb-reply-to"
#: W3C trace context, propagated on every hop.
TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"

# --- retry relay ------------------------------------------------------------------------
#: Milliseconds since the epoch before which a retry record must not be processed.
RETRY_DUE_MS = "sb-retry-due-ms"
RETRY_ORIGIN_TOPIC = "sb-retry-origin-topic"
RETRY_ATTEMPT = "sb-retry-attempt"
#: JSON list of earlier failures ({attempt, at_ms, error_type, error_message}).
RETRY_HISTORY = "sb-retry-history"

# --- replay -----------------------------------------------------------------------------
REPLAY_ID = "sb-replay-id"
REPLAY_OF = "sb-replay-of"  # "topic/partition/offset" of the dead letter replayed

# --- dead letters ------------------------------------------------------------------------
#: On a DLQ record whose copy of the original had to be cut to fit: the original value's size
#: in bytes. Such a record is not replayed (the full original is at its origin pointer).
DLQ_TRUNCATED = "sb-dlq-truncated"

# --- Kafka Connect-style DLQ context headers (so existing tools can read our DLQ) ------
CONNECT_TOPIC = "__connect.errors.topic"
CONNECT_PARTITION = "__connect.errors.partition"
CONNECT_OFFSET = "__connect.errors.offset"
CONNECT_STAGE = "__connect.errors.stage"
CONNECT_CLASS = "__connect.errors.class.name"
CONNECT_EXCEPTION = "__connect.errors.exception.class.name"
CONNECT_MESSAGE = "__connect.errors.exception.message"


def header_value(
    headers: Iterable[tuple[str, Any]] | Mapping[str, Any] | None, name: str
) -> str | None:
    """The last value of header ``name`` decoded as UTF-8, or None."""
    if not headers:
        return None
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    found: Any = None
    for key, value in pairs:
        if key == name:
            found = value
    if found is None:
        return None
    return found.decode("utf-8", "replace") if isinstance(found, bytes) else str(found)
