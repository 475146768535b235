"""Amazon MSK IAM (``SWITCHBOARD_KAFKA_AUTH=aws-msk-iam``): every kind of client Switchboard
builds carries OAUTHBEARER and an ``oauth_cb`` whose token is a SigV4-presigned URL for
``kafka-cluster:Connect`` in the region. No MSK cluster here: the token and the client
configuration are checked, and real clients are only created (against a closed port) to see
that confluent-kafka asks for the token at creation, before any poll."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient
from pydantic import ValidationError

from switchboard.core import msk_iam
from switchboard.core.errors import KafkaAccessError
from switchboard.core.kafka_clients import (
    consumer_config,
    producer_config,
    reader_config,
    with_logger,
)
from switchboard.core.settings import Settings

REGION = "eu-west-1"
ACCESS_KEY = "AKIAIOSFODNN7EXAMPLE"
#: A port nothing listens on: clients are created, never connected.
CLOSED = "127.0.0.1:1"

#: Every kind of config the factories build (admin and hand-made clients go through with_logger).
KINDS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "producer": producer_config,
    "consumer": lambda base: consumer_config(base, "g"),
    "reader": lambda base: reader_config(base, "tail"),
    "admin": with_logger,
}


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake static credentials; no profile, config file or instance metadata to fall back on."""
    for name in (
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_DEFAULT_REGION",
        "SWITCHBOARD_AWS_REGION",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/config")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.setenv("SWITCHBOARD_KAFKA_AUTH", "aws-msk-iam")
    monkeypatch.delenv("SWITCHBOARD_KAFKA_CONFIG", raising=False)


def presigned_url(token: str) -> str:
    """The URL inside an MSK IAM token (base64url without padding)."""
    assert "=" not in token and "+" not in token and "/" not in token
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_client_kind_gets_oauthbearer_and_a_signed_connect_token(
    aws_env: None, kind: str
) -> None:
    config = KINDS[kind](Settings().client_config(CLOSED))
    assert config["security.protocol"] == "SASL_SSL"
    assert config["sasl.mechanism"] == "OAUTHBEARER"
    before = time.time()
    token, expiry = config["oauth_cb"]("")
    url = urlsplit(presigned_url(token))
    query = {k: v[0] for k, v in parse_qs(url.query).items()}
    assert (url.scheme, url.netloc, url.path) == ("https", f"kafka.{REGION}.amazonaws.com", "/")
    assert query["Action"] == "kafka-cluster:Connect"
    assert query["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"
    key, day, region, service, scope = query["X-Amz-Credential"].split("/")
    assert (key, region, service, scope) == (ACCESS_KEY, REGION, "kafka-cluster", "aws4_request")
    assert len(query["X-Amz-Signature"]) == 64  # hex SHA-256 HMAC
    # The expiry is seconds since the epoch (the signer gives milliseconds): signing time plus
    # X-Amz-Expires, in the future.
    signed = datetime.strptime(query["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    assert day == signed.strftime("%Y%m%d")
    assert expiry == signed.timestamp() + int(query["X-Amz-Expires"])
    assert before < expiry <= before + 900 + 1


def test_default_is_the_plain_passthrough(aws_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SWITCHBOARD_KAFKA_AUTH")
    config = Settings().client_config(CLOSED)
    assert config == {"bootstrap.servers": CLOSED}


def test_switchboard_region_wins_over_aws_region(
    aws_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SWITCHBOARD_AWS_REGION", "us-east-2")
    token, _ = Settings().client_config(CLOSED)["oauth_cb"]("")
    assert urlsplit(presigned_url(token)).netloc == "kafka.us-east-2.amazonaws.com"


@pytest.mark.parametrize("kind", ["producer", "consumer", "admin"])
def test_clients_ask_for_a_token_when_created_before_any_poll(aws_env: None, kind: str) -> None:
    """Admin clients used at start (topic checks) are never polled before their first request:
    confluent-kafka must call oauth_cb at creation, or they would never authenticate."""
    calls: list[float] = []
    signer = Settings().client_config(CLOSED)["oauth_cb"]

    def counting(config: str) -> tuple[str, float]:
        calls.append(time.time())
        return signer(config)

    base = {**Settings().client_config(CLOSED), "oauth_cb": counting}
    if kind == "producer":
        client: Any = Producer(producer_config(base))
    elif kind == "consumer":
        client = Consumer(consumer_config(base, "g"))
    else:
        client = AdminClient(with_logger(base))
    assert len(calls) == 1
    if kind == "consumer":
        client.close()


def test_missing_credentials_are_one_clear_line(
    aws_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(KafkaAccessError, match="cannot sign an MSK IAM token for eu-west-1"):
        Settings().client_config(CLOSED)["oauth_cb"]("")


def test_a_missing_signer_package_is_named_at_start(
    aws_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(msk_iam.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ValidationError, match=r"pip install 'switchboard\[msk\]'"):
        Settings()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"AWS_REGION": ""}, "needs a region"),
        ({"SWITCHBOARD_KAFKA_CONFIG": '{"security.protocol": "SSL"}'}, "drop those keys"),
        ({"SWITCHBOARD_KAFKA_AUTH": "aws-msk-sigv5"}, "aws-msk-iam"),
    ],
)
def test_impossible_combinations_are_refused(
    aws_env: None, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=message):
        Settings()


def test_matching_kafka_config_keys_are_accepted(
    aws_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "SWITCHBOARD_KAFKA_CONFIG", '{"security.protocol": "sasl_ssl", "client.id": "sb"}'
    )
    config = Settings().client_config(CLOSED)
    assert config["security.protocol"] == "SASL_SSL" and config["client.id"] == "sb"
