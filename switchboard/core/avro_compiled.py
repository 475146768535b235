"""Readers and writers compiled for one Avro record schema, bit for bit fastavro's encoding.

``SingleObjectCodec`` (``serde``) reads and writes the same few record shapes millions of times;
fastavro interprets the parsed schema on every call (a dict lookup and a type dispatch per
field). ``compile_record`` turns a record schema into two plain Python functions with one
straight-line block per field (zigzag varints with a one-byte fast path, length-prefixed
strings, ``["null", T]`` unions, enums, maps, arrays and nested records), generated as source
once, at start-up, from the ``.avsc``.

The functions are a fast path, never the authority: they raise (any exception) on anything
they do not handle exactly as fastavro's ``schemaless_writer(..., strict_allow_default=True)``
and ``schemaless_reader`` would, and ``serde`` then runs fastavro, which writes the record or
raises the error callers see today. So a record either takes the fast path and gets fastavro's
bytes, or takes fastavro's path. A schema with a type not compiled here (float, double,
boolean, fixed, unions other than null and one type, recursive records) raises ``Unsupported``
and keeps fastavro for everything.
"""

from __future__ import annotations

import keyword
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["CompiledRecord", "Unsupported", "compile_record"]

_LONG_MIN = -(1 << 63)
_LONG_MAX = (1 << 63) - 1
#: Encoded lengths 0..4095: most strings, maps and arrays need no varint loop.
_LEN_BYTES_MAX = 4096


class Unsupported(Exception):
    """Raised when a schema uses a type the compiler does not specialise (fastavro serves it)."""


#: Zigzagged values in 14-bit groups, by table: two varint bytes with the continuation bit set
#: (``_GROUPS``), and the last group's minimal encoding (``_LAST``, one or two bytes). A
#: millisecond timestamp (six varint bytes) is two lookups and a join instead of a six-turn loop
#: per byte (0.59 against 1.27 µs here); the tables cost ~1.4 MB per process.
_GROUP_BITS = 14
_GROUP_MASK = (1 << _GROUP_BITS) - 1
_GROUPS = tuple(bytes(((z & 0x7F) | 0x80, ((z >> 7) & 0x7F) | 0x80)) for z in range(1 << 14))
_LAST = tuple(
    bytes((z,)) if z < 0x80 else bytes(((z & 0x7F) | 0x80, z >> 7)) for z in range(1 << 14)
)


def _encode_long(n: int) -> bytes:
    """``n`` as an Avro long: zigzag, then base-128 varint, least significant group first."""
    if not _LONG_MIN <= n <= _LONG_MAX:
        raise OverflowError(f"{n} does not fit an Avro long")
    z = (n << 1) ^ (n >> 63)
    if z <= _GROUP_MASK:
        return _LAST[z]
    out = _GROUPS[z & _GROUP_MASK]
    z >>= _GROUP_BITS
    while z > _GROUP_MASK:
        out += _GROUPS[z & _GROUP_MASK]
        z >>= _GROUP_BITS
    return out + _LAST[z]


_SMALL = tuple(_encode_long(n) for n in range(-64, 64))
_LENGTHS = tuple(_encode_long(n) for n in range(_LEN_BYTES_MAX))


#: A one-byte varint's value (zigzag decoded), by the byte: one index instead of four
#: operations, for most lengths, enums and union branches (a request's decode 2.75 -> 2.52 µs).
_ZIGZAG = tuple((b >> 1) ^ -(b & 1) for b in range(128))


def _read_long_tail(data: bytes, pos: int, first: int) -> tuple[int, int]:
    """The rest of a varint whose first byte ``first`` had the continuation bit set."""
    z = first & 0x7F
    shift = 7
    while True:
        b = data[pos]
        pos += 1
        z |= (b & 0x7F) << shift
        if b < 0x80:
            break
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 10 bytes")
    n = (z >> 1) ^ -(z & 1)
    if not _LONG_MIN <= n <= _LONG_MAX:
        raise ValueError("varint does not fit an Avro long")
    return n, pos


@dataclass(frozen=True)
class CompiledRecord:
    """The compiled functions of one record schema."""

    #: ``read(data, pos)``: the record whose body starts at ``data[pos]`` and ends exactly at
    #: the end of ``data`` (bytes left over raise).
    read: Callable[[bytes, int], dict[str, Any]]
    #: ``write(record)``: ``prefix`` + the Avro body of ``record`` (missing fields take their
    #: schema defaults; an unknown field raises, as fastavro's ``strict_allow_default``).
    write: Callable[[Mapping[str, Any]], bytes]
    #: The generated source, for reading and debugging.
    source: str


_MISSING = object()
#: A named type's enclosing namespace, and the generated source lines.
Ns = str | None
Lines = list[str]


class _Compiler:
    """Emits the source of one reader and one writer; named types resolve by (full) name."""

    def __init__(self) -> None:
        self.consts: dict[str, Any] = {
            "_read_long_tail": _read_long_tail,
            "_ZIGZAG": _ZIGZAG,
            "_encode_long": _encode_long,
            "_SMALL": _SMALL,
            "_LENGTHS": _LENGTHS,
            "_MISSING": _MISSING,
        }
        self.named: dict[str, Any] = {}
        self._active: set[str] = set()
        self._counter = 0

    def var(self, stem: str) -> str:
        self._counter += 1
        return f"{stem}{self._counter}"

    def const(self, stem: str, value: Any) -> str:
        name = self.var(f"_{stem}")
        self.consts[name] = value
        return name

    def resolve(self, schema: Any, namespace: str | None) -> tuple[Any, str | None]:
        """The definition behind a name reference, and the namespace it was defined in."""
        if isinstance(schema, str) and schema not in _PRIMITIVES:
            full = schema if "." in schema or namespace is None else f"{namespace}.{schema}"
            found = self.named.get(full, self.named.get(schema))
            if found is None:
                raise Unsupported(f"unknown named type {schema!r}")
            return found
        if isinstance(schema, dict) and schema.get("type") in _PRIMITIVES:
            return schema["type"], namespace
        return schema, namespace

    def define(self, schema: dict[str, Any], namespace: str | None) -> str | None:
        name = schema["name"]
        space = schema.get("namespace", namespace)
        full = name if "." in name or not space else f"{space}.{name}"
        if "." in full:
            space = full.rsplit(".", 1)[0]
        self.named[full] = (schema, space)
        self.named.setdefault(name.rsplit(".", 1)[-1], (schema, space))
        return space

    # --- readers ---------------------------------------------------------------------

    def read_varint(self, lines: list[str], pad: str, target: str) -> None:
        b = self.var("b")
        lines += [
            f"{pad}{b} = data[pos]",
            f"{pad}pos += 1",
            f"{pad}if {b} < 128:",
            f"{pad}    {target} = _ZIGZAG[{b}]",
            f"{pad}else:",
            f"{pad}    {target}, pos = _read_long_tail(data, pos, {b})",
        ]

    def read_sized(self, lines: list[str], pad: str, target: str, text: bool) -> None:
        # A length past the end needs no check of its own: the slice comes up short, ``pos``
        # passes the end, and the next read (or the final ``pos != size``) raises.
        n, end = self.var("n"), self.var("end")
        self.read_varint(lines, pad, n)
        lines += [
            f"{pad}if {n} < 0:",
            f"{pad}    raise ValueError('negative length')",
            f"{pad}{end} = pos + {n}",
            f"{pad}{target} = data[pos:{end}]" + (".decode()" if text else ""),
            f"{pad}pos = {end}",
        ]

    def emit(
        self, mode: str, schema: Any, namespace: str | None, lines: list[str], pad: str, name: str
    ) -> None:
        """The code that reads into (``mode`` "read") or writes (``"write"``) variable ``name``."""
        schema, namespace = self.resolve(schema, namespace)
        getattr(self, f"{mode}_{_kind(schema)}")(schema, namespace, lines, pad, name)

    def read(self, schema: Any, namespace: str | None, lines: list[str], pad: str, t: str) -> None:
        self.emit("read", schema, namespace, lines, pad, t)

    def read_null(self, schema: Any, namespace: Ns, lines: Lines, pad: str, t: str) -> None:
        lines.append(f"{pad}{t} = None")

    def read_long(self, schema: Any, namespace: Ns, lines: Lines, pad: str, t: str) -> None:
        self.read_varint(lines, pad, t)

    def read_string(self, schema: Any, namespace: Ns, lines: Lines, pad: str, t: str) -> None:
        self.read_sized(lines, pad, t, text=schema == "string")

    read_bytes = read_string

    def read_union(self, schema: Any, namespace: Ns, lines: Lines, pad: str, t: str) -> None:
        # The branch index is one byte (0 or 2, zigzag) in any canonical encoding; anything
        # else raises, and fastavro reads it.
        null_first, other = _nullable(schema)
        b = self.var("b")
        lines.append(f"{pad}{b} = data[pos]")
        lines.append(f"{pad}pos += 1")
        lines.append(f"{pad}if {b} == {0 if null_first else 2}:")
        lines.append(f"{pad}    {t} = None")
        lines.append(f"{pad}elif {b} == {2 if null_first else 0}:")
        self.read(other, namespace, lines, pad + "    ", t)
        lines.append(f"{pad}else:")
        lines.append(f"{pad}    raise ValueError('union branch out of range')")

    def read_enum(self, schema: Any, namespace: Ns, lines: Lines, pad: str, t: str) -> None:
        self.define(schema, namespace)
        symbols = self.const("symbols", tuple(schema["symbols"]))
        i = self.var("i")
        self.read_varint(lines, pad, i)
        lines.append(f"{pad}if {i} < 0:")
        lines.append(f"{pad}    raise ValueError('negative enum index')")
        lines.append(f"{pad}{t} = {symbols}[{i}]")

    def read_blocks(self, schema: Any, namespace: Ns, lines: Lines, pad: str, t: str) -> None:
        is_map = schema["type"] == "map"
        count, skipped, item, key = (
            self.var("count"),
            self.var("skip"),
            self.var("x"),
            self.var("k"),
        )
        lines.append(f"{pad}{t} = {{}}" if is_map else f"{pad}{t} = []")
        lines.append(f"{pad}while True:")
        inner = pad + "    "
        self.read_varint(lines, inner, count)
        lines += [
            f"{inner}if {count} == 0:",
            f"{inner}    break",
            f"{inner}if {count} < 0:",  # a block that also gives its size in bytes
            f"{inner}    {count} = -{count}",
        ]
        self.read_varint(lines, inner + "    ", skipped)
        lines.append(f"{inner}for _ in range({count}):")
        body = inner + "    "
        if is_map:
            self.read_sized(lines, body, key, text=True)
            self.read(schema["values"], namespace, lines, body, item)
            lines.append(f"{body}{t}[{key}] = {item}")
        else:
            self.read(schema["items"], namespace, lines, body, item)
            lines.append(f"{body}{t}.append({item})")

    def read_record(self, schema: Any, namespace: Ns, lines: Lines, pad: str, t: str) -> None:
        namespace = self._enter(schema, namespace)
        values = []
        for field in schema["fields"]:
            v = self.var("v")
            self.read(field["type"], namespace, lines, pad, v)
            values.append(f"{field['name']!r}: {v}")
        lines.append(f"{pad}{t} = {{{', '.join(values)}}}")
        self._active.discard(schema["name"])

    # --- writers ---------------------------------------------------------------------

    def write(self, schema: Any, namespace: str | None, lines: list[str], pad: str, v: str) -> None:
        self.emit("write", schema, namespace, lines, pad, v)

    def write_null(self, schema: Any, namespace: Ns, lines: Lines, pad: str, v: str) -> None:
        lines.append(f"{pad}if {v} is not None:")
        lines.append(f"{pad}    raise TypeError('null field with a value')")

    def write_long(self, schema: Any, namespace: Ns, lines: Lines, pad: str, v: str) -> None:
        lines.append(f"{pad}out += _SMALL[{v} + 64] if -64 <= {v} < 64 else _encode_long({v})")

    def write_string(self, schema: Any, namespace: Ns, lines: Lines, pad: str, v: str) -> None:
        b = self.var("b")
        lines.append(f"{pad}{b} = {v}.encode()")
        self.write_length(lines, pad, f"len({b})")
        lines.append(f"{pad}out += {b}")

    def write_bytes(self, schema: Any, namespace: Ns, lines: Lines, pad: str, v: str) -> None:
        self.write_length(lines, pad, f"len({v})")
        lines.append(f"{pad}out += {v}")

    def write_union(self, schema: Any, namespace: Ns, lines: Lines, pad: str, v: str) -> None:
        null_first, other = _nullable(schema)
        null_branch, other_branch = (b"\x00", b"\x02") if null_first else (b"\x02", b"\x00")
        lines.append(f"{pad}if {v} is None:")
        lines.append(f"{pad}    out += {null_branch!r}")
        lines.append(f"{pad}else:")
        lines.append(f"{pad}    out += {other_branch!r}")
        self.write(other, namespace, lines, pad + "    ", v)

    def write_enum(self, schema: Any, namespace: Ns, lines: Lines, pad: str, v: str) -> None:
        self.define(schema, namespace)
        index = self.const("index", {s: _encode_long(i) for i, s in enumerate(schema["symbols"])})
        lines.append(f"{pad}out += {index}[{v}]")

    def write_length(self, lines: list[str], pad: str, expr: str) -> None:
        n = self.var("n")
        lines.append(f"{pad}{n} = {expr}")
        lines.append(f"{pad}out += _LENGTHS[{n}] if {n} < {_LEN_BYTES_MAX} else _encode_long({n})")

    def write_blocks(self, schema: Any, namespace: Ns, lines: Lines, pad: str, v: str) -> None:
        # fastavro writes one block (a positive count) for a non-empty map or array, then 0.
        n, key, item = self.var("n"), self.var("k"), self.var("x")
        lines.append(f"{pad}{n} = len({v})")
        lines.append(f"{pad}if {n}:")
        inner = pad + "    "
        self.write_length(lines, inner, n)
        if schema["type"] == "map":
            lines.append(f"{inner}for {key}, {item} in {v}.items():")
            self.write("string", namespace, lines, inner + "    ", key)
            self.write(schema["values"], namespace, lines, inner + "    ", item)
        else:
            lines.append(f"{inner}for {item} in {v}:")
            self.write(schema["items"], namespace, lines, inner + "    ", item)
        lines.append(f"{pad}out += b'\\x00'")

    def write_record(self, schema: Any, namespace: Ns, lines: Lines, pad: str, v: str) -> None:
        namespace = self._enter(schema, namespace)
        # No key beyond the schema's (fastavro's strict_allow_default): every field is looked
        # up, so the record has none other exactly when its size is the fields found.
        present = self.var("present")
        lines.append(f"{pad}{present} = {len(schema['fields'])}")
        for field in schema["fields"]:
            x = self.var("f")
            name = field["name"]
            if "default" not in field:
                lines.append(f"{pad}{x} = {v}[{name!r}]")
                self.write(field["type"], namespace, lines, pad, x)
                continue
            default = self.const("default", self._default_bytes(field["type"], namespace, field))
            lines.append(f"{pad}{x} = {v}.get({name!r}, _MISSING)")
            lines.append(f"{pad}if {x} is _MISSING:")
            lines.append(f"{pad}    out += {default}")
            lines.append(f"{pad}    {present} -= 1")
            lines.append(f"{pad}else:")
            self.write(field["type"], namespace, lines, pad + "    ", x)
        lines.append(f"{pad}if len({v}) != {present}:")
        lines.append(f"{pad}    raise ValueError('a field the schema does not know')")
        self._active.discard(schema["name"])

    def write_complete(self, schema: Any, lines: Lines, pad: str, v: str) -> None:
        """The top level's shortcut for a complete record (one decoded, or built whole, most
        often): as many keys as fields, each found by name, means no key is unknown and no
        default is needed. A missing field raises KeyError, so fastavro takes the record."""
        namespace = self._enter(schema, None)
        lines.append(f"{pad}if len({v}) == {len(schema['fields'])}:")
        for field in schema["fields"]:
            x = self.var("f")
            lines.append(f"{pad}    {x} = {v}[{field['name']!r}]")
            self.write(field["type"], namespace, lines, pad + "    ", x)
        lines.append(f"{pad}    return bytes(out)")
        self._active.discard(schema["name"])

    def _default_bytes(self, schema: Any, namespace: str | None, field: dict[str, Any]) -> bytes:
        """A field's default, encoded once, by a writer compiled for the field's type alone."""
        lines = ["def write_default(value):", "    out = bytearray()"]
        self.write(schema, namespace, lines, "    ", "value")
        lines.append("    return bytes(out)")
        scope = dict(self.consts)
        exec("\n".join(lines), scope)
        value: bytes = scope["write_default"](field["default"])
        return value

    def _enter(self, schema: dict[str, Any], namespace: str | None) -> str | None:
        if schema["name"] in self._active:
            raise Unsupported(f"recursive record {schema['name']!r}")
        for field in schema["fields"]:
            if not field["name"].isidentifier() or keyword.iskeyword(field["name"]):
                # Names only ever appear as repr() literals, but keep the generated code plain.
                raise Unsupported(f"field name {field['name']!r}")
        self._active.add(schema["name"])
        return self.define(schema, namespace)


_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
_KINDS = {"null": "null", "int": "long", "long": "long", "string": "string", "bytes": "bytes"}


def _kind(schema: Any) -> str:
    """Which ``read_*``/``write_*`` method compiles ``schema`` (a resolved type)."""
    if isinstance(schema, str) and schema in _KINDS:
        return _KINDS[schema]
    if isinstance(schema, list):
        return "union"
    kind = schema.get("type") if isinstance(schema, dict) else None
    if kind in ("enum", "record"):
        return str(kind)
    if kind in ("map", "array"):
        return "blocks"
    raise Unsupported(f"type {kind or schema!r}")


def _nullable(union: list[Any]) -> tuple[bool, Any]:
    """``(null is the first branch, the other branch)`` of a two-branch union with null."""
    if len(union) != 2 or "null" not in union or union[0] == union[1]:
        raise Unsupported(f"union {union!r}")
    return union[0] == "null", union[1] if union[0] == "null" else union[0]


def compile_record(schema: Mapping[str, Any], prefix: bytes = b"") -> CompiledRecord:
    """The reader and writer of record ``schema`` (parsed JSON, logical types removed).

    ``prefix`` opens every written value (the single-object header). Raises ``Unsupported``
    when the schema needs a type compiled here.
    """
    if not isinstance(schema, Mapping) or schema.get("type") != "record":
        raise Unsupported("not a record schema")
    reader, writer = _Compiler(), _Compiler()
    read_lines = ["def read(data, pos):", "    size = len(data)"]
    reader.read_record(dict(schema), None, read_lines, "    ", "record")
    read_lines += [
        "    if pos != size:",
        "        raise ValueError('bytes left after the record')",
        "    return record",
    ]
    write_lines = ["def write(record):", f"    out = bytearray({prefix!r})"]
    writer.write_complete(dict(schema), write_lines, "    ", "record")
    writer.write_record(dict(schema), None, write_lines, "    ", "record")
    write_lines.append("    return bytes(out)")
    source = "\n".join(read_lines) + "\n\n\n" + "\n".join(write_lines) + "\n"
    scope = {**reader.consts, **writer.consts}
    exec(compile(source, f"<avro {schema.get('name')}>", "exec"), scope)
    return CompiledRecord(read=scope["read"], write=scope["write"], source=source)
