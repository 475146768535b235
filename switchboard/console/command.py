"""``switchboard console [--host H] [--port P]``: builds the console and serves it with uvicorn."""

from __future__ import annotations

import argparse
import logging
from typing import Any, Final

from switchboard.core.errors import ConfigError
from switchboard.core.settings import Settings

#: Loopback by default: the console shows request text and replays records.
DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 8088

log = logging.getLogger(__name__)


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a port: give 1-65535, e.g. --port 8088"
        ) from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port: give 1-65535, e.g. --port 8088")
    return port


def register(sub: Any) -> None:
    console = sub.add_parser(
        "console", help="the operator console: overview, dead letters, replay, audit (web)"
    )
    console.add_argument(
        "--host", default=DEFAULT_HOST, help=f"bind address (default {DEFAULT_HOST})"
    )
    console.add_argument(
        "--port", type=_port, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})"
    )
    console.set_defaults(handler=console_cmd)


def build_console(settings: Settings, kafka: dict[str, Any]) -> Any:
    """The ``Console`` of ``settings`` (users, topics, cache), not started."""
    from switchboard.console.app import Console
    from switchboard.console.auth import Users
    from switchboard.console.cache import ConsoleCache
    from switchboard.core.admin import ensure_topics
    from switchboard.core.envelope import content_codec
    from switchboard.core.kafka_clients import make_admin
    from switchboard.core.topics import Topics

    accounts = settings.console_accounts()
    if not accounts:
        raise ConfigError(
            'no console users: set SWITCHBOARD_CONSOLE_USERS=\'{"alice": {"password": "...", '
            '"role": "operator"}}\' (roles: viewer, operator)'
        )
    topics = Topics(settings.topic_prefix)
    codec = content_codec(settings)
    ensure_topics(
        make_admin(dict(kafka)),
        [topics.audit_spec(settings.dlq_retention_ms)],
        partitions=1,
        replication_factor=settings.replication_factor,
    )
    return Console(
        kafka=kafka,
        topics=topics,
        codec=codec,
        users=Users(accounts),
        cache=ConsoleCache(kafka, topics, codec, refresh_s=settings.console_refresh_s),
        review_dir=settings.review_dir,
        max_replay_rate=settings.console_max_replay_rate,
        replication_factor=settings.replication_factor,
        dlq_retention_ms=settings.dlq_retention_ms,
    )


def console_cmd(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from switchboard.cli.bootstrap import resolve_bootstrap
    from switchboard.console.app import create_app

    kafka = settings.client_config(resolve_bootstrap(settings))
    app = create_app(build_console(settings, kafka))
    print(f"switchboard console on http://{args.host}:{args.port}/ (Ctrl-C stops)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
