"""Terminal responses and dead letters: how every way a request can end is written down.

Every request gets exactly one terminal response. A dead-lettered request gets its ``failed``
response too, carrying the DLQ pointer, so no caller waits forever.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final, Protocol

from confluent_kafka import KafkaError, KafkaException

from consumers.runtime.message import Record, Sink
from switchboard.core import headers as h
from switchboard.core import metrics, tracing
from switchboard.core.aio_producer import Outbound
from switchboard.core.classify import Failure
from switchboard.core.serde import DEAD_LETTER, RESPONSE, Codec
from switchboard.core.status import ResponseStatus
from switchboard.core.tenants import internal_topic
from switchboard.core.topics import Topics


class Stage(StrEnum):
    """Where in the pipeline a record failed: the ``stage`` of its dead letter."""

    ROUTE = "route"
    """The router: the request did not decode, or its output could not be written."""
    MODEL = "model"
    """A specialist worker: the model call (or the task's decode) failed for good."""
    RELAY = "relay"
    """The retry relay: the retry record had no usable origin topic."""


#: Kafka's legal topic names. A reply topic outside them fails every delivery attempt, and the
#: runtime would hold its partition's commits behind that record forever.
_LEGAL_TOPIC = re.compile(r"[a-zA-Z0-9._-]{1,249}")

#: What a DLQ record keeps of an original too large to fit in one (the full record stays at its
#: origin topic, partition and offset until retention): a prefix of the value, and of the key
#: and each header value.
DLQ_VALUE_PREFIX_BYTES: Final = 64 * 1024
DLQ_FIELD_PREFIX_BYTES: Final = 1024
#: Longest error message a DLQ record keeps (the truncation note included).
DLQ_MESSAGE_CHARS: Final = 4000
#: Longest error message in a ``failed`` response, and in one attempt of a retry history.
RESPONSE_MESSAGE_CHARS: Final = 2000
ATTEMPT_MESSAGE_CHARS: Final = 2000
#: Longest error message in the Kafka Connect-style header of a dead letter.
CONNECT_MESSAGE_CHARS: Final = 1000
#: Attempts a retry history header keeps: the last ones are enough to explain a failure.
HISTORY_ATTEMPTS: Final = 20
#: Error code of an ``expired`` response.
DEADLINE_EXCEEDED: Final = "deadline_exceeded"
#: Error code of an ``expired`` response to a request older than the dedup horizon.
BEYOND_HORIZON: Final = "beyond_dedup_horizon"


def now_ms() -> int:
    return int(time.time() * 1000)


def reply_topic(value: object, pipeline_prefix: str | None = None) -> str | None:
    """``value`` if it can name a Kafka topic outside Kafka's and the pipeline's own (under
    ``pipeline_prefix``), else None (answer on the shared topic instead). The router rejects
    such a request first (``forbidden_reply_to``); this is the last fence, for every writer."""
    if not isinstance(value, str) or not _LEGAL_TOPIC.fullmatch(value):
        return None
    if pipeline_prefix is not None and internal_topic(value, pipeline_prefix):
        return None
    return value


class ModelAnswer(Protocol):
    """What a response takes from a model's answer (a worker's ``Answer``, a batch result's
    ``Publish``)."""

    @property
    def status(self) -> str: ...
    @property
    def content(self) -> str: ...
    @property
    def model(self) -> str | None: ...
    @property
    def usage(self) -> Mapping[str, int] | None: ...
    @property
    def cost_micro_usd(self) -> int: ...


@dataclass(frozen=True)
class Attempt:
    """One earlier failure of a request, carried across retries in a header."""

    attempt: int
    at_ms: int
    error_type: str
    error_message: str

    def as_record(self) -> dict[str, Any]:
        return {
            "attempt": self.attempt,
            "at_ms": self.at_ms,
            "error_type": self.error_type,
            "error_message": self.error_message[:ATTEMPT_MESSAGE_CHARS],
        }


def history_from(msg: Record) -> list[Attempt]:
    """The earlier failures a retry record carries (none when the header is absent or mangled)."""
    raw = h.header_value(msg.headers(), h.RETRY_HISTORY)
    if not raw:
        return []
    try:
        return [Attempt(**item) for item in json.loads(raw)]
    except (ValueError, TypeError):
        return []  # a mangled history header must not stop the record


def replay_headers(msg: Record) -> list[tuple[str, bytes]]:
    """The DLQ replay headers of ``msg`` (``switchboard.core.headers.replay_headers``)."""
    return h.replay_headers(msg.headers())


def history_header(history: Sequence[Attempt]) -> bytes:
    return json.dumps([a.as_record() for a in history[-HISTORY_ATTEMPTS:]]).encode()


@dataclass
class Outcomes:
    """Builds responses and dead letters for one consumer group."""

    codec: Codec
    topics: Topics
    producer: Sink
    consumer_group: str
    stage: Stage
    _counts: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.stage = Stage(self.stage)  # a plain "model" from a caller reads as its member
        self._metrics = metrics.ResponseMetrics(str(self.stage))
        #: ``topics.responses``, named once (``Topics`` builds the name on every read).
        self._responses_topic = self.topics.responses

    def response(
        self,
        request: Mapping[str, Any],
        status: str,
        content: str = "",
        *,
        specialist: str | None = None,
        traceparent: str | None = None,
        **fields: Any,
    ) -> Outbound:
        """The terminal response to ``request`` (``status`` a ``ResponseStatus``, or a backend's
        answer status, which is one), addressed to its reply topic."""
        request_id = str(request.get("request_id") or "")
        record = {
            "request_id": request_id,
            "tenant": str(request.get("tenant") or "default"),
            "specialist": specialist
            if specialist is not None
            else (request.get("specialist") or ""),
            "status": status,
            "content": content,
            "responded_at_ms": now_ms(),
            "traceparent": traceparent or request.get("traceparent"),
            # The schema's defaults, written out: with every field present the compiled writer
            # takes its straight path (indexing, no per-field lookup of a default).
            "error_code": None,
            "error_message": None,
            "dlq": None,
            **fields,
        }
        self._counts[status] = self._counts.get(status, 0) + 1
        self._metrics.observe(record["specialist"], status, fields.get("stage_latency_ms"))
        reply_to = request.get("reply_to")
        topic = (
            reply_topic(reply_to, self.topics.prefix) if reply_to is not None else None
        ) or self._responses_topic
        headers = [
            (h.REQUEST_ID, request_id.encode()),
            (h.STATUS, status.encode()),
        ]
        if record["traceparent"]:
            headers.append((h.TRACEPARENT, str(record["traceparent"]).encode()))
            if request.get("tracestate"):
                headers.append((h.TRACESTATE, str(request["tracestate"]).encode()))
        return Outbound(
            topic, self.codec.encode(RESPONSE, record, topic), request_id.encode(), headers
        )

    def answer(
        self, request: Mapping[str, Any], answer: ModelAnswer, *, backend: str, **fields: Any
    ) -> Outbound:
        """The response carrying a model's ``answer``: its status, content, model, usage and
        cost, with ``backend`` and ``fields`` (specialist, stage latencies, attempts)."""
        return self.response(
            request,
            answer.status,
            answer.content,
            backend=backend,
            model=answer.model,
            usage=answer.usage,
            cost_micro_usd=answer.cost_micro_usd,
            **fields,
        )

    def recorded(self, response: Outbound) -> list[Outbound]:
        """``response`` as the records to deliver: with a copy on the responses topic first
        when it goes to a reply topic, so the answered index (which reads the responses topic,
        the ledger) knows the request is answered and a redelivery is never answered, or
        billed, again. The reply topic's caller still gets exactly one record on its topic; the
        copy carries ``sb-reply-copy-of`` naming that topic. The runtime writes the two in
        one transaction (``send_atomic``: both or neither) before the offset is committed."""
        if response.topic == self._responses_topic:
            return [response]
        copy = Outbound(
            self._responses_topic,
            response.value,  # the same bytes: decoders resolve the writer schema by id either way
            response.key,
            [*response.headers, (h.REPLY_COPY_OF, response.topic.encode())],
        )
        return [copy, response]

    async def dead_letter(
        self,
        msg: Record,
        failure: Failure,
        *,
        request: Mapping[str, Any] | None = None,
        history: Sequence[Attempt] = (),
        topic: str | None = None,
    ) -> dict[str, Any]:
        """Write ``msg`` (original bytes and headers) to the DLQ; returns the DLQ pointer.

        The DLQ record is delivered before this returns, so the pointer is real. A record that
        a DLQ replay sent (it carries ``sb-replay-id``) goes to the parking lot instead, so a
        replay that fails again never loops back into the DLQ.
        """
        at = now_ms()
        attempts = [*history, Attempt(len(history) + 1, at, failure.error_type, failure.message)]
        ts_type, ts = msg.timestamp()
        req = request or {}
        request_id = req.get("request_id") or h.header_value(msg.headers(), h.REQUEST_ID)
        record = {
            "original_key": msg.key(),
            "original_value": msg.value() or b"",
            "original_headers": [
                {"key": k, "value": v if isinstance(v, bytes | None) else str(v).encode()}
                for k, v in h.header_pairs(msg.headers())
            ],
            "origin_topic": msg.topic(),
            "origin_partition": msg.partition(),
            "origin_offset": msg.offset(),
            "origin_timestamp_ms": ts if ts_type else at,
            "stage": self.stage,
            "error_class": str(failure.error_class),
            "error_type": failure.error_type,
            "error_code": failure.code,
            "error_message": failure.message[:DLQ_MESSAGE_CHARS],
            "provider_status": failure.provider_status,
            "provider_request_id": failure.provider_request_id,
            "attempts": [a.as_record() for a in attempts],
            "first_failure_ms": attempts[0].at_ms,
            "last_failure_ms": at,
            "request_id": request_id,
            "tenant": req.get("tenant") or h.header_value(msg.headers(), h.TENANT),
            "specialist": req.get("specialist") or h.header_value(msg.headers(), h.SPECIALIST),
            "consumer_group": self.consumer_group,
        }
        replayed = h.header_value(msg.headers(), h.REPLAY_ID) is not None
        dlq = topic or (self.topics.parking_lot if replayed else self.topics.dlq)
        context = [
            (h.CONNECT_TOPIC, str(msg.topic()).encode()),
            (h.CONNECT_PARTITION, str(msg.partition()).encode()),
            (h.CONNECT_OFFSET, str(msg.offset()).encode()),
            (h.CONNECT_STAGE, self.stage.encode()),
            (h.CONNECT_CLASS, self.consumer_group.encode()),
            (h.CONNECT_EXCEPTION, failure.error_type.encode()),
            (h.CONNECT_MESSAGE, failure.message[:CONNECT_MESSAGE_CHARS].encode()),
        ]
        if request_id:
            context.append((h.REQUEST_ID, str(request_id).encode()))
        # The DLQ record carries the failing hop's trace context (the original's is kept in
        # original_headers, which a replay links to).
        tracing.inject(context)
        key = msg.key()
        try:
            delivered = await self.producer.send(
                Outbound(dlq, self.codec.encode(DEAD_LETTER, record, dlq), key, context)
            )
        except KafkaException as exc:
            # An original near the size limit cannot travel inside a DLQ record; retrying the
            # same bytes would fail forever and hold the partition. Keep a prefix of it and say
            # where the full record is.
            if not _too_large(exc):
                raise
            record = _slimmed(record, msg)
            key = record["original_key"]
            context.append((h.DLQ_TRUNCATED, str(len(msg.value() or b"")).encode()))
            delivered = await self.producer.send(
                Outbound(dlq, self.codec.encode(DEAD_LETTER, record, dlq), key, context)
            )
        return {"topic": dlq, "partition": delivered.partition(), "offset": delivered.offset()}

    async def fail(
        self,
        msg: Record,
        failure: Failure,
        *,
        request: Mapping[str, Any] | None = None,
        history: Sequence[Attempt] = (),
        specialist: str | None = None,
        attempts: int = 1,
    ) -> list[Outbound]:
        """Dead-letter ``msg`` and, when there is a request id to answer, a ``failed`` response."""
        pointer = await self.dead_letter(msg, failure, request=request, history=history)
        req = dict(request or {})
        if not req.get("request_id"):
            recovered = h.header_value(msg.headers(), h.REQUEST_ID)
            if not recovered:
                return []  # nobody to answer: the DLQ record is the whole story
            req = {
                "request_id": recovered,
                "tenant": h.header_value(msg.headers(), h.TENANT) or "default",
                "reply_to": h.header_value(msg.headers(), h.REPLY_TO),
            }
        return self.recorded(
            self.response(
                req,
                ResponseStatus.FAILED,
                f"Failed: {failure.message}",
                specialist=specialist,
                error_code=failure.code,
                error_message=failure.message[:RESPONSE_MESSAGE_CHARS],
                dlq=pointer,
                attempts=attempts,
            )
        )

    def expired(
        self,
        request: Mapping[str, Any],
        attempts: int,
        *,
        specialist: str | None = None,
        failure: Failure | None = None,
        horizon_s: float | None = None,
    ) -> Outbound:
        """The ``expired`` response: the deadline passed before an answer (after ``failure``),
        or (``horizon_s``) the request is older than the answered index remembers."""
        reason = "the deadline passed before an answer"
        if horizon_s is not None:
            reason = (
                f"the request is older than the dedup horizon ({horizon_s:g}s): it may have "
                "been answered already, so it is not sent to the model again"
            )
        if failure is not None:
            reason += f" (last error: {failure.message})"
        return self.response(
            request,
            ResponseStatus.EXPIRED,
            f"Expired: {reason}",
            specialist=specialist,
            attempts=attempts,
            error_code=DEADLINE_EXCEEDED if horizon_s is None else BEYOND_HORIZON,
        )


def _too_large(exc: KafkaException) -> bool:
    """Whether producing failed because the record is over the producer's or broker's limit."""
    error = exc.args[0] if exc.args else None
    return isinstance(error, KafkaError) and error.code() == KafkaError.MSG_SIZE_TOO_LARGE


def _slimmed(record: dict[str, Any], msg: Record) -> dict[str, Any]:
    """``record`` with its copy of the original cut to prefixes, and a note of that first in
    ``error_message`` (the DLQ record's fields are fixed by its schema)."""
    value: bytes = record["original_value"]
    key: bytes | None = record["original_key"]
    note = (
        f"[original record truncated for the DLQ: value {len(value)} bytes, first "
        f"{min(len(value), DLQ_VALUE_PREFIX_BYTES)} kept; the full record is at "
        f"{msg.topic()}/{msg.partition()}/{msg.offset()} until retention] "
    )
    return {
        **record,
        "original_value": value[:DLQ_VALUE_PREFIX_BYTES],
        "original_key": key[:DLQ_FIELD_PREFIX_BYTES] if key else key,
        "original_headers": [
            {
                "key": hd["key"][:DLQ_FIELD_PREFIX_BYTES],
                "value": hd["value"][:DLQ_FIELD_PREFIX_BYTES] if hd["value"] else hd["value"],
            }
            for hd in record["original_headers"]
        ],
        "error_message": (note + record["error_message"])[:DLQ_MESSAGE_CHARS],
    }
