"""What the fake model answers: deterministic markdown, usage, and the Message wire shapes."""

from __future__ import annotations

import json
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


def message_json(model: str, reply: Reply, usage: dict[str, Any]) -> dict[str, Any]:
    message: dict[str, Any] = {
        "id": "msg_fake_" + secrets.token_hex(12),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": reply.text}],
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
        yield _frame(
            "content_block_start",
            {"type": "content_block_start", "index": index, "content_block": {**block, "text": ""}},
        )
        if index == 0:
            yield _frame("ping", {"type": "ping"})
        text = block["text"]
        for at in range(0, len(text), chunk_chars):
            delta = {"type": "text_delta", "text": text[at : at + chunk_chars]}
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
