"""How a worker answers a review request: offline detectors, or Claude asked for findings.

A review request (``metadata["kind"] == "review"``, see ``switchboard.core.findings.ReviewMeta``)
is answered with a ``FindingsAnswer`` as JSON in the response's content. Offline, the
detectors run over the part's own text (cut out of the prompt by its markers) at its original
line numbers. With a model, Claude is asked to call the ``report_findings`` tool (forced
``tool_choice``); the tool input is validated with ``parse_findings_answer``; an input that does
not validate is sent back once as an ``is_error`` tool result naming the problems; a second bad
answer is kept as plain text, which the review job reports as an unstructured note.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from consumers.specialists.review.detect import detect_findings, offline_answer
from switchboard.core.findings import (
    FINDINGS_TOOL_NAME,
    FindingsAnswer,
    FindingsParseError,
    ReviewMeta,
    findings_tool,
    parse_findings_answer,
)

if TYPE_CHECKING:
    from anthropic import AsyncAnthropic

#: Appended to the persona for review requests: what to report and how to anchor it.
REVIEW_INSTRUCTIONS = (
    "You are reviewing one part of a design document, API spec or runbook before a release. "
    f"Call the {FINDINGS_TOOL_NAME} tool exactly once with every real problem you find in the "
    "part (none when it is sound). For each finding quote the evidence verbatim from the part "
    "and give the 1-based line numbers of the original file: the part's first line is the line "
    "number its start marker gives. Use the outline to see what other parts cover; do not "
    "report a topic as missing when the outline shows it elsewhere."
)
#: How many model calls one review request may take: the first, and one retry on bad input.
MAX_REVIEW_CALLS = 2
#: The most of an unvalidated answer kept in a note.
MAX_NOTE_CHARS = 4_000


def offline_review(specialist: str, prompt: str, meta: ReviewMeta) -> str:
    """The offline detectors' ``FindingsAnswer`` for one part, as JSON."""
    findings = detect_findings(
        meta.part_text(prompt),
        path=meta.path,
        specialist=specialist,
        start_line=meta.start_line,
        heading_path=meta.heading_path,
        doc_format=meta.format,
        context=meta.context,
    )
    answer = offline_answer(specialist, findings)
    return answer.model_dump_json()


@dataclass
class ReviewCall:
    """What the model calls for one review request produced, usage summed over them."""

    content: str = ""
    model: str = ""
    calls: int = 0
    refused: bool = False
    usage: dict[str, int] = field(default_factory=dict)
    model_ms: int = 0

    def add_usage(self, usage: Any) -> None:
        for name in (
            "input_tokens",
            "output_tokens",
            "cache_read_input_tokens",
            "cache_creation_input_tokens",
        ):
            self.usage[name] = self.usage.get(name, 0) + (getattr(usage, name, 0) or 0)


def _owned(raw: Any, specialist: str, meta: ReviewMeta) -> Any:
    """The tool input with who and where set by the worker: a model may misname the file or
    itself, and neither is the model's to decide."""
    if not isinstance(raw, dict) or not isinstance(raw.get("findings"), list):
        return raw
    findings = []
    for item in raw["findings"]:
        if isinstance(item, dict):
            item = {**item, "specialist": specialist}
            if isinstance(item.get("location"), dict):
                item["location"] = {**item["location"], "path": meta.path}
        findings.append(item)
    return {**raw, "findings": findings}


async def claude_review(
    client: AsyncAnthropic,
    *,
    model: str,
    system: list[dict[str, Any]],
    specialist: str,
    prompt: str,
    meta: ReviewMeta,
    max_tokens: int,
    on_headers: Callable[[Mapping[str, str]], None] | None = None,
) -> ReviewCall:
    """Ask for findings with the forced findings tool; retry once on input that does not
    validate; then keep the answer as a note (plain text content)."""
    result = ReviewCall(model=model)
    messages: list[dict[str, Any]] = [{"role": "user", "content": prompt}]
    began = time.perf_counter()
    problem = ""
    raw_input: Any = None
    text = ""
    while result.calls < MAX_REVIEW_CALLS:
        params: dict[str, Any] = {
            "model": model,
            "max_tokens": max_tokens,
            "system": [*system, {"type": "text", "text": REVIEW_INSTRUCTIONS}],
            "tools": [findings_tool()],
            "tool_choice": {"type": "tool", "name": FINDINGS_TOOL_NAME},
            "messages": messages,
        }
        raw = await client.messages.with_raw_response.create(**params)
        if on_headers is not None:
            on_headers(raw.headers)
        message = await raw.parse()
        result.calls += 1
        result.model = message.model or model
        result.add_usage(message.usage)
        if message.stop_reason == "refusal":
            result.refused = True
            result.content = "The model declined to review this part."
            break
        text = "".join(block.text for block in message.content if block.type == "text")
        tool = next((b for b in message.content if b.type == "tool_use"), None)
        if tool is None:
            problem = f"no {FINDINGS_TOOL_NAME} tool call in the answer"
            raw_input = None
        else:
            raw_input = tool.input
            try:
                answer = parse_findings_answer(_owned(raw_input, specialist, meta))
            except FindingsParseError as exc:
                problem = str(exc)
            else:
                result.content = _with_backend(answer, result.model).model_dump_json()
                break
        if tool is None:
            break  # nothing to answer a tool result to; keep what the model said
        messages += [
            {"role": "assistant", "content": [b.model_dump() for b in message.content]},
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": tool.id,
                        "is_error": True,
                        "content": f"{problem}. Call {FINDINGS_TOOL_NAME} again with input "
                        "that fits its schema.",
                    }
                ],
            },
        ]
    if not result.content:
        said = json.dumps(raw_input) if raw_input is not None else text
        result.content = (f"Unstructured answer (findings did not validate: {problem}):\n{said}")[
            :MAX_NOTE_CHARS
        ]
    result.model_ms = int((time.perf_counter() - began) * 1000)
    return result


def _with_backend(answer: FindingsAnswer, model: str) -> FindingsAnswer:
    return answer.model_copy(update={"backend": model})
