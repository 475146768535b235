"""The codecs: round trips, the exact single-object bytes, errors, and interop with stock Avro.

No broker. The registry codec runs against a tiny in-process fake of the two registry
endpoints the Confluent serializers call, so the real HTTP client is exercised.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import random
import shutil
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import avro.io
import avro.schema
import pytest
from fastavro import parse_schema, schemaless_writer

from switchboard.core.errors import ConfigError, DecodeError, PermanentError, TransientError
from switchboard.core.serde import (
    CONTRACTS,
    DEAD_LETTER,
    REQUEST,
    RESPONSE,
    SINGLE_OBJECT_MARKER,
    EncodeError,
    RegistryCodec,
    SingleObjectCodec,
    fingerprint,
    load_schemas,
    make_codec,
    schemas_dir,
    without_logical_types,
)
from tests.unit.avro_compat import from_avro_datum, to_avro_datum

TOPIC = "switchboard.requests"

# --- sample records: every contract, full and minimal, unicode and empty containers --------

REQUEST_FULL: dict[str, Any] = {
    "request_id": "7d9f3c1e-5b2a-4e8f-9c61-0a3b2d4e5f60",
    "tenant": "acme",
    "text": "/backend design microservices handling 50K RPS — naïve 日本語 🚀",
    "specialist": "backend",
    "prompt": "design microservices handling 50K RPS — naïve 日本語 🚀",
    "priority": "INTERACTIVE",
    "deadline_ms": 1_764_130_000_000,
    "reply_to": "switchboard.responses.acme",
    "attempt": 2,
    "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "tracestate": "rojo=00f067aa0ba902b7",
    "created_at_ms": 1_764_129_000_123,
    "metadata": {"source": "cli", "ticket": "ÉTÉ-42", "": ""},
}
REQUEST_MINIMAL: dict[str, Any] = {
    "request_id": "r-1",
    "text": "how do I shard a queue?",
    "created_at_ms": 0,
}
REQUEST_MINIMAL_DECODED: dict[str, Any] = {
    **REQUEST_MINIMAL,
    "tenant": "default",
    "specialist": None,
    "prompt": "",
    "priority": "NORMAL",
    "deadline_ms": None,
    "reply_to": None,
    "attempt": 0,
    "traceparent": None,
    "tracestate": None,
    "metadata": {},
}
RESPONSE_FULL: dict[str, Any] = {
    "request_id": "7d9f3c1e-5b2a-4e8f-9c61-0a3b2d4e5f60",
    "tenant": "acme",
    "specialist": "backend",
    "status": "answered",
    "content": "## Plan\n\n- shard by tenant — ✓\n- p99 < 25 ms",
    "backend": "claude-sonnet-4-5",
    "model": "claude-sonnet-4-5-20250929",
    "usage": {
        "input_tokens": 1200,
        "output_tokens": 800,
        "cache_read_input_tokens": 1024,
        "cache_creation_input_tokens": 0,
    },
    "cost_micro_usd": 15_600,
    "stage_latency_ms": {"queue": 3, "route": 1, "model": 2_400, "total": 2_410},
    "attempts": 1,
    "error_code": None,
    "error_message": None,
    "dlq": None,
    "responded_at_ms": 1_764_129_002_533,
    "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-b7ad6b7169203331-01",
}
RESPONSE_FAILED: dict[str, Any] = {
    "request_id": "r-2",
    "tenant": "default",
    "specialist": "",
    "status": "failed",
    "content": "the model provider kept failing",
    "backend": "",
    "model": None,
    "usage": None,
    "cost_micro_usd": 0,
    "stage_latency_ms": {},
    "attempts": 4,
    "error_code": "overloaded",
    "error_message": "HTTP 529",
    "dlq": {"topic": "switchboard.dlq", "partition": 3, "offset": 2**40},
    "responded_at_ms": 1_764_129_002_533,
    "traceparent": None,
}
DEAD_LETTER_FULL: dict[str, Any] = {
    "original_key": b"r-3",
    # Not UTF-8 and not Avro: a dead letter keeps whatever bytes failed.
    "original_value": bytes(range(256)),
    "original_headers": [
        {"key": "sb-request-id", "value": b"r-3"},
        {"key": "no-value", "value": None},
        {"key": "bin", "value": b"\x00\xff"},
    ],
    "origin_topic": "switchboard.requests",
    "origin_partition": 5,
    "origin_offset": 123_456_789,
    "origin_timestamp_ms": 1_764_129_000_000,
    "stage": "decode",
    "error_class": "permanent",
    "error_type": "DecodeError",
    "error_code": "bad_marker",
    "error_message": "value is not single-object Avro — «binary»",
    "provider_status": None,
    "provider_request_id": None,
    "attempts": [
        {
            "attempt": 0,
            "at_ms": 1_764_129_000_001,
            "error_type": "TimeoutError",
            "error_message": "",
        },
        {
            "attempt": 1,
            "at_ms": 1_764_129_001_001,
            "error_type": "DecodeError",
            "error_message": "x",
        },
    ],
    "first_failure_ms": 1_764_129_000_001,
    "last_failure_ms": 1_764_129_001_001,
    "request_id": "r-3",
    "tenant": None,
    "specialist": None,
    "consumer_group": "switchboard-router",
}
DEAD_LETTER_MINIMAL: dict[str, Any] = {
    "original_value": b"",
    "origin_topic": "t",
    "origin_partition": 0,
    "origin_offset": 0,
    "origin_timestamp_ms": -1,
    "stage": "route",
    "error_class": "skip",
    "error_type": "SkipRecord",
    "first_failure_ms": 0,
    "last_failure_ms": 0,
}
DEAD_LETTER_MINIMAL_DECODED: dict[str, Any] = {
    **DEAD_LETTER_MINIMAL,
    "original_key": None,
    "original_headers": [],
    "error_code": None,
    "error_message": "",
    "provider_status": None,
    "provider_request_id": None,
    "attempts": [],
    "request_id": None,
    "tenant": None,
    "specialist": None,
    "consumer_group": None,
}

ROUND_TRIPS = [
    pytest.param(REQUEST, REQUEST_FULL, REQUEST_FULL, id="request-full"),
    pytest.param(REQUEST, REQUEST_MINIMAL, REQUEST_MINIMAL_DECODED, id="request-defaults"),
    pytest.param(RESPONSE, RESPONSE_FULL, RESPONSE_FULL, id="response-answered"),
    pytest.param(RESPONSE, RESPONSE_FAILED, RESPONSE_FAILED, id="response-failed"),
    pytest.param(DEAD_LETTER, DEAD_LETTER_FULL, DEAD_LETTER_FULL, id="dead-letter-full"),
    pytest.param(
        DEAD_LETTER, DEAD_LETTER_MINIMAL, DEAD_LETTER_MINIMAL_DECODED, id="dead-letter-defaults"
    ),
]
FULL_RECORDS = [(REQUEST, REQUEST_FULL), (RESPONSE, RESPONSE_FULL), (DEAD_LETTER, DEAD_LETTER_FULL)]


@pytest.fixture(scope="module")
def codec() -> SingleObjectCodec:
    return SingleObjectCodec()


def latest(contract: str) -> dict[str, Any]:
    """A fresh, mutable copy of the latest schema of ``contract``."""
    schema: dict[str, Any] = json.loads(json.dumps(load_schemas()[contract][-1].schema))
    return schema


# --- an independent reading of the spec: Rabin CRC-64-AVRO and stock-avro helpers -----------

_EMPTY64 = 0xC15D213AA4D7A795


def _rabin_table() -> list[int]:
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (_EMPTY64 & -(fp & 1))
        table.append(fp)
    return table


_TABLE = _rabin_table()


def rabin_crc64(data: bytes) -> bytes:
    """CRC-64-AVRO as the Avro specification writes it, little-endian as on the wire."""
    fp = _EMPTY64
    for byte in data:
        fp = (fp >> 8) ^ _TABLE[(fp ^ byte) & 0xFF]
    return fp.to_bytes(8, "little")


def spec_fingerprint(schema: dict[str, Any]) -> bytes:
    """Fingerprint via the `avro` package's canonical form and the spec's Rabin.

    `avro` 1.12 keeps ``{"type": "long"}`` for logical types in its canonical form, where the
    spec (and Java, and fastavro) reduce it to ``"long"``; stripping them first gives the
    spec's form.
    """
    canonical = avro.schema.parse(json.dumps(without_logical_types(schema))).canonical_form
    return rabin_crc64(canonical.encode())


# --- round trips -------------------------------------------------------------------------


@pytest.mark.parametrize(("contract", "record", "expected"), ROUND_TRIPS)
def test_round_trip_fills_defaults_and_keeps_unicode_bytes_and_empty_maps(
    codec: SingleObjectCodec, contract: str, record: dict[str, Any], expected: dict[str, Any]
) -> None:
    data = codec.encode(contract, record, TOPIC)
    assert codec.decode(contract, data, TOPIC) == expected


def test_encode_does_not_change_the_callers_record(codec: SingleObjectCodec) -> None:
    record = copy.deepcopy(REQUEST_MINIMAL)
    codec.encode(REQUEST, record, TOPIC)
    assert record == REQUEST_MINIMAL


def test_timestamps_stay_int_milliseconds(codec: SingleObjectCodec) -> None:
    """The schemas mark *_ms as timestamp-millis; callers still get ints, never datetimes."""
    decoded = codec.decode(REQUEST, codec.encode(REQUEST, REQUEST_FULL, TOPIC), TOPIC)
    assert type(decoded["created_at_ms"]) is int
    assert type(decoded["deadline_ms"]) is int


# --- the exact bytes -----------------------------------------------------------------------


@pytest.mark.parametrize(("contract", "record"), FULL_RECORDS)
def test_header_is_marker_then_little_endian_rabin_fingerprint_of_the_latest_schema(
    codec: SingleObjectCodec, contract: str, record: dict[str, Any]
) -> None:
    data = codec.encode(contract, record, TOPIC)
    expected = spec_fingerprint(latest(contract))
    assert data[:2] == b"\xc3\x01" == SINGLE_OBJECT_MARKER
    assert data[2:10] == expected == fingerprint(latest(contract))


def test_fingerprint_matches_the_spec_test_vector() -> None:
    # The Avro specification's test suite: fingerprint64("null") == 7195948357588979594.
    assert int.from_bytes(fingerprint('"null"'), "little", signed=True) == 7195948357588979594
    assert fingerprint('"null"') == rabin_crc64(b'"null"')


def test_fingerprint_ignores_docs_defaults_and_logical_types() -> None:
    plain = {"type": "record", "name": "R", "fields": [{"name": "t", "type": "long"}]}
    annotated = {
        "type": "record",
        "name": "R",
        "doc": "docs are not part of the canonical form",
        "fields": [
            {
                "name": "t",
                "type": {"type": "long", "logicalType": "timestamp-millis"},
                "default": 0,
                "doc": "nor are defaults or logical types",
            }
        ],
    }
    assert fingerprint(annotated) == fingerprint(plain) == fingerprint(json.dumps(plain))


def test_schemas_dir_is_the_checkouts_schema_folder() -> None:
    assert schemas_dir() == Path(__file__).resolve().parents[2] / "schemas"
    assert set(CONTRACTS) <= set(load_schemas())


# --- a stock Avro library that is not fastavro, both ways ---------------------------------


@pytest.mark.parametrize(("contract", "record"), FULL_RECORDS)
def test_stock_avro_reads_our_bytes(
    codec: SingleObjectCodec, contract: str, record: dict[str, Any]
) -> None:
    data = codec.encode(contract, record, TOPIC)
    schema_json = latest(contract)
    assert data[:2] == b"\xc3\x01"
    assert data[2:10] == spec_fingerprint(schema_json)

    reader = avro.io.DatumReader(avro.schema.parse(json.dumps(schema_json)))
    body = io.BytesIO(data[10:])
    decoded = reader.read(avro.io.BinaryDecoder(body))

    assert body.read() == b""
    assert from_avro_datum(decoded) == record


@pytest.mark.parametrize(("contract", "record"), FULL_RECORDS)
def test_we_read_bytes_written_by_stock_avro(
    codec: SingleObjectCodec, contract: str, record: dict[str, Any]
) -> None:
    schema_json = latest(contract)
    writer = avro.io.DatumWriter(avro.schema.parse(json.dumps(schema_json)))
    body = io.BytesIO()
    writer.write(to_avro_datum(record, schema_json), avro.io.BinaryEncoder(body))
    data = b"\xc3\x01" + spec_fingerprint(schema_json) + body.getvalue()

    assert codec.decode(contract, data, TOPIC) == record
    assert codec.encode(contract, record, TOPIC) == data


# --- every known version decodes, into the latest shape -----------------------------------


def encode_with_version(contract: str, version: int, record: dict[str, Any]) -> bytes:
    """Bytes as a producer still on ``version`` writes them."""
    schema = next(v for v in load_schemas()[contract] if v.version == version)
    body = io.BytesIO()
    schemaless_writer(body, parse_schema(without_logical_types(dict(schema.schema))), record)
    return SINGLE_OBJECT_MARKER + schema.fingerprint + body.getvalue()


def test_v1_request_decodes_into_the_latest_shape(codec: SingleObjectCodec) -> None:
    v1 = {
        k: v
        for k, v in REQUEST_FULL.items()
        if k not in ("priority", "traceparent", "tracestate", "metadata")
    }
    decoded = codec.decode(REQUEST, encode_with_version(REQUEST, 1, v1), TOPIC)
    assert decoded == {
        **v1,
        "priority": "NORMAL",
        "traceparent": None,
        "tracestate": None,
        "metadata": {},
    }


def test_v1_response_decodes_into_the_latest_shape_including_the_nested_usage(
    codec: SingleObjectCodec,
) -> None:
    v1 = {
        k: v for k, v in RESPONSE_FULL.items() if k not in ("cost_micro_usd", "dlq", "traceparent")
    }
    v1["usage"] = {"input_tokens": 10, "output_tokens": 20}
    decoded = codec.decode(RESPONSE, encode_with_version(RESPONSE, 1, v1), TOPIC)
    assert decoded == {
        **v1,
        "usage": {
            "input_tokens": 10,
            "output_tokens": 20,
            "cache_read_input_tokens": 0,
            "cache_creation_input_tokens": 0,
        },
        "cost_micro_usd": 0,
        "dlq": None,
        "traceparent": None,
    }


def test_a_new_version_dropped_into_the_folder_reads_every_older_one(tmp_path: Path) -> None:
    """Deploying v3 is adding a file: the codec writes v3 and still reads v1 and v2."""
    shutil.copytree(schemas_dir(), tmp_path / "schemas")
    v3 = latest(REQUEST)
    v3["fields"] = [
        *v3["fields"],
        {"name": "locale", "type": "string", "default": "en", "doc": "Locale."},
    ]
    (tmp_path / "schemas" / REQUEST / "v3.avsc").write_text(json.dumps(v3))
    new = SingleObjectCodec(tmp_path / "schemas")
    old = SingleObjectCodec()

    from_v2 = new.decode(REQUEST, old.encode(REQUEST, REQUEST_FULL, TOPIC), TOPIC)
    assert from_v2 == {**REQUEST_FULL, "locale": "en"}
    with pytest.raises(DecodeError) as caught:
        old.decode(REQUEST, new.encode(REQUEST, {**REQUEST_FULL, "locale": "fr"}, TOPIC), TOPIC)
    assert caught.value.code == "unknown_schema"


# --- decode errors: DecodeError, with a reason, and nothing else --------------------------


def test_random_bytes_raise_decode_error(codec: SingleObjectCodec) -> None:
    rng = random.Random(20251126)
    for _ in range(2_000):
        data = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))
        with pytest.raises(DecodeError):
            codec.decode(REQUEST, data, TOPIC)


@pytest.mark.parametrize(("contract", "record"), FULL_RECORDS)
def test_random_bodies_behind_a_valid_header_raise_only_decode_error(
    codec: SingleObjectCodec, contract: str, record: dict[str, Any]
) -> None:
    header = codec.encode(contract, record, TOPIC)[:10]
    rng = random.Random(7)
    for _ in range(2_000):
        body = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 80)))
        # A few random bodies are valid records; any exception but DecodeError fails the test.
        with contextlib.suppress(DecodeError):
            codec.decode(contract, header + body, TOPIC)


@pytest.mark.parametrize(("contract", "record"), FULL_RECORDS)
def test_every_truncation_raises_decode_error(
    codec: SingleObjectCodec, contract: str, record: dict[str, Any]
) -> None:
    data = codec.encode(contract, record, TOPIC)
    for length in range(len(data)):
        with pytest.raises(DecodeError):
            codec.decode(contract, data[:length], TOPIC)


def test_trailing_bytes_are_corrupt(codec: SingleObjectCodec) -> None:
    data = codec.encode(REQUEST, REQUEST_FULL, TOPIC)
    with pytest.raises(DecodeError, match="1 bytes left") as caught:
        codec.decode(REQUEST, data + b"\x00", TOPIC)
    assert caught.value.code == "corrupt_body"


def test_unknown_fingerprint(codec: SingleObjectCodec) -> None:
    data = codec.encode(REQUEST, REQUEST_FULL, TOPIC)
    forged = data[:2] + bytes(8) + data[10:]
    with pytest.raises(DecodeError, match="0000000000000000") as caught:
        codec.decode(REQUEST, forged, TOPIC)
    assert caught.value.code == "unknown_schema"


def test_wrong_contract(codec: SingleObjectCodec) -> None:
    data = codec.encode(RESPONSE, RESPONSE_FULL, TOPIC)
    with pytest.raises(DecodeError, match="is a SpecialistResponse") as caught:
        codec.decode(REQUEST, data, TOPIC)
    assert caught.value.code == "wrong_contract"
    with pytest.raises(DecodeError):
        codec.decode("NoSuchContract", data, TOPIC)


@pytest.mark.parametrize(
    ("data", "code", "reason"),
    [
        (b"", "empty", "empty"),
        (b"\x00\x00\x00\x00\x2a\x02", "bad_marker", "schema id 42"),
        (b'{"request_id": "r"}', "bad_marker", "JSON"),
        (b"\xc3\x02" + bytes(20), "bad_marker", "c302"),
        (b"\xc3\x01\x01\x02", "corrupt_body", "shorter than the single-object header"),
    ],
)
def test_bad_framing_says_what_the_bytes_look_like(
    codec: SingleObjectCodec, data: bytes, code: str, reason: str
) -> None:
    with pytest.raises(DecodeError, match=reason) as caught:
        codec.decode(REQUEST, data, TOPIC)
    assert caught.value.code == code
    assert isinstance(caught.value, PermanentError)


def test_tombstone_value_is_a_decode_error(codec: SingleObjectCodec) -> None:
    with pytest.raises(DecodeError):
        codec.decode(REQUEST, None, TOPIC)


# --- encode errors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("contract", "record", "reason"),
    [
        (REQUEST, {**REQUEST_MINIMAL, "tenat": "acme"}, "tenat"),
        (REQUEST, {**REQUEST_MINIMAL, "request_id": 7}, "request_id"),
        (REQUEST, {"text": "no id", "created_at_ms": 0}, "request_id"),
        (REQUEST, {**REQUEST_MINIMAL, "priority": "URGENT"}, "URGENT"),
        (RESPONSE, {**RESPONSE_FULL, "status": "ANSWERED"}, "ANSWERED"),
        (
            DEAD_LETTER,
            {**DEAD_LETTER_MINIMAL, "original_value": "text, not bytes"},
            "original_value",
        ),
        ("NoSuchContract", REQUEST_MINIMAL, "unknown contract"),
    ],
)
def test_records_that_do_not_fit_raise_encode_error(
    codec: SingleObjectCodec, contract: str, record: dict[str, Any], reason: str
) -> None:
    with pytest.raises(EncodeError, match=reason) as caught:
        codec.encode(contract, record, TOPIC)
    assert isinstance(caught.value, PermanentError)


# --- loading the schema folder ---------------------------------------------------------


def test_a_schema_file_naming_another_record_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / REQUEST).mkdir()
    (tmp_path / REQUEST / "v1.avsc").write_text(json.dumps(latest(RESPONSE)))
    with pytest.raises(ConfigError, match="must define the record"):
        load_schemas(tmp_path)


def test_a_missing_contract_is_a_config_error(tmp_path: Path) -> None:
    shutil.copytree(schemas_dir() / REQUEST, tmp_path / REQUEST)
    with pytest.raises(ConfigError, match="SpecialistResponse"):
        SingleObjectCodec(tmp_path)


def test_a_badly_named_or_invalid_file_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / REQUEST).mkdir()
    (tmp_path / REQUEST / "v01.avsc").write_text(json.dumps(latest(REQUEST)))
    with pytest.raises(ConfigError, match=r"v<N>\.avsc"):
        load_schemas(tmp_path)
    (tmp_path / REQUEST / "v01.avsc").unlink()
    unknown_type = {"type": "record", "name": REQUEST, "fields": [{"name": "x", "type": "strng"}]}
    (tmp_path / REQUEST / "v1.avsc").write_text(json.dumps(unknown_type))
    with pytest.raises(ConfigError, match="not a valid Avro schema"):
        load_schemas(tmp_path)


# --- registry mode, against a fake registry ------------------------------------------------


class FakeRegistry:
    """The registry endpoints AvroSerializer/AvroDeserializer call, in memory."""

    def __init__(self) -> None:
        self.schemas: list[str] = []
        self.subjects: dict[str, list[int]] = {}
        self.fail_with: int | None = None
        self.lock = threading.Lock()

    def register(self, subject: str, schema: str) -> int:
        with self.lock:
            if schema not in self.schemas:
                self.schemas.append(schema)
            schema_id = self.schemas.index(schema) + 1
            versions = self.subjects.setdefault(subject, [])
            if schema_id not in versions:
                versions.append(schema_id)
            return schema_id


@pytest.fixture
def registry() -> Iterator[tuple[FakeRegistry, str]]:
    fake = FakeRegistry()

    class Handler(BaseHTTPRequestHandler):
        def reply(self, status: int, body: dict[str, Any]) -> None:
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            parts = self.path.split("?")[0].strip("/").split("/")
            if fake.fail_with:
                self.reply(fake.fail_with, {"error_code": fake.fail_with, "message": "failing"})
            elif len(parts) == 3 and parts[0] == "subjects" and parts[2] == "versions":
                self.reply(200, {"id": fake.register(parts[1], body["schema"])})
            else:
                self.reply(404, {"error_code": 404, "message": "no such endpoint"})

        def do_GET(self) -> None:
            parts = self.path.split("?")[0].strip("/").split("/")
            if fake.fail_with:
                self.reply(fake.fail_with, {"error_code": fake.fail_with, "message": "failing"})
            elif len(parts) == 3 and parts[:2] == ["schemas", "ids"] and parts[2].isdigit():
                index = int(parts[2]) - 1
                if 0 <= index < len(fake.schemas):
                    self.reply(200, {"schema": fake.schemas[index]})
                else:
                    self.reply(404, {"error_code": 40403, "message": "Schema not found"})
            else:
                self.reply(404, {"error_code": 404, "message": "no such endpoint"})

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield fake, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def registry_codec(url: str) -> RegistryCodec:
    # No client retries: the tests that make the registry fail should fail at once.
    return RegistryCodec(url, {"max.retries": 0, "timeout": 5})


@pytest.mark.parametrize(("contract", "expected_record"), FULL_RECORDS)
def test_registry_round_trip_registers_under_topic_value(
    registry: tuple[FakeRegistry, str], contract: str, expected_record: dict[str, Any]
) -> None:
    fake, url = registry
    codec = registry_codec(url)

    data = codec.encode(contract, expected_record, "switchboard.x")

    assert fake.subjects == {"switchboard.x-value": [1]}
    assert data[:5] == b"\x00\x00\x00\x00\x01"
    assert json.loads(fake.schemas[0])["name"] == contract
    decoded = registry_codec(url).decode(contract, data, "switchboard.x")
    assert decoded == expected_record


def test_registry_decodes_an_older_writer_version_into_the_latest_shape(
    registry: tuple[FakeRegistry, str],
) -> None:
    fake, url = registry
    v1 = load_schemas()[REQUEST][0]
    schema_id = fake.register(f"{TOPIC}-value", json.dumps(dict(v1.schema)))
    record = {
        k: v
        for k, v in REQUEST_FULL.items()
        if k not in ("priority", "traceparent", "tracestate", "metadata")
    }
    data = encode_with_version(REQUEST, 1, record)
    framed = b"\x00" + schema_id.to_bytes(4, "big") + data[10:]

    decoded = registry_codec(url).decode(REQUEST, framed, TOPIC)

    assert decoded == {
        **record,
        "priority": "NORMAL",
        "traceparent": None,
        "tracestate": None,
        "metadata": {},
    }


def test_registry_decode_errors(registry: tuple[FakeRegistry, str]) -> None:
    _, url = registry
    codec = registry_codec(url)
    single_object = SingleObjectCodec().encode(REQUEST, REQUEST_FULL, TOPIC)
    framed = codec.encode(REQUEST, REQUEST_FULL, TOPIC)

    with pytest.raises(DecodeError, match="SCHEMA_REGISTRY_URL") as caught:
        codec.decode(REQUEST, single_object, TOPIC)
    assert caught.value.code == "bad_marker"
    with pytest.raises(DecodeError) as caught:
        codec.decode(REQUEST, b"\x00\x00\x00\x03\xe7" + framed[5:], TOPIC)
    assert caught.value.code == "unknown_schema"
    with pytest.raises(DecodeError) as caught:
        codec.decode(REQUEST, framed[:-3], TOPIC)
    assert caught.value.code == "corrupt_body"
    with pytest.raises(DecodeError) as caught:
        codec.decode(RESPONSE, framed, TOPIC)
    assert caught.value.code == "wrong_contract"
    with pytest.raises(DecodeError):
        codec.decode(REQUEST, None, TOPIC)


def test_registry_codec_takes_the_compiled_path_with_the_serializers_framing(
    registry: tuple[FakeRegistry, str],
) -> None:
    """After one record through confluent-kafka's serializer, a topic's records are framed and
    written by the compiled writer: the same bytes as the serializer's, read back the same;
    corrupt bytes behind the known schema id give the serializer path's DecodeError."""
    _, url = registry
    codec, plain = registry_codec(url), registry_codec(url)
    plain._compiled.clear()  # confluent-kafka's serializers only
    for contract, record in FULL_RECORDS:
        first = codec.encode(contract, record, TOPIC)
        assert (contract, TOPIC) in codec._fast_prefixes
        assert (
            codec.encode(contract, record, TOPIC) == first == plain.encode(contract, record, TOPIC)
        )
        assert codec._fast_ids[(contract, first[1:5])]
        assert codec.decode(contract, first, TOPIC) == plain.decode(contract, first, TOPIC)
        for damaged in (first[:-3], first + b"\x00", first[:5] + b"\xff" * 12):
            outcomes = []
            for c in (codec, plain):
                try:
                    outcomes.append(c.decode(contract, damaged, TOPIC))
                except DecodeError as exc:
                    outcomes.append((exc.code, str(exc)))
            assert outcomes[0] == outcomes[1]
    reader = registry_codec(url)  # a consumer that never encoded: learns the id from the registry
    framed = codec.encode(REQUEST, REQUEST_FULL, TOPIC)
    assert reader.decode(REQUEST, framed, TOPIC) == plain.decode(REQUEST, framed, TOPIC)
    assert reader._fast_ids[(REQUEST, framed[1:5])]
    assert reader.decode(REQUEST, framed, TOPIC) == plain.decode(REQUEST, framed, TOPIC)


def test_registry_outage_is_transient_not_a_decode_error(
    registry: tuple[FakeRegistry, str],
) -> None:
    """A registry that fails is not the record's fault: retry, don't dead-letter."""
    fake, url = registry
    framed = registry_codec(url).encode(REQUEST, REQUEST_FULL, TOPIC)
    fake.fail_with = 503
    with pytest.raises(TransientError):
        registry_codec(url).decode(REQUEST, framed, TOPIC)
    with pytest.raises(TransientError):
        registry_codec(url).encode(REQUEST, REQUEST_FULL, "another.topic")


def test_registry_unreachable_is_transient() -> None:
    with socket.socket() as probe:  # a port nothing listens on once the probe is closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(TransientError, match="unreachable"):
        registry_codec(f"http://127.0.0.1:{port}").encode(REQUEST, REQUEST_FULL, TOPIC)


def test_registry_rejecting_an_incompatible_schema_is_a_config_error(
    registry: tuple[FakeRegistry, str],
) -> None:
    fake, url = registry
    fake.fail_with = 409
    with pytest.raises(ConfigError, match="incompatible"):
        registry_codec(url).encode(REQUEST, REQUEST_FULL, TOPIC)


def test_registry_consumer_on_an_older_version_reads_a_new_status_as_failed(
    registry: tuple[FakeRegistry, str], tmp_path: Path
) -> None:
    """A producer on v3 adds a status; a consumer still on v2 fetches the v3 writer schema
    from the registry and, thanks to the enum default, reads the new status as failed."""
    _, url = registry
    shutil.copytree(schemas_dir(), tmp_path / "schemas")
    v3 = latest(RESPONSE)
    next(f for f in v3["fields"] if f["name"] == "status")["type"]["symbols"].append("cancelled")
    (tmp_path / "schemas" / RESPONSE / "v3.avsc").write_text(json.dumps(v3))
    producer = RegistryCodec(url, {"max.retries": 0}, directory=tmp_path / "schemas")

    data = producer.encode(RESPONSE, {**RESPONSE_FULL, "status": "cancelled"}, "responses")

    assert registry_codec(url).decode(RESPONSE, data, "responses")["status"] == "failed"


def test_make_codec_picks_the_registry_only_when_a_url_is_given() -> None:
    assert isinstance(make_codec(None), SingleObjectCodec)
    assert isinstance(make_codec(""), SingleObjectCodec)
    assert isinstance(make_codec("http://registry.invalid:8081", {"max.retries": 0}), RegistryCodec)


# --- the README's promises -------------------------------------------------------------


README = schemas_dir() / "README.md"


def test_readme_lists_the_fingerprint_of_every_version() -> None:
    text = README.read_text(encoding="utf-8")
    for contract, versions in load_schemas().items():
        for version in versions:
            row = f"| {contract}/v{version.version}.avsc | `{version.fingerprint.hex()}` |"
            assert row in text


def test_readme_example_decodes_our_bytes_with_stock_avro(
    codec: SingleObjectCodec, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The example in schemas/README.md runs as written, on v1 and v2 records."""
    text = README.read_text(encoding="utf-8")
    example = text.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict[str, Any] = {}
    monkeypatch.chdir(schemas_dir().parent)
    exec(compile(example, str(README), "exec"), namespace)

    v2 = namespace["decode_request"](codec.encode(REQUEST, REQUEST_FULL, TOPIC))
    v1_record = {k: REQUEST_FULL[k] for k in REQUEST_MINIMAL}
    v1 = namespace["decode_request"](encode_with_version(REQUEST, 1, v1_record))

    assert from_avro_datum(v2) == REQUEST_FULL
    assert from_avro_datum(v1)["priority"] == "NORMAL"
    assert from_avro_datum(v1)["created_at_ms"] == REQUEST_FULL["created_at_ms"]
