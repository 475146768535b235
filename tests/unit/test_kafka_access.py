"""Kafka refusals: librdkafka's codes mapped to one line that says what to change, the error
callback that stops on them, the TLS probe, the role ACL table and the local CA."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import KafkaError
from confluent_kafka.admin import AclOperation, ResourcePatternType, ResourceType
from cryptography import x509

from switchboard.core.atomic import transactional_id
from switchboard.core.classify import classify_kafka, kafka_access_problem
from switchboard.core.errors import ErrorClass, KafkaAccessError
from switchboard.core.kafka_clients import access_error_callback, speaks_tls
from switchboard.core.settings import SPECIALISTS
from switchboard.core.topics import GroupRole, Topics
from switchboard.devtools.acls import ADMIN, CLIENT, RELAY, ROUTER, grants, identities, worker
from switchboard.devtools.certs import CertificateAuthority


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (KafkaError._AUTHENTICATION, "SASL authentication failed"),
        (KafkaError.SASL_AUTHENTICATION_FAILED, "sasl.password"),
        (KafkaError._SSL, "ssl.ca.location"),
        (KafkaError.TOPIC_AUTHORIZATION_FAILED, "denied Write on topic t1"),
        (KafkaError.GROUP_AUTHORIZATION_FAILED, "denied Write on group t1"),
    ],
)
def test_refusals_get_one_line_and_are_fatal(code: int, expected: str) -> None:
    err = KafkaError(code, "broker said no")
    line = kafka_access_problem(err, operation="Write", resource="t1")
    assert line is not None and expected in line and "\n" not in line
    failure = classify_kafka(err)
    assert failure.error_class is ErrorClass.FATAL and failure.systemic


@pytest.mark.parametrize("code", [KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN])
def test_network_trouble_is_not_a_refusal(code: int) -> None:
    assert kafka_access_problem(KafkaError(code, "down")) is None
    access_error_callback({"security.protocol": "SASL_SSL"})(KafkaError(code, "down"))


def test_the_error_callback_raises_the_line() -> None:
    on_error = access_error_callback({"bootstrap.servers": "127.0.0.1:1"})
    with pytest.raises(KafkaAccessError, match="SASL authentication failed"):
        on_error(KafkaError(KafkaError._AUTHENTICATION, "bad credentials"))


@pytest.fixture
def tls_port(tmp_path: Path) -> Iterator[str]:
    """A loopback port that answers TLS handshakes with a certificate of a throw-away CA."""
    ident = CertificateAuthority(tmp_path).issue("broker", server=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(ident.cert, ident.key)
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            try:
                with context.wrap_socket(conn, server_side=True):
                    pass
            except (OSError, ssl.SSLError):
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join(2)
    server.close()


def test_a_plaintext_client_on_a_tls_port_is_told_so(tls_port: str) -> None:
    assert speaks_tls(tls_port)
    on_error = access_error_callback({"bootstrap.servers": tls_port})
    with pytest.raises(KafkaAccessError, match=f"Kafka at {tls_port} speaks TLS"):
        on_error(KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"))


def test_a_closed_port_does_not_speak_tls() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert not speaks_tls(f"127.0.0.1:{port}")


def _ops(name: str, topics: Topics) -> set[tuple[str, str, str]]:
    return {(str(rtype), rname, str(op)) for rtype, rname, _pattern, op in grants(name, topics)}


def test_each_role_gets_only_what_it_needs() -> None:
    t = Topics("p")
    topic, group = str(ResourceType.TOPIC), str(ResourceType.GROUP)
    read, write = str(AclOperation.READ), str(AclOperation.WRITE)
    client = _ops(CLIENT, t)
    assert (topic, t.requests, write) in client and (topic, t.responses, read) in client
    assert not any(name.startswith("p.tasks") for _t, name, _o in client)
    assert (topic, t.requests, read) in _ops(ROUTER, t)
    assert (group, t.group(GroupRole.ROUTER), read) in _ops(ROUTER, t)
    assert (topic, t.requests, write) in _ops(RELAY, t)
    backend = _ops(worker("backend"), t)
    assert (topic, t.tasks("backend"), read) in backend
    assert all((topic, t.tasks(s), read) not in backend for s in SPECIALISTS if s != "backend")
    assert (topic, t.requests, write) not in backend
    assert grants(ADMIN, t) == []  # a super user
    prefixed = [g for g in grants(ROUTER, t) if g[2] is ResourcePatternType.PREFIXED]
    assert {g[1] for g in prefixed} == {"p.tasks.", "p.txn.", "switchboard-"}
    txn = (str(ResourceType.TRANSACTIONAL_ID), "p.txn.", write)  # replies and ledger copies
    assert all(txn in _ops(role, t) for role in (ROUTER, RELAY, worker("api")))
    assert txn not in client
    assert transactional_id("p", "pod-1", ["worker.api"]).startswith("p.txn.")
    assert len(set(identities())) == len(identities())


def test_the_local_ca_signs_what_librdkafka_and_java_verify(tmp_path: Path) -> None:
    ca = CertificateAuthority(tmp_path)
    broker = ca.issue("broker", server=True)
    cert = x509.load_pem_x509_certificate(broker.cert.read_bytes())
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(ca.cert_path.read_bytes()))
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in sans.get_values_for_type(x509.DNSName)
    assert broker.key.stat().st_mode & 0o077 == 0  # key material: owner only
    assert CertificateAuthority(tmp_path).issue("broker", server=True).cert.read_bytes() == (
        broker.cert.read_bytes()
    )  # made once, then loaded
