"""A private certificate authority for the secure local broker, made with ``cryptography``.

Everything is PEM: the broker reads PEM key stores (``ssl.keystore.type=PEM``), librdkafka reads
PEM files, so no ``keytool`` and no JKS. Keys are ECDSA P-256 (fast to make, accepted by Java
and OpenSSL alike). Each identity's certificate has ``CN=<name>``; the broker maps that to the
principal ``User:<name>`` (``ssl.principal.mapping.rules``), the same principal its SCRAM
user has, so one set of ACLs serves both listeners.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: Long enough for a development state directory; a new ``--reset`` makes new ones.
VALID_DAYS: Final = 825
#: Where the broker listens: its certificate must name both (librdkafka verifies the host).
BROKER_HOSTS: Final = ("localhost", "127.0.0.1")


@dataclass(frozen=True)
class Identity:
    """One identity's files: its certificate (chain) and its unencrypted PKCS#8 key."""

    name: str
    cert: Path
    key: Path
    #: Key then certificate in one file: the broker's PEM key store format.
    keystore: Path


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` readable by the owner only (key material)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Switchboard local"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


class CertificateAuthority:
    """A CA whose key and certificate live in ``directory``; made once, then loaded."""

    def __init__(self, directory: Path, *, common_name: str = "Switchboard local CA") -> None:
        self.directory = directory
        self.cert_path = directory / "ca.pem"
        self.key_path = directory / "ca.key"
        if self.cert_path.is_file() and self.key_path.is_file():
            self._cert = x509.load_pem_x509_certificate(self.cert_path.read_bytes())
            loaded = serialization.load_pem_private_key(self.key_path.read_bytes(), None)
            if not isinstance(loaded, ec.EllipticCurvePrivateKey):
                raise ValueError(f"{self.key_path} is not an EC key: delete the directory")
            self._key = loaded
            return
        self._key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        subject = _name(common_name)
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()), critical=False
            )
            .sign(self._key, hashes.SHA256())
        )
        _write_private(self.key_path, _key_pem(self._key))
        self.cert_path.write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, name: str, *, server: bool = False) -> Identity:
        """The identity ``name`` (``CN=name``), made once; ``server`` adds the broker's hosts."""
        identity = Identity(
            name,
            cert=self.directory / f"{name}.pem",
            key=self.directory / f"{name}.key",
            keystore=self.directory / f"{name}.keystore.pem",
        )
        if identity.cert.is_file() and identity.key.is_file() and identity.keystore.is_file():
            return identity
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
        if server:
            usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
        )
        if server:
            names: list[x509.GeneralName] = [x509.DNSName("localhost")]
            names.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        cert_pem = cert.public_bytes(serialization.Encoding.PEM)
        _write_private(identity.key, _key_pem(key))
        _write_private(identity.keystore, _key_pem(key) + cert_pem)
        identity.cert.write_bytes(cert_pem)
        return identity
