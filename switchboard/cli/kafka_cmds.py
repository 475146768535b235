"""``switchboard kafka ...`` and ``switchboard topics ...``."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from switchboard.cli.argtypes import count
from switchboard.cli.bootstrap import local_broker, resolve_bootstrap
from switchboard.core.admin import ensure_topics
from switchboard.core.kafka_clients import make_admin
from switchboard.core.settings import Settings
from switchboard.core.topics import Topics


def register(sub: Any) -> None:
    kafka = sub.add_parser("kafka", help="run a local Apache Kafka broker (KRaft, single node)")
    ksub = kafka.add_subparsers(dest="kafka_command", required=True)
    start = ksub.add_parser("start", help="start the local broker (idempotent)")
    start.add_argument("--reset", action="store_true", help="wipe the broker's data first")
    start.set_defaults(handler=kafka_start)
    ksub.add_parser("stop", help="stop the local broker (idempotent)").set_defaults(
        handler=kafka_stop
    )
    ksub.add_parser("status", help="is the broker running, and where").set_defaults(
        handler=kafka_status
    )
    logs = ksub.add_parser("logs", help="print the broker's log")
    logs.add_argument("-n", "--lines", type=count, default=50, help="how many lines (default 50)")
    logs.set_defaults(handler=kafka_logs)

    topics = sub.add_parser("topics", help="create or list the pipeline's topics")
    tsub = topics.add_subparsers(dest="topics_command", required=True)
    tsub.add_parser("ensure", help="create every topic the pipeline uses").set_defaults(
        handler=topics_ensure
    )
    tlist = tsub.add_parser("list", help="the pipeline's topics with their roles")
    tlist.add_argument("--json", action="store_true", help="print a JSON list")
    tlist.set_defaults(handler=topics_list)


def kafka_start(args: argparse.Namespace, settings: Settings) -> int:
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


def kafka_stop(_args: argparse.Namespace, settings: Settings) -> int:
    if settings.bootstrap_servers:
        print("KAFKA_BOOTSTRAP_SERVERS is set: nothing of ours to stop")
        return 0
    stopped = local_broker(settings).stop()
    print("Kafka stopped" if stopped else "Kafka was not running")
    return 0


def kafka_status(_args: argparse.Namespace, settings: Settings) -> int:
    if settings.bootstrap_servers:
        print(f"external cluster at {settings.bootstrap_servers} (KAFKA_BOOTSTRAP_SERVERS)")
        return 0
    status = local_broker(settings).status()
    if status.running:
        print(f"running at {status.bootstrap} (pid {status.pid})")
        return 0
    print("not running (start it with `switchboard kafka start`)")
    return 3


def kafka_logs(args: argparse.Namespace, settings: Settings) -> int:
    broker = local_broker(settings)
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
