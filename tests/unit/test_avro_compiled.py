"""The compiled Avro fast path agrees with fastavro, bit for bit, both ways.

Random valid records of every contract (seeded, so a failure reproduces) are written by the
compiled writer and by fastavro's ``schemaless_writer(strict_allow_default=True)`` and must be
the same bytes; fastavro's bytes read by the compiled reader must be fastavro's record. Through
``SingleObjectCodec``, records that do not fit and bytes that are corrupt give exactly the
error (class, code and message) the fastavro-only codec gives.
"""

from __future__ import annotations

import random
from io import BytesIO
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer

from switchboard.core.avro_compiled import CompiledRecord, Unsupported, compile_record
from switchboard.core.errors import DecodeError
from switchboard.core.serde import (
    CONTRACTS,
    REQUEST,
    RESPONSE,
    EncodeError,
    SingleObjectCodec,
    without_logical_types,
)

SEEDS = range(300)
_TEXT = "abcXYZ 019/_-\u00e9\u4e2d\U0001f600"


@pytest.fixture(scope="module")
def codec() -> SingleObjectCodec:
    return SingleObjectCodec()


@pytest.fixture(scope="module")
def fastavro_only() -> SingleObjectCodec:
    plain = SingleObjectCodec()
    plain._fast_writers.clear()
    plain._fast_readers.clear()
    return plain


def _schema(codec: SingleObjectCodec, contract: str) -> dict[str, Any]:
    schema: dict[str, Any] = without_logical_types(codec.versions[contract][-1].schema)
    return schema


class _Values:
    """Random values for a schema: edge-heavy longs, unicode text, empty and full containers."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.named: dict[str, Any] = {}

    def long(self, bits: int) -> int:
        edge = [0, -1, 1, 63, 64, -64, -65, 127, 128, 2 ** (bits - 1) - 1, -(2 ** (bits - 1))]
        if self.rng.random() < 0.3:
            return self.rng.choice(edge)
        return self.rng.randint(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) >> self.rng.randint(
            0, bits - 1
        )

    def text(self) -> str:
        n = self.rng.choice([0, 1, 5, 63, 64, 200, 5000])
        return "".join(self.rng.choice(_TEXT) for _ in range(n))

    def value(self, schema: Any) -> Any:
        rng = self.rng
        if isinstance(schema, str) and schema in self.named:
            schema = self.named[schema]
        if isinstance(schema, dict) and schema.get("type") in ("string", "long", "int", "bytes"):
            schema = schema["type"]
        if schema == "null":
            return None
        if schema == "int":
            return self.long(32)
        if schema == "long":
            return self.long(64)
        if schema == "string":
            return self.text()
        if schema == "bytes":
            return rng.randbytes(rng.choice([0, 1, 70, 3000]))
        if isinstance(schema, list):
            return self.value(rng.choice(schema))
        kind = schema["type"]
        if kind == "enum":
            self.named[schema["name"]] = schema
            return rng.choice(schema["symbols"])
        if kind == "map":
            return {self.text(): self.value(schema["values"]) for _ in range(rng.choice([0, 1, 7]))}
        if kind == "array":
            return [self.value(schema["items"]) for _ in range(rng.choice([0, 1, 4]))]
        assert kind == "record"
        self.named[schema["name"]] = schema
        record = {}
        for field in schema["fields"]:
            if "default" in field and rng.random() < 0.25:
                continue  # missing: the writer takes the schema's default
            record[field["name"]] = self.value(field["type"])
        return record


def _fastavro_bytes(parsed: Any, record: Any) -> bytes:
    buffer = BytesIO()
    schemaless_writer(buffer, parsed, record, strict_allow_default=True)
    return buffer.getvalue()


@pytest.mark.parametrize("contract", CONTRACTS)
def test_random_records_are_written_and_read_exactly_as_fastavro_does(
    codec: SingleObjectCodec, contract: str
) -> None:
    schema = _schema(codec, contract)
    parsed = parse_schema(schema)
    compiled = compile_record(schema)
    for seed in SEEDS:
        record = _Values(random.Random(seed)).value(schema)
        expected = _fastavro_bytes(parsed, record)
        assert compiled.write(record) == expected, f"seed {seed}"
        assert compiled.read(expected, 0) == schemaless_reader(BytesIO(expected), parsed, None)


@pytest.mark.parametrize("contract", CONTRACTS)
def test_the_codec_takes_the_fast_path_and_agrees_with_fastavro_alone(
    codec: SingleObjectCodec, fastavro_only: SingleObjectCodec, contract: str
) -> None:
    assert contract in codec._fast_writers  # every contract of ours compiles
    schema = _schema(codec, contract)
    for seed in SEEDS:
        record = _Values(random.Random(seed)).value(schema)
        data = codec.encode(contract, record, "t")
        assert data == fastavro_only.encode(contract, record, "t")
        assert codec.decode(contract, data, "t") == fastavro_only.decode(contract, data, "t")


def _outcome(codec: SingleObjectCodec, fn: str, *args: Any) -> Any:
    try:
        return getattr(codec, fn)(*args)
    except (DecodeError, EncodeError) as exc:
        return type(exc), exc.code, str(exc)


@pytest.mark.parametrize("contract", CONTRACTS)
def test_corrupt_bytes_raise_the_same_decode_error_as_fastavro_alone(
    codec: SingleObjectCodec, fastavro_only: SingleObjectCodec, contract: str
) -> None:
    """Truncations, bit flips and random bodies behind the right header: the same DecodeError
    (or, where fastavro reads the bytes, the same record); never another exception."""
    schema = _schema(codec, contract)
    rng = random.Random(7)
    for seed in range(60):
        good = codec.encode(contract, _Values(random.Random(seed)).value(schema), "t")
        header = good[:10]
        damaged = [good[:cut] for cut in range(0, len(good), max(1, len(good) // 25))]
        for _ in range(10):
            flipped = bytearray(good)
            flipped[rng.randrange(10, len(good))] ^= 1 << rng.randrange(8)
            damaged.append(bytes(flipped))
        damaged += [header + rng.randbytes(rng.randrange(1, 80)) for _ in range(10)]
        damaged += [good + b"\x00", header + b"\xff" * 11]
        for data in damaged:
            assert _outcome(codec, "decode", contract, data, "t") == _outcome(
                fastavro_only, "decode", contract, data, "t"
            )


@pytest.mark.parametrize(
    ("contract", "change"),
    [
        (REQUEST, {"unknown_field": 1}),
        (REQUEST, {"request_id": None}),
        (REQUEST, {"request_id": b"bytes"}),
        (REQUEST, {"attempt": 1.5}),
        (REQUEST, {"created_at_ms": 2**63}),
        (REQUEST, {"created_at_ms": "soon"}),
        (REQUEST, {"priority": "URGENT"}),
        (REQUEST, {"metadata": None}),
        (REQUEST, {"metadata": {"k": 1}}),
        (REQUEST, {"specialist": 3}),
        (RESPONSE, {"status": "maybe"}),
        (RESPONSE, {"usage": {"input_tokens": 1}}),
        (RESPONSE, {"usage": {"input_tokens": 1, "output_tokens": 2, "extra": 3}}),
        (RESPONSE, {"stage_latency_ms": {"router": "fast"}}),
        (RESPONSE, {"dlq": {"topic": "t", "partition": 0}}),
    ],
)
def test_records_that_do_not_fit_raise_what_fastavro_alone_raises(
    codec: SingleObjectCodec, fastavro_only: SingleObjectCodec, contract: str, change: Any
) -> None:
    base = {
        REQUEST: {"request_id": "r1", "text": "/backend hi", "created_at_ms": 1},
        RESPONSE: {
            "request_id": "r1",
            "tenant": "t",
            "specialist": "backend",
            "status": "answered",
            "responded_at_ms": 1,
        },
    }[contract]
    record = {**base, **change}
    assert _outcome(codec, "encode", contract, record, "t") == _outcome(
        fastavro_only, "encode", contract, record, "t"
    )


def test_a_record_missing_a_field_without_default_raises_encode_error(
    codec: SingleObjectCodec,
) -> None:
    with pytest.raises(EncodeError, match="request_id"):
        codec.encode(REQUEST, {"text": "/backend hi", "created_at_ms": 1}, "t")


def test_blocks_with_a_byte_size_are_read_as_fastavro_reads_them() -> None:
    """Other writers (Java's blocking encoder) write a negative count, then the block's size."""
    schema = {
        "type": "record",
        "name": "M",
        "fields": [{"name": "m", "type": {"type": "map", "values": "long"}}],
    }
    # count -2 (zigzag 3), size 6, then "a"->1, "b"->2, end of blocks.
    body = b"\x03\x0c\x02a\x02\x02b\x04\x00"
    expected = schemaless_reader(BytesIO(body), parse_schema(schema), None)
    assert compile_record(schema).read(body, 0) == expected == {"m": {"a": 1, "b": 2}}


def _one_field(field_type: Any, name: str = "R") -> dict[str, Any]:
    return {"type": "record", "name": name, "fields": [{"name": "x", "type": field_type}]}


@pytest.mark.parametrize(
    "schema",
    [
        _one_field("float"),
        _one_field("double"),
        _one_field("boolean"),
        _one_field({"type": "fixed", "name": "F", "size": 4}),
        _one_field(["int", "string"]),
        _one_field(["null", "Node"], name="Node"),  # recursive
    ],
)
def test_types_it_does_not_compile_are_left_to_fastavro(schema: dict[str, Any]) -> None:
    with pytest.raises(Unsupported):
        compile_record(schema)


def test_named_types_are_found_by_short_and_full_name() -> None:
    schema = {
        "type": "record",
        "name": "R",
        "namespace": "dev.x",
        "fields": [
            {"name": "a", "type": {"type": "enum", "name": "E", "symbols": ["P", "Q"]}},
            {"name": "b", "type": "E"},
            {"name": "c", "type": ["null", "dev.x.E"], "default": None},
        ],
    }
    compiled: CompiledRecord = compile_record(schema, prefix=b"\xc3\x01")
    record = {"a": "Q", "b": "P", "c": "Q"}
    data = compiled.write(record)
    assert data == b"\xc3\x01" + _fastavro_bytes(parse_schema(schema), record)
    assert compiled.read(data, 2) == record


def test_a_record_of_full_size_with_a_misspelt_field_raises_encode_error(
    codec: SingleObjectCodec, fastavro_only: SingleObjectCodec
) -> None:
    """As many keys as fields, one of them unknown: not taken for a complete record."""
    minimal = {"request_id": "r1", "text": "/backend hi", "created_at_ms": 1}
    record = codec.decode(REQUEST, codec.encode(REQUEST, minimal, "t"), "t")
    record["tenantt"] = record.pop("tenant")
    assert len(record) == len(codec.versions[REQUEST][-1].schema["fields"])
    outcome = _outcome(codec, "encode", REQUEST, record, "t")
    assert outcome == _outcome(fastavro_only, "encode", REQUEST, record, "t")
    assert outcome[0] is EncodeError
