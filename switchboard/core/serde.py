"""Avro serde for Switchboard's three contracts: one ``Codec`` interface, two wire formats.

- ``SingleObjectCodec`` (the default, no registry): Avro single-object encoding, as the Avro
  specification defines it: ``C3 01``, the 8-byte little-endian CRC-64-AVRO fingerprint of the
  writer schema's Parsing Canonical Form, then the Avro binary body. Any stock Avro library can
  read it with the ``.avsc`` files in ``schemas/``.
- ``RegistryCodec``: the Confluent Schema Registry wire format (``00`` + 4-byte schema id +
  body), subjects named by topic (``<topic>-value``), schemas registered automatically.

Both encode with the latest version of a contract, decode every known version into the latest
shape (fields a writer did not know get their defaults), and return plain dicts in which
timestamps stay ``int`` milliseconds, as the field names (``*_ms``) promise.

Both write and read the bodies of a contract's latest version with readers and writers
compiled from its ``.avsc`` (``avro_compiled``, bit for bit fastavro's encoding, a few times
faster); fastavro (and confluent-kafka's serializers) stay the authority for everything the
compiled code does not take: older writer versions, records that do not fit, corrupt bytes.

Decoding never raises anything but ``DecodeError`` for bad bytes; its ``code`` says why:
``empty``, ``bad_marker``, ``unknown_schema``, ``wrong_contract``, ``corrupt_body``.
``RegistryCodec`` also raises ``TransientError`` while the registry cannot be reached, because
a registry outage is not the record's fault and must not fill the DLQ.
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from io import BytesIO
from pathlib import Path
from typing import Any, Final, Protocol, cast

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.schema import fingerprint as _fastavro_fingerprint
from fastavro.schema import to_parsing_canonical_form

from switchboard.core.avro_compiled import CompiledRecord, Unsupported, compile_record
from switchboard.core.errors import (
    ConfigError,
    DecodeError,
    PermanentError,
    SwitchboardError,
    TransientError,
)
from switchboard.core.resources import package_data_path

__all__ = [
    "CONTRACTS",
    "DEAD_LETTER",
    "REQUEST",
    "RESPONSE",
    "SINGLE_OBJECT_MARKER",
    "Codec",
    "DecodeError",
    "EncodeError",
    "RegistryCodec",
    "SchemaVersion",
    "SingleObjectCodec",
    "fingerprint",
    "load_schemas",
    "make_codec",
    "schemas_dir",
]

REQUEST: Final = "SpecialistRequest"
RESPONSE: Final = "SpecialistResponse"
DEAD_LETTER: Final = "DeadLetter"
CONTRACTS: Final = (REQUEST, RESPONSE, DEAD_LETTER)

#: The two bytes that open every single-object encoded record (Avro specification).
SINGLE_OBJECT_MARKER: Final = b"\xc3\x01"
_HEADER_LEN: Final = len(SINGLE_OBJECT_MARKER) + 8

_VERSION_FILE = re.compile(r"v([1-9][0-9]*)\.avsc")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)


class EncodeError(PermanentError):
    """Raised when a record does not fit its contract's latest schema; retrying cannot help."""

    code = "encode_error"


class Codec(Protocol):
    """Turns contract records into Kafka value bytes and back."""

    def encode(self, contract: str, record: Mapping[str, Any], topic: str) -> bytes:
        """The value bytes of ``record`` for ``topic``; ``EncodeError`` if it does not fit."""
        ...

    def decode(self, contract: str, data: bytes | None, topic: str) -> dict[str, Any]:
        """The record in ``data`` in the latest shape of ``contract``; raises ``DecodeError``.

        ``None`` (what a tombstone's ``msg.value()`` is) raises ``DecodeError`` too.
        """
        ...


@dataclass(frozen=True)
class SchemaVersion:
    """One version of a contract, as read from ``schemas/<contract>/v<N>.avsc``."""

    contract: str
    version: int
    path: Path
    #: The schema JSON as written in the file, docs and logical types included.
    schema: Mapping[str, Any]
    #: CRC-64-AVRO of the Parsing Canonical Form, 8 bytes little-endian.
    fingerprint: bytes


def schemas_dir() -> Path:
    """The contracts' folder: package data (``switchboard/core/schemas``, in a checkout a
    symlink to the top-level ``schemas/``, which the returned path resolves to)."""
    return package_data_path("switchboard.core", "schemas")


def fingerprint(schema: Mapping[str, Any] | list[Any] | str) -> bytes:
    """The 8-byte little-endian CRC-64-AVRO fingerprint of a schema's Parsing Canonical Form.

    ``schema`` is parsed JSON, or JSON text when it is a ``str``. The canonical form drops
    docs, defaults and logical types, so those can change without changing the fingerprint.
    """
    parsed: Any = json.loads(schema) if isinstance(schema, str) else schema
    canonical = to_parsing_canonical_form(parsed)
    # fastavro returns the fingerprint bytes in wire order (little-endian) as hex.
    return bytes.fromhex(_fastavro_fingerprint(canonical, "CRC-64-AVRO"))


def load_schemas(directory: Path | None = None) -> dict[str, tuple[SchemaVersion, ...]]:
    """Every ``<Contract>/v<N>.avsc`` under ``directory``, oldest version first per contract.

    Raises ``ConfigError`` when a file is not valid Avro, names another record than its folder,
    or duplicates another version, since a codec built on such a folder would mis-decode.
    """
    root = directory if directory is not None else schemas_dir()
    if not root.is_dir():
        raise ConfigError(f"schema folder {root} does not exist")
    loaded: dict[str, tuple[SchemaVersion, ...]] = {}
    seen: dict[bytes, Path] = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        versions: list[SchemaVersion] = []
        for path in folder.glob("v*.avsc"):
            match = _VERSION_FILE.fullmatch(path.name)
            if match is None:
                raise ConfigError(f"{path}: schema files are named v<N>.avsc")
            try:
                schema = json.loads(path.read_text(encoding="utf-8"))
                parse_schema(schema)
            except Exception as exc:  # any parse failure means the same thing: a broken file
                raise ConfigError(f"{path} is not a valid Avro schema: {exc}") from exc
            if not isinstance(schema, dict) or schema.get("name") != folder.name:
                raise ConfigError(f"{path} must define the record {folder.name!r}")
            version = SchemaVersion(
                folder.name, int(match.group(1)), path, schema, fingerprint(schema)
            )
            if version.fingerprint in seen:
                raise ConfigError(
                    f"{path} has the same canonical form as {seen[version.fingerprint]}"
                )
            seen[version.fingerprint] = path
            versions.append(version)
        if versions:
            loaded[folder.name] = tuple(sorted(versions, key=lambda v: v.version))
    return loaded


def without_logical_types(schema: Any) -> Any:
    """``schema`` with logical types removed, so fastavro reads timestamps as int millis.

    The contract's ``*_ms`` fields are integers to every caller; converting them to datetime
    and back would cost time on the hot path. The fingerprint is unaffected: the Parsing
    Canonical Form drops logical types anyway.
    """
    if isinstance(schema, dict):
        if "logicalType" in schema and isinstance(schema.get("type"), str):
            return schema["type"]
        return {key: without_logical_types(value) for key, value in schema.items()}
    if isinstance(schema, list):
        return [without_logical_types(item) for item in schema]
    return schema


def _describe_prefix(data: bytes) -> str:
    """A hint at what ``data`` is, for a DecodeError about a missing single-object marker."""
    if data[:1] == b"\x00" and len(data) >= 5:
        schema_id = int.from_bytes(data[1:5], "big")
        return (
            f"it looks like Confluent Schema Registry framing (schema id {schema_id}): "
            "is SCHEMA_REGISTRY_URL set where the record was produced but not here?"
        )
    if data[:1] in (b"{", b"["):
        return "it looks like JSON"
    return f"it starts with {bytes(data[:2]).hex()}"


class SingleObjectCodec:
    """Avro single-object encoding; needs no registry, only the ``.avsc`` files.

    Thread-safe: the parsed schemas are read-only after construction and every call uses its
    own buffer.
    """

    def __init__(self, directory: Path | None = None) -> None:
        versions = load_schemas(directory)
        missing = [c for c in CONTRACTS if c not in versions]
        if missing:
            raise ConfigError(
                f"no schema files for {', '.join(missing)} in {directory or schemas_dir()}"
            )
        self.versions: Mapping[str, tuple[SchemaVersion, ...]] = versions
        self._writers: dict[str, tuple[bytes, Any, int]] = {}
        # Keyed by the 8 fingerprint bytes: one dict lookup finds the writer schema of any
        # version, and the reader schema to resolve it into (None when already the latest).
        self._readers: dict[bytes, tuple[str, int, Any, Any]] = {}
        # The compiled fast path (``avro_compiled``) of each contract's latest version, where
        # its schema compiles: the writer by contract, the reader by its 10-byte header. fastavro
        # (above) stays the authority: anything the fast path raises on goes through it.
        self._fast_writers: dict[str, Callable[[Mapping[str, Any]], bytes]] = {}
        self._fast_readers: dict[bytes, tuple[str, Callable[[bytes, int], dict[str, Any]]]] = {}
        for contract, history in versions.items():
            latest = history[-1]
            plain = without_logical_types(latest.schema)
            latest_parsed = parse_schema(plain)
            with contextlib.suppress(Unsupported):
                compiled = compile_record(plain, SINGLE_OBJECT_MARKER + latest.fingerprint)
                self._fast_writers[contract] = compiled.write
                self._fast_readers[SINGLE_OBJECT_MARKER + latest.fingerprint] = (
                    contract,
                    compiled.read,
                )
            self._writers[contract] = (
                SINGLE_OBJECT_MARKER + latest.fingerprint,
                latest_parsed,
                latest.version,
            )
            for old in history[:-1]:
                self._readers[old.fingerprint] = (
                    contract,
                    old.version,
                    parse_schema(without_logical_types(old.schema)),
                    latest_parsed,
                )
            self._readers[latest.fingerprint] = (contract, latest.version, latest_parsed, None)

    def encode(self, contract: str, record: Mapping[str, Any], topic: str) -> bytes:
        """``record`` as single-object Avro of the latest version of ``contract``.

        Missing fields take their schema defaults; a field the schema does not know raises
        ``EncodeError``, because a misspelt key would otherwise be dropped in silence.
        """
        fast = self._fast_writers.get(contract)
        if fast is not None:
            try:
                return fast(record)
            except Exception:  # fastavro below writes it, or raises the EncodeError it always did
                pass
        try:
            header, schema, version = self._writers[contract]
        except KeyError:
            raise EncodeError(
                f"unknown contract {contract!r}; expected one of {', '.join(CONTRACTS)}",
                code="unknown_contract",
            ) from None
        buffer = BytesIO()
        buffer.write(header)
        try:
            schemaless_writer(buffer, schema, record, strict_allow_default=True)
        except Exception as exc:  # fastavro raises ValueError, TypeError, AttributeError...
            raise EncodeError(
                f"{contract} record for {topic} does not fit schema v{version}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        return buffer.getvalue()

    def decode(self, contract: str, data: bytes | None, topic: str) -> dict[str, Any]:
        """The ``contract`` record in ``data``, resolved into the latest version's shape."""
        if type(data) is bytes:
            fast = self._fast_readers.get(data[:_HEADER_LEN])  # keyed by marker + fingerprint
            if fast is not None and fast[0] == contract:
                try:
                    return fast[1](data, _HEADER_LEN)
                except Exception:  # corrupt or unusual: fastavro below decides, as it always did
                    pass
        if not data:
            raise DecodeError(f"empty value on {topic}: no {contract} to decode", code="empty")
        if data[:2] != SINGLE_OBJECT_MARKER:
            raise DecodeError(
                f"value on {topic} is not single-object Avro (no C3 01 marker): "
                + _describe_prefix(data),
                code="bad_marker",
            )
        if len(data) < _HEADER_LEN:
            raise DecodeError(
                f"value on {topic} is {len(data)} bytes, shorter than the single-object header",
                code="corrupt_body",
            )
        entry = self._readers.get(bytes(data[2:_HEADER_LEN]))
        if entry is None:
            raise DecodeError(
                f"value on {topic} was written with an unknown schema (fingerprint "
                f"{bytes(data[2:_HEADER_LEN]).hex()}): a newer producer than this consumer, or "
                "another contract; replay it once the schema is deployed here",
                code="unknown_schema",
            )
        owner, version, writer, reader = entry
        if owner != contract:
            raise DecodeError(
                f"value on {topic} is a {owner} (v{version}), not a {contract}",
                code="wrong_contract",
            )
        buffer = BytesIO(data)
        buffer.seek(_HEADER_LEN)
        try:
            # Every contract is a record schema, so the reader returns a dict.
            record = cast(dict[str, Any], schemaless_reader(buffer, writer, reader))
        except Exception as exc:  # corrupt bytes surface as EOFError, IndexError, UnicodeError...
            raise DecodeError(
                f"corrupt {owner} v{version} body on {topic}: {type(exc).__name__}: {exc}",
                code="corrupt_body",
            ) from exc
        if buffer.tell() != len(data):
            raise DecodeError(
                f"corrupt {owner} v{version} body on {topic}: "
                f"{len(data) - buffer.tell()} bytes left after the record",
                code="corrupt_body",
            )
        return record


def _millis(value: Any) -> Any:
    """``value`` with every datetime turned back into int milliseconds since the epoch."""
    if isinstance(value, datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return (aware - _EPOCH) // _ONE_MS
    if isinstance(value, dict):
        return {key: _millis(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_millis(item) for item in value]
    return value


class RegistryCodec:
    """The Confluent Schema Registry wire format, subjects named ``<topic>-value``.

    The latest ``.avsc`` of each contract is registered on first use (docs and logical types
    included, so the registry shows the full contract); records written with any version the
    registry knows are resolved into the latest shape.
    """

    def __init__(
        self,
        url: str,
        client_conf: Mapping[str, Any] | None = None,
        *,
        directory: Path | None = None,
    ) -> None:
        # Imported here: the registry client pulls in httpx and friends (about half a second),
        # which the default single-object path never needs.
        from confluent_kafka.schema_registry import (
            Schema,
            SchemaRegistryClient,
            topic_subject_name_strategy,
        )
        from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer

        versions = load_schemas(directory)
        missing = [c for c in CONTRACTS if c not in versions]
        if missing:
            raise ConfigError(f"no schema files for {', '.join(missing)}")
        self._client = SchemaRegistryClient({**(client_conf or {}), "url": url})
        self._serializers: dict[str, Any] = {}
        self._deserializers: dict[str, Any] = {}
        self._latest = {c: versions[c][-1].fingerprint for c in CONTRACTS}
        # The compiled fast path (``avro_compiled``), bodies only: the framing's schema id is
        # learned from the serializers. A (contract, topic) gets its 5-byte prefix once the
        # serializer's own bytes for a record matched the compiled writer's; a (contract,
        # schema id) its reader once the registry said that id is the latest schema. Anything
        # else, and anything the fast path raises on, goes through confluent-kafka's
        # serializers as before.
        self._compiled: dict[str, CompiledRecord] = {}
        self._fast_prefixes: dict[tuple[str, str], bytes] = {}
        self._fast_ids: dict[tuple[str, bytes], bool] = {}
        for contract in CONTRACTS:
            with contextlib.suppress(Unsupported):
                self._compiled[contract] = compile_record(
                    without_logical_types(versions[contract][-1].schema)
                )
        for contract in CONTRACTS:
            schema = Schema(json.dumps(versions[contract][-1].schema), "AVRO")
            # Named explicitly: newer clients default to the ASSOCIATED strategy, which asks
            # the registry for associations that a plain registry does not have.
            strategy = {"subject.name.strategy": topic_subject_name_strategy}
            self._serializers[contract] = AvroSerializer(
                self._client,
                schema,
                conf={"auto.register.schemas": True, "validate.strict.allow.default": True}
                | strategy,
            )
            self._deserializers[contract] = AvroDeserializer(self._client, schema, conf=strategy)

    def encode(self, contract: str, record: Mapping[str, Any], topic: str) -> bytes:
        """``record`` in Confluent framing, registering the schema under ``<topic>-value``."""
        from confluent_kafka.serialization import MessageField, SerializationContext

        prefix = self._fast_prefixes.get((contract, topic))
        if prefix is not None:
            try:
                return prefix + self._compiled[contract].write(record)
            except Exception:  # the serializer below writes it, or raises as it always did
                pass
        serializer = self._serializers.get(contract)
        if serializer is None:
            raise EncodeError(f"unknown contract {contract!r}", code="unknown_contract")
        try:
            data: bytes | None = serializer(record, SerializationContext(topic, MessageField.VALUE))
        except Exception as exc:  # the serializer mixes registry, HTTP and fastavro errors
            raise _registry_error(
                exc, f"cannot encode {contract} for {topic}", EncodeError
            ) from exc
        if data is None:
            raise EncodeError(f"cannot encode {contract} for {topic}: the record is None")
        if prefix is None and contract in self._compiled and data[:1] == b"\x00":
            with contextlib.suppress(Exception):  # a record the fast path cannot write
                if self._compiled[contract].write(record) == data[5:]:
                    self._fast_prefixes[(contract, topic)] = bytes(data[:5])
                    self._fast_ids[(contract, bytes(data[1:5]))] = True
        return data

    def decode(self, contract: str, data: bytes | None, topic: str) -> dict[str, Any]:
        """The ``contract`` record in Confluent-framed ``data``, in the latest version's shape."""
        from confluent_kafka.serialization import MessageField, SerializationContext

        if (
            type(data) is bytes
            and data[:1] == b"\x00"
            and self._fast_ids.get((contract, data[1:5]))
        ):
            try:
                return self._compiled[contract].read(data, 5)
            except Exception:  # corrupt or unusual: the deserializer below decides
                pass
        if not data:
            raise DecodeError(f"empty value on {topic}: no {contract} to decode", code="empty")
        deserializer = self._deserializers.get(contract)
        if deserializer is None:
            raise DecodeError(f"unknown contract {contract!r}", code="wrong_contract")
        if data[:1] != b"\x00":
            hint = (
                "it is single-object Avro: is SCHEMA_REGISTRY_URL set here but not where the "
                "record was produced?"
                if data[:2] == SINGLE_OBJECT_MARKER
                else f"it starts with {bytes(data[:2]).hex()}"
            )
            raise DecodeError(
                f"value on {topic} is not Schema Registry framed: {hint}", code="bad_marker"
            )
        try:
            record = deserializer(data, SerializationContext(topic, MessageField.VALUE))
        except Exception as exc:  # the deserializer mixes registry, HTTP and fastavro errors
            raise _registry_error(exc, f"cannot decode {contract} on {topic}", DecodeError) from exc
        if not isinstance(record, dict):
            raise DecodeError(f"value on {topic} is not a {contract} record", code="wrong_contract")
        if (contract, bytes(data[1:5])) not in self._fast_ids and contract in self._compiled:
            self._fast_ids[(contract, bytes(data[1:5]))] = self._is_latest(contract, data[1:5])
        # The registry's schema keeps its logical types, so fastavro hands back datetimes;
        # callers get int milliseconds from either codec.
        result: dict[str, Any] = _millis(record)
        return result

    def _is_latest(self, contract: str, schema_id: bytes) -> bool:
        """Whether the registry's schema ``schema_id`` is ``contract``'s latest version (the
        deserializer just fetched it, so the client answers from its cache)."""
        try:
            text = self._client.get_schema(int.from_bytes(schema_id, "big")).schema_str
            return text is not None and fingerprint(text) == self._latest[contract]
        except Exception:  # unknown here: keep the deserializer for this id
            return False


def _is_transport_error(exc: Exception) -> bool:
    """Whether ``exc`` is a network failure of the registry's HTTP client.

    Newer confluent-kafka clients use ``httpx2`` and older ones ``httpx``; whichever is in use
    is already imported, so look in ``sys.modules`` rather than import either.
    """
    if isinstance(exc, OSError):
        return True
    for name in ("httpx2", "httpx"):
        module = sys.modules.get(name)
        if module is not None and isinstance(exc, module.TransportError):
            return True
    return False


def _registry_error(
    exc: Exception, what: str, permanent: type[EncodeError] | type[DecodeError]
) -> SwitchboardError:
    """Map an error from the registry serializers onto the taxonomy.

    Unreachable or failing registries are transient and bad credentials fatal: either way the
    record is fine, and dead-lettering it would only move the outage into the DLQ.
    """
    from confluent_kafka.schema_registry.error import SchemaRegistryError
    from fastavro.read import SchemaResolutionError

    if _is_transport_error(exc):
        return TransientError(
            f"{what}: schema registry unreachable: {exc}", code="registry_unavailable"
        )
    if isinstance(exc, SchemaRegistryError):
        status = exc.http_status_code
        if status in (401, 403):
            return ConfigError(f"{what}: schema registry refused our credentials: {exc}")
        if status == 409 and permanent is EncodeError:
            return ConfigError(f"{what}: the registry rejects the schema as incompatible: {exc}")
        if status == 404 and permanent is DecodeError:
            return DecodeError(
                f"{what}: writer schema not in the registry: {exc}", code="unknown_schema"
            )
        if status >= 500 or status in (408, 429):
            return TransientError(
                f"{what}: schema registry error: {exc}", code="registry_unavailable"
            )
    if permanent is EncodeError:
        return EncodeError(f"{what}: {type(exc).__name__}: {exc}")
    if isinstance(exc, SchemaResolutionError):
        # The writer schema behind the id cannot be read as this contract.
        return DecodeError(f"{what}: {exc}", code="wrong_contract")
    return DecodeError(f"{what}: {type(exc).__name__}: {exc}", code="corrupt_body")


def make_codec(
    schema_registry_url: str | None, registry_conf: Mapping[str, Any] | None = None
) -> Codec:
    """The registry codec when a registry URL is configured, else single-object encoding."""
    if schema_registry_url:
        return RegistryCodec(schema_registry_url, registry_conf)
    return SingleObjectCodec()
