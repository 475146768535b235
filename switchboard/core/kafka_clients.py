"""Kafka client factories: one place decides how producers, consumers and admins are configured.

Every factory routes librdkafka's own log lines (``%3|...|FAIL|...``) through Python logging,
to the ``switchboard.librdkafka`` logger, instead of letting librdkafka write them to stderr in
the middle of a command's output. confluent-kafka forwards them when the client is polled, so
they come out on the polling thread. A ``logger`` in ``base`` wins over ours.

Every factory also installs an ``error_cb`` that turns a refusal (wrong credentials, an
untrusted certificate, a denied ACL, a plaintext client on a TLS port) into
``KafkaAccessError`` with one line that says what to change: raised from the client's
``poll``/``consume``/``flush``, it stops the process instead of letting librdkafka retry the
same refusal forever. Nothing is lost: offsets are committed only for records whose outputs
were delivered, so unhandled records wait in Kafka for the fix. An ``error_cb`` in ``base``
wins over ours.
"""

from __future__ import annotations

import logging
import socket
import ssl
import uuid
from collections.abc import Callable
from typing import Any, Final

from confluent_kafka import KafkaError
from confluent_kafka.admin import AdminClient

from switchboard.core.classify import (
    client_certificate_problem,
    kafka_access_problem,
    plaintext_on_tls_problem,
)
from switchboard.core.errors import KafkaAccessError

#: Where librdkafka's log lines go (syslog levels mapped: 3 ERROR, 4 WARNING, 5-6 INFO, 7 DEBUG).
LIBRDKAFKA_LOGGER: Final = "switchboard.librdkafka"
#: How long the probe that tells a TLS port from a plaintext one may take.
TLS_PROBE_TIMEOUT_S: Final = 1.0
#: OpenSSL reason codes (stable identifiers) of a TLS alert: the peer speaks TLS.
_TLS_ALERT_PREFIXES: Final = ("SSLV3_ALERT", "TLSV1_ALERT", "TLSV13_ALERT")
_PLAINTEXT_PROTOCOLS: Final = ("plaintext", "sasl_plaintext")

log = logging.getLogger(__name__)


def speaks_tls(address: str, timeout_s: float = TLS_PROBE_TIMEOUT_S) -> bool:
    """Whether ``host:port`` answers a TLS handshake (a plaintext Kafka port drops it)."""
    host, _, port = address.strip().rpartition(":")
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with (
            socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s) as raw,
            context.wrap_socket(raw, server_hostname=host or None),
        ):
            return True
    except ssl.SSLError as exc:
        # An alert (say, a client certificate is required) still means the port speaks TLS.
        return str(getattr(exc, "reason", "") or "").startswith(_TLS_ALERT_PREFIXES)
    except (OSError, ValueError):
        return False


def rejects_certificate(address: str, config: dict[str, Any]) -> str | None:
    """The TLS alert (an OpenSSL reason code) with which ``host:port`` rejects the client
    certificate of ``config``, or None when it accepts it (or cannot be asked). With TLS 1.3
    the server's verdict on a client certificate comes after the handshake: read for it."""
    host, _, port = address.strip().rpartition(":")
    try:
        context = ssl.create_default_context(cafile=config.get("ssl.ca.location"))
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # the broker's certificate is not the question here
        context.load_cert_chain(config["ssl.certificate.location"], config.get("ssl.key.location"))
        with (
            socket.create_connection(
                (host.strip("[]"), int(port)), timeout=TLS_PROBE_TIMEOUT_S
            ) as raw,
            context.wrap_socket(raw, server_hostname=host or None) as tls,
        ):
            tls.recv(1)  # a Kafka broker that accepted us waits for a request: a timeout
    except ssl.SSLError as exc:
        reason = str(getattr(exc, "reason", "") or "")
        return reason if reason.startswith(_TLS_ALERT_PREFIXES) else None
    except (OSError, ValueError, KeyError):
        return None
    return None


def access_error_callback(config: dict[str, Any]) -> Callable[[KafkaError], None]:
    """An ``error_cb`` raising ``KafkaAccessError`` on a refusal; other errors (a broker
    restarting, a network blip) are librdkafka's to retry and are only logged."""
    protocol = str(config.get("security.protocol", "plaintext")).lower()
    bootstrap = [b for b in str(config.get("bootstrap.servers", "")).split(",") if b.strip()]

    def on_error(err: KafkaError) -> None:
        line = kafka_access_problem(err)
        if (
            line is None
            and err.code() == KafkaError._ALL_BROKERS_DOWN
            and protocol in _PLAINTEXT_PROTOCOLS
        ):
            # librdkafka sees only a closed connection here (no error code of its own):
            # ask the port itself whether it speaks TLS.
            tls_port = next((b for b in bootstrap if speaks_tls(b)), None)
            if tls_port is not None:
                line = plaintext_on_tls_problem(tls_port.strip())
        elif (
            line is None
            and err.code() == KafkaError._ALL_BROKERS_DOWN
            and protocol == "ssl"
            and "ssl.certificate.location" in config
        ):
            # A broker rejecting our client certificate only drops the connection (a
            # transport error to librdkafka): ask it with the same certificate.
            for address in bootstrap:
                if (alert := rejects_certificate(address, config)) is not None:
                    line = client_certificate_problem(address.strip(), alert)
                    break
        if line is None:
            log.debug("kafka client error: %s", err)
            return
        raise KafkaAccessError(line)

    return on_error


def with_logger(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` plus the ``logger`` key that sends librdkafka's log to Python logging, and
    the ``error_cb`` that stops on a refusal (see the module's docstring).

    For clients built from a hand-made config; the factories below already include it.
    """
    return {
        "logger": logging.getLogger(LIBRDKAFKA_LOGGER),
        "error_cb": access_error_callback(config),
        **config,
    }


#: librdkafka properties that only a producer reads, and only a consumer reads (aliases too:
#: ``linger.ms`` is ``queue.buffering.max.ms``). ``SWITCHBOARD_KAFKA_CONFIG`` goes to every
#: client, and librdkafka logs a CONFWARN line for each key of the other kind at every
#: client's start (a benchmark pipeline of one router and one worker logged twelve for the
#: batching keys of docs/capacity.md): each factory leaves the other kind's keys out. Written by hand because
#: librdkafka has no call that tells a property's scope (its CONFIGURATION.md's P/C column);
#: ``tests/unit/test_kafka_clients.py`` checks every entry against librdkafka itself. A key in
#: neither set goes to every client.
PRODUCER_ONLY: Final = frozenset(
    {
        "acks",
        "batch.num.messages",
        "batch.size",
        "compression.codec",
        "compression.level",
        "compression.type",
        "delivery.report.only.error",
        "delivery.timeout.ms",
        "enable.gapless.guarantee",
        "enable.idempotence",
        "linger.ms",
        "message.send.max.retries",
        "message.timeout.ms",
        "partitioner",
        "queue.buffering.backpressure.threshold",
        "queue.buffering.max.kbytes",
        "queue.buffering.max.messages",
        "queue.buffering.max.ms",
        "request.required.acks",
        "request.timeout.ms",
        "retries",
        "sticky.partitioning.linger.ms",
        "transaction.timeout.ms",
        "transactional.id",
    }
)
CONSUMER_ONLY: Final = frozenset(
    {
        "auto.commit.interval.ms",
        "auto.offset.reset",
        "check.crcs",
        "consume.callback.max.messages",
        "coordinator.query.interval.ms",
        "enable.auto.commit",
        "enable.auto.offset.store",
        "enable.partition.eof",
        "fetch.error.backoff.ms",
        "fetch.max.bytes",
        "fetch.message.max.bytes",
        "fetch.min.bytes",
        "fetch.queue.backoff.ms",
        "fetch.wait.max.ms",
        "heartbeat.interval.ms",
        "isolation.level",
        "max.partition.fetch.bytes",
        "max.poll.interval.ms",
        "partition.assignment.strategy",
        "queued.max.messages.kbytes",
        "queued.min.messages",
        "session.timeout.ms",
    }
)


def _without(config: dict[str, Any], keys: frozenset[str]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k not in keys}


#: How every Switchboard producer maps a key to a partition, named rather than left to the
#: client's default: CRC-32 of the key modulo the partition count (librdkafka's default; a
#: Java client's is murmur2). Task and response topics are co-partitioned by request id on it:
#: a task's response lands in the partition number the task was read from, so a worker reads
#: only its own partitions of the answered ledger (``consumers.answered.partition_of``).
PARTITIONER: Final = "consistent_random"


#: Producer batching, which ``SWITCHBOARD_KAFKA_CONFIG`` may change. It trades latency at low
#: load against broker load: a caught-up consumer fetches once per producer batch, and a
#: broker pays per request (docs/capacity.md, "Batching"). The guarantees below stay fixed.
PRODUCER_TUNING: Final = {"linger.ms": 2, "compression.type": "lz4"}


def producer_config(base: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    """Idempotent, fully acknowledged producer: a retried send is never duplicated in the log.
    ``base`` (the settings' passthrough keys) may change the batching (``PRODUCER_TUNING``),
    not the guarantees or the partitioner the co-partitioned topics rely on."""
    return {
        **PRODUCER_TUNING,
        **with_logger(_without(base, CONSUMER_ONLY)),
        "enable.idempotence": True,
        "acks": "all",
        "partitioner": PARTITIONER,
        **overrides,
    }


def consumer_config(base: dict[str, Any], group_id: str, **overrides: Any) -> dict[str, Any]:
    """At-least-once consumer: offsets are stored by the runtime only after outputs are delivered."""
    return {
        **with_logger(_without(base, PRODUCER_ONLY)),
        "group.id": group_id,
        "partition.assignment.strategy": "cooperative-sticky",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": True,
        # The runtime stores an offset only when the record's outputs are delivered and every
        # earlier offset of its partition is done; librdkafka then commits what was stored.
        "enable.auto.offset.store": False,
        "auto.commit.interval.ms": 1000,
        "session.timeout.ms": 10_000,
        "heartbeat.interval.ms": 1_000,
        **overrides,
    }


def reader_config(base: dict[str, Any], name: str, **overrides: Any) -> dict[str, Any]:
    """A consumer outside any consumer group's work: it assigns partitions itself and never
    commits (tails, scans, one-record fetches). librdkafka still wants a ``group.id``: a fresh
    one per reader, which no broker-side group ever holds."""
    return {
        **with_logger(_without(base, PRODUCER_ONLY)),
        "group.id": f"switchboard-{name}-{uuid.uuid4().hex}",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        **overrides,
    }


def make_admin(base: dict[str, Any]) -> AdminClient:
    """An admin client; its log lines are forwarded only while it is polled (``admin.poll``),
    so a one-shot admin stays quiet rather than writing to stderr."""
    return AdminClient(with_logger(_without(base, CONSUMER_ONLY)))
