"""Between our dicts (timestamps as int milliseconds) and the Apache ``avro`` package's data
(timestamp-millis as datetimes): shared by the serde and schema-evolution tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_avro_datum(value: Any, schema: Any) -> Any:
    """Our dict as the ``avro`` package wants it: timestamp-millis fields as datetimes."""
    if isinstance(schema, list):
        return (
            None if value is None else to_avro_datum(value, next(s for s in schema if s != "null"))
        )
    if isinstance(schema, dict):
        if schema.get("logicalType") == "timestamp-millis":
            return EPOCH + timedelta(milliseconds=value)
        kind = schema["type"]
        if kind == "record":
            return {f["name"]: to_avro_datum(value[f["name"]], f["type"]) for f in schema["fields"]}
        if kind == "array":
            return [to_avro_datum(v, schema["items"]) for v in value]
        if kind == "map":
            return {k: to_avro_datum(v, schema["values"]) for k, v in value.items()}
        if isinstance(kind, (dict, list)):
            return to_avro_datum(value, kind)
    return value


def from_avro_datum(value: Any) -> Any:
    if isinstance(value, datetime):
        return (value - EPOCH) // timedelta(milliseconds=1)
    if isinstance(value, dict):
        return {k: from_avro_datum(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_avro_datum(v) for v in value]
    return value
