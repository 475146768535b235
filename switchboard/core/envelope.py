"""Content encryption: the prompt and answer fields sealed with AES-256-GCM (optional, off by
default; docs/security.md, "Content encryption").

A sealed field is a string in the same Avro field (the schemas do not change)::

    sbenc1:<key id>:<base64url(salt[16] | nonce[12] | ciphertext | tag[16])>

- ``key id`` names the keyring key (the key-encryption key) the field was sealed under: old
  ids keep decrypting after a rotation, new fields use the keyring's ``primary``.
- The field is not encrypted with the keyring key itself but with a data key derived from it,
  ``HKDF-SHA256(key, salt, "sbenc1" + key id)`` with a random 16-byte salt. A writer (one
  codec) derives a data key, seals up to ``DATA_KEY_USES`` (2^20) fields with it, each with its
  own random nonce, then derives the next (and at once when the primary changes); a reader
  keeps the data keys it derived (``DataKeys``). So AES-GCM's random-nonce budget (2^32
  messages a key, reached in weeks at 1000 requests a second with several fields each) never
  binds the keyring key, rotation is never forced by volume, and HKDF runs once per writer
  epoch instead of once per record and hop. A random data key wrapped with RFC 3394 AES-KW
  would be the KMS shape, but ``cryptography``'s AES-KW costs ~150 us a key here against ~15
  us for HKDF; the ``sbenc1`` version prefix leaves room for it.
- The associated data binds the ciphertext to the scheme, the key id, the contract, the
  record's request id and the field's name: a sealed field moved to another record or field,
  or relabelled with another key id, does not open.

What is sealed (``SEALED_FIELDS``): a request's ``text`` and ``prompt`` and its metadata values
(except the pipeline's own keys, ``CLEAR_METADATA_KEYS``), a response's ``content``. Ids,
tenant, specialist, status, usage, timings, error codes and messages and every header stay in
clear: the router routes, budgets and answers with them, and an operator triages dead letters
with them without the key.

``EncryptingCodec`` wraps any ``Codec``: ``encode`` seals (when a keyring with a primary is
configured), ``decode`` opens. It opens sealed fields even with encryption off and raises
``KeyUnavailable`` when it has no such key, so a process never hands ciphertext to a model as
if it were a prompt.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import re
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    model_validator,
)

from switchboard.core.errors import ConfigError, DecodeError, ProcessStop
from switchboard.core.filewatch import ReloadedFromFile, read_config_file
from switchboard.core.findings import META_FORMAT, META_JOB, META_KIND, META_START_LINE
from switchboard.core.serde import REQUEST, RESPONSE, Codec, make_codec
from switchboard.core.settings import Settings

log = logging.getLogger(__name__)

#: What a sealed field starts with; the version names the format above.
SCHEME: Final = "sbenc1"
PREFIX: Final = SCHEME + ":"
_PREFIX_BYTES: Final = PREFIX.encode()
#: A key id: what may appear between the colons of a sealed field (and in a header).
KEY_ID_PATTERN: Final = re.compile(r"[A-Za-z0-9._-]{1,64}")
KEY_BYTES: Final = 32
SALT_BYTES: Final = 16
NONCE_BYTES: Final = 12
#: Fields one data key seals before its writer derives the next: far below AES-GCM's
#: random-nonce bound of 2^32 messages a key (nonce collision odds ~2^-57 at this count).
DATA_KEY_USES: Final = 1 << 20
#: Data keys a codec keeps for opening (each writer's current one, a few writers at a time).
DATA_KEY_CACHE: Final = 1024
#: Free-text fields of each contract that are sealed (metadata is handled per value).
SEALED_FIELDS: Final[Mapping[str, tuple[str, ...]]] = {
    REQUEST: ("text", "prompt"),
    RESPONSE: ("content",),
}
#: Request metadata keys the pipeline writes or routes on, kept in clear: everything else in
#: metadata is the caller's (a review's path, headings and context) and sealed.
CLEAR_METADATA_KEYS: Final = frozenset(
    {"routed_at_ms", "route_ms", META_KIND, META_JOB, META_START_LINE, META_FORMAT}
)
#: The settings an operator sets to give a process its keys (named in every key error).
KEY_SETTINGS: Final = "SWITCHBOARD_KEYRING_FILE or SWITCHBOARD_ENCRYPTION_KEYS"


class KeyringError(ConfigError):
    """Raised when the configured keys cannot be used (bad file, a key that is not 32 bytes of
    base64, a primary that is not one of the keys); the message never quotes a key."""

    code = "bad_keyring"


class KeyUnavailable(ProcessStop):
    """Raised when a field is sealed with a key id this process's keyring does not hold.

    The bytes are fine; this process cannot read them. The pipeline's runtime stops the
    process with the record uncommitted, so it waits in Kafka for a process that holds the key
    instead of being dead-lettered with everything else sealed with it; tools that show
    records (``dlq show``, the console) print the message in place of the record.
    """

    code = "encryption_key_unavailable"

    def __init__(self, key_id: str) -> None:
        super().__init__(
            f"content encrypted with key {key_id!r}, which this process does not hold: add it "
            f"to the keyring ({KEY_SETTINGS})"
        )
        self.key_id = key_id


class Keyring(BaseModel):
    """Key id -> 32-byte key (base64 in the file), and the id new fields are sealed with."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    keys: dict[str, SecretStr] = Field(default_factory=dict)
    #: The key new fields are sealed with; None with keys given: the last one listed.
    primary: str | None = None
    #: Each key decoded, once, when the keyring is validated (``key`` runs on every field).
    _raw: dict[str, bytes] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> Keyring:
        raws = {}
        for key_id, secret in self.keys.items():
            if not KEY_ID_PATTERN.fullmatch(key_id):
                raise ValueError(
                    f"key id {key_id!r}: use 1-64 letters, digits, '.', '_' or '-' (no ':')"
                )
            try:
                raw = base64.b64decode(secret.get_secret_value(), validate=True)
            except (binascii.Error, ValueError):
                raw = b""
            if len(raw) != KEY_BYTES:
                raise ValueError(
                    f"key {key_id!r} is not {KEY_BYTES} bytes of base64: make one with "
                    "`python -c 'import os, base64; print(base64.b64encode(os.urandom(32))"
                    ".decode())'`"
                )
            raws[key_id] = raw
        self._raw = raws
        if self.primary is not None and self.primary not in self.keys:
            raise ValueError(
                f"primary {self.primary!r} is not one of the keys ({', '.join(self.keys)})"
            )
        if self.primary is None and self.keys:
            object.__setattr__(self, "primary", list(self.keys)[-1])
        return self

    def key(self, key_id: str) -> bytes | None:
        """The raw key of ``key_id``, or None when the keyring does not hold it."""
        return self._raw.get(key_id)

    @property
    def enabled(self) -> bool:
        """Whether new fields are sealed (a primary key exists)."""
        return self.primary is not None


def parse_keyring(data: Any, source: str) -> Keyring:
    """Validate ``data`` (a mapping) as a keyring; ``KeyringError`` names ``source`` and the key
    at fault (pydantic's own message would quote the rejected value: a key)."""
    if not isinstance(data, dict):
        raise KeyringError(f"{source}: the top level must be a mapping with 'keys' and 'primary'")
    try:
        return Keyring.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        raise KeyringError(f"{source}: {where + ': ' if where else ''}{message}") from None


def keyring_from_json(text: str, source: str = "SWITCHBOARD_ENCRYPTION_KEYS") -> Keyring:
    """The keyring in JSON ``text`` (``{"keys": {"k1": "<base64>"}, "primary": "k1"}``)."""
    try:
        data = json.loads(text)
    except ValueError:
        raise KeyringError(
            f'{source} is not JSON: give {{"keys": {{"<id>": "<base64 of 32 bytes>"}}, '
            '"primary": "<id>"}'
        ) from None
    return parse_keyring(data, source)


def load_keyring(path: Path) -> Keyring:
    """Read and validate a keyring file (JSON, YAML or TOML, by its extension)."""
    source = f"keyring file {path}"
    data = read_config_file(
        path, source, KeyringError, formats=("json", "yaml", "toml"), quote_parse_errors=False
    )
    return parse_keyring(data, source)


class _HeldKeys:
    """Every key (as configured: base64) that a keyring of this process has held, for the log
    redactor: a key a reload brings is masked from before it is used, and a key a reload
    removes stays masked (it is still a secret)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        #: Replaced whole on a change, so a reader needs no lock and can tell a change by
        #: identity.
        self.texts: frozenset[str] = frozenset()

    def add(self, keyring: Keyring) -> None:
        found = {secret.get_secret_value() for secret in keyring.keys.values()}
        with self._lock:
            if not found <= self.texts:
                self.texts = self.texts | found


_held_keys = _HeldKeys()


def held_key_texts() -> frozenset[str]:
    """The keys (base64) every keyring of this process has held so far; a new set object
    after each change."""
    return _held_keys.texts


class KeyringSource(ReloadedFromFile):
    """The current keyring: fixed, or a file reloaded when it changes (a bad edit keeps the
    last good keyring and logs one line; ``keyring`` is one reference swap per reload). Its
    keys, the reloaded ones too, join ``held_key_texts`` before they are used."""

    def __init__(self, keyring: Keyring, path: Path | None = None) -> None:
        super().__init__(path, "keyring-reload")
        _held_keys.add(keyring)
        self.keyring = keyring

    @classmethod
    def from_settings(cls, settings: Settings) -> KeyringSource:
        """The keyring ``settings`` configure (none: an empty one, which seals nothing; the
        settings refuse both a file and keys); bad keys fail start-up here with one line."""
        if settings.keyring_file is not None:
            return cls(load_keyring(settings.keyring_file), settings.keyring_file)
        if settings.encryption_keys is not None:
            return cls(keyring_from_json(settings.encryption_keys.get_secret_value()))
        return cls(Keyring())

    bad_file = KeyringError
    what = "keyring"

    def _reload(self, path: Path) -> None:
        keyring = load_keyring(path)
        _held_keys.add(keyring)  # masked in the logs before any line can hold it
        self.keyring = keyring
        log.info(
            "keyring %s reloaded: keys %s, primary %s",
            path,
            ", ".join(keyring.keys),
            keyring.primary,
        )


def _aad(key_id: str, contract: str, request_id: str, field: str) -> bytes:
    """The associated data: each part length-prefixed, so no two inputs collide."""
    out = bytearray()
    for part in (SCHEME, key_id, contract, request_id, field):
        raw = part.encode()
        out += len(raw).to_bytes(4, "big") + raw
    return bytes(out)


def _data_key(key: bytes, salt: bytes, key_id: str) -> AESGCM:
    info = (SCHEME + key_id).encode()
    return AESGCM(HKDF(hashes.SHA256(), KEY_BYTES, salt, info).derive(key))


def sealed_key_id(value: object) -> str | None:
    """The key id of a sealed field, or None when ``value`` is not one."""
    if not isinstance(value, str) or not value.startswith(PREFIX):
        return None
    key_id, sep, _body = value[len(PREFIX) :].partition(":")
    return key_id if sep else None


class _SealingKey:
    """The data key a codec seals with now: derived once, then used for up to
    ``DATA_KEY_USES`` fields, each with its own random nonce."""

    def __init__(self, key_id: str, key: bytes) -> None:
        self.key_id = key_id
        self.key = key
        self.salt = os.urandom(SALT_BYTES)
        self.aead = _data_key(key, self.salt, key_id)
        self.uses = 0

    def seal(self, contract: str, request_id: str, field: str, plaintext: str) -> str:
        self.uses += 1  # unlocked: two threads may both count one; the bound has room for it
        nonce = os.urandom(NONCE_BYTES)
        aad = _aad(self.key_id, contract, request_id, field)
        body = self.aead.encrypt(nonce, plaintext.encode(), aad)
        token = base64.urlsafe_b64encode(self.salt + nonce + body).rstrip(b"=").decode()
        return f"{PREFIX}{self.key_id}:{token}"


class DataKeys:
    """One codec's data keys: the one it seals with (a new one after ``DATA_KEY_USES`` fields
    or when the primary key changes) and the ones it opened lately (at most
    ``DATA_KEY_CACHE``), so HKDF runs once per writer epoch, not once per record and hop."""

    def __init__(self) -> None:
        self._sealing: _SealingKey | None = None
        self._opened: dict[tuple[str, bytes, bytes], AESGCM] = {}

    def sealing(self, keyring: Keyring) -> _SealingKey:
        key_id = keyring.primary
        assert key_id is not None
        key = keyring.key(key_id) or b""
        current = self._sealing
        if (
            current is None
            or current.key_id != key_id
            or current.key != key
            or current.uses >= DATA_KEY_USES
        ):
            current = self._sealing = _SealingKey(key_id, key)
        return current

    def opening(self, key_id: str, key: bytes, salt: bytes) -> AESGCM:
        """The data key of ``salt`` under ``key`` (the keyring's key of ``key_id`` now: a key
        removed from the keyring opens nothing more, cached or not)."""
        found = self._opened.get((key_id, key, salt))
        if found is None:
            if len(self._opened) >= DATA_KEY_CACHE:
                self._opened.clear()
            found = self._opened[(key_id, key, salt)] = _data_key(key, salt, key_id)
        return found


def _open_field(
    keyring: Keyring, keys: DataKeys, contract: str, request_id: str, field: str, value: str
) -> str:
    key_id, _sep, token = value[len(PREFIX) :].partition(":")
    key = keyring.key(key_id)
    if key is None:
        raise KeyUnavailable(key_id)
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) < SALT_BYTES + NONCE_BYTES + 16:
        raise DecodeError(
            f"{contract}.{field}: sealed field is cut short or not base64", code="bad_ciphertext"
        )
    salt, nonce = raw[:SALT_BYTES], raw[SALT_BYTES : SALT_BYTES + NONCE_BYTES]
    aead = keys.opening(key_id, key, salt)
    try:
        plain = aead.decrypt(
            nonce, raw[SALT_BYTES + NONCE_BYTES :], _aad(key_id, contract, request_id, field)
        )
    except InvalidTag:
        raise DecodeError(
            f"{contract}.{field}: sealed field does not authenticate with key {key_id!r} "
            "(altered, or moved from another record or field)",
            code="bad_ciphertext",
        ) from None
    try:
        return plain.decode()
    except UnicodeDecodeError as exc:
        raise DecodeError(f"{contract}.{field}: not UTF-8", code="invalid_utf8") from exc


def seal_record(
    keyring: Keyring, contract: str, record: Mapping[str, Any], keys: DataKeys | None = None
) -> dict[str, Any]:
    """``record`` with its content fields sealed under the primary key (as it is, when the
    keyring has none or the contract has no content fields); ``keys``: the codec's data keys
    (default: a fresh data key for this record alone)."""
    fields = SEALED_FIELDS.get(contract)
    if fields is None or not keyring.enabled:
        return dict(record)
    sealer = (keys or DataKeys()).sealing(keyring)
    request_id = str(record.get("request_id") or "")
    out = dict(record)
    for name in fields:
        value = out.get(name)
        if isinstance(value, str) and value:
            out[name] = sealer.seal(contract, request_id, name, value)
    metadata = out.get("metadata")
    if contract == REQUEST and metadata:
        out["metadata"] = {
            k: v
            if k in CLEAR_METADATA_KEYS or not v
            else sealer.seal(contract, request_id, "metadata/" + k, v)
            for k, v in metadata.items()
        }
    return out


def open_record(
    keyring: Keyring, contract: str, record: dict[str, Any], keys: DataKeys | None = None
) -> dict[str, Any]:
    """``record`` with its sealed fields opened (in place, and returned); ``KeyUnavailable``
    for a key id the keyring lacks, ``DecodeError`` for a field that does not authenticate."""
    fields = SEALED_FIELDS.get(contract)
    if fields is None:
        return record
    keys = keys or DataKeys()
    request_id = str(record.get("request_id") or "")
    for name in fields:
        value = record.get(name)
        if isinstance(value, str) and value.startswith(PREFIX):
            record[name] = _open_field(keyring, keys, contract, request_id, name, value)
    metadata = record.get("metadata")
    if metadata:
        for value in metadata.values():  # a loop, not any(): this runs on every decode
            if value.startswith(PREFIX):
                record["metadata"] = {
                    k: _open_field(keyring, keys, contract, request_id, "metadata/" + k, v)
                    if v.startswith(PREFIX)
                    else v
                    for k, v in metadata.items()
                }
                break
    return record


class EncryptingCodec:
    """A ``Codec`` that seals content fields on ``encode`` and opens them on ``decode``."""

    def __init__(self, inner: Codec, keys: KeyringSource) -> None:
        self.inner = inner
        self.keys = keys
        self._data_keys = DataKeys()

    def encode(self, contract: str, record: Mapping[str, Any], topic: str) -> bytes:
        keyring = self.keys.keyring
        if not keyring.enabled:  # encryption off: not even a copy of the record
            return self.inner.encode(contract, record, topic)
        sealed = seal_record(keyring, contract, record, self._data_keys)
        return self.inner.encode(contract, sealed, topic)

    def decode(self, contract: str, data: bytes | None, topic: str) -> dict[str, Any]:
        record = self.inner.decode(contract, data, topic)
        # A sealed field holds the prefix's bytes as they are (Avro strings are UTF-8): without
        # them nothing is sealed, and one scan of the bytes beats a look at every field.
        if data is None or _PREFIX_BYTES not in data:
            return record
        return open_record(self.keys.keyring, contract, record, self._data_keys)


def encrypting(codec: Codec, keys: KeyringSource | Keyring | None = None) -> EncryptingCodec:
    """``codec`` sealing with ``keys`` (none: it seals nothing but still opens, or names the
    key it lacks); an ``EncryptingCodec`` given without keys is returned as it is."""
    if isinstance(codec, EncryptingCodec):
        if keys is None:
            return codec
        codec = codec.inner
    if not isinstance(keys, KeyringSource):
        keys = KeyringSource(keys or Keyring())
    return EncryptingCodec(codec, keys)


def sealed_with(codec: Codec, contract: str, data: bytes, topic: str) -> list[str]:
    """The key ids the sealed fields of the record in ``data`` name, each once, in field order
    ([] when nothing is sealed or the bytes do not decode): read from the fields, not opened,
    so no key is needed. No header repeats them: the fields' prefixes are the one record."""
    inner = codec.inner if isinstance(codec, EncryptingCodec) else codec
    try:
        record = inner.decode(contract, data, topic)
    except DecodeError:
        return []
    values = [record.get(name) for name in SEALED_FIELDS.get(contract, ())]
    values += list((record.get("metadata") or {}).values())
    found = (sealed_key_id(value) for value in values)
    return list(dict.fromkeys(key_id for key_id in found if key_id is not None))


def keyring_of(settings: Settings) -> KeyringSource:
    """The keyring ``settings`` configure (an empty one without), its file watched for
    changes; a bad keyring fails start-up here with one line."""
    keys = KeyringSource.from_settings(settings)
    keys.start()
    return keys


def content_codec(settings: Settings, inner: Codec | None = None) -> EncryptingCodec:
    """The codec a process that reads or writes content uses: ``inner`` (default: the one
    ``settings`` pick) sealing and opening with the configured keyring."""
    return EncryptingCodec(inner or make_codec(settings.schema_registry_url), keyring_of(settings))


def content_key_texts(settings: Settings) -> list[str]:
    """The configured keys as written (base64), for the log redactor; [] when unreadable."""
    try:
        source = KeyringSource.from_settings(settings)
    except KeyringError:
        return []
    return [secret.get_secret_value() for secret in source.keyring.keys.values()]


__all__ = [
    "CLEAR_METADATA_KEYS",
    "SEALED_FIELDS",
    "DataKeys",
    "EncryptingCodec",
    "KeyUnavailable",
    "Keyring",
    "KeyringError",
    "KeyringSource",
    "content_codec",
    "content_key_texts",
    "encrypting",
    "held_key_texts",
    "keyring_from_json",
    "keyring_of",
    "load_keyring",
    "open_record",
    "seal_record",
    "sealed_key_id",
    "sealed_with",
]
