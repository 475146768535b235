"""``switchboard status``: the pipeline at a glance, from the status topic and the brokers'
offsets. ``consumers.status.view`` assembles it (the console reuses it); this module renders.
The ``--json`` shape is stable and documented in docs/operations.md ("Status")."""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from switchboard.cli.argtypes import positive_number
from switchboard.cli.bootstrap import resolve_bootstrap
from switchboard.core.errors import ConfigError
from switchboard.core.settings import Settings
from switchboard.core.topics import Topics

if TYPE_CHECKING:
    from rich.console import RenderableType

    from consumers.status.view import PipelineStatus, StatusReader

#: ``--watch`` with no number redraws this often.
DEFAULT_WATCH_S: Final = 2.0
#: Partitions a group's table row lists before "... N more" (JSON has them all).
_PARTITIONS_SHOWN: Final = 12

_seconds = positive_number("seconds", hint="e.g. --watch 5")


def register(sub: Any) -> None:
    status = sub.add_parser(
        "status",
        help="groups, lag, in-flight, retry backlog, DLQ depth, breakers and model spend",
    )
    status.add_argument("--json", action="store_true", help="print the documented JSON object")
    status.add_argument(
        "--watch",
        nargs="?",
        type=_seconds,
        const=DEFAULT_WATCH_S,
        metavar="SECONDS",
        help=f"redraw every SECONDS (default {DEFAULT_WATCH_S:g}) until Ctrl-C",
    )
    status.set_defaults(handler=status_cmd)


def _reader(settings: Settings) -> StatusReader:
    from consumers.status.view import StatusReader
    from switchboard.core.serde import make_codec

    kafka = settings.client_config(resolve_bootstrap(settings))
    return StatusReader(
        kafka, Topics(settings.topic_prefix), make_codec(settings.schema_registry_url)
    )


def status_cmd(args: argparse.Namespace, settings: Settings) -> int:
    if args.watch is not None and args.json:
        raise ConfigError("--watch redraws tables: drop --json, or drop --watch for one object")
    reader = _reader(settings)
    if args.watch is None:
        snapshot = _read(reader, settings)
        if args.json:
            print(json.dumps(snapshot.to_json(), indent=2, default=str))
        else:
            from rich.console import Console

            Console(highlight=False).print(render(snapshot))
        return 0
    from rich.live import Live

    with Live(render(_read(reader, settings)), auto_refresh=False, screen=False) as live:
        while True:  # until Ctrl-C (main turns KeyboardInterrupt into exit 130)
            time.sleep(args.watch)
            live.update(render(_read(reader, settings)), refresh=True)


def _read(reader: StatusReader, settings: Settings) -> PipelineStatus:
    snapshot = reader.read()
    if not any(g.partitions for g in snapshot.groups):
        raise ConfigError(
            f"no pipeline topics under prefix {settings.topic_prefix!r}: run `switchboard "
            "topics ensure`, or set SWITCHBOARD_TOPIC_PREFIX to the pipeline's prefix"
        )
    return snapshot


# --- rendering ---------------------------------------------------------------------------
def render(status: PipelineStatus) -> RenderableType:
    """Every table of the status page, for a terminal."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    when = datetime.fromtimestamp(status.generated_at_ms / 1000, UTC).strftime("%H:%M:%S UTC")
    parts: list[RenderableType] = [Text(f"switchboard status: {status.prefix} at {when}", "bold")]

    groups = Table(title="consumer groups", title_justify="left")
    for col in ("group", "state", "members", "lag", "in flight", "paused", "lag by partition"):
        groups.add_column(col, overflow="fold")
    groups.add_column("p50/p99 ms (1 min)", justify="right")
    for g in status.groups:
        # Only the partitions worth a look: behind, or paused (JSON has every one).
        lag_parts = [
            f"{p.topic.rsplit('.', 1)[-1]}[{p.partition}]={p.lag}" + (" paused" if p.paused else "")
            for p in g.partitions
            if p.lag or p.paused
        ]
        shown = " ".join(lag_parts[:_PARTITIONS_SHOWN]) or f"all {len(g.partitions)} at 0"
        if len(lag_parts) > _PARTITIONS_SHOWN:
            shown += f" ... {len(lag_parts) - _PARTITIONS_SHOWN} more"
        groups.add_row(
            g.role,  # the group is <prefix>.<role>; the prefix heads the page
            g.state,
            str(len(g.members)),
            _warn(g.lag),
            str(g.in_flight),
            str(g.paused),
            shown,
            latency_cell(g.latency),
        )
    parts.append(groups)

    retry = Table(title="retry backlog", title_justify="left")
    for col in ("tier", "backlog", "due now", "oldest due"):
        retry.add_column(col)
    for t in status.retry:
        backlog = f"{t.backlog}" + ("" if t.complete else "+")
        retry.add_row(f"{t.tier_s}s", backlog, str(t.due_now), _due(t.oldest_due_ms, status))
    parts.append(retry)

    dlq = Table(title="dead letters (not acknowledged)", title_justify="left")
    for col in ("topic", "depth", "by error class"):
        dlq.add_column(col)
    for d in status.dlq:
        classes = ", ".join(f"{k}={v}" for k, v in d.by_error_class.items()) or "-"
        dlq.add_row(d.topic, _warn(d.depth) if d.exists else "missing", classes)
    parts.append(dlq)

    spend = Table(title="specialists: breaker and the last hour", title_justify="left")
    for col in ("specialist", "breaker", "model calls", "in", "out", "cache read", "cache write"):
        spend.add_column(col)
    spend.add_column("cost (USD)", justify="right")
    for specialist in sorted(set(status.breakers) | set(status.usage)):
        u = status.usage.get(specialist, {})
        spend.add_row(
            specialist,
            _breaker(status.breakers.get(specialist, {}).get("state", "-")),
            str(u.get("model_calls", 0)),
            str(u.get("input_tokens", 0)),
            str(u.get("output_tokens", 0)),
            str(u.get("cache_read_input_tokens", 0)),
            str(u.get("cache_creation_input_tokens", 0)),
            f"{u.get('cost_micro_usd', 0) / 1_000_000:.4f}",
        )
    parts.append(spend)

    procs = Table(title="processes", title_justify="left")
    for col in ("process", "roles", "up", "last report", "status"):
        procs.add_column(col, overflow="fold")
    for p in status.processes:
        started = int(p.report.get("started_at_ms") or status.generated_at_ms)
        procs.add_row(
            p.process_id,
            ", ".join(p.report.get("roles", [])),
            _age((status.generated_at_ms - started) / 1000),
            f"{p.age_s:.0f}s ago",
            "[red]stale[/red]" if p.stale else "[green]live[/green]",
        )
    if not status.processes:
        procs.add_row("-", "no process reports (none running, or reports are off)", "", "", "")
    parts.append(procs)
    parts.extend(Text(note, "yellow") for note in status.notes)
    return Group(*parts)


def latency_cell(latency: dict[str, Any]) -> str:
    """End-to-end p50/p99 of a group's last minute: "-" for a group that measures none, "idle"
    when nothing was answered in it."""
    total = (latency.get("stages") or {}).get("total")
    if not total:
        return "-"
    if not total.get("count"):
        return "idle"
    return f"{format_ms(total.get('p50_ms'))} / {format_ms(total.get('p99_ms'))}"


def format_ms(value: float | None) -> str:
    """Milliseconds as the status page and the console show them (one decimal under 10)."""
    if value is None:
        return "-"
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}"


def _warn(value: int) -> str:
    return f"[yellow]{value}[/yellow]" if value else "0"


def _breaker(state: str) -> str:
    colour = {"closed": "green", "half_open": "yellow", "open": "red"}.get(state)
    return f"[{colour}]{state}[/{colour}]" if colour else state


def _due(due_ms: int | None, status: PipelineStatus) -> str:
    if due_ms is None:
        return "-"
    delta = (due_ms - status.generated_at_ms) / 1000
    return f"in {_age(delta)}" if delta > 0 else f"{_age(-delta)} ago"


def _age(seconds: float) -> str:
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"
