"""The ``switchboard dlq`` commands: read, choose, then print or write.

``replay`` and ``purge`` are dry runs unless given ``--apply``; a dry run writes nothing at all.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import TYPE_CHECKING, Any

from switchboard.cli.bootstrap import resolve_bootstrap
from switchboard.cli.dlq import render
from switchboard.core.errors import ConfigError
from switchboard.core.kafka_clients import producer_config
from switchboard.core.settings import Settings
from switchboard.core.topics import Topics

if TYPE_CHECKING:
    from consumers.replay.replayer import ReplayResult
    from consumers.replay.selection import ReplayFilter
    from consumers.replay.store import DeadLetterStore
    from consumers.replay.view import DeadLetterView


# --- shared plumbing ---------------------------------------------------------------------------
def _source(args: argparse.Namespace, settings: Settings) -> str:
    """The dead-letter topic a command reads: the DLQ, or the parking lot."""
    topics = Topics(settings.topic_prefix)
    return topics.parking_lot if args.parking_lot else topics.dlq


def _store(settings: Settings, source: str) -> tuple[dict[str, Any], DeadLetterStore]:
    from consumers.replay.store import DeadLetterStore
    from switchboard.core.envelope import content_codec

    kafka = settings.client_config(resolve_bootstrap(settings))
    codec = content_codec(settings)
    return kafka, DeadLetterStore(kafka, Topics(settings.topic_prefix), codec, source=source)


def _filter(args: argparse.Namespace, source: str) -> ReplayFilter:
    from consumers.replay.parsing import pointer
    from consumers.replay.selection import ReplayFilter

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


def _ensure_ledgers(store: DeadLetterStore, settings: Settings) -> None:
    store.ensure_ledgers(
        replication_factor=settings.replication_factor, retention_ms=settings.dlq_retention_ms
    )


# --- list --------------------------------------------------------------------------------------
def _print_summary(
    args: argparse.Namespace,
    summary: dict[str, Any],
    rows: list[dict[str, Any]],
    headline: str,
    tail: str,
) -> None:
    """``summary`` as JSON, or as the plan table under ``headline`` and above ``tail``."""
    if args.json:
        render.print_json(summary)
    else:
        render.print_plan(summary, rows, headline, tail)


def list_dead_letters(args: argparse.Namespace, settings: Settings) -> int:
    from consumers.outcomes import now_ms
    from consumers.replay.ledgers import ledger_state
    from consumers.replay.selection import group_counts, select

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
        render.print_json(
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
    render.print_list(rows, groups, title, now, args.limit)
    return 0


# --- show --------------------------------------------------------------------------------------
def show_dead_letter(args: argparse.Namespace, settings: Settings) -> int:
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
    detail = render.detail(letter, store.codec)
    detail["acked"] = acked
    detail["replayed"] = replayed
    if args.json:
        render.print_json(detail)
    else:
        render.print_detail(letter, detail, acked, replayed)
    return 0


# --- replay ------------------------------------------------------------------------------------
def replay_dead_letters(args: argparse.Namespace, settings: Settings) -> int:
    from consumers.replay.replayer import new_replay_id
    from consumers.replay.selection import plan_replay, select

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
    rows = render.summary_rows(plan.to_send)
    summary: dict[str, Any] = {
        "dry_run": not args.apply,
        "source": store.topic,
        "matched": len(chosen.records) + chosen.hidden_acked,
        "skipped": skipped,
    }
    if not args.apply:
        summary.update(would_send=len(rows), records=rows)
        _print_summary(args, summary, rows, f"would replay {len(rows)}", "add --apply to send them")
        return 0
    missing = store.missing_topics({str(x.origin_topic) for x in plan.to_send})
    if missing:
        raise ConfigError(
            f"origin topic {', '.join(missing)} does not exist: create it (or "
            "narrow the filter) before replaying"
        )
    if plan.to_send:
        _ensure_ledgers(store, settings)
    result = asyncio.run(
        _send(kafka, store.topics, plan.to_send, args.rate, new_replay_id(), progress=not args.json)
    )
    summary.update(
        replay_id=result.replay_id,
        sent=len(result.sent),
        records=render.summary_rows(result.sent),
        failed=[{"id": x.id, "error": error} for x, error in result.failed],
        elapsed_s=round(result.elapsed_s, 3),
        rate_per_s=round(result.rate_per_s, 1),
    )
    _print_summary(
        args,
        summary,
        rows,
        f"replay {result.replay_id}: {len(result.sent)}",
        f"{len(result.sent)} sent in {result.elapsed_s:.2f}s "
        f"({result.rate_per_s:.0f}/s); {len(result.failed)} failed",
    )
    if not args.json:
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
) -> ReplayResult:
    from consumers.replay.replayer import Replayer
    from switchboard.core.aio_producer import AsyncProducer

    producer = AsyncProducer(producer_config(kafka))
    replayer = Replayer(producer, topics, replay_id=replay_id, rate=rate)
    bar = render.replay_progress(enabled=progress)
    try:
        with bar:
            task = bar.add_task("replay", total=len(letters))
            return await replayer.replay(letters, lambda _x, _ok: bar.advance(task))
    finally:
        await asyncio.to_thread(producer.close)


# --- purge -------------------------------------------------------------------------------------
def purge_dead_letters(args: argparse.Namespace, settings: Settings) -> int:
    from consumers.replay.ledgers import acknowledge
    from consumers.replay.selection import select

    source = _source(args, settings)
    flt = _filter(args, source)
    _check_apply(args, flt, "acknowledge")
    kafka, store = _store(settings, source)
    chosen = select(store.scan(flt.since_ms), flt, store.acks())  # acked ones: nothing to do
    rows = render.summary_rows(chosen.records)
    summary: dict[str, Any] = {
        "dry_run": not args.apply,
        "source": store.topic,
        "matched": len(chosen.records) + chosen.hidden_acked,
        "skipped": {"already_acknowledged": chosen.hidden_acked} if chosen.hidden_acked else {},
    }
    if not args.apply:
        summary.update(would_acknowledge=len(rows), records=rows)
        headline = f"would acknowledge {len(rows)}"
        _print_summary(args, summary, rows, headline, "add --apply to acknowledge them")
        return 0
    if chosen.records:
        _ensure_ledgers(store, settings)

    async def write() -> int:
        from switchboard.core.aio_producer import AsyncProducer

        producer = AsyncProducer(producer_config(kafka))
        try:
            return await acknowledge(producer, store.topics, chosen.records, reason=args.reason)
        finally:
            await asyncio.to_thread(producer.close)

    summary.update(acknowledged=asyncio.run(write()) if chosen.records else 0, records=rows)
    _print_summary(
        args,
        summary,
        rows,
        f"acknowledged {len(rows)}",
        "list and replay now hide them (--include-acked shows them); retention frees the space",
    )
    return 0
