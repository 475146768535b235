"""The Message Batches pieces without a broker or a server: custom ids, request layout, the
split within the API's limits, what each result type means, and the half-price cost."""

from __future__ import annotations

from types import SimpleNamespace as NS
from typing import Any

import pytest

from consumers.batches.requests import (
    DOCUMENT_CACHE_CONTROL,
    DOCUMENT_PREFIX_MAX_CHARS,
    BatchItem,
    Planned,
    batch_params,
    custom_id_for,
    split_batches,
)
from consumers.batches.results import (
    Dead,
    Publish,
    Resubmit,
    batch_cost_micro_usd,
    judge,
)
from consumers.specialists.backends import cost_micro_usd
from switchboard.core.errors import ErrorClass
from switchboard.core.findings import FINDINGS_TOOL_NAME, parse_findings_answer
from switchboard.core.status import ResponseStatus

MODEL = "claude-sonnet-5-5"


def item(request_id: str = "r1", document: str = "DOC") -> BatchItem:
    request = {"request_id": request_id, "prompt": "review part 1", "tenant": "t"}
    return BatchItem(request_id, "backend", request, document)


def test_custom_ids_keep_legal_request_ids_and_map_the_rest_stably() -> None:
    assert custom_id_for("job-1_abc") == "job-1_abc"
    mapped = custom_id_for("job:abc123:part-2:backend")
    assert mapped == custom_id_for("job:abc123:part-2:backend")  # stable across runs
    assert mapped.startswith("sb-") and len(mapped) == 43
    assert custom_id_for("x" * 65) != custom_id_for("x" * 66)
    assert custom_id_for("x" * 64) == "x" * 64


def test_an_item_must_carry_its_own_request() -> None:
    with pytest.raises(ValueError, match="build the item from the same request"):
        BatchItem("a", "backend", {"request_id": "b"})


def test_params_put_the_document_first_as_a_1h_cached_prefix_and_force_the_findings_tool() -> None:
    params = batch_params(item(), model=MODEL, max_tokens=900)
    document, persona = params["system"]
    assert document["text"].endswith("DOC") and document["cache_control"] == DOCUMENT_CACHE_CONTROL
    assert "cache_control" not in persona and len(persona["text"]) > 200
    assert params["messages"] == [{"role": "user", "content": "review part 1"}]
    assert params["tool_choice"] == {"type": "tool", "name": FINDINGS_TOOL_NAME}
    assert [t["name"] for t in params["tools"]] == [FINDINGS_TOOL_NAME]
    assert (params["model"], params["max_tokens"]) == (MODEL, 900)
    assert len(batch_params(item(document=""), model=MODEL, max_tokens=1)["system"]) == 1
    huge = item(document="x" * (DOCUMENT_PREFIX_MAX_CHARS + 1))
    assert len(batch_params(huge, model=MODEL, max_tokens=1)["system"]) == 1


def planned(n: int, size: int) -> list[Planned]:
    return [Planned(item(f"r{i}"), {}, size) for i in range(n)]


def test_batches_split_at_the_request_limit_and_the_byte_limit() -> None:
    by_count, _ = split_batches(planned(5, 10), max_requests=2, max_bytes=10_000)
    assert [len(b) for b in by_count] == [2, 2, 1]
    # 10 bytes each plus a comma between: three fit in 32, a fourth would need 43.
    by_bytes, _ = split_batches(planned(7, 10), max_requests=100, max_bytes=32)
    assert [len(b) for b in by_bytes] == [3, 3, 1]
    everything = [p.item.request_id for b in by_bytes for p in b]
    assert everything == [f"r{i}" for i in range(7)]


def test_a_request_larger_than_a_batch_is_set_aside_not_sent() -> None:
    requests = [*planned(2, 10), Planned(item("huge"), {}, 100)]
    batches, oversize = split_batches(requests, max_requests=10, max_bytes=50)
    assert [p.item.request_id for p in oversize] == ["huge"]
    assert [len(b) for b in batches] == [2]


def message(content: list[Any], stop_reason: str = "tool_use") -> NS:
    usage = NS(
        input_tokens=100,
        output_tokens=50,
        cache_read_input_tokens=0,
        cache_creation_input_tokens=0,
        cache_creation=None,
    )
    return NS(model=MODEL, usage=usage, stop_reason=stop_reason, content=content)


def tool_call(tool_input: Any) -> NS:
    return NS(type="tool_use", name=FINDINGS_TOOL_NAME, input=tool_input)


def errored(error_type: str) -> NS:
    return NS(type="errored", error=NS(error=NS(type=error_type, message="boom")))


FINDING = {
    "rule_id": "SB-1",
    "specialist": "whoever",
    "severity": "high",
    "category": "resilience",
    "title": "No timeout",
    "evidence": "calls payments synchronously",
    "location": {"path": "a.md", "start_line": 3, "end_line": 3},
    "recommendation": "Add a timeout.",
}

VERDICTS: list[tuple[str, Any, int, type]] = [
    (
        "succeeded",
        NS(type="succeeded", message=message([tool_call({"findings": [FINDING]})])),
        1,
        Publish,
    ),
    ("refused", NS(type="succeeded", message=message([], "refusal")), 1, Publish),
    (
        "bad findings, first try",
        NS(type="succeeded", message=message([tool_call({"findings": 3})])),
        1,
        Resubmit,
    ),
    (
        "bad findings, second try",
        NS(type="succeeded", message=message([tool_call({"findings": 3})])),
        2,
        Publish,
    ),
    (
        "no tool call, first try",
        NS(type="succeeded", message=message([NS(type="text", text="hi")], "end_turn")),
        1,
        Resubmit,
    ),
    ("server error", errored("api_error"), 1, Resubmit),
    ("overloaded", errored("overloaded_error"), 2, Resubmit),
    ("server error, last attempt", errored("api_error"), 3, Dead),
    ("invalid request", errored("invalid_request_error"), 1, Dead),
    ("expired", NS(type="expired"), 1, Resubmit),
    ("expired, last attempt", NS(type="expired"), 3, Dead),
    ("canceled", NS(type="canceled"), 1, Dead),
]


@pytest.mark.parametrize(
    ("case", "result", "attempt", "verdict"), VERDICTS, ids=[v[0] for v in VERDICTS]
)
def test_each_result_type_gets_its_verdict(
    case: str, result: Any, attempt: int, verdict: type
) -> None:
    assert type(judge(result, attempt=attempt, max_attempts=3, specialist="perf")) is verdict


def test_a_published_answer_names_who_answered_and_for_which_specialist() -> None:
    result = NS(
        type="succeeded", message=message([tool_call({"findings": [FINDING], "backend": "me"})])
    )
    verdict = judge(result, attempt=1, max_attempts=3, specialist="perf")
    assert isinstance(verdict, Publish) and verdict.status == ResponseStatus.ANSWERED
    answer = parse_findings_answer(verdict.content)
    assert answer.backend == MODEL and [f.specialist for f in answer.findings] == ["perf"]
    assert verdict.cost_micro_usd == round(cost_micro_usd(MODEL, verdict.usage) / 2)


def test_an_invalid_request_is_dead_lettered_as_permanent_with_the_api_message() -> None:
    verdict = judge(errored("invalid_request_error"), attempt=1, max_attempts=3, specialist="x")
    assert isinstance(verdict, Dead)
    failure = verdict.failure
    assert failure.error_class is ErrorClass.PERMANENT and failure.provider_status == 400
    assert failure.code == "invalid_request_error" and "boom" in failure.message


def test_batch_cost_is_half_price_with_one_hour_cache_writes_at_twice_input() -> None:
    usage = {
        "input_tokens": 1_000,
        "output_tokens": 100,
        "cache_read_input_tokens": 2_000,
        "cache_creation_input_tokens": 500,
    }
    # Sonnet: $2 in, $10 out per million = 2 and 10 micro-dollars a token.
    five_minute = 1_000 * 2 + 100 * 10 + 2_000 * 0.2 + 500 * 2 * 1.25
    assert batch_cost_micro_usd(MODEL, usage) == round(five_minute / 2)
    one_hour = 1_000 * 2 + 100 * 10 + 2_000 * 0.2 + 500 * 2 * 2.0
    assert batch_cost_micro_usd(MODEL, usage, one_hour_writes=500) == round(one_hour / 2)
