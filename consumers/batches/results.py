"""What one Message Batches result means for its request: publish it, resubmit it, or fail it.

- ``succeeded``: the forced findings tool call, validated as a ``FindingsAnswer``, is the
  answer (``refused`` when the model refused). A tool input that does not validate is
  resubmitted once, then published as it came, so the review job keeps it as a note.
- ``errored`` with ``invalid_request_error``: the request itself is wrong and sending it again
  cannot help: dead-lettered with the error, and a ``failed`` response with the DLQ pointer.
- ``errored`` otherwise (API or overload errors) and ``expired``: resubmitted in a new batch,
  up to ``max_attempts`` in all, then dead-lettered like an invalid one.
- ``canceled``: dead-lettered at once, not resubmitted. The API never cancels by itself:
  someone canceled the batch (the console, the API, an operator) to stop it, and resubmitting
  would silently undo that decision and spend again. The dead letter keeps the request, so
  ``switchboard dlq replay`` sends it through the ordinary workers when it is wanted after all.

Cost: the Batches API bills half of every usage price; a 1-hour cache write is billed at twice
the input price (a 5-minute one at 1.25x).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from consumers.specialists.backends import usage_cost_micro_usd
from switchboard.core.classify import Failure
from switchboard.core.errors import ErrorClass
from switchboard.core.findings import (
    FINDINGS_TOOL_NAME,
    FindingsParseError,
    parse_findings_answer,
)
from switchboard.core.status import ResponseStatus

#: The Batches API's discount on every usage price.
BATCH_PRICE_FACTOR: Final = 0.5
#: Attempts an answer whose findings do not validate gets before it is kept as it came.
STRUCTURE_ATTEMPTS: Final = 2
#: The ``error.type`` of a result that needs a fixed request, not another try.
INVALID_REQUEST: Final = "invalid_request_error"
REFUSED_TEXT: Final = "The model declined to review this part."


@dataclass(frozen=True)
class Publish:
    """Publish an ordinary response: ``status`` with ``content``, usage and cost."""

    status: str
    content: str
    model: str
    usage: dict[str, int]
    cost_micro_usd: int


@dataclass(frozen=True)
class Resubmit:
    """Send the request again in a new batch."""

    reason: str


@dataclass(frozen=True)
class Dead:
    """Dead-letter the request with ``failure`` and answer it ``failed``."""

    failure: Failure


Verdict = Publish | Resubmit | Dead


def judge(result: Any, *, attempt: int, max_attempts: int, specialist: str) -> Verdict:
    """The verdict on one result (``MessageBatchIndividualResponse.result``) at ``attempt``
    of a request to ``specialist``."""
    kind = getattr(result, "type", None)
    if kind == "succeeded":
        return _succeeded(result.message, attempt=attempt, specialist=specialist)
    if kind == "canceled":
        return Dead(batch_failure("batch_canceled", "the batch was canceled before this item ran"))
    if kind == "expired":
        reason = "the batch expired (24 h) before this item ran"
        if attempt < max_attempts:
            return Resubmit(reason)
        return Dead(batch_failure("batch_expired", f"{reason}, {attempt} times"))
    if kind == "errored":
        error = getattr(getattr(result, "error", None), "error", None)
        error_type = str(getattr(error, "type", "api_error"))
        message = str(getattr(error, "message", "") or error_type)
        if error_type == INVALID_REQUEST:
            return Dead(
                batch_failure(
                    INVALID_REQUEST,
                    f"the API rejected the request: {message}",
                    error_class=ErrorClass.PERMANENT,
                    provider_status=400,
                )
            )
        if attempt < max_attempts:
            return Resubmit(f"{error_type}: {message}")
        return Dead(batch_failure(error_type, f"{message} ({attempt} attempts)"))
    return Resubmit(f"unknown result type {kind!r}")


def _succeeded(message: Any, *, attempt: int, specialist: str) -> Verdict:
    model = str(message.model)
    usage = usage_of(message.usage)
    cost = batch_cost_micro_usd(model, usage, one_hour_writes=_one_hour_writes(message.usage))
    if message.stop_reason == "refusal":
        return Publish(ResponseStatus.REFUSED, REFUSED_TEXT, model, usage, cost)
    calls = [
        block
        for block in message.content
        if block.type == "tool_use" and block.name == FINDINGS_TOOL_NAME
    ]
    text = "".join(block.text for block in message.content if block.type == "text")
    if not calls:
        if attempt < STRUCTURE_ATTEMPTS:
            return Resubmit("the answer made no findings tool call")
        return Publish(ResponseStatus.ANSWERED, text, model, usage, cost)
    try:
        answer = parse_findings_answer(calls[0].input)
    except FindingsParseError as exc:
        if attempt < STRUCTURE_ATTEMPTS:
            return Resubmit(str(exc))
        return Publish(ResponseStatus.ANSWERED, json.dumps(calls[0].input), model, usage, cost)
    # Who answered is known here, not something to take from the model's own say-so.
    answer = answer.model_copy(
        update={
            "backend": model,
            "findings": [f.model_copy(update={"specialist": specialist}) for f in answer.findings],
        }
    )
    return Publish(ResponseStatus.ANSWERED, answer.model_dump_json(), model, usage, cost)


def usage_of(usage: Any) -> dict[str, int]:
    """The four token counts of the response schema's ``TokenUsage``."""
    return {
        "input_tokens": int(usage.input_tokens or 0),
        "output_tokens": int(usage.output_tokens or 0),
        "cache_read_input_tokens": int(usage.cache_read_input_tokens or 0),
        "cache_creation_input_tokens": int(usage.cache_creation_input_tokens or 0),
    }


def _one_hour_writes(usage: Any) -> int:
    creation = getattr(usage, "cache_creation", None)
    return int(getattr(creation, "ephemeral_1h_input_tokens", 0) or 0)


def batch_cost_micro_usd(model: str, usage: Mapping[str, int], *, one_hour_writes: int = 0) -> int:
    """What a batch request cost in micro-dollars: half the published prices."""
    full = usage_cost_micro_usd(model, usage, one_hour_writes=one_hour_writes)
    return round(full * BATCH_PRICE_FACTOR)


def batch_failure(
    code: str,
    message: str,
    *,
    error_class: ErrorClass = ErrorClass.TRANSIENT,
    provider_status: int | None = None,
) -> Failure:
    return Failure(
        error_class=error_class,
        code=code,
        message=f"Message Batches: {message}",
        error_type="BatchItem" + "".join(part.title() for part in code.split("_")),
        provider_status=provider_status,
    )
