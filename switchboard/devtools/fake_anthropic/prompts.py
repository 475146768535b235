"""What the fake reads from a Messages request: text, token estimates, request key, cache prefix."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Final

CHARS_PER_TOKEN: Final = 4
DEFAULT_CACHE_TTL_S: Final = 300.0
LONG_CACHE_TTL_S: Final = 3600.0


def text_of(content: object) -> str:
    """The text in a message ``content`` or ``system`` value: a string or a list of blocks."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    parts: list[str] = []
    for block in content:
        if not isinstance(block, dict):
            continue
        if isinstance(block.get("text"), str):
            parts.append(block["text"])
        elif "content" in block:  # tool_result blocks nest their own content
            parts.append(text_of(block["content"]))
        elif block.get("type") == "tool_use":
            parts.append(canonical_json(block.get("input")))
    return "\n".join(parts)


def estimate_tokens(text: str) -> int:
    """About four characters a token, as the API's own rule of thumb; never below one."""
    return max(1, -(-len(text) // CHARS_PER_TOKEN))


def canonical_json(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def digest(*parts: object) -> str:
    return hashlib.sha256(canonical_json(list(parts)).encode()).hexdigest()


def last_user_text(messages: object) -> str:
    """The text of the last user turn: what fault rules and the answer's gist look at."""
    if isinstance(messages, list):
        for message in reversed(messages):
            if isinstance(message, dict) and message.get("role") == "user":
                return text_of(message.get("content"))
    return ""


def request_key(params: dict[str, Any]) -> str:
    """Who a call bills: ``metadata.user_id`` when given, else a hash of the messages."""
    metadata = params.get("metadata")
    if isinstance(metadata, dict):
        user_id = metadata.get("user_id")
        if isinstance(user_id, str) and user_id:
            return user_id
    return "messages:" + digest(params.get("messages"))[:16]


def system_blocks(system: object) -> list[dict[str, Any]]:
    if isinstance(system, str):
        return [{"type": "text", "text": system}] if system else []
    if isinstance(system, list):
        return [block for block in system if isinstance(block, dict)]
    return []


@dataclass(frozen=True)
class PromptSplit:
    """A request's input tokens, split at its last ``cache_control`` breakpoint in ``system``.

    The cached prefix is the tools and the system blocks up to the breakpoint, as the API
    caches in the order tools, system, messages; ``cache_key`` is None without a breakpoint.
    """

    cache_key: str | None
    cached_tokens: int
    uncached_tokens: int
    cache_ttl_s: float

    @property
    def total_tokens(self) -> int:
        return self.cached_tokens + self.uncached_tokens


def split_prompt(params: dict[str, Any]) -> PromptSplit:
    tools = params.get("tools")
    tools_text = canonical_json(tools) if tools else ""
    blocks = system_blocks(params.get("system"))
    messages_text = "\n".join(
        text_of(message.get("content"))
        for message in params.get("messages") or []
        if isinstance(message, dict)
    )
    breakpoints = [i for i, block in enumerate(blocks) if block.get("cache_control")]
    if not breakpoints:
        whole = "\n".join([tools_text, text_of(blocks), messages_text])
        return PromptSplit(None, 0, estimate_tokens(whole), DEFAULT_CACHE_TTL_S)
    last = breakpoints[-1]
    prefix = blocks[: last + 1]
    control = blocks[last]["cache_control"]
    long_ttl = isinstance(control, dict) and control.get("ttl") == "1h"
    rest = "\n".join([text_of(blocks[last + 1 :]), messages_text])
    return PromptSplit(
        cache_key=digest(params.get("model"), tools, prefix),
        cached_tokens=estimate_tokens(tools_text + text_of(prefix)),
        uncached_tokens=estimate_tokens(rest),
        cache_ttl_s=LONG_CACHE_TTL_S if long_ttl else DEFAULT_CACHE_TTL_S,
    )


class PromptCache:
    """Prefixes seen within their TTL. Not thread-safe: the owner holds a lock."""

    def __init__(self) -> None:
        self._expires: dict[str, float] = {}

    def holds(self, key: str, now: float) -> bool:
        return self._expires.get(key, 0.0) > now

    def touch(self, key: str, ttl_s: float, now: float) -> bool:
        """True on a hit; either way the entry lives ``ttl_s`` more, as a read refreshes it."""
        hit = self.holds(key, now)
        self._expires[key] = now + ttl_s
        return hit

    def clear(self) -> None:
        self._expires.clear()
