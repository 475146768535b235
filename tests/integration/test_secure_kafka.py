"""The pipeline on a secured broker: SASL_SSL (SCRAM-SHA-512) and mTLS, one identity per role,
ACLs that give each role only what it needs; refusals stop a process with one clear line.

Runs against the secure local broker (``switchboard kafka start --secure``), started once per
session by the ``secure_kafka`` fixture; each test has its own topic prefix and its ACLs.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    NewTopic,
    ResourcePatternType,
    ResourceType,
)

from producers.client import SwitchboardClient
from switchboard.core import headers as h
from switchboard.core.errors import KafkaAccessError
from switchboard.core.kafka_clients import make_admin, producer_config
from switchboard.core.settings import Settings
from switchboard.core.status import ResponseStatus
from switchboard.devtools.acls import CLIENT, RELAY, ROUTER, worker
from switchboard.devtools.certs import CertificateAuthority
from switchboard.devtools.secure_kafka import SecureKafka

from .harness import RunningPipeline, create_topics, settings_for_test
from .helpers import read_topic

pytestmark = pytest.mark.integration

BACKEND = "/backend design microservices handling 50K RPS with circuit breakers"
API = "/api design a versioned REST API with idempotency keys and cursor pagination"


def connect(
    broker: SecureKafka, name: str, *, mtls: bool = False, **overrides: str
) -> dict[str, Any]:
    listener = broker.listeners()["mtls" if mtls else "sasl_ssl"]
    return {"bootstrap.servers": listener, **broker.client_config(name, mtls=mtls), **overrides}


@pytest.fixture
def secured(secure_kafka: SecureKafka) -> Settings:
    """A fresh topic prefix on the secure broker: its ACLs granted, its topics made (as admin)."""
    settings = settings_for_test(
        secure_kafka.listeners()["sasl_ssl"],
        topic_prefix=f"sbsec-{uuid.uuid4().hex[:10]}",
        partitions=2,
    )
    secure_kafka.grant(settings.topic_prefix)
    create_topics(settings, connect(secure_kafka, "admin"))
    return settings


@contextlib.contextmanager
def role_pipelines(
    broker: SecureKafka, settings: Settings, *, mtls: bool, specialists: tuple[str, ...]
) -> Iterator[list[RunningPipeline]]:
    """Router, relay and one worker process per specialist, each as its own identity."""
    parts: list[tuple[str, Any]] = [
        (ROUTER, lambda p: p.add_router()),
        (RELAY, lambda p: p.add_relay()),
        *((worker(s), lambda p, s=s: p.add_worker(s, concurrency=8)) for s in specialists),
    ]
    with contextlib.ExitStack() as stack:
        yield [
            stack.enter_context(RunningPipeline(settings, connect(broker, name, mtls=mtls), setup))
            for name, setup in parts
        ]


@pytest.mark.parametrize("mtls", [False, True], ids=["sasl_ssl", "mtls"])
def test_the_pipeline_answers_with_one_identity_per_role(
    secure_kafka: SecureKafka, secured: Settings, mtls: bool
) -> None:
    """Router, relay, a backend and an api worker and the client, each with its own identity
    and nothing but its own ACLs, answer a /backend and an /api request over SASL_SSL, and
    over mTLS (certificates, no passwords)."""
    with (
        role_pipelines(secure_kafka, settings=secured, mtls=mtls, specialists=("backend", "api")),
        SwitchboardClient(
            connect(secure_kafka, CLIENT, mtls=mtls), topic_prefix=secured.topic_prefix
        ) as client,
    ):
        ids = {"backend": client.submit(BACKEND), "api": client.submit(API)}
        for specialist, request_id in ids.items():
            response = client.result(request_id, timeout=60)
            assert response.status == ResponseStatus.ANSWERED, response
            assert response.specialist == specialist


def test_a_worker_denied_another_specialists_tasks_stops_and_loses_nothing(
    secure_kafka: SecureKafka, secured: Settings
) -> None:
    """A backend worker's identity running the api worker is refused its group: the process
    stops with a line naming the operation and the group; the /api request waits in Kafka and
    is answered once the right identity runs."""
    with (
        role_pipelines(secure_kafka, secured, mtls=False, specialists=()),
        SwitchboardClient(
            connect(secure_kafka, CLIENT), topic_prefix=secured.topic_prefix
        ) as client,
    ):
        request_id = client.submit(API)
        wrong = RunningPipeline(
            secured, connect(secure_kafka, worker("backend")), lambda p: p.add_worker("api")
        )
        with pytest.raises(KafkaAccessError) as refused, wrong:
            wrong._thread.join(30)  # it stops by itself; __exit__ re-raises its error
        line = str(refused.value)
        assert "\n" not in line
        assert f"denied Read on group {secured.topic_prefix}.worker.api" in line
        assert "GROUP_AUTHORIZATION_FAILED" in line
        with RunningPipeline(
            secured, connect(secure_kafka, worker("api")), lambda p: p.add_worker("api")
        ):
            response = client.result(request_id, timeout=60)
        assert response.status == ResponseStatus.ANSWERED
        assert response.specialist == "api"


def test_the_client_identity_may_not_write_tasks(
    secure_kafka: SecureKafka, secured: Settings
) -> None:
    """The client's identity writing straight to a task topic is refused by the broker
    (TOPIC_AUTHORIZATION_FAILED), and nothing reaches the topic."""
    topic = f"{secured.topic_prefix}.tasks.backend"
    errors: list[Any] = []
    producer = Producer(producer_config(connect(secure_kafka, CLIENT)))
    producer.produce(topic, b"smuggled", b"k", on_delivery=lambda err, _m: errors.append(err))
    assert producer.flush(30) == 0
    assert [e.name() for e in errors] == ["TOPIC_AUTHORIZATION_FAILED"]
    assert read_topic(connect(secure_kafka, "admin"), topic, until=bool, timeout_s=3) == []


def _cli_submit(kafka: dict[str, Any], settings: Settings) -> subprocess.CompletedProcess[str]:
    """``switchboard submit`` as a user would run it, with these Kafka settings."""
    config = {k: v for k, v in kafka.items() if k != "bootstrap.servers"}
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka["bootstrap.servers"],
        "SWITCHBOARD_KAFKA_CONFIG": json.dumps(config),
        "SWITCHBOARD_TOPIC_PREFIX": settings.topic_prefix,
    }
    return subprocess.run(
        [sys.executable, "-m", "switchboard.cli.main", "submit", BACKEND],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("switchboard: error:")]
    assert len(errors) == 1, proc.stderr
    return errors[0]


def test_refusals_end_the_command_with_one_line_that_says_what_to_change(
    secure_kafka: SecureKafka, secured: Settings, tmp_path: Path
) -> None:
    """A wrong password, a CA the client does not trust, a client certificate the broker does
    not trust (mTLS) and a plaintext client on the TLS port each end ``switchboard submit``
    with exit 1 and one line naming the cause and the setting to change; none of them put
    anything on the requests topic."""
    wrong_password = _error_line(
        _cli_submit(connect(secure_kafka, CLIENT, **{"sasl.password": "wrong"}), secured)
    )
    assert "SASL authentication failed" in wrong_password
    assert "sasl.password" in wrong_password

    other_ca = CertificateAuthority(tmp_path / "other-ca")
    untrusted = _error_line(
        _cli_submit(
            connect(secure_kafka, CLIENT, **{"ssl.ca.location": str(other_ca.cert_path)}), secured
        )
    )
    assert "TLS handshake failed" in untrusted
    assert "certificate verify failed" in untrusted
    assert "ssl.ca.location" in untrusted

    stranger = other_ca.issue(CLIENT)
    mtls = connect(
        secure_kafka,
        CLIENT,
        mtls=True,
        **{"ssl.certificate.location": str(stranger.cert), "ssl.key.location": str(stranger.key)},
    )
    rejected = _error_line(_cli_submit(mtls, secured))
    assert f"Kafka at {mtls['bootstrap.servers']} rejected this client's certificate" in rejected
    assert "ssl.certificate.location" in rejected

    sasl_ssl = secure_kafka.listeners()["sasl_ssl"]
    plaintext = _error_line(_cli_submit({"bootstrap.servers": sasl_ssl}, secured))
    assert f"Kafka at {sasl_ssl} speaks TLS" in plaintext
    assert "security.protocol" in plaintext

    requests = f"{secured.topic_prefix}.requests"
    assert read_topic(connect(secure_kafka, "admin"), requests, until=bool, timeout_s=3) == []


def test_kafka_env_prints_what_a_shell_needs(secure_kafka: SecureKafka, secured: Settings) -> None:
    """``kafka env --secure --as client`` prints export lines whose settings connect as the
    client (a request is delivered with them); an unknown role is a one-line usage error."""
    env = {**os.environ, "SWITCHBOARD_STATE_DIR": str(secure_kafka.root.parent)}
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    cmd = [sys.executable, "-m", "switchboard.cli.main", "kafka", "env", "--secure"]
    out = subprocess.run(
        [*cmd, "--as", CLIENT], env=env, capture_output=True, text=True, timeout=60, check=True
    )
    exports = dict(
        shlex.split(line.removeprefix("export "))[0].split("=", 1)
        for line in out.stdout.splitlines()
    )
    kafka = {
        "bootstrap.servers": exports["KAFKA_BOOTSTRAP_SERVERS"],
        **json.loads(exports["SWITCHBOARD_KAFKA_CONFIG"]),
    }
    assert kafka["sasl.username"] == CLIENT
    errors: list[Any] = []
    producer = Producer(producer_config(kafka))
    producer.produce(
        f"{secured.topic_prefix}.requests", b"x", on_delivery=lambda e, _m: errors.append(e)
    )
    assert producer.flush(30) == 0
    assert errors == [None]
    bad = subprocess.run(
        [*cmd, "--as", "root"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert bad.returncode == 2
    assert len(bad.stderr.strip().splitlines()) == 1
    assert "invalid choice: 'root'" in bad.stderr


def test_a_reply_and_its_ledger_copy_commit_as_one_transaction_under_the_roles_acls(
    secure_kafka: SecureKafka, secured: Settings
) -> None:
    """A request with its own reply topic, answered by a backend worker running as its own
    identity: the reply and its ledger copy go out in one transaction under the transactional
    id prefix the worker's ACLs grant (``<prefix>.txn.``), one record on each topic."""
    reply = f"replies-{secured.topic_prefix}"
    admin_config = connect(secure_kafka, "admin")
    admin = make_admin(admin_config)
    admin.create_topics([NewTopic(reply, 1, 1)])[reply].result(30)
    topic_acl = ResourceType.TOPIC, reply, ResourcePatternType.LITERAL
    bindings = [  # a tenant's reply topic: its ACLs are the operator's to give
        AclBinding(*topic_acl, f"User:{who}", "*", op, AclPermissionType.ALLOW)
        for who, op in ((worker("backend"), AclOperation.WRITE), (CLIENT, AclOperation.READ))
    ]
    for future in admin.create_acls(bindings, request_timeout=30).values():
        future.result()
    with (
        role_pipelines(secure_kafka, secured, mtls=False, specialists=("backend",)),
        SwitchboardClient(
            connect(secure_kafka, CLIENT), topic_prefix=secured.topic_prefix, reply_topic=reply
        ) as client,
    ):
        request_id = client.submit(BACKEND)
        response = client.result(request_id, timeout=60)
    assert response.status == ResponseStatus.ANSWERED, response
    replies = read_topic(admin_config, reply, until=bool, timeout_s=10)
    ledger = read_topic(
        admin_config,
        f"{secured.topic_prefix}.responses",
        until=lambda m: any(x.key() == request_id.encode() for x in m),
        timeout_s=10,
    )
    assert [m.key() for m in replies] == [request_id.encode()]
    copies = [m for m in ledger if m.key() == request_id.encode()]
    assert [h.header_value(m.headers(), h.REPLY_COPY_OF) for m in copies] == [reply]
