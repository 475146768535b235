"""A request body's checks, wherever the body is first decoded: the router, or the worker.

The router decodes a request that carries no routing headers and runs every check there. A
request the client wrote with routing headers (``switchboard.core.routing``) is routed from
its headers alone, its original bytes forwarded: its task carries ``sb-routed``, and the
worker, which decodes it anyway, runs the body's checks (``admit_routed``) with the same
reasons and error codes before any model call, and checks that the body says what the
headers the router trusted said.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from switchboard.core import headers as h
from switchboard.core.errors import RequestInvalid
from switchboard.core.headers import RawHeaders
from switchboard.core.routing import parse_command
from switchboard.core.settings import DEFAULTS, SPECIALISTS, Settings

#: C0 control characters a prompt may not hold (tab, newline and carriage return are text).
_CONTROL: Final = frozenset(chr(c) for c in range(32)) - {"\t", "\n", "\r"}
#: Error code of a task whose body does not say what its routing headers said.
ROUTING_MISMATCH: Final = "routing_mismatch"


@dataclass(frozen=True)
class BodyRules:
    """The limits on a request's body that do not depend on its tenant."""

    max_metadata_entries: int = DEFAULTS.max_metadata_entries
    max_metadata_bytes: int = DEFAULTS.max_metadata_bytes

    @classmethod
    def from_settings(cls, settings: Settings) -> BodyRules:
        return cls(settings.max_metadata_entries, settings.max_metadata_bytes)


def validate_body(
    request: Mapping[str, Any],
    rules: BodyRules,
    prompt_limit: int | None,
    parsed: tuple[str | None, str] | None = None,
) -> tuple[str | None, str]:
    """The specialist the body names (None: triage decides) and its prompt; raises
    ``RequestInvalid``. ``prompt_limit`` None: the prompt's size was checked already (the
    router routed the record from its headers only when the whole value fits the limit).
    ``parsed``: ``parse_command`` of the text, when the caller has it already."""
    metadata = request.get("metadata") or {}
    if len(metadata) > rules.max_metadata_entries:
        raise RequestInvalid(
            f"metadata has {len(metadata)} entries; the limit is {rules.max_metadata_entries}",
            code="too_much_metadata",
        )
    metadata_bytes = sum(len(k.encode()) + len(v.encode()) for k, v in metadata.items())
    if metadata_bytes > rules.max_metadata_bytes:
        raise RequestInvalid(
            f"metadata is {metadata_bytes} bytes; the limit is {rules.max_metadata_bytes}: "
            "keep metadata to short tags and ids",
            code="too_much_metadata",
        )
    explicit = request.get("specialist")
    command, prompt = parsed or parse_command(request.get("text") or "")
    if request.get("prompt"):
        prompt = request["prompt"]
    if prompt_limit is not None:
        size = len(prompt.encode("utf-8"))
        if size > prompt_limit:
            raise RequestInvalid(
                f"prompt is {size} bytes; the limit is {prompt_limit}: shorten it or "
                "split it into several requests",
                code="prompt_too_large",
            )
    if not _CONTROL.isdisjoint(prompt):
        bad = next(c for c in prompt if c in _CONTROL)
        raise RequestInvalid(
            f"the prompt holds control character U+{ord(bad):04X}: send plain text (tab "
            "and newline are fine)",
            code="control_characters",
        )
    if not prompt.strip():
        raise RequestInvalid(
            "the request has no question: send text such as '/backend design a rate limiter'",
            code="empty_prompt",
        )
    name = explicit or command
    if name is None:
        return None, prompt
    if name not in SPECIALISTS:
        raise RequestInvalid(
            f"unknown specialist {name!r}: use one of " + ", ".join(f"/{s}" for s in SPECIALISTS),
            code="unknown_specialist",
        )
    return name, prompt


def invalid_utf8(exc: UnicodeDecodeError) -> RequestInvalid:
    """The rejection of a request whose strings are not UTF-8 (the caller's bad input)."""
    return RequestInvalid(
        f"the request holds bytes that are not UTF-8 (at byte {exc.start} of a string): "
        "send every string UTF-8 encoded",
        code="invalid_utf8",
    )


def header_request(headers: RawHeaders) -> dict[str, Any] | None:
    """Whom to answer, from the routing headers alone (the body is unreadable or not to be
    trusted): request id, tenant and reply topic; None without a request id header."""
    request_id = h.header_value(headers, h.REQUEST_ID)
    if not request_id:
        return None
    return {
        "request_id": request_id,
        "tenant": h.header_value(headers, h.TENANT) or "default",
        "reply_to": h.header_value(headers, h.REPLY_TO),
    }


def routed_by_headers(facts: Mapping[str, Any]) -> bool:
    """Whether a task was routed from its headers alone (its body is not validated yet);
    ``facts``: the task's headers as a dict (the last value of each)."""
    return h.ROUTED in facts


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


#: What a routed task's headers say about its body, in ``admit_routed``'s order.
_ROUTING_FACTS: Final = (
    "request_id",
    "tenant",
    "specialist",
    "priority",
    "reply_to",
    "deadline_ms",
)


def admit_routed(
    request: dict[str, Any], facts: Mapping[str, Any], rules: BodyRules
) -> dict[str, Any]:
    """A task the router routed from headers, decoded by the worker: the request to answer
    (``request`` itself, its prompt, specialist and the router's timing filled in, as a
    routed task has them), or ``RequestInvalid`` raised with the reason the router would have
    given (``request`` untouched). A body that does
    not say what its headers said (id, tenant, specialist, priority, reply topic, deadline) is
    rejected ``routing_mismatch``: the router's decisions were made on the headers.
    ``facts``: the task's headers as a dict (the last value of each)."""
    deadline = request.get("deadline_ms")
    parsed = parse_command(request.get("text") or "")
    named = request.get("specialist") or parsed[0]
    # Two tuples compared at once (per task: no tuple of triples, no list unless they differ).
    body = (
        str(request.get("request_id")),
        str(request.get("tenant")),
        named if named in SPECIALISTS else None,
        str(request.get("priority") or "NORMAL"),
        request.get("reply_to") or None,
        None if deadline is None else str(deadline),
    )
    said = (
        _text(facts.get(h.REQUEST_ID)),
        _text(facts.get(h.TENANT)),
        _text(facts.get(h.SPECIALIST)),
        _text(facts.get(h.PRIORITY)) or "NORMAL",
        _text(facts.get(h.REPLY_TO)),
        _text(facts.get(h.DEADLINE_MS)),
    )
    if body != said:
        wrong = [name for name, a, b in zip(_ROUTING_FACTS, body, said, strict=True) if a != b]
        raise RequestInvalid(
            f"the request's routing headers do not say what its body says ({', '.join(wrong)}): "
            "send requests through the Switchboard client, or without routing headers",
            code=ROUTING_MISMATCH,
        )
    specialist, prompt = validate_body(request, rules, None, parsed)
    # Filled in place: ``request`` is the worker's own, just decoded (no copy of it or of its
    # metadata per task), and every check above raised before anything was written.
    request["specialist"] = specialist
    request["prompt"] = prompt
    meta = request.get("metadata")
    if meta is None:
        meta = request["metadata"] = {}
    routed_at, _, route_ms = (_text(facts.get(h.ROUTED)) or "").partition(" ")
    meta["routed_at_ms"] = routed_at
    meta["route_ms"] = route_ms or "0"
    return request
