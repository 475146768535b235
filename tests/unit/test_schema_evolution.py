"""Schema evolution: every pair of consecutive versions reads each other's records, both ways.

Checked with two independent Avro implementations (fastavro and the Apache ``avro`` package),
with records generated from the writer schema so that every field carries a non-default
value. Also: every record, enum and field is documented, and the latest versions have
exactly the fields the contracts promise.
"""

from __future__ import annotations

import io
import json
from typing import Any

import avro.io
import avro.schema
import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer

from switchboard.core.serde import (
    CONTRACTS,
    DEAD_LETTER,
    REQUEST,
    RESPONSE,
    SchemaVersion,
    load_schemas,
    without_logical_types,
)
from tests.unit.avro_compat import from_avro_datum, to_avro_datum

VERSIONS = load_schemas()

PAIRS = [
    pytest.param(old, new, id=f"{old.contract}-v{old.version}-v{new.version}")
    for contract in CONTRACTS
    for old, new in zip(VERSIONS[contract], VERSIONS[contract][1:], strict=False)
]
ALL_VERSIONS = [
    pytest.param(v, id=f"{v.contract}-v{v.version}") for c in CONTRACTS for v in VERSIONS[c]
]


# --- records generated from a schema, and what a reader should make of them ----------------


def sample(schema: Any, name: str = "") -> Any:
    """A value for ``schema`` in which nothing equals its default: unions take the non-null
    branch, enums the last symbol, containers hold one item, strings are non-ASCII."""
    if isinstance(schema, list):
        return sample(next(s for s in schema if s != "null"), name)
    if isinstance(schema, str):
        return {
            "string": f"{name} — é✓",
            "bytes": name.encode() + b"\x00\xff",
            "int": 7,
            "long": 1_764_129_000_123,
            "boolean": True,
            "double": 0.5,
            "float": 0.25,
        }[schema]
    kind = schema["type"]
    if kind == "record":
        return {f["name"]: sample(f["type"], f["name"]) for f in schema["fields"]}
    if kind == "enum":
        return schema["symbols"][-1]
    if kind == "array":
        return [sample(schema["items"], name)]
    if kind == "map":
        return {"k": sample(schema["values"], name)}
    return sample(kind, name)  # {"type": "long", "logicalType": ...}


def named_records(schema: Any, into: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every record schema inside ``schema``, by name."""
    found = {} if into is None else into
    if isinstance(schema, list):
        for branch in schema:
            named_records(branch, found)
    elif isinstance(schema, dict):
        if schema.get("type") == "record":
            found[schema["name"]] = schema
            for field in schema["fields"]:
                named_records(field["type"], found)
        else:
            for key in ("type", "items", "values"):
                if key in schema:
                    named_records(schema[key], found)
    return found


def resolve(value: Any, writer: Any, reader: Any) -> Any:
    """What the Avro resolution rules say a reader gets for ``value`` (types unchanged)."""
    if isinstance(reader, list):
        if value is None:
            return None
        branch = next(s for s in reader if s != "null")
        writer_branch = (
            next(s for s in writer if s != "null") if isinstance(writer, list) else writer
        )
        return resolve(value, writer_branch, branch)
    if isinstance(reader, dict) and reader.get("type") == "record":
        written = {f["name"]: f for f in writer["fields"]}
        return {
            f["name"]: (
                resolve(value[f["name"]], written[f["name"]]["type"], f["type"])
                if f["name"] in written
                else f["default"]
            )
            for f in reader["fields"]
        }
    if isinstance(reader, dict) and reader.get("type") == "array":
        return [resolve(v, writer["items"], reader["items"]) for v in value]
    if isinstance(reader, dict) and reader.get("type") == "map":
        return {k: resolve(v, writer["values"], reader["values"]) for k, v in value.items()}
    return value


# --- the two implementations -----------------------------------------------------------


def fastavro_round_trip(
    record: dict[str, Any], writer: SchemaVersion, reader: SchemaVersion
) -> Any:
    # As the codec does: logical types off, so timestamps stay int milliseconds.
    writer_schema = parse_schema(without_logical_types(dict(writer.schema)))
    reader_schema = parse_schema(without_logical_types(dict(reader.schema)))
    body = io.BytesIO()
    schemaless_writer(body, writer_schema, record)
    body.seek(0)
    return schemaless_reader(body, writer_schema, reader_schema)


def apache_avro_round_trip(
    record: dict[str, Any], writer: SchemaVersion, reader: SchemaVersion
) -> Any:
    writer_schema = avro.schema.parse(json.dumps(dict(writer.schema)))
    reader_schema = avro.schema.parse(json.dumps(dict(reader.schema)))
    body = io.BytesIO()
    avro.io.DatumWriter(writer_schema).write(
        to_avro_datum(record, dict(writer.schema)), avro.io.BinaryEncoder(body)
    )
    body.seek(0)
    decoded = avro.io.DatumReader(writer_schema, reader_schema).read(avro.io.BinaryDecoder(body))
    return from_avro_datum(decoded)


IMPLEMENTATIONS = [
    pytest.param(fastavro_round_trip, id="fastavro"),
    pytest.param(apache_avro_round_trip, id="apache-avro"),
]


# --- the tests ---------------------------------------------------------------------------


def test_there_is_at_least_one_version_of_every_contract_and_two_of_the_evolving_ones() -> None:
    assert [v.version for v in VERSIONS[DEAD_LETTER]] == [1]
    assert [v.version for v in VERSIONS[REQUEST]] == [1, 2]
    assert [v.version for v in VERSIONS[RESPONSE]] == [1, 2]


@pytest.mark.parametrize("round_trip", IMPLEMENTATIONS)
@pytest.mark.parametrize(("old", "new"), PAIRS)
@pytest.mark.parametrize("upgraded", [True, False], ids=["backward", "forward"])
def test_a_reader_of_either_version_reads_records_of_the_other(
    round_trip: Any, old: SchemaVersion, new: SchemaVersion, upgraded: bool
) -> None:
    """Backward compatible: a consumer upgraded to ``new`` reads what old producers wrote.
    Forward compatible: a consumer not yet upgraded reads what new producers write."""
    writer, reader = (old, new) if upgraded else (new, old)
    record = sample(dict(writer.schema))
    expected = resolve(record, dict(writer.schema), dict(reader.schema))
    assert round_trip(record, writer, reader) == expected


@pytest.mark.parametrize(("old", "new"), PAIRS)
def test_fields_added_or_removed_between_versions_have_defaults(
    old: SchemaVersion, new: SchemaVersion
) -> None:
    old_records = named_records(dict(old.schema))
    new_records = named_records(dict(new.schema))
    for name, new_record in new_records.items():
        if name not in old_records:
            continue  # a new record type: the field holding it needs the default, checked above
        old_fields = {f["name"]: f for f in old_records[name]["fields"]}
        new_fields = {f["name"]: f for f in new_record["fields"]}
        for added in new_fields.keys() - old_fields.keys():
            assert "default" in new_fields[added], f"{name}.{added} is new in v{new.version}"
        for removed in old_fields.keys() - new_fields.keys():
            assert "default" in old_fields[removed], f"{name}.{removed} removed in v{new.version}"


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_every_record_enum_and_field_has_a_doc(version: SchemaVersion) -> None:
    undocumented: list[str] = []

    def walk(schema: Any, where: str) -> None:
        if isinstance(schema, list):
            for branch in schema:
                walk(branch, where)
            return
        if not isinstance(schema, dict):
            return
        if schema.get("type") in ("record", "enum") and not str(schema.get("doc", "")).strip():
            undocumented.append(f"{where}{schema['name']}")
        for field in schema.get("fields", []):
            if not str(field.get("doc", "")).strip():
                undocumented.append(f"{where}{schema['name']}.{field['name']}")
            walk(field["type"], f"{where}{schema['name']}.{field['name']}: ")
        for key in ("type", "items", "values"):
            if isinstance(schema.get(key), (dict, list)):
                walk(schema[key], where)

    walk(dict(version.schema), "")
    assert undocumented == []
    assert version.schema["namespace"] == "dev.switchboard"


LATEST_FIELDS = {
    REQUEST: [
        "request_id",
        "tenant",
        "text",
        "specialist",
        "prompt",
        "priority",
        "deadline_ms",
        "reply_to",
        "attempt",
        "traceparent",
        "tracestate",
        "created_at_ms",
        "metadata",
    ],
    RESPONSE: [
        "request_id",
        "tenant",
        "specialist",
        "status",
        "content",
        "backend",
        "model",
        "usage",
        "cost_micro_usd",
        "stage_latency_ms",
        "attempts",
        "error_code",
        "error_message",
        "dlq",
        "responded_at_ms",
        "traceparent",
    ],
    DEAD_LETTER: [
        "original_key",
        "original_value",
        "original_headers",
        "origin_topic",
        "origin_partition",
        "origin_offset",
        "origin_timestamp_ms",
        "stage",
        "error_class",
        "error_type",
        "error_code",
        "error_message",
        "provider_status",
        "provider_request_id",
        "attempts",
        "first_failure_ms",
        "last_failure_ms",
        "request_id",
        "tenant",
        "specialist",
        "consumer_group",
    ],
}


@pytest.mark.parametrize("contract", CONTRACTS)
def test_latest_version_has_exactly_the_contracts_fields(contract: str) -> None:
    fields = [f["name"] for f in VERSIONS[contract][-1].schema["fields"]]
    assert fields == LATEST_FIELDS[contract]
