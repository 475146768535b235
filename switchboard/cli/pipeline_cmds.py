"""Pipeline commands: ``submit``, ``router``, ``worker``, ``relay``, ``up``, ``demo``,
``fake-anthropic``. Names and JSON keys are stable: other tools and scripts drive them."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import time
from pathlib import Path
from typing import Any

from switchboard.cli.argtypes import seconds, whole_number
from switchboard.cli.bootstrap import local_broker, resolve_bootstrap
from switchboard.core import logs
from switchboard.core.admin import ensure_topics
from switchboard.core.errors import ConfigError
from switchboard.core.kafka_clients import make_admin
from switchboard.core.settings import SPECIALISTS, Settings
from switchboard.core.topics import Topics

#: Model calls in flight per worker, at most.
MAX_CONCURRENCY = 10_000
_concurrency = whole_number(1, MAX_CONCURRENCY)


def register(sub: Any) -> None:
    submit = sub.add_parser("submit", help="submit a request (or a JSONL file of them)")
    submit.add_argument("text", nargs="?", help='e.g. "/backend design a rate limiter"')
    submit.add_argument(
        "--file", type=Path, help="JSONL: one {text, tenant?, specialist?, request_id?} a line"
    )
    submit.add_argument("--tenant", default="default")
    submit.add_argument("--specialist", choices=SPECIALISTS)
    submit.add_argument("--request-id")
    submit.add_argument(
        "--deadline",
        type=seconds,
        metavar="SECONDS",
        help="answer within this many seconds or expire",
    )
    submit.add_argument(
        "--wait",
        type=seconds,
        metavar="SECONDS",
        help="wait this long for the response and print it",
    )
    submit.add_argument("--json", action="store_true", help="print JSON (one object per response)")
    submit.set_defaults(handler=submit_cmd)

    router = sub.add_parser("router", help="run a router group member")
    router.set_defaults(handler=lambda a, s: _serve(s, ["router"], None))
    worker = sub.add_parser("worker", help="run a specialist worker group member")
    worker.add_argument("name", choices=SPECIALISTS)
    worker.add_argument(
        "--concurrency", type=_concurrency, help="model calls in flight (default 64)"
    )
    worker.set_defaults(handler=lambda a, s: _serve(s, [f"worker:{a.name}"], a.concurrency))
    relay = sub.add_parser("relay", help="run the retry relay")
    relay.set_defaults(handler=lambda a, s: _serve(s, ["relay"], None))

    up = sub.add_parser("up", help="broker if needed, topics, router, relay and all workers")
    up.add_argument("--concurrency", type=_concurrency, help="model calls in flight per specialist")
    up.set_defaults(handler=up_cmd)

    demo = sub.add_parser("demo", help="the main job: bring everything up and answer examples")
    demo.add_argument("--wait", type=seconds, default=60.0, metavar="SECONDS")
    demo.set_defaults(handler=demo_cmd)

    # Listed for --help; `main` hands its arguments to the fake's own parser.
    sub.add_parser("fake-anthropic", help="run the loopback fake Anthropic API server (--help)")


def _kafka(settings: Settings) -> dict[str, Any]:
    return settings.client_config(resolve_bootstrap(settings))


# --- submit -----------------------------------------------------------------------------
def _load_jsonl(path: Path) -> list[dict[str, Any]]:
    allowed = {"text", "tenant", "specialist", "request_id"}
    items = []
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError:
            raise ConfigError(f"{path}:{number} is not JSON: give one object per line") from None
        if not isinstance(item, dict) or not isinstance(item.get("text"), str):
            raise ConfigError(f'{path}:{number} needs a "text" string')
        unknown = set(item) - allowed
        if unknown:
            raise ConfigError(
                f"{path}:{number} has unknown keys {sorted(unknown)}; use {sorted(allowed)}"
            )
        if item.get("specialist") not in (None, *SPECIALISTS):
            raise ConfigError(f"{path}:{number} specialist must be one of {', '.join(SPECIALISTS)}")
        items.append(item)
    return items


def submit_cmd(args: argparse.Namespace, settings: Settings) -> int:
    from producers.client import ResultTimeout, SwitchboardClient
    from switchboard.core.envelope import content_codec

    if (args.text is None) == (args.file is None):
        raise ConfigError("give the request TEXT or --file REQUESTS.jsonl (exactly one)")
    items = _load_jsonl(args.file) if args.file else [{"text": args.text}]
    for item in items:
        item.setdefault("tenant", args.tenant)
        if args.specialist and "specialist" not in item:
            item["specialist"] = args.specialist
        if args.deadline:
            item["deadline_s"] = args.deadline
    if args.request_id:
        if len(items) != 1:
            raise ConfigError("--request-id works with a single TEXT; put ids in the JSONL file")
        items[0]["request_id"] = args.request_id
    client = SwitchboardClient(
        _kafka(settings),
        topic_prefix=settings.topic_prefix,
        codec=content_codec(settings),
    )
    try:
        ids = client.submit_many(items)
        if args.wait is None:
            for request_id in ids:
                print(
                    json.dumps({"request_id": request_id, "status": "submitted"})
                    if args.json
                    else request_id
                )
            return 0
        deadline = time.monotonic() + args.wait
        all_answered = True
        for request_id in ids:
            try:
                response = client.result(request_id, max(0.0, deadline - time.monotonic()))
            except ResultTimeout as exc:
                all_answered = False
                if args.json:
                    print(
                        json.dumps(
                            {
                                "request_id": request_id,
                                "status": "timeout",
                                "error_message": str(exc),
                            }
                        )
                    )
                else:
                    print(f"switchboard: error: {exc}", file=sys.stderr)
                continue
            all_answered &= response.answered
            if args.json:
                print(json.dumps(response.to_json()))
            else:
                _print_response(response)
        return 0 if all_answered else 1
    finally:
        client.close()


def _print_response(response: Any) -> None:
    from rich.console import Console
    from rich.markdown import Markdown
    from rich.panel import Panel

    latency = (response.record.get("stage_latency_ms") or {}).get("total")
    title = f"{response.specialist or '-'} · {response.status} · {response.backend or '-'}" + (
        f" · {latency} ms" if latency is not None else ""
    )
    Console().print(
        Panel(
            Markdown(response.content or "(no content)"), title=title, subtitle=response.request_id
        )
    )


# --- serving ----------------------------------------------------------------------------
def _configure_logging() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logs.at_least(logging.INFO)  # the CLI's handler (text or JSON) is there already: keep it
    # One INFO line per HTTP call drowns everything else at hundreds of calls a second.
    logging.getLogger("httpx2").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)


def _ensure_topics(settings: Settings, kafka: dict[str, Any]) -> None:
    specs = Topics(settings.topic_prefix).specs(
        retention_ms=settings.retention_ms, dlq_retention_ms=settings.dlq_retention_ms
    )
    ensure_topics(
        make_admin(kafka),
        specs,
        partitions=settings.partitions,
        replication_factor=settings.replication_factor,
    )


def _serve(settings: Settings, roles: list[str], concurrency: int | None) -> int:
    # A stop asked for while still starting up (imports, topic checks) is honoured once the
    # consumers exist, as a graceful stop rather than a kill.
    early_stop: list[int] = []
    previous = {
        sig: signal.signal(sig, lambda signum, _frame: early_stop.append(signum))
        for sig in (signal.SIGTERM, signal.SIGINT)
    }

    from consumers.app import Pipeline, install_signal_handlers

    _configure_logging()
    kafka = _kafka(settings)
    _ensure_topics(settings, kafka)
    log = logging.getLogger("switchboard")
    log.info("settings: %s", json.dumps(settings.masked(), sort_keys=True))

    async def main() -> None:
        pipeline = Pipeline(settings, kafka)
        if settings.metrics_port:
            # One server per process: /metrics, /healthz and /readyz on the metrics port.
            from switchboard.core.ops_http import OpsServer

            server = OpsServer(
                settings.metrics_port,
                settings.metrics_addr,
                health=pipeline.health.health,
                ready=pipeline.health.readiness,
            ).start()
            log.info("metrics, /healthz and /readyz on %s", server.url)
        for role in roles:
            if role == "router":
                pipeline.add_router()
            elif role == "relay":
                pipeline.add_relay()
            elif role == "all":
                pipeline.add_all(concurrency)
            else:
                pipeline.add_worker(role.split(":", 1)[1], concurrency)
        install_signal_handlers(pipeline.request_stop)
        if early_stop:
            pipeline.request_stop()
        log.info(
            "running %s (%s backend); Ctrl-C to stop",
            ", ".join(pipeline.runtimes),
            "offline" if settings.offline else "Claude",
        )
        await pipeline.run()

    try:
        asyncio.run(main())
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def _start_broker_if_needed(settings: Settings) -> bool:
    """Start the local broker unless one is given or running; True when we started it."""
    if settings.bootstrap_servers:
        return False
    bootstrap, started, note = local_broker(settings).start()
    if note:
        print(note)
    if started:
        print(f"Kafka ready at {bootstrap}")
    return started


def up_cmd(args: argparse.Namespace, settings: Settings) -> int:
    _start_broker_if_needed(settings)
    return _serve(settings, ["all"], args.concurrency)


# --- demo -------------------------------------------------------------------------------
DEMO_REQUESTS = (
    "/backend design microservices handling 50K RPS with circuit breakers and bulkhead patterns",
    "/backend design API gateway with rate limiting (1000 RPS per user) and JWT validation",
    "/api design a versioned REST API for order management with idempotency keys and pagination",
    "/data build a CDC pipeline from PostgreSQL into a warehouse with schema evolution",
    "/perf profile and optimize Go service from 200ms to <50ms p99 latency",
    "/security threat model a multi-tenant OAuth2/OIDC login with key rotation",
    "Our checkout endpoint's p99 jumped from 80ms to 900ms after a deploy; how do we find why?",
)


def demo_cmd(args: argparse.Namespace, settings: Settings) -> int:
    from rich.console import Console
    from rich.table import Table

    from consumers.app import Pipeline, install_signal_handlers
    from producers.client import AsyncSwitchboardClient, ResultTimeout
    from switchboard.core.envelope import content_codec

    console = Console()
    started = _start_broker_if_needed(settings)
    try:
        kafka = _kafka(settings)
        _ensure_topics(settings, kafka)
        backend = "offline rulebook" if settings.offline else "Claude"
        console.print(f"[bold]Switchboard demo[/]: router, relay and 5 specialists ({backend})")

        async def main() -> list[Any]:
            pipeline = Pipeline(settings, kafka)
            pipeline.add_all()
            install_signal_handlers(pipeline.request_stop)
            running = asyncio.create_task(pipeline.run())
            await pipeline.wait_ready()
            client = AsyncSwitchboardClient(
                kafka,
                topic_prefix=settings.topic_prefix,
                tenant="demo",
                codec=content_codec(settings),
            )
            results: list[Any] = []
            try:
                began = time.monotonic()
                ids = [await client.submit(text) for text in DEMO_REQUESTS]
                for text, request_id in zip(DEMO_REQUESTS, ids, strict=True):
                    remaining = max(0.1, args.wait - (time.monotonic() - began))
                    try:
                        results.append((text, await client.result(request_id, remaining)))
                    except ResultTimeout as exc:
                        results.append((text, exc))
            finally:
                await client.close()
                pipeline.request_stop()
                await running
            return results

        results = asyncio.run(main())
    finally:
        if started:
            local_broker(settings).stop()
            console.print("Kafka stopped (the demo started it)")

    table = Table(title="Summary")
    for column in ("request", "specialist", "status", "backend", "latency"):
        table.add_column(column, overflow="fold")
    answered = 0
    for text, response in results:
        if isinstance(response, Exception):
            console.print(f"[red]{text}[/]: {response}")
            table.add_row(text, "-", "timeout", "-", "-")
            continue
        console.print(f"[bold]> {text}[/]")
        _print_response(response)
        answered += response.answered
        latency = (response.record.get("stage_latency_ms") or {}).get("total")
        table.add_row(
            text,
            response.specialist,
            response.status,
            response.backend,
            f"{latency} ms" if latency is not None else "-",
        )
    console.print(table)
    console.print(f"{answered}/{len(results)} answered")
    return 0 if answered == len(results) else 1
