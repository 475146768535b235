"""The local broker, secured: SASL_SSL (SCRAM-SHA-512) and mTLS listeners, ACLs per role.

- ``SASL_SSL`` listener: TLS with the local CA's broker certificate, SCRAM-SHA-512 users made at
  format time (``kafka-storage format --add-scram``), one per identity, passwords in
  ``users.json`` (owner-only).
- ``MTLS`` listener (``SSL`` with ``ssl.client.auth=required``): a client proves who it is with
  a certificate signed by the local CA; ``CN=<name>`` maps to ``User:<name>``, the same
  principal as the SCRAM user, so one set of ACLs serves both listeners.
- ``CONTROLLER`` listener: mTLS too, the broker's own certificate (a super user).
- KRaft's ``StandardAuthorizer``, deny by default; ``admin`` and ``broker`` are super users;
  every other identity gets the ACLs of ``switchboard.devtools.acls`` for the topic prefix.

It lives in its own state directory and on its own ports, beside the plain broker.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Final

from switchboard.core.topics import Topics
from switchboard.devtools.acls import ADMIN, BROKER, identities, role_acls
from switchboard.devtools.certs import CertificateAuthority, Identity
from switchboard.devtools.local_kafka import (
    DEFAULT_POM,
    BrokerError,
    LocalKafka,
    free_port,
    port_is_free,
)

#: Preferred ports (SASL_SSL, mTLS); a free one is taken when either is busy.
SASL_SSL_PORT: Final = 9093
MTLS_PORT: Final = 9094
SCRAM: Final = "SCRAM-SHA-512"
#: librdkafka's SASL mechanism and the broker's SCRAM iterations (Kafka's minimum is 4096).
SCRAM_ITERATIONS: Final = 8192


class SecureKafka(LocalKafka):
    """A ``LocalKafka`` whose client listeners are SASL_SSL and mTLS, with ACLs per role."""

    def __init__(
        self,
        state_dir: Path,
        *,
        jars: Path | None = None,
        heap: str = "1g",
        start_timeout_s: float = 60.0,
        pom: Path = DEFAULT_POM,
        topic_prefix: str = "switchboard",
    ) -> None:
        super().__init__(
            state_dir,
            port=SASL_SSL_PORT,
            heap=heap,
            start_timeout_s=start_timeout_s,
            pom=pom,
            jars=jars,
        )
        self.topic_prefix = topic_prefix
        self.certs_dir = state_dir / "certs"
        self.users_file = state_dir / "users.json"
        self.listeners_file = state_dir / "listeners.json"

    # --- identities ----------------------------------------------------------------------
    @property
    def ca(self) -> CertificateAuthority:
        return CertificateAuthority(self.certs_dir)

    def identity(self, name: str) -> Identity:
        """The certificate and key of ``name`` (made on first use)."""
        return self.ca.issue(name, server=name == BROKER)

    def passwords(self) -> dict[str, str]:
        """Every SCRAM user's password, made once and kept in ``users.json`` (owner-only)."""
        try:
            stored: dict[str, str] = json.loads(self.users_file.read_text())
        except (OSError, ValueError):
            stored = {}
        wanted = [n for n in identities() if n != BROKER]
        if all(n in stored for n in wanted):
            return stored
        if self._cluster_id_on_disk() is not None:
            raise BrokerError(
                f"{self.users_file} is missing users of an already formatted broker: "
                "run `switchboard kafka start --secure --reset`"
            )
        stored = {n: stored.get(n) or secrets.token_urlsafe(18) for n in wanted}
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.users_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(stored, out, indent=2)
        return stored

    def listeners(self) -> dict[str, str]:
        """``{"sasl_ssl": host:port, "mtls": host:port}`` of the running broker, or ``{}``."""
        if self.pid() is None:
            return {}
        try:
            return dict(json.loads(self.listeners_file.read_text()))
        except (OSError, ValueError):
            return {}

    def client_config(
        self, name: str = ADMIN, *, mtls: bool = False, password: str | None = None
    ) -> dict[str, str]:
        """librdkafka settings (without the bootstrap) to connect as ``name``; ``password``
        overrides the stored one (tests of a wrong password)."""
        ca = str(self.ca.cert_path)
        if mtls:
            ident = self.identity(name)
            return {
                "security.protocol": "SSL",
                "ssl.ca.location": ca,
                "ssl.certificate.location": str(ident.cert),
                "ssl.key.location": str(ident.key),
            }
        return {
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": SCRAM,
            "sasl.username": name,
            "sasl.password": password if password is not None else self.passwords()[name],
            "ssl.ca.location": ca,
        }

    # --- LocalKafka hooks ------------------------------------------------------------------
    def _listener_config(self, port: int, controller_port: int) -> list[str]:
        mtls_port = MTLS_PORT if port_is_free(MTLS_PORT) else free_port()
        while mtls_port in (port, controller_port):
            mtls_port = free_port()
        self.listeners_file.write_text(
            json.dumps({"sasl_ssl": f"127.0.0.1:{port}", "mtls": f"127.0.0.1:{mtls_port}"})
        )
        broker = self.identity(BROKER)
        self.identity(ADMIN)
        ca = self.ca.cert_path
        tls = [
            "ssl.keystore.type=PEM",
            f"ssl.keystore.location={broker.keystore}",
            "ssl.truststore.type=PEM",
            f"ssl.truststore.location={ca}",
        ]
        users = ";".join(f"User:{n}" for n in (ADMIN, BROKER))
        return [
            f"listeners=SASL_SSL://127.0.0.1:{port},MTLS://127.0.0.1:{mtls_port},"
            f"CONTROLLER://127.0.0.1:{controller_port}",
            f"advertised.listeners=SASL_SSL://127.0.0.1:{port},MTLS://127.0.0.1:{mtls_port}",
            "listener.security.protocol.map=SASL_SSL:SASL_SSL,MTLS:SSL,CONTROLLER:SSL",
            "inter.broker.listener.name=MTLS",
            f"sasl.enabled.mechanisms={SCRAM}",
            *(f"listener.name.{n}.ssl.client.auth=required" for n in ("mtls", "controller")),
            f"listener.name.sasl_ssl.{SCRAM.lower()}.sasl.jaas.config="
            "org.apache.kafka.common.security.scram.ScramLoginModule required;",
            *tls,
            # CN=router -> User:router: the same principal as the SCRAM user router.
            "ssl.principal.mapping.rules=RULE:^CN=([A-Za-z0-9._-]+),O=.*$/$1/,"
            "RULE:^O=[^,]*,CN=([A-Za-z0-9._-]+)$/$1/,DEFAULT",
            "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            f"super.users={users}",
            "allow.everyone.if.no.acl.found=false",
        ]

    def _format_args(self) -> list[str]:
        args = []
        for name, password in self.passwords().items():
            args += [
                "--add-scram",
                f"{SCRAM}=[name={name},password={password},iterations={SCRAM_ITERATIONS}]",
            ]
        return args

    def probe_config(self) -> dict[str, str]:
        return self.client_config(ADMIN)

    def _after_start(self, bootstrap: str) -> None:
        self.grant(self.topic_prefix, bootstrap)

    def grant(self, prefix: str, bootstrap: str | None = None) -> int:
        """Create every role's ACLs for the topics under ``prefix`` (idempotent); returns how
        many bindings were asked for."""
        from switchboard.core.kafka_clients import make_admin

        where = bootstrap or self.listeners().get("sasl_ssl")
        if not where:
            raise BrokerError(
                "the secure broker is not running: `switchboard kafka start --secure`"
            )
        admin = make_admin({**self.client_config(ADMIN), "bootstrap.servers": where})
        bindings = [b for name in identities() for b in role_acls(name, Topics(prefix))]
        for future in admin.create_acls(bindings, request_timeout=30).values():
            future.result(timeout=60)
        return len(bindings)
