"""``switchboard kafka ...`` and ``switchboard topics ...``."""

from __future__ import annotations

import argparse
import json
import shlex
import time
from typing import Any

from switchboard.cli.argtypes import count
from switchboard.cli.bootstrap import local_broker, resolve_bootstrap
from switchboard.core.admin import ensure_topics
from switchboard.core.kafka_clients import make_admin
from switchboard.core.settings import Settings
from switchboard.core.topics import Topics
from switchboard.devtools.acls import BROKER, identities
from switchboard.devtools.local_kafka import BrokerError, LocalKafka
from switchboard.devtools.secure_kafka import SecureKafka

SECURE_HELP = "the secure broker (SASL_SSL and mTLS listeners, ACLs) instead of the plain one"
#: Identities ``kafka env --as`` can print (the broker's own is not for clients).
ROLES = [name for name in identities() if name != BROKER]


def secure_broker(settings: Settings) -> SecureKafka:
    """The secure local broker: its own state directory and ports, the plain broker's jars."""
    return SecureKafka(
        settings.state_dir.resolve() / "secure-kafka",
        jars=settings.kafka_state_dir / "jars",
        heap=settings.kafka_heap,
        start_timeout_s=settings.kafka_start_timeout_s,
        topic_prefix=settings.topic_prefix,
    )


def _broker(args: argparse.Namespace, settings: Settings) -> LocalKafka:
    return secure_broker(settings) if getattr(args, "secure", False) else local_broker(settings)


def register(sub: Any) -> None:
    kafka = sub.add_parser("kafka", help="run a local Apache Kafka broker (KRaft, single node)")
    ksub = kafka.add_subparsers(dest="kafka_command", required=True)
    start = ksub.add_parser("start", help="start the local broker (idempotent)")
    start.add_argument("--reset", action="store_true", help="wipe the broker's data first")
    start.add_argument("--secure", action="store_true", help=SECURE_HELP)
    start.set_defaults(handler=kafka_start)
    stop = ksub.add_parser("stop", help="stop the local broker (idempotent)")
    stop.add_argument("--secure", action="store_true", help=SECURE_HELP)
    stop.set_defaults(handler=kafka_stop)
    status = ksub.add_parser("status", help="is the broker running, and where")
    status.add_argument("--secure", action="store_true", help=SECURE_HELP)
    status.set_defaults(handler=kafka_status)
    logs = ksub.add_parser("logs", help="print the broker's log")
    logs.add_argument("-n", "--lines", type=count, default=50, help="how many lines (default 50)")
    logs.add_argument("--secure", action="store_true", help=SECURE_HELP)
    logs.set_defaults(handler=kafka_logs)
    env = ksub.add_parser(
        "env", help="print the export lines a shell needs to use the local broker (eval them)"
    )
    env.add_argument("--secure", action="store_true", help=SECURE_HELP)
    env.add_argument(
        "--as",
        dest="role",
        choices=ROLES,
        default="admin",
        help="the identity to connect as (with --secure; default admin)",
    )
    env.add_argument(
        "--mtls",
        action="store_true",
        help="connect to the mTLS listener with the identity's certificate, not SCRAM",
    )
    env.set_defaults(handler=kafka_env)

    topics = sub.add_parser("topics", help="create or list the pipeline's topics")
    tsub = topics.add_subparsers(dest="topics_command", required=True)
    tsub.add_parser("ensure", help="create every topic the pipeline uses").set_defaults(
        handler=topics_ensure
    )
    tlist = tsub.add_parser("list", help="the pipeline's topics with their roles")
    tlist.add_argument("--json", action="store_true", help="print a JSON list")
    tlist.set_defaults(handler=topics_list)


def kafka_start(args: argparse.Namespace, settings: Settings) -> int:
    if args.secure:
        return _secure_start(args, settings)
    if settings.bootstrap_servers:
        print(
            f"KAFKA_BOOTSTRAP_SERVERS is set: using {settings.bootstrap_servers}, starting nothing"
        )
        return 0
    broker = local_broker(settings)
    if args.reset:
        broker.reset()
    began = time.monotonic()
    bootstrap, started, note = broker.start()
    if note:
        print(note)
    if started:
        print(f"Kafka ready at {bootstrap} in {time.monotonic() - began:.1f}s")
    else:
        print(f"Kafka already running at {bootstrap}")
    return 0


def _secure_start(args: argparse.Namespace, settings: Settings) -> int:
    """The secure broker ignores KAFKA_BOOTSTRAP_SERVERS: it may well point at this broker."""
    broker = secure_broker(settings)
    if args.reset:
        broker.reset()
    began = time.monotonic()
    _bootstrap, started, _note = broker.start()
    granted = broker.grant(settings.topic_prefix)  # idempotent: a new prefix gets its ACLs too
    listeners = broker.listeners()
    state = f"ready in {time.monotonic() - began:.1f}s" if started else "already running"
    print(
        f"secure Kafka {state}: SASL_SSL at {listeners['sasl_ssl']}, mTLS at {listeners['mtls']}"
        f"; {granted} ACLs for prefix {settings.topic_prefix!r}"
    )
    print('use it: eval "$(switchboard kafka env --secure [--as ROLE] [--mtls])"')
    return 0


def kafka_stop(args: argparse.Namespace, settings: Settings) -> int:
    if args.secure:
        stopped = secure_broker(settings).stop()
        print("secure Kafka stopped" if stopped else "secure Kafka was not running")
        return 0
    if settings.bootstrap_servers:
        print("KAFKA_BOOTSTRAP_SERVERS is set: nothing of ours to stop")
        return 0
    stopped = local_broker(settings).stop()
    print("Kafka stopped" if stopped else "Kafka was not running")
    return 0


def kafka_status(args: argparse.Namespace, settings: Settings) -> int:
    if args.secure:
        broker = secure_broker(settings)
        listeners = broker.listeners()
        if listeners:
            print(
                f"secure Kafka running: SASL_SSL at {listeners['sasl_ssl']}, mTLS at "
                f"{listeners['mtls']} (pid {broker.pid()})"
            )
            return 0
        print("secure Kafka not running (start it with `switchboard kafka start --secure`)")
        return 3
    if settings.bootstrap_servers:
        print(f"external cluster at {settings.bootstrap_servers} (KAFKA_BOOTSTRAP_SERVERS)")
        return 0
    status = local_broker(settings).status()
    if status.running:
        print(f"running at {status.bootstrap} (pid {status.pid})")
        return 0
    print("not running (start it with `switchboard kafka start`)")
    return 3


def kafka_env(args: argparse.Namespace, settings: Settings) -> int:
    """``export`` lines for a shell: ``eval "$(switchboard kafka env --secure --as client)"``."""
    if not args.secure:
        if args.role != "admin" or args.mtls:
            raise BrokerError("--as and --mtls need --secure: the plain broker has no identities")
        status = local_broker(settings).status()
        if not status.running:
            raise BrokerError("the local broker is not running: run `switchboard kafka start`")
        print(f"export KAFKA_BOOTSTRAP_SERVERS={shlex.quote(status.bootstrap or '')}")
        print("unset SWITCHBOARD_KAFKA_CONFIG")
        return 0
    broker = secure_broker(settings)
    listeners = broker.listeners()
    if not listeners:
        raise BrokerError(
            "the secure broker is not running: run `switchboard kafka start --secure`"
        )
    bootstrap = listeners["mtls" if args.mtls else "sasl_ssl"]
    config = broker.client_config(args.role, mtls=args.mtls)
    print(f"export KAFKA_BOOTSTRAP_SERVERS={shlex.quote(bootstrap)}")
    print(f"export SWITCHBOARD_KAFKA_CONFIG={shlex.quote(json.dumps(config))}")
    return 0


def kafka_logs(args: argparse.Namespace, settings: Settings) -> int:
    broker = _broker(args, settings)
    if not broker.log_file.is_file():
        print("no broker log yet")
        return 0
    print(broker.last_log_lines(args.lines).replace(" | ", "\n"))
    return 0


def _topics(settings: Settings) -> Topics:
    return Topics(settings.topic_prefix)


def topics_ensure(_args: argparse.Namespace, settings: Settings) -> int:
    admin = make_admin(settings.client_config(resolve_bootstrap(settings)))
    specs = _topics(settings).specs(
        retention_ms=settings.retention_ms, dlq_retention_ms=settings.dlq_retention_ms
    )
    result = ensure_topics(
        admin,
        specs,
        partitions=settings.partitions,
        replication_factor=settings.replication_factor,
    )
    print(f"{len(result.created)} topics created, {len(result.existing)} already existed")
    for name in result.created:
        print(f"  + {name}")
    return 0


def topics_list(args: argparse.Namespace, settings: Settings) -> int:
    specs = _topics(settings).specs(
        retention_ms=settings.retention_ms, dlq_retention_ms=settings.dlq_retention_ms
    )
    if args.json:
        print(json.dumps([{"role": s.role, "name": s.name} for s in specs]))
    else:
        width = max(len(s.role) for s in specs)
        for s in specs:
            print(f"{s.role:<{width}}  {s.name}")
    return 0
