"""Content encryption's envelope: sealed fields open only in their own record, field and key."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest

import producers.client as client_module
from producers.client import build_request
from switchboard.core.envelope import (
    PREFIX,
    KeyringError,
    KeyringSource,
    KeyUnavailable,
    content_key_texts,
    encrypting,
    keyring_from_json,
    load_keyring,
    parse_keyring,
    sealed_key_id,
)
from switchboard.core.errors import DecodeError, ErrorClass, ProcessStop
from switchboard.core.serde import REQUEST, RESPONSE, make_codec
from switchboard.core.settings import Settings

TOPIC = "t"


def new_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def ring(primary: str, *ids: str, keys: dict[str, str] | None = None) -> KeyringSource:
    keys = keys or {}
    for key_id in (*ids, primary):
        keys.setdefault(key_id, new_key())
    return KeyringSource(parse_keyring({"keys": keys, "primary": primary}, "test"))


def request(**kwargs: object) -> dict[str, object]:
    return build_request(
        "/api how do I page a large table?",
        metadata={"review.context": "chapter 3: the secret plan", "kind": "review"},
        **kwargs,  # type: ignore[arg-type]
    )


def test_a_request_round_trips_with_its_content_sealed_and_its_routing_in_clear() -> None:
    codec = encrypting(make_codec(None), ring("k1"))
    record = request(tenant="acme")
    value = codec.encode(REQUEST, record, TOPIC)
    assert b"page a large table" not in value and b"secret plan" not in value
    assert b"acme" in value and b"review" in value  # tenant and pipeline metadata stay clear
    raw = codec.inner.decode(REQUEST, value, TOPIC)
    assert sealed_key_id(raw["text"]) == "k1" and raw["metadata"]["kind"] == "review"
    assert sealed_key_id(raw["metadata"]["review.context"]) == "k1"
    assert codec.decode(REQUEST, value, TOPIC) == record


def test_a_client_request_names_its_key_in_its_sealed_fields_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The sealed field's ``sbenc1:<key id>:`` prefix is the one record of the key: no header
    repeats it, so none can disagree with it after a reload."""
    monkeypatch.setattr(client_module, "TopicTail", lambda *_args, **_kwargs: None)
    source = ring("k1", "k2")
    client = client_module._ClientBase({}, keyring=source)
    _request_id, out, _span = client._outbound("/api how do I page a large table?")
    assert sealed_key_id(client.codec.inner.decode(REQUEST, out.value, TOPIC)["text"]) == "k1"
    assert not [name for name, _value in out.headers if name.startswith("sb-enc")]


def test_a_response_content_is_sealed_and_its_status_is_not() -> None:
    codec = encrypting(make_codec(None), ring("k1"))
    response = {
        "request_id": "r1",
        "tenant": "acme",
        "specialist": "api",
        "status": "answered",
        "content": "use keyset pagination",
        "responded_at_ms": 1,
    }
    value = codec.encode(RESPONSE, response, TOPIC)
    assert b"keyset" not in value
    assert codec.decode(RESPONSE, value, TOPIC)["content"] == "use keyset pagination"


def test_every_field_gets_its_own_nonce() -> None:
    codec = encrypting(make_codec(None), ring("k1"))
    record = build_request("same", metadata={"a": "same"})
    raw = codec.inner.decode(REQUEST, codec.encode(REQUEST, record, TOPIC), TOPIC)
    again = codec.inner.decode(REQUEST, codec.encode(REQUEST, record, TOPIC), TOPIC)
    assert len({raw["text"], raw["metadata"]["a"], again["text"]}) == 3


def test_a_tampered_field_does_not_open() -> None:
    codec = encrypting(make_codec(None), ring("k1"))
    record = request()
    raw = codec.inner.decode(REQUEST, codec.encode(REQUEST, record, TOPIC), TOPIC)
    body = raw["text"]
    flipped = body[:-3] + ("A" if body[-3] != "A" else "B") + body[-2:]
    tampered = codec.inner.encode(REQUEST, {**raw, "text": flipped}, TOPIC)
    with pytest.raises(DecodeError, match="does not authenticate") as caught:
        codec.decode(REQUEST, tampered, TOPIC)
    assert caught.value.error_class is ErrorClass.PERMANENT  # bad bytes: the DLQ's
    cut = codec.inner.encode(REQUEST, {**raw, "text": body[:30]}, TOPIC)
    with pytest.raises(DecodeError, match="cut short"):
        codec.decode(REQUEST, cut, TOPIC)


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda raw: {**raw, "request_id": "another"}, id="another request"),
        pytest.param(lambda raw: {**raw, "prompt": raw["text"]}, id="another field"),
        pytest.param(
            lambda raw: {**raw, "metadata": {"other": raw["metadata"]["review.context"]}},
            id="another metadata key",
        ),
    ],
)
def test_a_field_moved_to_another_record_or_field_does_not_open(change: object) -> None:
    """The associated data binds each sealed field to its request id and field name."""
    codec = encrypting(make_codec(None), ring("k1"))
    raw = codec.inner.decode(REQUEST, codec.encode(REQUEST, request(), TOPIC), TOPIC)
    moved = codec.inner.encode(REQUEST, change(raw), TOPIC)  # type: ignore[operator]
    with pytest.raises(DecodeError, match="does not authenticate"):
        codec.decode(REQUEST, moved, TOPIC)


def test_a_field_relabelled_with_another_key_id_does_not_open() -> None:
    keys = {"k1": new_key(), "k2": new_key()}
    codec = encrypting(make_codec(None), ring("k1", "k2", keys=dict(keys)))
    raw = codec.inner.decode(REQUEST, codec.encode(REQUEST, request(), TOPIC), TOPIC)
    relabelled = raw["text"].replace(f"{PREFIX}k1:", f"{PREFIX}k2:", 1)
    value = codec.inner.encode(REQUEST, {**raw, "text": relabelled}, TOPIC)
    with pytest.raises(DecodeError, match="does not authenticate"):
        codec.decode(REQUEST, value, TOPIC)


def test_rotation_seals_with_the_new_primary_and_old_records_still_open() -> None:
    keys = {"k1": new_key(), "k2": new_key()}
    old = encrypting(make_codec(None), ring("k1", keys={"k1": keys["k1"]}))
    before = old.encode(REQUEST, request(), TOPIC)
    rotated = encrypting(make_codec(None), ring("k2", "k1", keys=dict(keys)))
    after = rotated.encode(REQUEST, request(), TOPIC)
    assert sealed_key_id(rotated.inner.decode(REQUEST, after, TOPIC)["text"]) == "k2"
    assert rotated.decode(REQUEST, before, TOPIC)["text"].startswith("/api how")
    with pytest.raises(KeyUnavailable):
        old.decode(REQUEST, after, TOPIC)  # a process not yet given k2


def test_an_unknown_key_id_is_a_process_stop_naming_the_key_and_the_setting() -> None:
    sealed = encrypting(make_codec(None), ring("k9")).encode(REQUEST, request(), TOPIC)
    for keys in (ring("k1"), None):  # another keyring, and none at all (encryption off)
        with pytest.raises(KeyUnavailable) as caught:
            encrypting(make_codec(None), keys).decode(REQUEST, sealed, TOPIC)
        error = caught.value
        assert error.key_id == "k9" and error.error_class is ErrorClass.FATAL
        assert isinstance(error, ProcessStop) and not isinstance(error, DecodeError)  # no DLQ
        assert "'k9'" in str(error) and "SWITCHBOARD_KEYRING_FILE" in str(error)


def test_without_keys_nothing_is_sealed() -> None:
    codec = encrypting(make_codec(None))
    value = codec.encode(REQUEST, request(), TOPIC)
    assert b"page a large table" in value


def test_a_plaintext_that_looks_sealed_is_sealed_like_any_other() -> None:
    codec = encrypting(make_codec(None), ring("k1"))
    record = build_request(f"{PREFIX}k7:AAAA")
    assert codec.decode(REQUEST, codec.encode(REQUEST, record, TOPIC), TOPIC) == record


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"keys": {"k1": "c2hvcnQ="}}, "test: key 'k1' is not 32 bytes of base64"),
        ({"keys": {"k:1": new_key()}}, "no ':'"),
        ({"keys": {"k1": new_key()}, "primary": "k2"}, "primary 'k2' is not one of the keys"),
        ({"keys": {"k1": new_key()}, "extra": 1}, "extra"),
        (["k1"], "top level must be a mapping"),
    ],
)
def test_an_inconsistent_keyring_fails_with_one_line_that_never_quotes_a_key(
    data: object, message: str
) -> None:
    with pytest.raises(KeyringError, match=message) as caught:
        parse_keyring(data, "test")
    for value in (data.get("keys") or {}).values() if isinstance(data, dict) else ():
        assert value not in str(caught.value)
    assert caught.value.error_class is ErrorClass.FATAL


def test_the_primary_defaults_to_the_last_key_listed() -> None:
    keyring = keyring_from_json(json.dumps({"keys": {"old": new_key(), "new": new_key()}}))
    assert keyring.primary == "new"


def test_a_keyring_decodes_each_key_once_when_it_is_validated() -> None:
    """``key`` runs for every sealed field: it hands out the bytes decoded at load."""
    keyring = ring("k1", "k2").keyring
    assert keyring.key("k1") is keyring.key("k1") and len(keyring.key("k2") or b"") == 32
    assert keyring.key("k1") == base64.b64decode(keyring.keys["k1"].get_secret_value())
    assert keyring.key("nope") is None


def test_keyring_files_in_each_format_and_a_reload_on_change(tmp_path: Path) -> None:
    k1, k2 = new_key(), new_key()
    for name, text in (
        ("ring.json", json.dumps({"keys": {"k1": k1}, "primary": "k1"})),
        ("ring.yaml", f"primary: k1\nkeys:\n  k1: {k1}\n"),
        ("ring.toml", f'primary = "k1"\n[keys]\nk1 = "{k1}"\n'),
    ):
        (tmp_path / name).write_text(text)
        assert load_keyring(tmp_path / name).primary == "k1"
    path = tmp_path / "ring.json"
    source = KeyringSource.from_settings(Settings(keyring_file=path))
    assert not source.reload_if_changed()
    path.write_text(json.dumps({"keys": {"k1": k1, "k2": k2}, "primary": "k2"}))
    os.utime(path, ns=(1, 1))  # an mtime that surely moved, even on a coarse clock
    assert source.reload_if_changed() and source.keyring.primary == "k2"
    path.write_text("{not json")
    os.utime(path, ns=(2, 2))
    assert not source.reload_if_changed() and source.keyring.primary == "k2"  # last good one
    with pytest.raises(ValueError, match="SWITCHBOARD_KEYRING_FILE and SWITCHBOARD_ENCRYPTION_K"):
        Settings(keyring_file=path, encryption_keys="{}")
    with pytest.raises(KeyringError, match="cannot read"):
        load_keyring(tmp_path / "missing.json")


def test_settings_mask_the_keys_and_the_log_redactor_knows_them(tmp_path: Path) -> None:
    key = new_key()
    keys = json.dumps({"keys": {"k1": key}, "primary": "k1"})
    settings = Settings(encryption_keys=keys)
    assert key not in json.dumps(settings.masked())
    assert content_key_texts(settings) == [key]
    path = tmp_path / "ring.json"
    path.write_text(keys)
    assert content_key_texts(Settings(keyring_file=path)) == [key]
    with pytest.raises(ValueError, match="trace_content"):
        Settings(encryption_keys=keys, trace_content=True)


def _salt(codec: object, value: bytes) -> bytes:
    raw = codec.inner.decode(REQUEST, value, TOPIC)  # type: ignore[attr-defined]
    token = raw["text"].rsplit(":", 1)[1]
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))[:16]


def test_a_codec_reuses_its_data_key_until_the_primary_changes_and_forgets_removed_keys() -> None:
    keys = {"k1": new_key(), "k2": new_key()}
    source = ring("k1", "k2", keys=dict(keys))
    source.keyring = parse_keyring({"keys": keys, "primary": "k1"}, "test")
    codec = encrypting(make_codec(None), source)
    first, second = (codec.encode(REQUEST, request(), TOPIC) for _ in range(2))
    assert _salt(codec, first) == _salt(codec, second)  # one HKDF for both
    source.keyring = parse_keyring({"keys": keys, "primary": "k2"}, "test")
    third = codec.encode(REQUEST, request(), TOPIC)
    assert _salt(codec, third) != _salt(codec, first)
    assert codec.decode(REQUEST, first, TOPIC)["text"].startswith("/api")  # cached now
    source.keyring = parse_keyring({"keys": {"k2": keys["k2"]}}, "test")
    with pytest.raises(KeyUnavailable, match="'k1'"):
        codec.decode(REQUEST, first, TOPIC)  # its data key is cached, its key is gone
    assert codec.decode(REQUEST, third, TOPIC)["text"].startswith("/api")
