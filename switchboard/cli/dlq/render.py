"""What ``switchboard dlq`` prints: rich tables and panels for people, stable JSON for tools."""

from __future__ import annotations

import base64
import json
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress

    from consumers.replay.view import DeadLetterView
    from switchboard.core.serde import Codec

#: Rows a table shows before "... and N more" (JSON output always has every record).
DEFAULT_ROWS: Final = 50
#: Bytes of a value shown as hex in ``value_preview``.
_PREVIEW_BYTES: Final = 64
#: ``age`` shows the one largest of these units.
_AGE_UNITS_S: Final = (("d", 86400), ("h", 3600), ("m", 60))
#: The facts panel of ``dlq show``: DeadLetter fields shown as they are.
_FACT_FIELDS: Final = (
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
)


def console() -> Console:
    from rich.console import Console

    return Console(highlight=False)


def stderr_console() -> Console:
    from rich.console import Console

    return Console(stderr=True)


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


def table(rows: list[dict[str, Any]], columns: list[str], title: str, limit: int | None) -> None:
    from rich.table import Table

    out = console()
    shown = rows if limit is None else rows[:limit]
    grid = Table(title=title, title_justify="left")
    for column in columns:
        grid.add_column(column, overflow="fold")
    for row in shown:
        grid.add_row(*("-" if row.get(c) in (None, "") else str(row[c]) for c in columns))
    out.print(grid)
    if len(rows) > len(shown):
        out.print(f"... and {len(rows) - len(shown)} more (--limit N, or --json for all)")


# --- list --------------------------------------------------------------------------------------
def age(ms: int) -> str:
    """``ms`` as the one largest unit: 40s, 12m, 5h, 3d."""
    seconds = max(0, ms // 1000)
    for unit, size in _AGE_UNITS_S:
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def print_list(
    rows: list[dict[str, Any]],
    groups: dict[str, dict[str, int]],
    title: str,
    now: int,
    limit: int | None,
) -> None:
    """The table of ``dlq list`` (``rows`` newest first), then the counts."""
    if not rows:
        console().print(title)
        return
    for row in rows:
        flags = ("acked" if row["acked"] else "", "replayed" if row["replayed"] else "")
        row["flags"] = ",".join(f for f in flags if f)
        row["age"] = age(now - row["failed_at_ms"])
        row["error"] = "/".join(str(x) for x in (row["error_class"], row["error_code"]) if x)
    # The origin topic and stage are in --json and `dlq show`; 80 columns hold the rest.
    columns = ["id", "age", "request_id", "error", "specialist", "tenant", "flags"]
    table(rows, columns, title, limit or DEFAULT_ROWS)
    print_groups(groups)


def print_groups(groups: dict[str, dict[str, int]]) -> None:
    from rich.table import Table

    grid = Table(title="counts", title_justify="left", show_header=True)
    for name in groups:
        grid.add_column(name.replace("_", " "))
    columns = [[f"{key}: {count}" for key, count in counts.items()] for counts in groups.values()]
    for i in range(max((len(c) for c in columns), default=0)):
        grid.add_row(*(c[i] if i < len(c) else "" for c in columns))
    console().print(grid)


# --- show --------------------------------------------------------------------------------------
def printable(value: bytes | None) -> str | None:
    """``value`` as UTF-8 text when it is printable, else ``hex:...``."""
    if value is None:
        return None
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return "hex:" + value.hex()
    return text if text.isprintable() else "hex:" + value.hex()


def preview(value: bytes) -> str:
    head = value[:_PREVIEW_BYTES].hex(" ")
    return head + (" ..." if len(value) > _PREVIEW_BYTES else "")


def detail(letter: DeadLetterView, codec: Codec) -> dict[str, Any]:
    """The stable JSON of ``dlq show --json`` (without the ledger entries)."""
    from consumers.replay.parsing import iso
    from switchboard.core.envelope import KeyUnavailable, sealed_with
    from switchboard.core.errors import DecodeError
    from switchboard.core.serde import REQUEST

    out: dict[str, Any] = {
        "id": letter.id,
        "pointer": letter.pointer,
        "undecodable": letter.undecodable,
        "headers": {k: printable(v) for k, v in letter.headers},
    }
    if letter.record is None:
        raw = letter.raw_value or b""
        out.update(
            decode_error=letter.decode_error,
            value_size=len(raw),
            value_preview=preview(raw),
            value_base64=base64.b64encode(raw).decode(),
        )
        return out
    r = letter.record
    value: bytes = r["original_value"]
    try:
        request: dict[str, Any] | None = codec.decode(REQUEST, value, r["origin_topic"])
        request_error = None
    except (DecodeError, KeyUnavailable) as exc:  # a key this process lacks: say which
        request, request_error = None, str(exc)
    skip = {"original_key", "original_value", "original_headers", "attempts"}
    out["record"] = {k: v for k, v in r.items() if k not in skip}
    out["attempts"] = [dict(a, at=iso(a["at_ms"])) for a in r.get("attempts") or []]
    out["original"] = {
        "key": printable(r.get("original_key")),
        "headers": {item["key"]: printable(item["value"]) for item in r["original_headers"]},
        "value_size": len(value),
        "value_preview": preview(value),
        "value_base64": base64.b64encode(value).decode(),
        "request": request,
        "request_error": request_error,
        "sealed_with": sealed_with(codec, REQUEST, value, r["origin_topic"]),
    }
    return out


def print_detail(
    letter: DeadLetterView,
    shown: dict[str, Any],
    acked: dict[str, Any] | None,
    replayed: dict[str, Any] | None,
) -> None:
    """``dlq show``'s panels: facts, error, attempts, original record (``shown``: ``detail``)."""
    from rich.panel import Panel
    from rich.table import Table

    from consumers.replay.parsing import iso

    out = console()
    if letter.record is None:
        out.print(
            Panel(
                f"{shown['decode_error']}\n\nvalue: {shown['value_preview']}",
                title=f"{letter.pointer}: undecodable",
            )
        )
        return
    r = letter.record
    facts = Table.grid(padding=(0, 2))
    for name in _FACT_FIELDS:
        facts.add_row(name, "-" if r.get(name) is None else str(r.get(name)))
    facts.add_row("origin", f"{r['origin_topic']} [{r['origin_partition']}] @{r['origin_offset']}")
    facts.add_row("first failure", str(iso(r["first_failure_ms"])))
    facts.add_row("last failure", str(iso(r["last_failure_ms"])))
    facts.add_row("acknowledged", "no" if acked is None else f"yes ({acked.get('reason') or '-'})")
    facts.add_row(
        "replayed",
        "no" if replayed is None else f"{replayed.get('replay_id')} -> {replayed.get('sent_to')}",
    )
    out.print(Panel(facts, title=f"{letter.pointer}"))
    out.print(Panel(r.get("error_message") or "-", title="error"))
    attempts = Table(title="attempts", title_justify="left")
    for column in ("attempt", "at", "error_type", "error_message"):
        attempts.add_column(column, overflow="fold")
    for a in shown["attempts"]:
        attempts.add_row(str(a["attempt"]), str(a["at"]), a["error_type"], a["error_message"])
    out.print(attempts)
    original = shown["original"]
    headers = "\n".join(f"{k}: {v}" for k, v in original["headers"].items()) or "-"
    out.print(Panel(f"key: {original['key']}\n{headers}", title="original key and headers"))
    body = (
        json.dumps(original["request"], indent=2, default=str)
        if original["request"]
        else f"does not decode as a request: {original['request_error']}"
    )
    out.print(
        Panel(
            f"{original['value_size']} bytes: {original['value_preview']}\n\n{body}",
            title="original value",
        )
    )


# --- replay and purge --------------------------------------------------------------------------
def summary_rows(letters: list[DeadLetterView]) -> list[dict[str, Any]]:
    """The ``records`` of ``replay --json`` and ``purge --json``."""
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


def print_plan(
    summary: dict[str, Any], rows: list[dict[str, Any]], headline: str, tail: str
) -> None:
    out = console()
    prefix = "DRY RUN: " if summary["dry_run"] else ""
    out.print(
        f"{prefix}{headline} of {summary['matched']} matching dead letters in {summary['source']}"
    )
    if summary["skipped"]:
        reasons = (f"{n} {k.replace('_', ' ')}" for k, n in summary["skipped"].items())
        out.print("skipped: " + ", ".join(reasons))
    if rows:
        columns = ["id", "request_id", "origin_topic", "specialist", "tenant", "error_class"]
        table(rows, columns, "", DEFAULT_ROWS)
    out.print(tail)


def replay_progress(*, enabled: bool) -> Progress:
    """The progress bar a replay shows on stderr."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    return Progress(
        "replaying",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        disable=not enabled,
        console=stderr_console(),
    )
