"""The tenants file: validated with one-line errors naming file and key, reloaded on change
(a bad edit keeps the last good config), and the request signature."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from switchboard.core.tenants import (
    TenantsConfig,
    TenantsFileError,
    TenantsSource,
    internal_topic,
    load_tenants,
    sign,
    signature_ok,
)

YAML = """
unknown_tenants: reject
tenants:
  acme:
    specialists: [backend, api]
    models: [claude-sonnet-5-5]
    rate_per_s: 5
    burst: 10
    tokens_per_minute: 100000
    tokens_per_day: 2000000
    dollars_per_month: 250
    max_prompt_bytes: 2000
    reply_to_prefix: acme.replies.
    require_signature: true
    signing_keys: {k2: "0123456789abcdef-new", k1: "0123456789abcdef-old"}
"""

TOML = """
unknown_tenants = "allow"
[default]
specialists = ["perf"]
[tenants.beta]
rate_per_s = 2.5
"""


def test_a_yaml_file_loads_every_field(tmp_path: Path) -> None:
    path = tmp_path / "tenants.yaml"
    path.write_text(YAML)
    acme = load_tenants(path).tenants["acme"]
    assert acme.specialists == {"backend", "api"} and acme.rate_per_s == 5 and acme.burst == 10
    assert (acme.tokens_per_day, acme.dollars_per_month, acme.max_prompt_bytes) == (
        2_000_000,
        250,
        2000,
    )
    assert acme.require_signature and acme.secret("k1") == b"0123456789abcdef-old"
    assert acme.secret("k3") is None
    assert "0123456789abcdef" not in repr(acme)  # secrets never print


def test_a_toml_file_allows_unknown_tenants_with_the_default_policy(tmp_path: Path) -> None:
    path = tmp_path / "tenants.toml"
    path.write_text(TOML)
    config = load_tenants(path)
    assert config.policy("nobody") == config.default and config.default.specialists == {"perf"}
    assert config.rate_shapes(1000, 1000) == {"beta": (2.5, 1000)}


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("t.yaml", "tenants:\n  acme:\n    rate_per_s: -1\n", "tenants.acme.rate_per_s:"),
        ("t.yaml", "tenants:\n  acme:\n    specialist: [backend]\n", "tenants.acme.specialist:"),
        ("t.yaml", "tenants:\n  a:\n    specialists: [chef]\n", "unknown specialists ['chef']"),
        ("t.yaml", "unknown_tenants: maybe\n", "unknown_tenants:"),
        ("t.yaml", "tenants: [\n", "not valid yaml"),
        ("t.toml", "tenants = [\n", "not valid toml"),
        ("t.json", "{}", "name it .yaml, .yml or .toml"),
        ("t.yaml", "tenants:\n  a:\n    signing_keys: {k: short}\n", "at least 16 characters"),
    ],
)
def test_a_bad_file_is_one_line_naming_the_file_and_the_key(
    tmp_path: Path, name: str, text: str, expected: str
) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(TenantsFileError) as raised:
        load_tenants(path)
    message = str(raised.value)
    assert "\n" not in message and str(path) in message and expected in message


def test_a_changed_file_is_reloaded_and_a_bad_edit_keeps_the_last_good_config(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "tenants.yaml"
    path.write_text("tenants:\n  acme: {}\n")
    seen: list[TenantsConfig] = []
    source = TenantsSource.from_file(path)
    source.subscribe(seen.append)
    assert not source.reload_if_changed()  # unchanged: nothing read
    path.write_text("tenants:\n  acme: {}\n  beta: {}\n")
    os.utime(path, ns=(1, 10**18))
    assert source.reload_if_changed() and set(source.config.tenants) == {"acme", "beta"}
    with caplog.at_level(logging.ERROR):
        path.write_text("tenants:\n  acme: {rate_per_s: zero}\n")
        os.utime(path, ns=(1, 2 * 10**18))
        assert not source.reload_if_changed()
    assert set(source.config.tenants) == {"acme", "beta"} and len(seen) == 2
    [line] = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert "tenants.acme.rate_per_s" in line and "keeping the last good" in line


def test_without_a_file_switchboard_tenants_still_decides() -> None:
    config = TenantsConfig.from_names({"acme"})
    assert config.policy("acme") is not None and config.policy("other") is None
    assert TenantsConfig.from_names(()).policy("anyone") is not None


def test_the_signature_covers_value_request_id_tenant_and_key_id() -> None:
    sig = sign(b"value", "r-1", "acme", "k1", b"secret")
    assert signature_ok(sig, sign(b"value", "r-1", "acme", "k1", b"secret"))
    for changed in (
        (b"valuf", "r-1", "acme", "k1", b"secret"),
        (b"value", "r-2", "acme", "k1", b"secret"),
        (b"value", "r-1", "acme2", "k1", b"secret"),
        (b"value", "r-1", "acme", "k2", b"secret"),
        (b"value", "r-1", "acme", "k1", b"other"),
    ):
        assert not signature_ok(sig, sign(*changed))
    # With routing headers (scheme v2) they are covered too, and neither scheme passes as the other.
    routing = [b"sb-specialist", b"backend"]
    routed = sign(b"value", "r-1", "acme", "k1", b"secret", routing)
    assert signature_ok(routed, sign(b"value", "r-1", "acme", "k1", b"secret", routing))
    assert not signature_ok(routed, sign(b"value", "r-1", "acme", "k1", b"secret", [b"x", b"api"]))
    assert not signature_ok(routed, sig) and not signature_ok(sig, routed)
    assert not signature_ok("not hex \udcff", sig)  # a garbled header compares, never raises


@pytest.mark.parametrize(
    ("topic", "internal"),
    [
        ("__consumer_offsets", True),
        ("__transaction_state", True),
        ("_schemas", True),
        ("__anything", True),
        ("sb.responses", True),
        ("sb.tasks.backend", True),
        ("sb", True),
        ("sbx.replies", False),
        ("acme.replies", False),
    ],
)
def test_internal_topics(topic: str, internal: bool) -> None:
    assert internal_topic(topic, "sb") is internal
