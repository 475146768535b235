"""Routing facts in headers: what the client writes so the router can route without decoding.

The client (``producers.client``) writes a request's routing facts next to its bytes: request
id, tenant, reply topic, and, when the text names a known specialist (``/backend ...``) or the
request names one, the specialist, the priority, the deadline and the schema the value was
written with. The router routes such a record from its headers alone and forwards the
original bytes to the task topic (``consumers.router``); the worker decodes the task anyway,
so it validates the body there and checks that the body says what the headers said
(``consumers.validation``). A record without these headers (another producer, free text that
needs triage) takes the router's decoding path.

``parse_command`` lives here, not with the triage, because the client and the router must
split "/command rest" the same way.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from typing import Any

from switchboard.core import headers as h
from switchboard.core.serde import REQUEST, load_schemas
from switchboard.core.settings import SPECIALISTS

_COMMAND = re.compile(r"\A\s*/(?P<command>\S*)\s*(?P<rest>.*)\Z", re.DOTALL)

#: The headers a request's signature covers beyond its id and tenant (``signed_routing``), in
#: this order: a routing fact cannot be changed or added without breaking the signature.
SIGNED_ROUTING: tuple[str, ...] = (
    h.SPECIALIST,
    h.PRIORITY,
    h.REPLY_TO,
    h.DEADLINE_MS,
    h.SCHEMA,
)


def parse_command(text: str) -> tuple[str | None, str]:
    """Split a leading "/command" from the prompt.

    Returns ``(command_lowercased, rest)`` when ``text`` (after leading whitespace) starts with
    "/", without checking the command against SPECIALISTS: the caller decides what an unknown
    command means. Otherwise returns ``(None, text.strip())``.
    """
    match = _COMMAND.match(text)
    if match is None:
        return None, text.strip()
    return match["command"].lower(), match["rest"].strip()


def named_specialist(request: Mapping[str, Any]) -> str | None:
    """The specialist a request names (its ``specialist`` field, else its /command), as the
    router reads it; None when it names none (triage decides) or one that does not exist."""
    name = request.get("specialist") or parse_command(request.get("text") or "")[0]
    return name if name in SPECIALISTS else None


@functools.cache
def request_schema_ids() -> frozenset[bytes]:
    """``sb-schema`` values of every request schema version this code can read."""
    return frozenset(_schema_id(v.version, v.fingerprint) for v in load_schemas()[REQUEST])


@functools.cache
def request_schema_id() -> bytes:
    """``sb-schema`` of the request schema the client writes (the latest version)."""
    latest = max(load_schemas()[REQUEST], key=lambda v: v.version)
    return _schema_id(latest.version, latest.fingerprint)


def _schema_id(version: int, fingerprint: bytes) -> bytes:
    return f"{REQUEST}/v{version}/{fingerprint.hex()}".encode()


def routing_headers(request: Mapping[str, Any]) -> list[tuple[str, bytes]]:
    """The headers the client writes for ``request`` (a ``build_request`` record): id and
    tenant always, the reply topic when it names one, and the facts the router routes by when
    it names a known specialist. Benchmarks use this very function, so they measure what
    users send."""
    out = [
        (h.REQUEST_ID, str(request["request_id"]).encode()),
        (h.TENANT, str(request["tenant"]).encode()),
    ]
    if request.get("reply_to"):
        out.append((h.REPLY_TO, str(request["reply_to"]).encode()))
    specialist = named_specialist(request)
    if specialist is None:
        return out  # free text: the router decodes it to triage the text
    out += [
        (h.SPECIALIST, specialist.encode()),
        (h.PRIORITY, str(request.get("priority") or "NORMAL").encode()),
        (h.SCHEMA, request_schema_id()),
    ]
    if request.get("deadline_ms") is not None:
        out.append((h.DEADLINE_MS, str(int(request["deadline_ms"])).encode()))
    return out


def signed_routing(headers: Sequence[tuple[str, Any]] | Mapping[str, Any] | None) -> list[bytes]:
    """The routing headers a signature covers, as ``SIGNED_ROUTING`` orders them: each present
    one's name and value (last value wins, as everywhere). Empty for a record without them,
    whose signature is the original scheme's (value, id and tenant only)."""
    if not headers:
        return []
    last = dict(headers.items() if isinstance(headers, Mapping) else headers)
    parts: list[bytes] = []
    for name in SIGNED_ROUTING:
        value = last.get(name)
        if value is not None:
            parts.append(name.encode())
            parts.append(value if isinstance(value, bytes) else str(value).encode())
    return parts
