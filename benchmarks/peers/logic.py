"""What every peer does per record: decode, route by command, and answer (no framework here)."""

from __future__ import annotations

import time
from typing import Any

from consumers.triage import parse_command
from switchboard.core.serde import REQUEST, RESPONSE, SingleObjectCodec
from switchboard.core.settings import SPECIALISTS

CODEC = SingleObjectCodec()


def decode(value: bytes) -> dict[str, Any]:
    return CODEC.decode(REQUEST, value, "")


def route(request: dict[str, Any]) -> dict[str, Any]:
    """The task for ``request``: its specialist from the command, and the bare prompt."""
    command, prompt = parse_command(request.get("text") or "")
    specialist = request.get("specialist") or command
    if specialist not in SPECIALISTS:
        specialist = "backend"
    return dict(request, specialist=specialist, prompt=request.get("prompt") or prompt)


def encode_task(task: dict[str, Any]) -> bytes:
    return CODEC.encode(REQUEST, task, "")


def answer(task: dict[str, Any]) -> dict[str, Any]:
    """An instant specialist's response record."""
    return {
        "request_id": task["request_id"],
        "tenant": task["tenant"],
        "specialist": task["specialist"],
        "status": "answered",
        "content": "ok",
        "backend": "instant",
        "responded_at_ms": int(time.time() * 1000),
    }


def encode_response(response: dict[str, Any]) -> bytes:
    return CODEC.encode(RESPONSE, response, "")
