"""The router with content encryption, on the in-memory runtime: it opens what it must read
and seals what it writes; a key it lacks stops it with nothing written."""

from __future__ import annotations

import asyncio
import base64
import os

import pytest

from consumers.answered import AnsweredLedger
from consumers.outcomes import Stage
from consumers.router import Router, RouterRules
from consumers.runtime.memory import MemoryRuntime, MemorySink
from switchboard.core.envelope import (
    KeyringSource,
    KeyUnavailable,
    encrypting,
    parse_keyring,
    sealed_key_id,
)
from switchboard.core.serde import REQUEST
from tests.unit.memory_kit import CODEC, TOPICS, id_header, request, strategy


def sealing(key_id: str) -> KeyringSource:
    key = base64.b64encode(os.urandom(32)).decode()
    return KeyringSource(parse_keyring({"keys": {key_id: key}}, "test"))


def router_on(sink: MemorySink, keys: KeyringSource) -> MemoryRuntime:
    failures = strategy(Stage.ROUTE, sink)
    router = Router(
        codec=encrypting(CODEC, keys),
        topics=TOPICS,
        outcomes=failures.outcomes,
        index=AnsweredLedger(3600),
        rules=RouterRules(),
    )
    return MemoryRuntime(router.handle, failures, sink)


def test_the_router_opens_a_sealed_request_and_seals_the_task_again() -> None:
    keys = sealing("k1")
    sink = MemorySink()
    record = request("/api how do I page a large table?")
    value = encrypting(CODEC, keys).encode(REQUEST, record, TOPICS.requests)
    (task,) = asyncio.run(
        router_on(sink, keys).feed(TOPICS.requests, value, headers=id_header(record))
    )
    assert task.topic == TOPICS.tasks("api")
    assert b"page a large table" not in task.value
    # The sealed field names its key; no header repeats it (one that could disagree with it).
    assert sealed_key_id(CODEC.decode(REQUEST, task.value, task.topic)["prompt"]) == "k1"
    assert not [name for name, _value in task.headers if name.startswith("sb-enc")]
    opened = encrypting(CODEC, keys).decode(REQUEST, task.value, task.topic)
    assert opened["prompt"] == "how do I page a large table?"


def test_a_router_without_the_key_stops_and_writes_nothing() -> None:
    """Not a rejection and not a dead letter: the request waits for a router with the key."""
    sink = MemorySink()
    record = request()
    value = encrypting(CODEC, sealing("k9")).encode(REQUEST, record, TOPICS.requests)
    runtime = router_on(sink, sealing("k1"))
    with pytest.raises(KeyUnavailable, match="'k9'"):
        asyncio.run(runtime.feed(TOPICS.requests, value, headers=id_header(record)))
    assert sink.records(TOPICS.dlq) == [] and sink.records(TOPICS.responses) == []
    assert runtime.stats.completed == 0
