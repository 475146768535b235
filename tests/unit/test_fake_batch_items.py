"""The fake server's batch knobs and forced tool calls, through the real SDK over loopback HTTP:
scripted per-item outcomes (succeeded, errored, invalid, expired, canceled) land on exactly the
items named, each once; a forced tool comes back as a ``tool_use`` block whose input meets the
tool's schema (the findings tool's input validates as a ``FindingsAnswer``); and the fake
counts batch creates per ``custom_id``."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx2
import pytest
from anthropic.types.messages.batch_create_params import Request

from switchboard.core.findings import FINDINGS_TOOL_NAME, findings_tool, parse_findings_answer
from switchboard.devtools.fake_anthropic import FakeAnthropic

MODEL = "claude-sonnet-5-5"
TOOL: Any = findings_tool()  # a plain dict, as the SDK accepts it


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(batch_seconds=0.05) as server:
        yield server


def item(custom_id: str) -> Request:
    return {
        "custom_id": custom_id,
        "params": {
            "model": MODEL,
            "max_tokens": 256,
            "messages": [{"role": "user", "content": f"review {custom_id}"}],
        },
    }


def run_results(client: anthropic.Anthropic, ids: list[str]) -> dict[str, Any]:
    """Create a batch of ``ids``, poll it until it ends (10 s at most), return its results."""
    batch = client.messages.batches.create(requests=[item(i) for i in ids])
    deadline = time.monotonic() + 10
    while client.messages.batches.retrieve(batch.id).processing_status != "ended":
        assert time.monotonic() < deadline, "batch did not end"
        time.sleep(0.02)
    return {line.custom_id: line.result for line in client.messages.batches.results(batch.id)}


def run_batch(client: anthropic.Anthropic, ids: list[str]) -> dict[str, str]:
    return {custom_id: result.type for custom_id, result in run_results(client, ids).items()}


def test_scripted_outcomes_hit_the_named_items_once(
    fake: FakeAnthropic, client: anthropic.Anthropic
) -> None:
    fake.script_batch_items(
        {"e": "errored", "i": "invalid", "x": ["expired", "canceled"], "c": "canceled"}
    )
    first = run_batch(client, ["ok", "e", "i", "x", "c"])
    assert first == {
        "ok": "succeeded",
        "e": "errored",
        "i": "errored",
        "x": "expired",
        "c": "canceled",
    }
    second = run_batch(client, ["e", "x", "c"])
    assert second == {"e": "succeeded", "x": "canceled", "c": "succeeded"}
    stats = fake.stats()
    assert stats.batches_created == 2
    assert stats.batched_by_custom_id == {"ok": 1, "e": 2, "i": 1, "x": 2, "c": 2}


def test_errored_items_carry_the_api_error_types(
    client: anthropic.Anthropic, fake: FakeAnthropic
) -> None:
    fake.script_batch_items({"bad": "invalid", "lost": "errored"})
    results = run_results(client, ["bad", "lost"])
    bad, lost = results["bad"], results["lost"]
    assert bad.type == "errored" and bad.error.error.type == "invalid_request_error"
    assert lost.type == "errored" and lost.error.error.type == "api_error"


def test_an_unknown_scripted_outcome_is_refused_with_the_choices(fake: FakeAnthropic) -> None:
    with pytest.raises(ValueError, match="use one of succeeded, errored, invalid"):
        fake.script_batch_items({"a": "lost"})


def test_a_forced_tool_answers_with_a_tool_use_that_meets_its_schema(
    client: anthropic.Anthropic,
) -> None:
    message = client.messages.create(
        model=MODEL,
        max_tokens=512,
        tools=[TOOL],
        tool_choice={"type": "tool", "name": FINDINGS_TOOL_NAME},
        messages=[{"role": "user", "content": "review this design"}],
    )
    assert message.stop_reason == "tool_use"
    (block,) = message.content
    assert block.type == "tool_use" and block.name == FINDINGS_TOOL_NAME
    answer = parse_findings_answer(block.input)
    assert len(answer.findings) == 1


def test_a_forced_tool_streams_its_input_as_json_deltas(client: anthropic.Anthropic) -> None:
    with client.messages.stream(
        model=MODEL,
        max_tokens=512,
        tools=[TOOL],
        tool_choice={"type": "tool", "name": FINDINGS_TOOL_NAME},
        messages=[{"role": "user", "content": "review this design"}],
    ) as stream:
        message = stream.get_final_message()
    (block,) = message.content
    assert block.type == "tool_use"
    parse_findings_answer(block.input)


def test_the_control_api_scripts_batch_items_and_their_time(
    fake: FakeAnthropic, client: anthropic.Anthropic
) -> None:
    body = {"outcomes": {"a": ["expired"], "b": "invalid"}, "seconds": 0.01}
    answer = httpx2.post(f"{fake.base_url}/_fake/batch-items", json=body)
    assert answer.status_code == 200 and answer.json() == {"scripted": 2, "batch_seconds": 0.01}
    assert run_batch(client, ["a", "b", "c"]) == {"a": "expired", "b": "errored", "c": "succeeded"}
    refused = httpx2.post(f"{fake.base_url}/_fake/batch-items", json={"outcomes": {"a": "gone"}})
    assert refused.status_code == 400 and "use one of" in refused.json()["error"]["message"]
