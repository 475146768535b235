"""Following one request: every record keyed by its id on the pipeline's topics, in time order.

Bounded scans from ``since`` to the end offsets each topic had when the scan began
(``DeadLetterStore.read``), side by side; dead letters come from the console's memory. The
request id is the key of every record of a request (requests, tasks, retries, responses).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
from dataclasses import dataclass, field
from typing import Any, Final

from confluent_kafka import Message

from consumers.replay.parsing import iso
from consumers.replay.store import DeadLetterStore
from consumers.replay.view import DeadLetterView, message_headers
from switchboard.core import headers as h
from switchboard.core.envelope import KeyUnavailable
from switchboard.core.errors import DecodeError
from switchboard.core.serde import REQUEST, RESPONSE, Codec
from switchboard.core.settings import SPECIALISTS
from switchboard.core.topics import RETRY_TIERS_S, Topics

#: How far back a follow looks by default.
DEFAULT_LOOKBACK_MS: Final = 24 * 3600 * 1000
#: Scans run side by side, at most this many at once.
_SCAN_THREADS: Final = 8


@dataclass(frozen=True)
class Step:
    """One record of the request's path."""

    kind: str  # request, task, retry, response, dead letter
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def at(self) -> str | None:
        return iso(self.timestamp_ms)


@dataclass(frozen=True)
class RequestPath:
    request_id: str
    steps: list[Step]
    trace_id: str | None
    #: The first response's stage latencies (ms), when there is a response.
    stage_latency_ms: dict[str, int]
    status: str | None
    scanned_topics: int


def trace_id_of(traceparent: str | None) -> str | None:
    """The trace id of a W3C ``traceparent`` (``00-<trace id>-<span id>-<flags>``)."""
    parts = (traceparent or "").split("-")
    return parts[1] if len(parts) == 4 and len(parts[1]) == 32 else None


def _header_text(msg: Message, name: str) -> str | None:
    return h.header_value(message_headers(msg), name)


def _kind(topic: str, topics: Topics) -> str:
    if topic == topics.requests:
        return "request"
    if topic == topics.responses:
        return "response"
    if topic.startswith(f"{topics.prefix}.retry."):
        return "retry"
    return "task"


def _facts(msg: Message, kind: str, codec: Codec) -> dict[str, Any]:
    topic = str(msg.topic())
    facts: dict[str, Any] = {}
    try:
        value = codec.decode(RESPONSE if kind == "response" else REQUEST, msg.value(), topic)
    except (DecodeError, KeyUnavailable) as exc:  # a key this process lacks: say which
        return {"decode_error": str(exc)}
    if kind == "response":
        for key in ("status", "specialist", "backend", "model", "attempts", "error_code"):
            facts[key] = value.get(key)
        facts["error_message"] = value.get("error_message")
        facts["dlq"] = value.get("dlq")
        facts["stage_latency_ms"] = value.get("stage_latency_ms") or {}
        facts["cost_micro_usd"] = value.get("cost_micro_usd")
        facts["traceparent"] = value.get("traceparent")
    else:
        for key in ("tenant", "specialist", "attempt", "priority"):
            facts[key] = value.get(key)
        facts["text"] = str(value.get("text") or "")[:300]
        facts["traceparent"] = value.get("traceparent")
    if kind == "retry":
        due = _header_text(msg, h.RETRY_DUE_MS)
        facts["due_at"] = iso(int(due)) if due and due.isdigit() else None
        facts["back_to"] = _header_text(msg, h.RETRY_ORIGIN_TOPIC)
        with contextlib.suppress(ValueError, TypeError):
            facts["errors"] = json.loads(_header_text(msg, h.RETRY_HISTORY) or "[]")
    facts["replay_id"] = _header_text(msg, h.REPLAY_ID)
    facts["traceparent"] = facts.get("traceparent") or _header_text(msg, h.TRACEPARENT)
    return facts


def path_topics(topics: Topics) -> list[str]:
    """Every topic a request's records can be on, but the dead-letter topics."""
    return [
        topics.requests,
        *(topics.tasks(s) for s in SPECIALISTS),
        *(topics.retry(t) for t in RETRY_TIERS_S),
        topics.responses,
    ]


def follow(
    store: DeadLetterStore,
    request_id: str,
    dead_letters: list[DeadLetterView],
    *,
    since_ms: int,
) -> RequestPath:
    """The path of ``request_id``: every keyed record since ``since_ms``, plus its dead letters."""
    topics, codec = store.topics, store.codec
    wanted = request_id.encode()
    existing = set(store.admin.list_topics(timeout=store.timeout_s).topics)
    scanned = [t for t in path_topics(topics) if t in existing]
    found: list[Step] = []

    def scan(topic: str) -> list[Step]:
        kind = _kind(topic, topics)
        steps: list[Step] = []

        def keep(msg: Message) -> None:
            if msg.key() == wanted:
                steps.append(
                    Step(
                        kind,
                        topic,
                        int(msg.partition() or 0),
                        int(msg.offset() or 0),
                        msg.timestamp()[1],
                        _facts(msg, kind, codec),
                    )
                )

        store.read(topic, keep, since_ms)
        return steps

    with concurrent.futures.ThreadPoolExecutor(_SCAN_THREADS, "console-follow") as pool:
        for steps in pool.map(scan, scanned):
            found += steps
    for letter in dead_letters:
        found.append(
            Step(
                "dead letter",
                letter.topic,
                letter.partition,
                letter.offset,
                letter.timestamp_ms,
                {
                    "id": letter.id,
                    "pointer": letter.pointer,
                    "error_class": letter.error_class,
                    "error_code": letter.error_code,
                    "error_message": (letter.record or {}).get("error_message"),
                    "stage": letter.stage,
                },
            )
        )
    found.sort(key=lambda s: (s.timestamp_ms, s.topic, s.offset))
    responses = [s for s in found if s.kind == "response"]
    final = responses[-1].facts if responses else {}
    trace = next(
        (t for s in found if (t := trace_id_of(s.facts.get("traceparent"))) is not None), None
    )
    return RequestPath(
        request_id,
        found,
        trace,
        dict(final.get("stage_latency_ms") or {}),
        final.get("status"),
        len(scanned) + 2,
    )
