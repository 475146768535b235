"""What goes into a Message Batch: one review item, its ``custom_id``, its ``params``, and the
split of many items into batches within the API's limits.

Prompt layout, chosen for caching: the API caches a prefix in the order tools, system,
messages. The findings tool is the same for every request, and the document comes first in
``system`` with a 1-hour ``cache_control`` breakpoint, before the persona: so every specialist
reviewing the same document (on the same model) shares one cached prefix. The persona follows
as a plain system block, and the request's prompt (the part to review and its context) is the
user turn. The tool is forced (``tool_choice``), so the answer is a ``FindingsAnswer``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

from consumers.specialists.personas import load_persona
from switchboard.core.findings import FINDINGS_TOOL_NAME, findings_tool

#: The Batches API's per-batch limits: requests, and bytes of the create call's body.
MAX_BATCH_REQUESTS: Final = 100_000
MAX_BATCH_BYTES: Final = 256 * 1024 * 1024
#: Room kept under the byte limit for the body's envelope and the SDK's own encoding.
BATCH_BYTES_MARGIN: Final = 64 * 1024
#: A ``custom_id`` the API accepts; any other request id is mapped onto one (``custom_id_for``).
CUSTOM_ID: Final = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
#: The 1-hour cache TTL the Batches API's docs recommend: batches take minutes to hours.
DOCUMENT_CACHE_CONTROL: Final = {"type": "ephemeral", "ttl": "1h"}
DOCUMENT_PREAMBLE: Final = "The document under review, in full:\n\n"
#: A document longer than this (about 100,000 tokens) is not sent as the prefix: each part
#: then carries only its own text and outline context, as the workers' requests do, so a huge
#: document never crowds the model's context window.
DOCUMENT_PREFIX_MAX_CHARS: Final = 400_000


@dataclass(frozen=True)
class BatchItem:
    """One review request to send through the Batches API.

    ``request`` is the SpecialistRequest record (as ``build_request`` makes it, with ``prompt``
    filled in; ``text`` is used when ``prompt`` is empty); ``document`` is the whole document
    text, the prefix shared (and cached) by every specialist reviewing it, or "" for none.
    """

    request_id: str
    specialist: str
    request: Mapping[str, Any]
    document: str = ""

    def __post_init__(self) -> None:
        if self.request.get("request_id") != self.request_id:
            raise ValueError(
                f"batch item {self.request_id!r}: its request record has request_id "
                f"{self.request.get('request_id')!r}; build the item from the same request"
            )

    @property
    def prompt(self) -> str:
        return str(self.request.get("prompt") or self.request.get("text") or "")

    @property
    def custom_id(self) -> str:
        return custom_id_for(self.request_id)


def custom_id_for(request_id: str) -> str:
    """``request_id`` itself when the API accepts it as a ``custom_id`` (1-64 of
    ``[A-Za-z0-9_-]``), else ``sb-`` and 40 hex digits of its sha256 (the ledger keeps the
    mapping back, so results still find their request)."""
    if CUSTOM_ID.match(request_id):
        return request_id
    return "sb-" + hashlib.sha256(request_id.encode()).hexdigest()[:40]


def batch_params(item: BatchItem, *, model: str, max_tokens: int) -> dict[str, Any]:
    """The Messages ``params`` of one batch request (see the module docstring for the layout)."""
    system: list[dict[str, Any]] = []
    if item.document and len(item.document) <= DOCUMENT_PREFIX_MAX_CHARS:
        system.append(
            {
                "type": "text",
                "text": DOCUMENT_PREAMBLE + item.document,
                "cache_control": dict(DOCUMENT_CACHE_CONTROL),
            }
        )
    system.append({"type": "text", "text": load_persona(item.specialist).system_prompt})
    return {
        "model": model,
        "max_tokens": max_tokens,
        "system": system,
        "messages": [{"role": "user", "content": item.prompt}],
        "tools": [findings_tool()],
        "tool_choice": {"type": "tool", "name": FINDINGS_TOOL_NAME},
        # Opaque to the API; lets usage be traced back to the request (never user data).
        "metadata": {"user_id": item.custom_id},
    }


@dataclass(frozen=True)
class Planned:
    """One batch request, ready to send: its item, the wire dict and its size in bytes."""

    item: BatchItem
    wire: dict[str, Any]
    size: int


def plan(
    items: Iterable[BatchItem], models: Mapping[str, str], *, max_tokens: int
) -> Iterator[Planned]:
    """Each item as a batch request (``custom_id`` and ``params``), with its encoded size."""
    for item in items:
        wire = {
            "custom_id": item.custom_id,
            "params": batch_params(item, model=models[item.specialist], max_tokens=max_tokens),
        }
        size = len(json.dumps(wire, separators=(",", ":"), ensure_ascii=False).encode())
        yield Planned(item, wire, size)


def split_batches(
    planned: Iterable[Planned],
    *,
    max_requests: int = MAX_BATCH_REQUESTS,
    max_bytes: int = MAX_BATCH_BYTES - BATCH_BYTES_MARGIN,
) -> tuple[list[list[Planned]], list[Planned]]:
    """Pack requests, in order, into batches of at most ``max_requests`` and ``max_bytes``
    (a comma between requests counted); returns the batches and the requests too large to fit
    in any batch on their own (they can never be sent: the caller dead-letters them)."""
    batches: list[list[Planned]] = []
    oversize: list[Planned] = []
    current: list[Planned] = []
    used = 0
    for request in planned:
        if request.size > max_bytes:
            oversize.append(request)
            continue
        if current and (len(current) >= max_requests or used + 1 + request.size > max_bytes):
            batches.append(current)
            current, used = [], 0
        used += request.size + (1 if current else 0)
        current.append(request)
    if current:
        batches.append(current)
    return batches, oversize
