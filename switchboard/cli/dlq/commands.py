"""``switchboard dlq``: list, show, replay and purge dead letters. Names and JSON keys are stable.

``replay`` and ``purge`` are dry runs unless given ``--apply``; a dry run writes nothing at
all. The engine is ``consumers.replay``; docs/dlq.md is the operator's guide.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import sys
from typing import TYPE_CHECKING, Any

from switchboard.cli.bootstrap import resolve_bootstrap
from switchboard.core.errors import ConfigError, ErrorClass
from switchboard.core.kafka_clients import producer_config
from switchboard.core.settings import SPECIALISTS, Settings
from switchboard.core.topics import Topics

if TYPE_CHECKING:
    from rich.console import Console

    from consumers.replay import DeadLetterStore, DeadLetterView, ReplayFilter

#: Rows a table shows before "... and N more" (JSON output always has every record).
DEFAULT_ROWS = 50
_ERROR_CLASSES = (*(str(c) for c in ErrorClass), "undecodable")
_PREVIEW_BYTES = 64


# --- argument types: each error is one line that says what to change ---------------------------
def _error_class(text: str) -> str:
    if text not in _ERROR_CLASSES:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an error class: use one of " + ", ".join(_ERROR_CLASSES)
        )
    return text


def _specialist(text: str) -> str:
    if text not in SPECIALISTS:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a specialist: use one of {', '.join(SPECIALISTS)}"
        )
    return text


def _non_empty(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty value matches nothing: give a value")
    return text.strip()


def _instant(text: str) -> int:
    from consumers.replay import parse_instant

    try:
        return parse_instant(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _record_id(text: str) -> tuple[str | None, int, int]:
    from consumers.replay import parse_record_id

    try:
        return parse_record_id(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of records a second") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(
            f"{text!r} must be more than 0 (leave --rate out for no limit)"
        )
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be 1 or more")
    return value


def _add_source(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument(
        "--parking-lot",
        action="store_true",
        help="act on the parking lot (replays that failed again), not the DLQ",
    )
    cmd.add_argument("--json", action="store_true", help="print one JSON object")


def _add_filters(cmd: argparse.ArgumentParser) -> None:
    group = cmd.add_argument_group("filters (repeat a flag for OR; different flags AND)")
    group.add_argument(
        "--error-class",
        type=_error_class,
        action="append",
        default=[],
        metavar="CLASS",
        help=", ".join(_ERROR_CLASSES),
    )
    group.add_argument(
        "--error-code",
        type=_non_empty,
        action="append",
        default=[],
        metavar="CODE",
        help="e.g. invalid_request, decode_error",
    )
    group.add_argument(
        "--specialist",
        type=_specialist,
        action="append",
        default=[],
        metavar="NAME",
        help=", ".join(SPECIALISTS),
    )
    group.add_argument("--tenant", type=_non_empty, action="append", default=[])
    group.add_argument("--request-id", type=_non_empty, action="append", default=[])
    group.add_argument(
        "--id",
        type=_record_id,
        action="append",
        default=[],
        dest="ids",
        metavar="ID",
        help="a dead letter id: PARTITION:OFFSET or TOPIC/P/O",
    )
    group.add_argument(
        "--since",
        type=_instant,
        metavar="TIME",
        help="dead-lettered at or after: ISO 8601 (UTC unless an offset is "
        "given) or a duration ago (30m, 2h, 7d)",
    )
    group.add_argument("--until", type=_instant, metavar="TIME", help="dead-lettered at or before")


def _add_include_acked(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument(
        "--include-acked",
        action="store_true",
        help="include acknowledged (purged) records, hidden by default",
    )


def register(sub: Any) -> None:
    dlq = sub.add_parser("dlq", help="inspect, replay and acknowledge dead letters")
    dlq_sub = dlq.add_subparsers(dest="dlq_command", required=True, parser_class=type(dlq))

    list_cmd = dlq_sub.add_parser(
        "list", help="dead letters, with counts by error class, specialist, tenant and age"
    )
    _add_source(list_cmd)
    _add_filters(list_cmd)
    _add_include_acked(list_cmd)
    list_cmd.add_argument(
        "--limit",
        type=_count,
        default=None,
        metavar="N",
        help=f"rows to show (table default {DEFAULT_ROWS}; JSON: all)",
    )
    list_cmd.set_defaults(handler=list_dead_letters)

    show = dlq_sub.add_parser("show", help="one dead letter: error, attempts, original record")
    show.add_argument(
        "record_id",
        type=_record_id,
        metavar="ID",
        help="PARTITION:OFFSET or TOPIC/PARTITION/OFFSET, as `dlq list` prints",
    )
    _add_source(show)
    show.set_defaults(handler=show_dead_letter)

    replay = dlq_sub.add_parser(
        "replay", help="send dead letters back to their origin topic (a dry run unless --apply)"
    )
    _add_source(replay)
    _add_filters(replay)
    _add_include_acked(replay)
    replay.add_argument("--apply", action="store_true", help="send (without it: a dry run)")
    replay.add_argument("--all", action="store_true", help="allow --apply with no filter")
    replay.add_argument("--rate", type=_rate, metavar="N", help="at most N records a second")
    replay.add_argument("--limit", type=_count, metavar="N", help="send at most N records")
    replay.set_defaults(handler=replay_dead_letters)

    purge = dlq_sub.add_parser(
        "purge",
        help="acknowledge dead letters so list and replay hide them (a dry run unless --apply)",
    )
    _add_source(purge)
    _add_filters(purge)
    purge.add_argument("--apply", action="store_true", help="acknowledge (without it: a dry run)")
    purge.add_argument("--all", action="store_true", help="allow --apply with no filter")
    purge.add_argument("--reason", type=_non_empty, help="kept with each acknowledgement")
    purge.set_defaults(handler=purge_dead_letters)


# --- shared plumbing ---------------------------------------------------------------------------
def _source(args: argparse.Namespace, settings: Settings) -> str:
    """The dead-letter topic a command reads: the DLQ, or the parking lot."""
    topics = Topics(settings.topic_prefix)
    return topics.parking_lot if args.parking_lot else topics.dlq


def _store(settings: Settings, source: str) -> tuple[dict[str, Any], DeadLetterStore]:
    from consumers.replay import DeadLetterStore
    from switchboard.core.serde import make_codec

    kafka = settings.client_config(resolve_bootstrap(settings))
    codec = make_codec(settings.schema_registry_url)
    return kafka, DeadLetterStore(kafka, Topics(settings.topic_prefix), codec, source=source)


def _filter(args: argparse.Namespace, source: str) -> ReplayFilter:
    from consumers.replay import ReplayFilter, pointer

    pointers = set()
    for topic, partition, offset in args.ids:
        if topic is not None and topic != source:
            raise ConfigError(
                f"--id {topic}/{partition}/{offset} is not in {source}: "
                "use --parking-lot for the parking lot, or PARTITION:OFFSET"
            )
        pointers.add(pointer(source, partition, offset))
    return ReplayFilter(
        error_classes=frozenset(args.error_class),
        error_codes=frozenset(args.error_code),
        specialists=frozenset(args.specialist),
        tenants=frozenset(args.tenant),
        request_ids=frozenset(args.request_id),
        pointers=frozenset(pointers),
        since_ms=args.since,
        until_ms=args.until,
    )


def _check_apply(args: argparse.Namespace, flt: ReplayFilter, verb: str) -> None:
    if args.apply and flt.is_empty and not args.all:
        raise ConfigError(
            f"--apply with no filter would {verb} every dead letter: add a filter "
            "(e.g. --specialist api) or --all"
        )


def _console() -> Console:
    from rich.console import Console

    return Console(highlight=False)


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


def _table(rows: list[dict[str, Any]], columns: list[str], title: str, limit: int | None) -> None:
    from rich.table import Table

    console = _console()
    shown = rows if limit is None else rows[:limit]
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in shown:
        table.add_row(*("-" if row.get(c) in (None, "") else str(row[c]) for c in columns))
    console.print(table)
    if len(rows) > len(shown):
        console.print(f"... and {len(rows) - len(shown)} more (--limit N, or --json for all)")


# --- list --------------------------------------------------------------------------------------
def list_dead_letters(args: argparse.Namespace, settings: Settings) -> int:
    from consumers.outcomes import now_ms
    from consumers.replay import group_counts, ledger_state, select

    source = _source(args, settings)
    flt = _filter(args, source)
    _kafka, store = _store(settings, source)
    snap = store.snapshot(flt.since_ms)
    letters, acked = snap.letters, snap.acks
    chosen = select(letters, flt, acked, include_acked=args.include_acked)
    records = sorted(chosen.records, key=lambda x: x.failed_at_ms, reverse=True)
    now = now_ms()
    rows = ledger_state(records, acked, snap.replays)
    groups = group_counts(records, now)
    if args.json:
        _print_json(
            {
                "topic": store.topic,
                "scanned": len(letters),
                "matched": len(records),
                "hidden_acked": chosen.hidden_acked,
                "generated_at_ms": now,
                "records": rows if args.limit is None else rows[: args.limit],
                "groups": groups,
            }
        )
        return 0
    hidden = (
        f"; {chosen.hidden_acked} acknowledged hidden (--include-acked)"
        if chosen.hidden_acked
        else ""
    )
    title = f"{store.topic}: {len(records)} of {len(letters)} dead letters match{hidden}"
    if not records:
        _console().print(title)
        return 0
    for row in rows:
        flags = ("acked" if row["acked"] else "", "replayed" if row["replayed"] else "")
        row["flags"] = ",".join(f for f in flags if f)
        row["age"] = _age(now - row["failed_at_ms"])
        row["error"] = "/".join(str(x) for x in (row["error_class"], row["error_code"]) if x)
    # The origin topic and stage are in --json and `dlq show`; 80 columns hold the rest.
    columns = ["id", "age", "request_id", "error", "specialist", "tenant", "flags"]
    _table(rows, columns, title, args.limit or DEFAULT_ROWS)
    _print_groups(groups)
    return 0


def _age(ms: int) -> str:
    """``ms`` as the one largest unit: 40s, 12m, 5h, 3d."""
    seconds = max(0, ms // 1000)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _print_groups(groups: dict[str, dict[str, int]]) -> None:
    from rich.table import Table

    table = Table(title="counts", title_justify="left", show_header=True)
    for name in groups:
        table.add_column(name.replace("_", " "))
    columns = [[f"{key}: {count}" for key, count in counts.items()] for counts in groups.values()]
    for i in range(max((len(c) for c in columns), default=0)):
        table.add_row(*(c[i] if i < len(c) else "" for c in columns))
    _console().print(table)


# --- show --------------------------------------------------------------------------------------
def show_dead_letter(args: argparse.Namespace, settings: Settings) -> int:
    from consumers.replay import iso

    source = _source(args, settings)
    topic, partition, offset = args.record_id
    if topic is not None and topic != source:
        raise ConfigError(
            f"{topic} is not {source}: use --parking-lot for the parking lot, "
            "or give PARTITION:OFFSET"
        )
    _kafka, store = _store(settings, source)
    letter = store.fetch(partition, offset)
    acked = store.acks().get(letter.pointer)
    replayed = store.replays().get(letter.pointer)
    detail = _detail(letter, store)
    detail["acked"] = acked
    detail["replayed"] = replayed
    if args.json:
        _print_json(detail)
        return 0
    from rich.panel import Panel
    from rich.table import Table

    console = _console()
    if letter.record is None:
        console.print(
            Panel(
                f"{detail['decode_error']}\n\nvalue: {detail['value_preview']}",
                title=f"{letter.pointer}: undecodable",
            )
        )
        return 0
    r = letter.record
    facts = Table.grid(padding=(0, 2))
    for name in (
        "request_id",
        "tenant",
        "specialist",
        "stage",
        "error_class",
        "error_code",
        "error_type",
        "provider_status",
        "provider_request_id",
        "consumer_group",
    ):
        facts.add_row(name, "-" if r.get(name) is None else str(r.get(name)))
    facts.add_row("origin", f"{r['origin_topic']} [{r['origin_partition']}] @{r['origin_offset']}")
    facts.add_row("first failure", str(iso(r["first_failure_ms"])))
    facts.add_row("last failure", str(iso(r["last_failure_ms"])))
    facts.add_row("acknowledged", "no" if acked is None else f"yes ({acked.get('reason') or '-'})")
    facts.add_row(
        "replayed",
        "no" if replayed is None else f"{replayed.get('replay_id')} -> {replayed.get('sent_to')}",
    )
    console.print(Panel(facts, title=f"{letter.pointer}"))
    console.print(Panel(r.get("error_message") or "-", title="error"))
    attempts = Table(title="attempts", title_justify="left")
    for column in ("attempt", "at", "error_type", "error_message"):
        attempts.add_column(column, overflow="fold")
    for a in detail["attempts"]:
        attempts.add_row(str(a["attempt"]), str(a["at"]), a["error_type"], a["error_message"])
    console.print(attempts)
    original = detail["original"]
    headers = "\n".join(f"{k}: {v}" for k, v in original["headers"].items()) or "-"
    console.print(Panel(f"key: {original['key']}\n{headers}", title="original key and headers"))
    body = (
        json.dumps(original["request"], indent=2, default=str)
        if original["request"]
        else f"does not decode as a request: {original['request_error']}"
    )
    console.print(
        Panel(
            f"{original['value_size']} bytes: {original['value_preview']}\n\n{body}",
            title="original value",
        )
    )
    return 0


def _printable(value: bytes | None) -> str | None:
    if value is None:
        return None
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return "hex:" + value.hex()
    return text if text.isprintable() else "hex:" + value.hex()


def _preview(value: bytes) -> str:
    head = value[:_PREVIEW_BYTES].hex(" ")
    return head + (" ..." if len(value) > _PREVIEW_BYTES else "")


def _detail(letter: DeadLetterView, store: DeadLetterStore) -> dict[str, Any]:
    """The stable JSON of ``dlq show --json``."""
    from consumers.replay import iso
    from switchboard.core.errors import DecodeError
    from switchboard.core.serde import REQUEST

    detail: dict[str, Any] = {
        "id": letter.id,
        "pointer": letter.pointer,
        "undecodable": letter.undecodable,
        "headers": {k: _printable(v) for k, v in letter.headers},
    }
    if letter.record is None:
        raw = letter.raw_value or b""
        detail.update(
            decode_error=letter.decode_error,
            value_size=len(raw),
            value_preview=_preview(raw),
            value_base64=base64.b64encode(raw).decode(),
        )
        return detail
    r = letter.record
    value: bytes = r["original_value"]
    try:
        request: dict[str, Any] | None = store.codec.decode(REQUEST, value, r["origin_topic"])
        request_error = None
    except DecodeError as exc:
        request, request_error = None, str(exc)
    skip = {"original_key", "original_value", "original_headers", "attempts"}
    detail["record"] = {k: v for k, v in r.items() if k not in skip}
    detail["attempts"] = [dict(a, at=iso(a["at_ms"])) for a in r.get("attempts") or []]
    detail["original"] = {
        "key": _printable(r.get("original_key")),
        "headers": {item["key"]: _printable(item["value"]) for item in r["original_headers"]},
        "value_size": len(value),
        "value_preview": _preview(value),
        "value_base64": base64.b64encode(value).decode(),
        "request": request,
        "request_error": request_error,
    }
    return detail


# --- replay and purge --------------------------------------------------------------------------
def _summary_rows(letters: list[DeadLetterView]) -> list[dict[str, Any]]:
    return [
        {
            "id": x.id,
            "pointer": x.pointer,
            "request_id": x.request_id,
            "origin_topic": x.origin_topic,
            "specialist": x.specialist,
            "tenant": x.tenant,
            "error_class": x.error_class,
            "error_code": x.error_code,
        }
        for x in letters
    ]


def replay_dead_letters(args: argparse.Namespace, settings: Settings) -> int:
    from consumers.replay import new_replay_id, plan_replay, select

    source = _source(args, settings)
    flt = _filter(args, source)
    _check_apply(args, flt, "replay")
    kafka, store = _store(settings, source)
    snap = store.snapshot(flt.since_ms)
    chosen = select(snap.letters, flt, snap.acks, include_acked=args.include_acked)
    plan = plan_replay(
        chosen.records,
        replayed=snap.replays,
        settled=store.settled_requests(chosen.records),
        limit=args.limit,
    )
    skipped = plan.skipped_counts()
    if chosen.hidden_acked:
        skipped["acknowledged"] = chosen.hidden_acked
    rows = _summary_rows(plan.to_send)
    summary: dict[str, Any] = {
        "dry_run": not args.apply,
        "source": store.topic,
        "matched": len(chosen.records) + chosen.hidden_acked,
        "skipped": skipped,
    }
    if not args.apply:
        summary.update(would_send=len(plan.to_send), records=rows)
        if args.json:
            _print_json(summary)
        else:
            _print_plan(summary, rows, f"would replay {len(rows)}", "add --apply to send them")
        return 0
    missing = store.missing_topics({str(x.origin_topic) for x in plan.to_send})
    if missing:
        raise ConfigError(
            f"origin topic {', '.join(missing)} does not exist: create it (or "
            "narrow the filter) before replaying"
        )
    if plan.to_send:
        store.ensure_ledgers(
            replication_factor=settings.replication_factor, retention_ms=settings.dlq_retention_ms
        )
    result = asyncio.run(
        _send(kafka, store.topics, plan.to_send, args.rate, new_replay_id(), progress=not args.json)
    )
    summary.update(
        replay_id=result.replay_id,
        sent=len(result.sent),
        records=_summary_rows(result.sent),
        failed=[{"id": x.id, "error": error} for x, error in result.failed],
        elapsed_s=round(result.elapsed_s, 3),
        rate_per_s=round(result.rate_per_s, 1),
    )
    if args.json:
        _print_json(summary)
    else:
        _print_plan(
            summary,
            rows,
            f"replay {result.replay_id}: {len(result.sent)}",
            f"{len(result.sent)} sent in {result.elapsed_s:.2f}s "
            f"({result.rate_per_s:.0f}/s); {len(result.failed)} failed",
        )
        for letter, error in result.failed:
            print(f"switchboard: error: {letter.id}: {error}", file=sys.stderr)
    return 1 if result.failed else 0


async def _send(
    kafka: dict[str, Any],
    topics: Topics,
    letters: list[DeadLetterView],
    rate: float | None,
    replay_id: str,
    *,
    progress: bool,
) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from consumers.replay import Replayer
    from switchboard.core.aio_producer import AsyncProducer

    producer = AsyncProducer(producer_config(kafka))
    replayer = Replayer(producer, topics, replay_id=replay_id, rate=rate)
    bar = Progress(
        "replaying",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        disable=not progress,
        console=_stderr(),
    )
    try:
        with bar:
            task = bar.add_task("replay", total=len(letters))
            return await replayer.replay(letters, lambda _x, _ok: bar.advance(task))
    finally:
        await asyncio.to_thread(producer.close)


def _stderr() -> Console:
    from rich.console import Console

    return Console(stderr=True)


def _print_plan(
    summary: dict[str, Any], rows: list[dict[str, Any]], headline: str, tail: str
) -> None:
    console = _console()
    prefix = "DRY RUN: " if summary["dry_run"] else ""
    console.print(
        f"{prefix}{headline} of {summary['matched']} matching dead letters in {summary['source']}"
    )
    if summary["skipped"]:
        reasons = (f"{n} {k.replace('_', ' ')}" for k, n in summary["skipped"].items())
        console.print("skipped: " + ", ".join(reasons))
    if rows:
        columns = ["id", "request_id", "origin_topic", "specialist", "tenant", "error_class"]
        _table(rows, columns, "", DEFAULT_ROWS)
    console.print(tail)


def purge_dead_letters(args: argparse.Namespace, settings: Settings) -> int:
    from consumers.replay import acknowledge, select

    source = _source(args, settings)
    flt = _filter(args, source)
    _check_apply(args, flt, "acknowledge")
    kafka, store = _store(settings, source)
    chosen = select(store.scan(flt.since_ms), flt, store.acks())  # acked ones: nothing to do
    rows = _summary_rows(chosen.records)
    summary: dict[str, Any] = {
        "dry_run": not args.apply,
        "source": store.topic,
        "matched": len(chosen.records) + chosen.hidden_acked,
        "skipped": {"already_acknowledged": chosen.hidden_acked} if chosen.hidden_acked else {},
    }
    if not args.apply:
        summary.update(would_acknowledge=len(rows), records=rows)
        if args.json:
            _print_json(summary)
        else:
            headline = f"would acknowledge {len(rows)}"
            _print_plan(summary, rows, headline, "add --apply to acknowledge them")
        return 0
    if chosen.records:
        store.ensure_ledgers(
            replication_factor=settings.replication_factor, retention_ms=settings.dlq_retention_ms
        )

    async def write() -> int:
        from switchboard.core.aio_producer import AsyncProducer

        producer = AsyncProducer(producer_config(kafka))
        try:
            return await acknowledge(producer, store.topics, chosen.records, reason=args.reason)
        finally:
            await asyncio.to_thread(producer.close)

    summary.update(acknowledged=asyncio.run(write()) if chosen.records else 0, records=rows)
    if args.json:
        _print_json(summary)
    else:
        _print_plan(
            summary,
            rows,
            f"acknowledged {len(rows)}",
            "list and replay now hide them (--include-acked shows them); retention frees the space",
        )
    return 0
