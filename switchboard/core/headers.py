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
#: W3C baggage: carries the tenant across hops (``switchboard.core.tracing``).
BAGGAGE = "baggage"

# --- routing facts (``switchboard.core.routing``): the client writes them, the router routes
# a record that has them from its headers alone and forwards the original bytes ----------
#: The request's priority (``NORMAL``, ``BATCH``, ...): BATCH goes to the batch task topic.
PRIORITY = "sb-priority"
#: The request's ``deadline_ms`` (milliseconds since the epoch), when it has one.
DEADLINE_MS = "sb-deadline-ms"
#: Which request schema the value was written with: ``SpecialistRequest/v<n>/<fingerprint>``.
SCHEMA = "sb-schema"
#: On a task the router routed from headers alone (its body not yet validated: the worker
#: validates it): "<routed at, ms since the epoch> <how long routing took, ms>".
ROUTED = "sb-routed"

# --- request signing (switchboard.core.tenants.sign) -------------------------------------
#: Hex HMAC-SHA256 of the request (value bytes, request id and tenant headers, key id).
SIGNATURE = "sb-signature"
#: Which of the tenant's signing keys made ``sb-signature`` (several live at once: rotation).
KEY_ID = "sb-key-id"
#: On a response copied to the responses topic because the request named a reply topic: that
#: topic. The copy is the answered index's record of it (the caller reads the reply topic).
REPLY_COPY_OF = "sb-reply-copy-of"

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


#: Headers as librdkafka gives them (a list of pairs) or as its stubs also allow (a dict).
RawHeaders = Iterable[tuple[str, Any]] | Mapping[str, Any] | None


def _items(headers: Iterable[tuple[str, Any]] | Mapping[str, Any]) -> Iterable[tuple[str, Any]]:
    """The one walk over headers, whether a list of pairs or a dict."""
    return headers.items() if isinstance(headers, Mapping) else headers


def header_pairs(headers: RawHeaders) -> list[tuple[str, Any]]:
    """``headers`` as a list of (name, value) pairs, in order."""
    return list(_items(headers)) if headers else []


def header_value(headers: RawHeaders, name: str) -> str | None:
    """The last value of header ``name`` decoded as UTF-8, or None."""
    if not headers:
        return None
    found: Any = None
    for key, value in _items(headers):
        if key == name:
            found = value
    if found is None:
        return None
    return found.decode("utf-8", "replace") if isinstance(found, bytes) else str(found)


def replay_headers(headers: RawHeaders) -> list[tuple[str, bytes]]:
    """The last ``sb-replay-id`` and ``sb-replay-of`` of ``headers``, to carry onto every record
    sent on a record's behalf, so a replayed request that fails for good further down is
    parked rather than dead-lettered.

    On every routed record's path: one pass over the headers, and none for the common case.
    """
    if not headers:
        return []
    replay_id = replay_of = None
    for key, value in _items(headers):
        if key == REPLAY_ID:
            replay_id = value
        elif key == REPLAY_OF:
            replay_of = value
    carried = []
    for key, value in ((REPLAY_ID, replay_id), (REPLAY_OF, replay_of)):
        if value is not None:
            carried.append((key, value if isinstance(value, bytes) else str(value).encode()))
    return carried
