"""Responses and dead letters: every field a caller or an operator reads, and the limits."""

from __future__ import annotations

import asyncio
import json

from confluent_kafka import KafkaError

from consumers.outcomes import (
    DLQ_FIELD_PREFIX_BYTES,
    DLQ_VALUE_PREFIX_BYTES,
    HISTORY_ATTEMPTS,
    Attempt,
    Outcomes,
    Stage,
    history_from,
    history_header,
)
from consumers.runtime.memory import MemorySink
from consumers.runtime.message import MemoryRecord
from switchboard.core import headers as h
from switchboard.core.classify import classify
from switchboard.core.errors import PermanentError
from switchboard.core.status import ResponseStatus

from .memory_kit import CODEC, TOPICS, dead_letters, decoded_response, header, request

FAILURE = classify(PermanentError("prompt is too long", code="invalid_request"))


def _outcomes(sink: MemorySink | None = None) -> Outcomes:
    return Outcomes(CODEC, TOPICS, sink or MemorySink(), "unit.worker.api", Stage.MODEL)


def _original(value: bytes = b"orig") -> MemoryRecord:
    headers = [(h.REQUEST_ID, b"r-9"), (h.TENANT, b"acme"), (h.SPECIALIST, b"api"), ("x", b"y")]
    return MemoryRecord(TOPICS.tasks("api"), value, b"key-9", headers, 3, 41, 1234)


def test_a_response_goes_to_a_legal_reply_topic_with_status_and_trace_headers() -> None:
    out = _outcomes().response(
        request(reply_to="team.replies", traceparent="00-t-s-01"), ResponseStatus.ANSWERED, "hi"
    )
    assert out.topic == "team.replies"
    assert header(out, h.STATUS) == "answered" and header(out, h.TRACEPARENT) == "00-t-s-01"
    body = decoded_response(out)
    assert (body["status"], body["content"], body["tenant"]) == ("answered", "hi", "default")


def test_a_reply_topic_kafka_cannot_name_falls_back_to_the_shared_responses_topic() -> None:
    out = _outcomes().response(request(reply_to="bad topic/../"), ResponseStatus.REJECTED)
    assert out.topic == TOPICS.responses


def test_a_dead_letter_keeps_the_original_and_says_where_and_why() -> None:
    sink = MemorySink()
    history = [Attempt(1, 10, "TransientError", "busy")]
    pointer = asyncio.run(_outcomes(sink).dead_letter(_original(), FAILURE, history=history))
    [letter] = dead_letters(sink)
    assert pointer == {"topic": TOPICS.dlq, "partition": 0, "offset": 0}
    assert (letter["original_key"], letter["original_value"]) == (b"key-9", b"orig")
    assert {"key": "x", "value": b"y"} in letter["original_headers"]
    assert (letter["origin_topic"], letter["origin_partition"], letter["origin_offset"]) == (
        TOPICS.tasks("api"),
        3,
        41,
    )
    assert letter["origin_timestamp_ms"] == 1234 and letter["stage"] == "model"
    assert (letter["error_type"], letter["error_code"]) == ("PermanentError", "invalid_request")
    assert [a["attempt"] for a in letter["attempts"]] == [1, 2]
    assert (letter["request_id"], letter["tenant"], letter["specialist"]) == ("r-9", "acme", "api")
    [record] = sink.records(TOPICS.dlq)
    assert header(record, h.CONNECT_OFFSET) == "41"
    assert header(record, h.CONNECT_CLASS) == "unit.worker.api"
    assert header(record, h.CONNECT_EXCEPTION) == "PermanentError"


def test_an_original_too_large_for_the_dlq_is_kept_as_a_prefix_with_a_note() -> None:
    big = b"v" * (DLQ_VALUE_PREFIX_BYTES + 10)
    refused_once: list[int] = []

    def refuse_first(out: object) -> KafkaError | None:
        if not refused_once:
            refused_once.append(1)
            return KafkaError(KafkaError.MSG_SIZE_TOO_LARGE)
        return None

    sink = MemorySink(refuse_first)
    asyncio.run(_outcomes(sink).dead_letter(_original(big), FAILURE))
    [letter] = dead_letters(sink)
    assert letter["original_value"] == big[:DLQ_VALUE_PREFIX_BYTES]
    assert len(letter["original_key"]) <= DLQ_FIELD_PREFIX_BYTES
    assert letter["error_message"].startswith("[original record truncated for the DLQ")
    assert header(sink.records(TOPICS.dlq)[0], h.DLQ_TRUNCATED) == str(len(big))


def test_a_replayed_record_that_fails_again_is_parked_not_dead_lettered() -> None:
    sink = MemorySink()
    replayed = MemoryRecord(TOPICS.tasks("api"), b"v", None, [(h.REPLAY_ID, b"replay-1")])
    pointer = asyncio.run(_outcomes(sink).dead_letter(replayed, FAILURE))
    assert pointer["topic"] == TOPICS.parking_lot and sink.records(TOPICS.dlq) == []


def test_fail_answers_from_the_headers_when_the_request_did_not_decode() -> None:
    sink = MemorySink()
    original = MemoryRecord(
        TOPICS.requests, b"?", None, [(h.REQUEST_ID, b"r-2"), (h.REPLY_TO, b"mine.replies")]
    )
    [ledger, response] = asyncio.run(_outcomes(sink).fail(original, FAILURE))
    assert response.topic == "mine.replies"
    # The copy on the responses topic is what the answered index reads: no second answer.
    assert ledger.topic == TOPICS.responses and ledger.value == response.value
    assert header(ledger, h.REPLY_COPY_OF) == "mine.replies"
    body = decoded_response(response)
    assert (body["status"], body["request_id"], body["tenant"]) == ("failed", "r-2", "default")
    assert body["error_code"] == "invalid_request" and body["dlq"]["offset"] == 0


def test_expired_names_the_last_error() -> None:
    failure = classify(PermanentError("boom"))
    body = decoded_response(_outcomes().expired(request(), 4, specialist="api", failure=failure))
    assert (body["status"], body["attempts"], body["error_code"]) == (
        "expired",
        4,
        "deadline_exceeded",
    )
    assert body["content"].endswith("(last error: boom)")


def test_the_history_header_keeps_the_last_attempts_and_a_mangled_one_reads_empty() -> None:
    history = [Attempt(n, n, "E", "m" * 5000) for n in range(1, 30)]
    kept = json.loads(history_header(history))
    assert [a["attempt"] for a in kept] == list(range(30 - HISTORY_ATTEMPTS, 30))
    assert all(len(a["error_message"]) == 2000 for a in kept)
    mangled = MemoryRecord("t", b"", None, [(h.RETRY_HISTORY, b"{not json")])
    assert history_from(mangled) == []


def test_a_stage_given_as_text_reads_as_its_member() -> None:
    outcomes = Outcomes(CODEC, TOPICS, MemorySink(), "g", "relay")  # type: ignore[arg-type]
    assert outcomes.stage is Stage.RELAY
