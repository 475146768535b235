"""The console's web application: Starlette routes over the consumers' own readers.

Every page is served from ``ConsoleCache`` (memory) except following a request, which scans
the topics for that one key, and the actions (replay, purge), which go through
``plan_replay``, ``Replayer`` and ``acknowledge`` exactly as ``switchboard dlq`` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.datastructures import FormData, QueryParams
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from consumers.outcomes import now_ms
from consumers.replay.ledgers import acknowledge, ledger_state
from consumers.replay.parsing import iso, parse_instant
from consumers.replay.replayer import Replayer, new_replay_id
from consumers.replay.selection import (
    ReplayFilter,
    ReplayPlan,
    Selection,
    group_counts,
    plan_replay,
    select,
)
from consumers.replay.store import DeadLetterStore
from consumers.replay.view import ERROR_CLASSES, DeadLetterView
from switchboard.cli.dlq import render
from switchboard.cli.status_cmds import format_ms
from switchboard.console import follow as following
from switchboard.console import reviews
from switchboard.console.auth import CSRF_FIELD, CSRF_HEADER, BasicAuthMiddleware, User, Users
from switchboard.console.cache import ConsoleCache, latency, latency_chart, sparkline, throughput
from switchboard.core.aio_producer import AsyncProducer, Outbound
from switchboard.core.errors import ConfigError
from switchboard.core.kafka_clients import producer_config
from switchboard.core.serde import Codec
from switchboard.core.settings import SPECIALISTS
from switchboard.core.topics import Topics

#: Dead letters a list page shows.
PAGE_SIZE: Final = 50
#: Rows of a replay plan or outcome shown (the counts cover every record).
PLAN_ROWS: Final = 200
#: The replay form's default rate (records a second).
DEFAULT_REPLAY_RATE: Final = 50.0
#: Filter fields of the dead-letter list, as query and form parameters.
FILTER_FIELDS: Final = (
    "error_class",
    "error_code",
    "specialist",
    "tenant",
    "stage",
    "since",
    "until",
)


@dataclass
class Console:
    """Everything the routes need, built once by ``switchboard console`` (or a test)."""

    kafka: dict[str, Any]
    topics: Topics
    codec: Codec
    users: Users
    cache: ConsoleCache
    review_dir: Path
    max_replay_rate: float
    replication_factor: int = 1
    dlq_retention_ms: int = 30 * 24 * 3600 * 1000
    producer: AsyncProducer | None = field(default=None, init=False)

    def store(self, source: str) -> DeadLetterStore:
        return DeadLetterStore(self.kafka, self.topics, self.codec, source=source)

    def source(self, name: str | None) -> str:
        """The dead-letter topic a page names: ``dlq`` or ``parking-lot``, nothing else (a
        replay is only ever from a DLQ topic)."""
        if name in (None, "", "dlq"):
            return self.topics.dlq
        if name == "parking-lot":
            return self.topics.parking_lot
        raise ConfigError(f"source {name!r}: use dlq or parking-lot")


class BadInput(Exception):
    """Raised when a page's parameters cannot be used; the page answers 400 with the reason."""


# --- rendering ---------------------------------------------------------------------------------
_ENV = Environment(
    loader=PackageLoader("switchboard.console", "templates"),
    autoescape=select_autoescape(["html", "j2"]),
    trim_blocks=True,
    lstrip_blocks=True,
)
_ENV.filters["iso"] = iso
_ENV.filters["usd"] = lambda micro: f"{(micro or 0) / 1_000_000:.4f}"
_ENV.filters["ms"] = format_ms
_ENV.filters["tojson_pretty"] = lambda v: json.dumps(v, indent=2, default=str, sort_keys=True)


def page(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    console: Console = request.app.state.console
    user: User = request.user
    html = _ENV.get_template(template).render(
        user=user,
        csrf_token=console.users.csrf_token(user),
        csrf_field=CSRF_FIELD,
        prefix=console.topics.prefix,
        path=request.url.path,
        **context,
    )
    return HTMLResponse(html, status_code=status_code)


def error_page(request: Request, status_code: int, message: str) -> HTMLResponse:
    return page(request, "error.html.j2", status_code, code=status_code, message=message)


# --- overview ----------------------------------------------------------------------------------
def _overview_context(console: Console) -> dict[str, Any]:
    cache = console.cache
    history = list(cache.history)
    rates = throughput(history)
    return {
        "status": cache.status,
        "status_error": cache.status_error,
        "sparks": {role: (sparkline(v), v[-1] if v else 0.0) for role, v in rates.items()},
        "latency_charts": {
            role: latency_chart(p50, p99) for role, (p50, p99) in latency(history).items()
        },
    }


async def overview(request: Request) -> Response:
    return page(request, "overview.html.j2", **_overview_context(request.app.state.console))


async def overview_fragment(request: Request) -> Response:
    return page(request, "overview_body.html.j2", **_overview_context(request.app.state.console))


async def status_json(request: Request) -> Response:
    status = request.app.state.console.cache.status
    return JSONResponse(status.to_json() if status else {"error": "no status read yet"})


# --- dead letters ------------------------------------------------------------------------------
def _values(params: QueryParams | FormData, name: str) -> frozenset[str]:
    return frozenset(str(v).strip() for v in params.getlist(name) if str(v).strip())


def parse_filter(params: QueryParams | FormData, source: str) -> tuple[ReplayFilter, str | None]:
    """The list's filter fields as a ``ReplayFilter`` and the stage (which it does not know)."""
    since, until = (str(params.get(k) or "").strip() or None for k in ("since", "until"))
    pointers = _values(params, "pointer")
    outside = [p for p in pointers if not p.startswith(source + "/")]
    if outside:
        raise BadInput(f"{outside[0]} is not in {source}: choose records of the page's topic")
    try:
        flt = ReplayFilter(
            error_classes=_values(params, "error_class"),
            error_codes=_values(params, "error_code"),
            specialists=_values(params, "specialist"),
            tenants=_values(params, "tenant"),
            request_ids=_values(params, "request_id"),
            pointers=pointers,
            since_ms=parse_instant(since) if since else None,
            until_ms=parse_instant(until) if until else None,
        )
    except ConfigError as exc:
        raise BadInput(str(exc)) from None
    stage = str(params.get("stage") or "").strip() or None
    return flt, stage


def choose(
    console: Console, source: str, flt: ReplayFilter, stage: str | None, include_acked: bool
) -> tuple[Selection, list[DeadLetterView], dict[str, Any], dict[str, Any]]:
    snap = console.cache.snapshot(source)
    chosen = select(snap.letters, flt, snap.acks, include_acked=include_acked)
    if stage is not None:
        chosen = Selection([x for x in chosen.records if x.stage == stage], chosen.hidden_acked)
    return chosen, snap.letters, snap.acks, snap.replays


def _query(params: QueryParams, **changes: Any) -> str:
    items = [(k, v) for k, v in params.multi_items() if k not in changes]
    items += [(k, str(v)) for k, v in changes.items() if v is not None]
    from urllib.parse import urlencode

    return urlencode(items)


async def dead_letters(request: Request) -> Response:
    console: Console = request.app.state.console
    params = request.query_params
    try:
        source = console.source(params.get("source"))
        flt, stage = parse_filter(params, source)
        page_no = max(1, int(params.get("page") or 1))
    except (BadInput, ConfigError, ValueError) as exc:
        return error_page(request, 400, str(exc))
    include_acked = params.get("include_acked") == "1"
    chosen, letters, acks, replays = choose(console, source, flt, stage, include_acked)
    records = sorted(chosen.records, key=lambda x: x.failed_at_ms, reverse=True)
    now = now_ms()
    shown = records[(page_no - 1) * PAGE_SIZE : page_no * PAGE_SIZE]
    pages = max(1, -(-len(records) // PAGE_SIZE))
    return page(
        request,
        "dlq.html.j2",
        source=source,
        source_name="parking-lot" if source == console.topics.parking_lot else "dlq",
        scanned=len(letters),
        matched=len(records),
        hidden_acked=chosen.hidden_acked,
        rows=ledger_state(shown, acks, replays),
        groups=group_counts(records, now),
        now=now,
        age=render.age,
        params=params,
        page_no=page_no,
        pages=pages,
        prev_q=_query(params, page=page_no - 1) if page_no > 1 else None,
        next_q=_query(params, page=page_no + 1) if page_no < pages else None,
        error_classes=ERROR_CLASSES,
        specialists=SPECIALISTS,
        stages=sorted({x.stage for x in letters if x.stage}),
        filter_fields=FILTER_FIELDS,
    )


async def dead_letter(request: Request) -> Response:
    console: Console = request.app.state.console
    try:
        source = console.source(request.query_params.get("source"))
    except ConfigError as exc:
        return error_page(request, 400, str(exc))
    wanted = str(request.query_params.get("id") or "")
    partition, _, offset = wanted.partition(":")
    letter = console.cache.letter(source, f"{source}/{partition}/{offset}")
    if letter is None:
        return error_page(request, 404, f"no dead letter {wanted!r} in {source}")
    snap = console.cache.snapshot(source)
    detail = render.detail(letter, console.codec)
    raw = letter.raw_value
    if letter.record is not None:
        raw = letter.record["original_value"]
    return page(
        request,
        "letter.html.j2",
        source=source,
        source_name="parking-lot" if source == console.topics.parking_lot else "dlq",
        letter=letter,
        detail=detail,
        hexdump=_hexdump(raw or b""),
        acked=snap.acks.get(letter.pointer),
        replayed=snap.replays.get(letter.pointer),
        replays=[
            e for e in console.cache.audit_events() if letter.pointer in e.get("pointers", [])
        ],
    )


def _hexdump(data: bytes, width: int = 16) -> str:
    lines = []
    for at in range(0, len(data), width):
        chunk = data[at : at + width]
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        lines.append(f"{at:08x}  {chunk.hex(' '):<{width * 3}} {text}")
    return "\n".join(lines)


# --- actions -----------------------------------------------------------------------------------
async def _action_form(request: Request, verb: str) -> FormData | Response:
    """The form of an action, or the refusal: 403 for a viewer, 403 without the CSRF token."""
    console: Console = request.app.state.console
    user: User = request.user
    form = await request.form()
    token = str(form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER) or "")
    if not console.users.csrf_ok(user, token or None):
        return error_page(
            request, 403, "the form's CSRF token is missing or wrong: reload the page"
        )
    if not user.can_act:
        return error_page(
            request, 403, f"{user.name} is a {user.role}: {verb} needs the operator role"
        )
    return form


def _selection_fields(form: FormData) -> list[tuple[str, str]]:
    keep = ("source", "pointer", "include_acked", "all", *FILTER_FIELDS)
    return [(k, str(v)) for k, v in form.multi_items() if k in keep and str(v).strip()]


@dataclass(frozen=True)
class _Action:
    """A replay's or purge's checked request: its form and the dead letters it selects."""

    console: Console
    form: FormData
    source: str
    flt: ReplayFilter
    chosen: Selection
    replays: dict[str, Any]

    @functools.cached_property
    def store(self) -> DeadLetterStore:
        return self.console.store(self.source)

    async def replay_plan(self) -> ReplayPlan:
        """What replaying the selection would send and skip (already replayed or answered)."""
        settled = await asyncio.to_thread(self.store.settled_requests, self.chosen.records)
        return plan_replay(self.chosen.records, replayed=self.replays, settled=settled)

    def acked_skipped(self) -> dict[str, int]:
        """The skipped counts of a purge: the acknowledged letters the selection hides."""
        hidden = self.chosen.hidden_acked
        return {"already_acknowledged": hidden} if hidden else {}


async def _action(request: Request, verb: str) -> _Action | Response:
    """The action's form and selection, or the page refusing it: 403 from ``_action_form``,
    400 for a selection that does not parse or selects nothing on purpose."""
    console: Console = request.app.state.console
    form = await _action_form(request, verb)
    if isinstance(form, Response):
        return form
    try:
        source = console.source(str(form.get("source") or "dlq"))
        flt, stage = parse_filter(form, source)
        if flt.is_empty and stage is None and form.get("all") != "1":
            raise BadInput("choose records, or a filter, or tick 'every dead letter'")
        chosen, _letters, _acks, replays = choose(
            console, source, flt, stage, form.get("include_acked") == "1"
        )
    except (BadInput, ConfigError) as exc:
        return error_page(request, 400, str(exc))
    return _Action(console, form, source, flt, chosen, replays)


def _filter_json(flt: ReplayFilter, form: FormData) -> dict[str, Any]:
    out: dict[str, Any] = {
        k: sorted(v) for k, v in vars(flt).items() if isinstance(v, frozenset) and v
    }
    out.update({k: v for k in ("since", "until", "stage") if (v := form.get(k))})
    if form.get("all") == "1":
        out["all"] = True
    return out


async def plan(request: Request) -> Response:
    """The dry run: what a replay (or purge) of the selection would do; nothing is written."""
    act = await _action(request, "a replay or purge")
    if isinstance(act, Response):
        return act
    if act.form.get("action") == "purge":
        return page(
            request,
            "plan.html.j2",
            action="purge",
            source=act.source,
            to_send=act.chosen.records[:PLAN_ROWS],
            count=len(act.chosen.records),
            skipped=act.acked_skipped(),
            skipped_rows={},
            fields=_selection_fields(act.form),
            rate=None,
        )
    the_plan = await act.replay_plan()
    skipped = the_plan.skipped_counts()
    if act.chosen.hidden_acked:
        skipped["acknowledged"] = act.chosen.hidden_acked
    return page(
        request,
        "plan.html.j2",
        action="replay",
        source=act.source,
        to_send=the_plan.to_send[:PLAN_ROWS],
        count=len(the_plan.to_send),
        skipped=skipped,
        skipped_rows={k: v[:PLAN_ROWS] for k, v in the_plan.skipped.items() if v},
        fields=_selection_fields(act.form),
        rate=min(DEFAULT_REPLAY_RATE, act.console.max_replay_rate),
        max_rate=act.console.max_replay_rate,
    )


async def replay(request: Request) -> Response:
    act = await _action(request, "replay")
    if isinstance(act, Response):
        return act
    console = act.console
    try:
        rate = float(str(act.form.get("rate") or DEFAULT_REPLAY_RATE))
        if not 0 < rate <= console.max_replay_rate:
            raise BadInput(f"rate {rate:g}: give 0 < rate <= {console.max_replay_rate:g} a second")
    except (BadInput, ValueError) as exc:
        return error_page(request, 400, str(exc))
    the_plan = await act.replay_plan()
    missing = await asyncio.to_thread(
        act.store.missing_topics, {str(x.origin_topic) for x in the_plan.to_send}
    )
    if missing:
        return error_page(request, 409, f"origin topic {', '.join(missing)} does not exist")
    if the_plan.to_send:
        await _ensure_ledgers(act)
    assert console.producer is not None
    replayer = Replayer(console.producer, console.topics, replay_id=new_replay_id(), rate=rate)
    result = await replayer.replay(the_plan.to_send)
    outcome = [(x, "sent", "") for x in result.sent] + [(x, "failed", e) for x, e in result.failed]
    skipped = the_plan.skipped_counts()
    await _audit(
        request,
        "replay",
        act,
        done=len(result.sent),
        failed=len(result.failed),
        skipped=skipped,
        pointers=[x.pointer for x in result.sent],
        replay_id=result.replay_id,
        rate=rate,
    )
    return page(
        request,
        "outcome.html.j2",
        action="replay",
        source=act.source,
        outcome=outcome[:PLAN_ROWS],
        sent=len(result.sent),
        failed=len(result.failed),
        skipped=skipped,
        replay_id=result.replay_id,
        elapsed_s=result.elapsed_s,
        rate_per_s=result.rate_per_s,
    )


async def purge(request: Request) -> Response:
    act = await _action(request, "purge")
    if isinstance(act, Response):
        return act
    console = act.console
    if act.chosen.records:
        await _ensure_ledgers(act)
    assert console.producer is not None
    reason = str(act.form.get("reason") or "").strip() or f"console: {request.user.name}"
    done = await acknowledge(console.producer, console.topics, act.chosen.records, reason=reason)
    await _audit(
        request,
        "purge",
        act,
        done=done,
        failed=0,
        skipped=act.acked_skipped(),
        pointers=[x.pointer for x in act.chosen.records],
        reason=reason,
    )
    return page(
        request,
        "outcome.html.j2",
        action="purge",
        source=act.source,
        outcome=[(x, "acknowledged", "") for x in act.chosen.records[:PLAN_ROWS]],
        sent=done,
        failed=0,
        skipped={},
        replay_id=None,
        elapsed_s=None,
        rate_per_s=None,
    )


async def _ensure_ledgers(act: _Action) -> None:
    """The replay and acknowledgement ledgers of the action's topic, created when missing."""
    await asyncio.to_thread(
        act.store.ensure_ledgers,
        replication_factor=act.console.replication_factor,
        retention_ms=act.console.dlq_retention_ms,
    )


async def _audit(
    request: Request,
    action: str,
    act: _Action,
    *,
    done: int,
    failed: int,
    skipped: dict[str, int],
    pointers: list[str],
    **extra: Any,
) -> None:
    """One audit event (who, when, what filter, how many) on the audit topic; the console's
    memory has it before the page answers."""
    console: Console = request.app.state.console
    user: User = request.user
    event = {
        "at_ms": now_ms(),
        "user": user.name,
        "role": str(user.role),
        "action": action,
        "source": act.source,
        "filter": _filter_json(act.flt, act.form),
        "matched": len(act.chosen.records) + act.chosen.hidden_acked,
        "count": done,
        "failed": failed,
        "skipped": skipped,
        "pointers": pointers[:1000],
        **extra,
    }
    assert console.producer is not None
    await console.producer.send(
        Outbound(console.topics.audit, json.dumps(event).encode(), user.name.encode())
    )
    # Ledger writes and the event are delivered: wait until the mirrors have read them, so
    # the next page shows the replayed flags, the acknowledged letters and the event.
    await asyncio.to_thread(console.cache.ensure_following)
    await asyncio.to_thread(console.cache.catch_up)


async def audit(request: Request) -> Response:
    events = sorted(
        request.app.state.console.cache.audit_events(),
        key=lambda e: e.get("at_ms", 0),
        reverse=True,
    )
    return page(request, "audit.html.j2", events=events)


# --- follow a request ------------------------------------------------------------------------
async def follow(request: Request) -> Response:
    console: Console = request.app.state.console
    request_id = str(request.query_params.get("request_id") or "").strip()
    path = None
    since_text = str(request.query_params.get("since") or "24h")
    if request_id:
        try:
            since_ms = parse_instant(since_text)
        except ConfigError as exc:
            return error_page(request, 400, str(exc))
        letters = [
            x
            for source in console.cache.sources
            for x in console.cache.snapshot(source).letters
            if x.request_id == request_id
        ]
        began = time.monotonic()
        path = await asyncio.to_thread(
            following.follow,
            console.store(console.topics.dlq),
            request_id,
            letters,
            since_ms=since_ms,
        )
        took_ms = (time.monotonic() - began) * 1000
    else:
        took_ms = 0.0
    return page(
        request,
        "follow.html.j2",
        request_id=request_id,
        since=since_text,
        found=path,
        took_ms=took_ms,
    )


# --- review reports --------------------------------------------------------------------------
async def review_jobs(request: Request) -> Response:
    root: Path = request.app.state.console.review_dir
    return page(request, "reviews.html.j2", jobs=reviews.list_jobs(root), root=root)


async def review_report(request: Request) -> Response:
    root: Path = request.app.state.console.review_dir
    html = reviews.job_html(root, request.path_params["name"])
    if html is None:
        return error_page(request, 404, f"no review report {request.path_params['name']!r}")
    # The report is self-contained HTML of our own; it must not load anything else.
    return FileResponse(
        html, headers={"Content-Security-Policy": "default-src 'self' 'unsafe-inline'"}
    )


# --- the application -------------------------------------------------------------------------
ROUTES: Final = [
    Route("/", overview),
    Route("/overview/body", overview_fragment),
    Route("/api/status", status_json),
    Route("/dlq", dead_letters),
    Route("/dlq/letter", dead_letter),
    Route("/dlq/plan", plan, methods=["POST"]),
    Route("/dlq/replay", replay, methods=["POST"]),
    Route("/dlq/purge", purge, methods=["POST"]),
    Route("/audit", audit),
    Route("/follow", follow),
    Route("/reviews", review_jobs),
    Route("/reviews/{name}/report.html", review_report),
    Mount("/static", StaticFiles(packages=[("switchboard.console", "static")]), name="static"),
]


def create_app(console: Console) -> Starlette:
    """The console's ASGI app: basic auth on every route; the cache and the producer live as
    long as the app (its lifespan)."""

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        console.producer = AsyncProducer(producer_config(console.kafka))
        await asyncio.to_thread(console.cache.start)
        try:
            yield
        finally:
            await asyncio.to_thread(console.cache.stop)
            await asyncio.to_thread(console.producer.close)

    app = Starlette(routes=ROUTES, lifespan=lifespan)
    app.state.console = console
    app.add_middleware(BasicAuthMiddleware, users=console.users)
    return app
