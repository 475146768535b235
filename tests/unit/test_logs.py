"""Structured logs: JSON lines carry the record being handled (request id, tenant, stage) and
its trace, librdkafka's own lines come through the same formatter, and configured secrets
never appear."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from consumers.runtime.memory import MemorySink
from switchboard.core import headers as h
from switchboard.core import logs, tracing
from switchboard.core.envelope import KeyringSource
from switchboard.core.kafka_clients import LIBRDKAFKA_LOGGER, producer_config
from switchboard.core.settings import Settings

from .memory_kit import TOPICS, router_runtime


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    level = root.level
    out = io.StringIO()
    yield out
    for handler in [x for x in root.handlers if isinstance(x, logs._OurHandler)]:
        root.removeHandler(handler)
    root.setLevel(level)
    logs.configure(fmt="text")  # back to the default: no record fields bound by runtimes
    for handler in [x for x in root.handlers if isinstance(x, logs._OurHandler)]:
        root.removeHandler(handler)
    tracing.use(None)


def _lines(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines() if line]


def test_a_json_line_carries_the_record_handled_and_its_trace(stream: io.StringIO) -> None:
    """The router dead-letters bytes that do not decode and logs it while handling the record:
    that line names the record's request id, tenant and stage, and the trace and span of the
    router's span, which the exporter has."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use(provider)
    logs.configure(fmt="json", level=logging.INFO, stream=stream)
    sink = MemorySink()
    runtime, _ = router_runtime(sink)
    headers = [(h.REQUEST_ID, b"req-42"), (h.TENANT, b"acme")]
    asyncio.run(runtime.feed(TOPICS.requests, b"\x00not avro", headers=headers))
    [line] = [x for x in _lines(stream) if "dead-lettered" in x["message"]]
    [span] = exporter.get_finished_spans()
    ctx = span.get_span_context()
    assert ctx is not None
    assert line["level"] == "INFO" and line["logger"] == "consumers.runtime.failures"
    assert (line["request_id"], line["tenant"], line["stage"]) == ("req-42", "acme", "route")
    assert (line["trace_id"], line["span_id"]) == (f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}")
    assert line["timestamp"].endswith("+00:00")
    # Outside the record nothing is carried over.
    logging.getLogger("switchboard.test").warning("after")
    after = _lines(stream)[-1]
    assert after["message"] == "after" and "request_id" not in after and "trace_id" not in after


def test_configured_secrets_are_masked_in_every_line(stream: io.StringIO) -> None:
    """The API key and a SASL password from the settings are replaced by *** in messages and
    tracebacks alike; a short value is left alone (masking it would mangle every line)."""
    settings = Settings(
        anthropic_api_key="sk-ant-api03-abcdefgh",
        kafka_config={"sasl.password": "hunter2-sasl", "client.id": "sb"},
    )
    logs.configure(fmt="json", level=logging.INFO, secrets=logs.secrets_of(settings), stream=stream)
    log = logging.getLogger("switchboard.test")
    log.info("calling with key %s and password %s", "sk-ant-api03-abcdefgh", "hunter2-sasl")
    try:
        raise ValueError("bad key sk-ant-api03-abcdefgh")
    except ValueError:
        log.exception("failed")
    text = stream.getvalue()
    assert "sk-ant-api03-abcdefgh" not in text and "hunter2-sasl" not in text
    first, second = _lines(stream)
    assert first["message"] == "calling with key *** and password ***"
    assert "bad key ***" in second["exception"]
    assert logs.secrets_of(settings) == ["sk-ant-api03-abcdefgh", "hunter2-sasl"]


def test_text_lines_are_readable_and_masked_too(stream: io.StringIO) -> None:
    logs.configure(fmt="text", level=logging.INFO, secrets=["topsecret-1"], stream=stream)
    logging.getLogger("switchboard.test").info("token topsecret-1 used")
    line = stream.getvalue().strip()
    assert line.endswith("INFO switchboard.test: token *** used")


def test_librdkafkas_own_lines_use_the_same_formatter(stream: io.StringIO) -> None:
    """A real producer pointed at a closed port: librdkafka's connection errors arrive through
    Python logging as JSON lines from the switchboard.librdkafka logger."""
    logs.configure(fmt="json", level=logging.INFO, stream=stream)
    producer = Producer(producer_config({"bootstrap.servers": "127.0.0.1:1"}))
    deadline = time.monotonic() + 15
    found: list[dict[str, Any]] = []
    while not found and time.monotonic() < deadline:
        producer.poll(0.1)
        found = [x for x in _lines(stream) if x["logger"] == LIBRDKAFKA_LOGGER]
    assert found, "no librdkafka line within 15 s"
    assert found[0]["level"] in ("ERROR", "WARNING", "INFO") and found[0]["message"]


def test_a_bad_format_says_what_to_use() -> None:
    with pytest.raises(ValueError, match="use one of text, json"):
        logs.configure(fmt="yaml")
    with pytest.raises(ValueError, match="log_format"):
        Settings(log_format="yaml")


def test_console_passwords_and_registry_credentials_are_secrets_too(stream: io.StringIO) -> None:
    settings = Settings(
        schema_registry_url="https://sr-user:sr-pass-123@registry:8081",
        console_users='{"alice": {"password": "wonderland-9", "role": "operator"}}',
    )
    assert set(logs.secrets_of(settings)) == {"wonderland-9", "sr-pass-123"}
    assert settings.masked()["schema_registry_url"] == "https://sr-user:***@registry:8081"
    logs.configure(fmt="json", level=logging.INFO, secrets=logs.secrets_of(settings), stream=stream)
    logging.getLogger("switchboard.test").info(
        "login alice:%s via %s", "wonderland-9", settings.schema_registry_url
    )
    text = stream.getvalue()
    assert "wonderland-9" not in text and "sr-pass-123" not in text
    assert "login alice:*** via https://sr-user:***@registry:8081" in text


def test_a_key_a_keyring_reload_brings_is_masked_as_the_start_up_ones_are(
    stream: io.StringIO, tmp_path: Path
) -> None:
    """Logging is configured at start-up with the keyring file's k1; the file then gains k2
    and the process's keyring reloads it: a line quoting either key shows ***, and so does
    one quoting k1 after a reload removes it."""
    k1, k2 = (base64.b64encode(os.urandom(32)).decode() for _ in range(2))
    path = tmp_path / "ring.json"
    path.write_text(json.dumps({"keys": {"k1": k1}, "primary": "k1"}))
    settings = Settings(keyring_file=path)
    logs.configure(fmt="text", level=logging.INFO, secrets=logs.secrets_of(settings), stream=stream)
    source = KeyringSource.from_settings(settings)  # what a codec of this process holds
    log = logging.getLogger("switchboard.test")
    log.info("start-up key %s", k1)
    path.write_text(json.dumps({"keys": {"k1": k1, "k2": k2}, "primary": "k2"}))
    os.utime(path, ns=(1, 1))  # an mtime that surely moved, even on a coarse clock
    assert source.reload_if_changed() and source.keyring.primary == "k2"
    log.info("reloaded key %s", k2)
    path.write_text(json.dumps({"keys": {"k2": k2}, "primary": "k2"}))
    os.utime(path, ns=(2, 2))
    assert source.reload_if_changed() and "k1" not in source.keyring.keys
    log.info("removed key %s", k1)
    text = stream.getvalue()
    assert k1 not in text and k2 not in text, text
    ours = [line for line in text.splitlines() if " switchboard.test: " in line]
    assert [line.rsplit(": ", 1)[1] for line in ours] == [
        "start-up key ***",
        "reloaded key ***",
        "removed key ***",
    ]
