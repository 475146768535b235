"""What the fake model answers: deterministic markdown, usage, and the Message wire shapes."""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

from switchboard.devtools.fake_anthropic.prompts import (
    CHARS_PER_TOKEN,
    DEFAULT_CACHE_TTL_S,
    PromptSplit,
    digest,
    estimate_tokens,
    last_user_text,
    text_of,
)

GIST_CHARS: Final = 160
REFUSAL_TEXT: Final = "I can't help with that request."
_POINTS: Final = (
    "Start from the failure mode you can observe, then work back to its cause.",
    "Measure before and after; keep the change that the numbers support.",
    "Bound every queue and every wait, and say what happens when the bound is hit.",
    "Make the retry owner explicit, so two layers never multiply attempts.",
    "Prefer the boring, well-understood mechanism over the clever one.",
    "Write the invariant down as a test before relying on it in production.",
    "Keep the hot path free of I/O that a cache or a batch could absorb.",
    "Decide what is idempotent, and key the side effects on it.",
)


@dataclass(frozen=True)
class Reply:
    """The text the fake model produced for one request and why it stopped."""

    text: str
    stop_reason: str
    output_tokens: int


def compose_reply(params: dict[str, Any], *, refusal: bool = False) -> Reply:
    """A short markdown answer, the same for the same model, system and messages.

    It quotes the gist of the last user message and carries a ``ref`` taken from the request
    hash, so tests can assert on both. ``max_tokens`` truncates it as the real model would.
    """
    if refusal:
        return Reply(REFUSAL_TEXT, "refusal", estimate_tokens(REFUSAL_TEXT))
    ref = digest(params.get("model"), params.get("system"), params.get("messages"))
    gist = " ".join(last_user_text(params.get("messages")).split())[:GIST_CHARS]
    first = int(ref[0:2], 16) % len(_POINTS)
    second = (first + 1 + int(ref[2:4], 16) % (len(_POINTS) - 1)) % len(_POINTS)
    text = (
        f"**Answer** (ref `{ref[:12]}`, {params.get('model')})\n\n"
        f"You asked: {gist}\n\n- {_POINTS[first]}\n- {_POINTS[second]}\n"
    )
    max_tokens = params.get("max_tokens")
    if isinstance(max_tokens, int) and estimate_tokens(text) > max_tokens:
        return Reply(text[: max_tokens * CHARS_PER_TOKEN], "max_tokens", max_tokens)
    return Reply(text, "end_turn", estimate_tokens(text))


def usage_json(
    split: PromptSplit, *, cache_hit: bool | None, output_tokens: int, service_tier: str
) -> dict[str, Any]:
    """Usage as the API reports it; ``cache_hit`` None means the prefix was not cached."""
    created = split.cached_tokens if cache_hit is False else 0
    read = split.cached_tokens if cache_hit else 0
    long_ttl = split.cache_ttl_s > DEFAULT_CACHE_TTL_S
    return {
        "input_tokens": split.total_tokens - created - read,
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": created,
        "cache_read_input_tokens": read,
        "cache_creation": {
            "ephemeral_5m_input_tokens": 0 if long_ttl else created,
            "ephemeral_1h_input_tokens": created if long_ttl else 0,
        },
        "service_tier": service_tier,
    }


def forced_tool(params: dict[str, Any]) -> dict[str, Any] | None:
    """The tool a request forces (``tool_choice`` of type ``tool`` or ``any``), if it has one."""
    choice, tools = params.get("tool_choice"), params.get("tools")
    if not isinstance(choice, dict) or not isinstance(tools, list):
        return None
    named = [tool for tool in tools if isinstance(tool, dict) and isinstance(tool.get("name"), str)]
    if choice.get("type") == "tool":
        return next((tool for tool in named if tool["name"] == choice.get("name")), None)
    return named[0] if choice.get("type") == "any" and named else None


def compose_tool_reply(
    params: dict[str, Any], tool: dict[str, Any]
) -> tuple[Reply, dict[str, Any]]:
    """A forced tool call: an ``input`` that meets the tool's ``input_schema`` (every property
    filled, one item per array, strings carrying the request's ``ref``), deterministic per request.
    """
    ref = digest(params.get("model"), params.get("system"), params.get("messages"))[:12]
    given = tool.get("input_schema")
    schema: dict[str, Any] = given if isinstance(given, dict) else {}
    tool_input = scripted_tool_input(params.get("messages"))
    if tool_input is None:
        tool_input = schema_instance(schema, schema.get("$defs", {}), f"fake {ref}")
    block = {
        "type": "tool_use",
        "id": "toolu_fake_" + secrets.token_hex(12),
        "name": tool["name"],
        "input": tool_input,
    }
    return Reply("", "tool_use", estimate_tokens(json.dumps(tool_input))), block


#: ``FAKE_TOOL_INPUT: {json}`` in any user turn: every forced tool call of the conversation
#: answers with that input (valid or not); ``FAKE_TOOL_INPUT_ONCE: {json}`` only while it is in
#: the last user turn, so a retry that answers with a tool result gets a schema instance.
_TOOL_INPUT_MARKER: Final = re.compile(r"FAKE_TOOL_INPUT(_ONCE)?:\s*(\{.*\})\s*$", re.MULTILINE)


def scripted_tool_input(messages: object) -> Any:
    """The tool input a prompt scripts with a ``FAKE_TOOL_INPUT`` marker, else None."""
    last = last_user_text(messages)
    users = [
        text_of(m.get("content"))
        for m in (messages if isinstance(messages, list) else [])
        if isinstance(m, dict) and m.get("role") == "user"
    ]
    for text in [last, *users]:
        for match in _TOOL_INPUT_MARKER.finditer(text):
            if match.group(1) and text is not last:
                continue
            try:
                return json.loads(match.group(2))
            except ValueError:
                return match.group(2)  # not JSON: handed over as a string, as a bad model might
    return None


def schema_instance(schema: Any, defs: dict[str, Any], text: str, depth: int = 0) -> Any:
    """A value that validates against ``schema`` (the JSON Schema subset pydantic emits)."""
    if not isinstance(schema, dict) or depth > 8:
        return None
    if "$ref" in schema:
        return schema_instance(defs.get(schema["$ref"].rsplit("/", 1)[-1]), defs, text, depth + 1)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for union in ("anyOf", "oneOf", "allOf"):
        if schema.get(union):
            return schema_instance(schema[union][0], defs, text, depth + 1)
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        return {
            name: schema_instance(sub, defs, f"{text} {name}", depth + 1)
            for name, sub in schema.get("properties", {}).items()
        }
    if kind == "array":
        return [schema_instance(schema.get("items", {}), defs, text, depth + 1)]
    if kind in ("integer", "number"):
        low = float(schema.get("minimum") or schema.get("exclusiveMinimum") or 0)
        high = float(schema.get("maximum") or low + 1)
        number = low if "exclusiveMinimum" not in schema else (low + high) / 2
        return int(number) if kind == "integer" else number
    if kind == "boolean":
        return False
    if kind == "null":
        return None
    shortest: int = schema.get("minLength", 0)
    longest: int | None = schema.get("maxLength")
    value = text.ljust(shortest, "x")
    return value[:longest] if longest is not None else value


def message_json(
    model: str,
    reply: Reply,
    usage: dict[str, Any],
    *,
    content: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The Message; ``content`` replaces the single text block of ``reply`` (a tool call)."""
    message: dict[str, Any] = {
        "id": "msg_fake_" + secrets.token_hex(12),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content if content is not None else [{"type": "text", "text": reply.text}],
        "stop_reason": reply.stop_reason,
        "stop_sequence": None,
        "usage": usage,
    }
    if reply.stop_reason == "refusal":
        message["stop_details"] = {"type": "refusal", "category": None, "explanation": None}
    return message


def stream_events(message: dict[str, Any], *, chunk_chars: int = 48) -> Iterator[bytes]:
    """The SSE frames the API streams for ``message``, in the order the SDK accumulates them."""
    usage = message["usage"]
    start = {
        **message,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {**usage, "output_tokens": 1},
    }
    start.pop("stop_details", None)
    yield _frame("message_start", {"type": "message_start", "message": start})
    for index, block in enumerate(message["content"]):
        tool = block["type"] == "tool_use"  # a tool call streams its input as JSON fragments
        empty = {**block, "input": {}} if tool else {**block, "text": ""}
        yield _frame(
            "content_block_start",
            {"type": "content_block_start", "index": index, "content_block": empty},
        )
        if index == 0:
            yield _frame("ping", {"type": "ping"})
        text = json.dumps(block["input"]) if tool else block["text"]
        for at in range(0, len(text), chunk_chars):
            piece = text[at : at + chunk_chars]
            delta = (
                {"type": "input_json_delta", "partial_json": piece}
                if tool
                else {"type": "text_delta", "text": piece}
            )
            event = {"type": "content_block_delta", "index": index, "delta": delta}
            yield _frame("content_block_delta", event)
        yield _frame("content_block_stop", {"type": "content_block_stop", "index": index})
    delta = {
        "stop_reason": message["stop_reason"],
        "stop_sequence": None,
        "stop_details": message.get("stop_details"),
    }
    final_usage = {
        key: usage[key]
        for key in (
            "input_tokens",
            "output_tokens",
            "cache_creation_input_tokens",
            "cache_read_input_tokens",
        )
    }
    yield _frame("message_delta", {"type": "message_delta", "delta": delta, "usage": final_usage})
    yield _frame("message_stop", {"type": "message_stop"})


def _frame(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()
