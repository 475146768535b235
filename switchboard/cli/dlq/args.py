"""The ``switchboard dlq`` parser: subcommands, flags and their argument types."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from consumers.replay.view import ERROR_CLASSES
from switchboard.cli.argtypes import count, non_empty, one_of, parsed_by, positive_number
from switchboard.cli.dlq import commands
from switchboard.cli.dlq.render import DEFAULT_ROWS
from switchboard.core.settings import SPECIALISTS


def _instant(text: str) -> int:
    from consumers.replay.parsing import parse_instant

    return parse_instant(text)


def _record_id(text: str) -> tuple[str | None, int, int]:
    from consumers.replay.parsing import parse_record_id

    return parse_record_id(text)


error_class = one_of("an error class", ERROR_CLASSES)
specialist = one_of("a specialist", SPECIALISTS)
instant = parsed_by(_instant)
record_id = parsed_by(_record_id)
rate = positive_number("records a second", hint="leave --rate out for no limit")


#: The filters that take one value a flag, repeated for OR: flag, how a value is read, and the
#: metavar and help (None: argparse's own).
_REPEATABLE_FILTERS: tuple[tuple[str, Callable[[str], Any], str | None, str | None], ...] = (
    ("--error-class", error_class, "CLASS", ", ".join(ERROR_CLASSES)),
    ("--error-code", non_empty, "CODE", "e.g. invalid_request, decode_error"),
    ("--specialist", specialist, "NAME", ", ".join(SPECIALISTS)),
    ("--tenant", non_empty, None, None),
    ("--request-id", non_empty, None, None),
)


def _add_source(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument(
        "--parking-lot",
        action="store_true",
        help="act on the parking lot (replays that failed again), not the DLQ",
    )
    cmd.add_argument("--json", action="store_true", help="print one JSON object")


def _add_filters(cmd: argparse.ArgumentParser) -> None:
    group = cmd.add_argument_group("filters (repeat a flag for OR; different flags AND)")
    for flag, parse, metavar, help_text in _REPEATABLE_FILTERS:
        group.add_argument(
            flag, type=parse, action="append", default=[], metavar=metavar, help=help_text
        )
    group.add_argument(
        "--id",
        type=record_id,
        action="append",
        default=[],
        dest="ids",
        metavar="ID",
        help="a dead letter id: PARTITION:OFFSET or TOPIC/P/O",
    )
    group.add_argument(
        "--since",
        type=instant,
        metavar="TIME",
        help="dead-lettered at or after: ISO 8601 (UTC unless an offset is "
        "given) or a duration ago (30m, 2h, 7d)",
    )
    group.add_argument("--until", type=instant, metavar="TIME", help="dead-lettered at or before")


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
        type=count,
        default=None,
        metavar="N",
        help=f"rows to show (table default {DEFAULT_ROWS}; JSON: all)",
    )
    list_cmd.set_defaults(handler=commands.list_dead_letters)

    show = dlq_sub.add_parser("show", help="one dead letter: error, attempts, original record")
    show.add_argument(
        "record_id",
        type=record_id,
        metavar="ID",
        help="PARTITION:OFFSET or TOPIC/PARTITION/OFFSET, as `dlq list` prints",
    )
    _add_source(show)
    show.set_defaults(handler=commands.show_dead_letter)

    replay = dlq_sub.add_parser(
        "replay", help="send dead letters back to their origin topic (a dry run unless --apply)"
    )
    _add_source(replay)
    _add_filters(replay)
    _add_include_acked(replay)
    replay.add_argument("--apply", action="store_true", help="send (without it: a dry run)")
    replay.add_argument("--all", action="store_true", help="allow --apply with no filter")
    replay.add_argument("--rate", type=rate, metavar="N", help="at most N records a second")
    replay.add_argument("--limit", type=count, metavar="N", help="send at most N records")
    replay.set_defaults(handler=commands.replay_dead_letters)

    purge = dlq_sub.add_parser(
        "purge",
        help="acknowledge dead letters so list and replay hide them (a dry run unless --apply)",
    )
    _add_source(purge)
    _add_filters(purge)
    purge.add_argument("--apply", action="store_true", help="acknowledge (without it: a dry run)")
    purge.add_argument("--all", action="store_true", help="allow --apply with no filter")
    purge.add_argument("--reason", type=non_empty, help="kept with each acknowledgement")
    purge.set_defaults(handler=commands.purge_dead_letters)
