"""The router's tenant fence on the in-memory runtime: each refusal is one `rejected` response
with its reason and nothing on any task topic (so no worker, and no model, ever sees it)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from consumers.resilience.ratelimit import TenantLimiter
from consumers.router import RouterRules
from consumers.runtime.memory import MemoryRuntime, MemorySink
from switchboard.core import headers as h
from switchboard.core.settings import SPECIALISTS
from switchboard.core.tenants import TenantsConfig, TenantsSource, sign

from .memory_kit import TOPICS, decoded_response, encoded, header, request, router_runtime

SECRET = "0123456789abcdef-acme"
CONFIG = TenantsConfig.model_validate(
    {
        "unknown_tenants": "reject",
        "tenants": {
            "acme": {
                "specialists": ["backend", "api"],
                "reply_to_prefix": "acme.",
                "max_prompt_bytes": 100,
                "require_signature": True,
                "signing_keys": {"k1": SECRET, "k2": SECRET + "-next"},
            },
            "open": {"reply_to_prefix": ""},
            "sonnet-only": {"models": ["claude-sonnet-5-5"]},
        },
    }
)


def _router(config: TenantsConfig = CONFIG, **rules: Any) -> tuple[MemoryRuntime, MemorySink]:
    sink = MemorySink()
    runtime, _ = router_runtime(sink, rules=RouterRules(**rules), tenants=TenantsSource(config))
    return runtime, sink


def _send(
    runtime: MemoryRuntime,
    record: dict[str, Any],
    *,
    key: tuple[str, str] | None = ("k1", SECRET),
    extra: tuple[tuple[str, bytes], ...] | list[tuple[str, bytes]] = (),
    value: bytes | None = None,
) -> None:
    value = value if value is not None else encoded(record, TOPICS.requests)
    headers: list[tuple[str, bytes | None]] = [
        (h.REQUEST_ID, record["request_id"].encode()),
        (h.TENANT, record["tenant"].encode()),
    ]
    if key is not None:
        signature = sign(value, record["request_id"], record["tenant"], key[0], key[1].encode())
        headers += [(h.KEY_ID, key[0].encode()), (h.SIGNATURE, signature.encode())]
    if record.get("reply_to"):
        headers.append((h.REPLY_TO, record["reply_to"].encode()))
    headers += list(extra)
    asyncio.run(
        runtime.feed(TOPICS.requests, value, key=record["request_id"].encode(), headers=headers)
    )


def _tasks(sink: MemorySink) -> int:
    return sum(len(sink.records(TOPICS.tasks(s))) for s in SPECIALISTS)


def _rejected(sink: MemorySink, topic: str = TOPICS.responses) -> dict[str, Any]:
    """The one response, which must be `rejected`, and nothing routed."""
    [response] = sink.records(topic)
    body = decoded_response(response)
    assert body["status"] == "rejected" and _tasks(sink) == 0
    return body


def test_a_signed_request_by_either_live_key_is_routed() -> None:
    runtime, sink = _router()
    _send(runtime, request("/backend size a pool", tenant="acme"))
    _send(runtime, request("/api page it", tenant="acme"), key=("k2", SECRET + "-next"))
    assert _tasks(sink) == 2 and sink.records(TOPICS.responses) == []


@pytest.mark.parametrize(
    ("key", "code"),
    [
        (None, "unsigned"),
        (("k1", "0123456789abcdef-wrong"), "bad_signature"),
        (("k9", SECRET), "bad_signature"),
    ],
)
def test_an_unsigned_or_badly_signed_request_is_rejected(
    key: tuple[str, str] | None, code: str
) -> None:
    runtime, sink = _router()
    _send(runtime, request("/backend size a pool", tenant="acme"), key=key)
    assert _rejected(sink)["error_code"] == code


def test_a_record_changed_after_signing_is_rejected() -> None:
    runtime, sink = _router()
    record = request("/backend size a pool", tenant="acme")
    signed = encoded(record, TOPICS.requests)
    tampered = encoded({**record, "text": "/backend size a bigger pool"}, TOPICS.requests)
    signature = sign(signed, record["request_id"], "acme", "k1", SECRET.encode())
    headers: list[tuple[str, bytes | None]] = [
        (h.REQUEST_ID, record["request_id"].encode()),
        (h.TENANT, b"acme"),
        (h.KEY_ID, b"k1"),
        (h.SIGNATURE, signature.encode()),
    ]
    asyncio.run(runtime.feed(TOPICS.requests, tampered, key=b"k", headers=headers))
    assert _rejected(sink)["error_code"] == "bad_signature"


def test_an_unknown_tenant_is_rejected_when_the_file_says_so() -> None:
    runtime, sink = _router()
    _send(runtime, request("/backend size a pool", tenant="mallory"), key=None)
    assert _rejected(sink)["error_code"] == "unknown_tenant"
    allowing = CONFIG.model_copy(update={"unknown_tenants": "allow"})
    runtime, sink = _router(allowing)
    _send(runtime, request("/backend size a pool", tenant="mallory"), key=None)
    assert _tasks(sink) == 1


def test_a_specialist_the_tenant_may_not_ask_is_rejected() -> None:
    runtime, sink = _router()
    _send(runtime, request("/security threat model this", tenant="acme"))
    body = _rejected(sink)
    assert body["error_code"] == "specialist_not_allowed" and "/api, /backend" in body["content"]


def test_a_model_the_tenant_may_not_use_is_rejected() -> None:
    runtime, sink = _router()  # security answers with Opus by default
    _send(runtime, request("/security threat model this", tenant="sonnet-only"), key=None)
    assert _rejected(sink)["error_code"] == "model_not_allowed"
    _send(runtime, request("/backend size a pool", tenant="sonnet-only"), key=None)
    assert _tasks(sink) == 1


def test_a_prompt_over_the_tenants_own_limit_is_rejected() -> None:
    runtime, sink = _router()
    _send(runtime, request("/backend " + "x" * 101, tenant="acme"))
    assert _rejected(sink)["error_code"] == "prompt_too_large"


@pytest.mark.parametrize(
    "reply_to",
    ["other.replies", "__consumer_offsets", "_schemas", "__transaction_state", TOPICS.requests],
)
def test_a_forbidden_reply_topic_is_rejected_on_the_shared_topic(reply_to: str) -> None:
    runtime, sink = _router()
    _send(runtime, request("/backend size a pool", tenant="acme", reply_to=reply_to))
    assert _rejected(sink)["error_code"] == "forbidden_reply_to"
    assert sink.records(reply_to) == [] or reply_to == TOPICS.requests


def test_a_pipeline_topic_is_forbidden_even_to_a_tenant_with_any_reply_topic() -> None:
    runtime, sink = _router()
    _send(runtime, request("/backend x", tenant="open", reply_to=TOPICS.tasks("api")), key=None)
    assert _rejected(sink)["error_code"] == "forbidden_reply_to"
    assert sink.records(TOPICS.tasks("api")) == []


def test_an_allowed_reply_topic_is_routed_and_a_rejection_also_lands_in_the_ledger() -> None:
    runtime, sink = _router()
    _send(runtime, request("/backend size a pool", tenant="acme", reply_to="acme.mine"))
    assert _tasks(sink) == 1
    _send(runtime, request("/backend " + "y" * 200, tenant="acme", reply_to="acme.mine"))
    [reply] = sink.records("acme.mine")
    [copy] = sink.records(TOPICS.responses)
    assert decoded_response(reply)["error_code"] == "prompt_too_large"
    assert copy.value() == reply.value() and header(copy, h.REPLY_COPY_OF) == "acme.mine"


@pytest.mark.parametrize(
    ("extra", "code"),
    [
        ([("x-tag", b"v")] * 40, "too_many_headers"),
        ([("x-big", b"v" * 5000)], "header_too_large"),
    ],
)
def test_too_many_or_too_large_headers_are_rejected(
    extra: list[tuple[str, bytes]], code: str
) -> None:
    runtime, sink = _router()
    _send(runtime, request("/backend size a pool", tenant="open"), key=None, extra=extra)
    assert _rejected(sink)["error_code"] == code


@pytest.mark.parametrize("bad", ["\x00", "\x07", "\x1b[31m", "\x0b"])
def test_control_characters_in_the_prompt_are_rejected(bad: str) -> None:
    runtime, sink = _router()
    _send(runtime, request(f"/backend size{bad} a pool", tenant="open"), key=None)
    assert _rejected(sink)["error_code"] == "control_characters"


def test_tab_and_newline_are_text() -> None:
    runtime, sink = _router()
    _send(runtime, request("/backend size\ta pool\nand\r\nits queue", tenant="open"), key=None)
    assert _tasks(sink) == 1


def test_a_string_that_is_not_utf8_is_rejected_not_dead_lettered() -> None:
    runtime, sink = _router()
    record = request("/backend MARKX pool", tenant="open")
    value = encoded(record, TOPICS.requests)
    at = value.index(b"MARKX")
    broken = value[:at] + b"\xff\xfe" + value[at + 2 :]
    _send(runtime, record, key=None, value=broken)
    assert _rejected(sink)["error_code"] == "invalid_utf8"
    assert sink.records(TOPICS.dlq) == []


def test_over_the_tenants_rate_from_the_file_is_rejected() -> None:
    config = TenantsConfig.model_validate({"tenants": {"slow": {"rate_per_s": 1, "burst": 2}}})
    limiter = TenantLimiter(default_rate=1000, default_burst=1000)
    limiter.reshape(config.rate_shapes(1000, 1000))
    sink = MemorySink()
    runtime, _ = router_runtime(sink, limiter=limiter, tenants=TenantsSource(config))
    for _ in range(3):
        _send(runtime, request("/backend size a pool", tenant="slow"), key=None)
    assert len(sink.records(TOPICS.tasks("backend"))) == 2
    [response] = sink.records(TOPICS.responses)
    assert decoded_response(response)["error_code"] == "rate_limited"
