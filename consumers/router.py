"""The router: validate each request, pick its specialist, and route it (or answer it at once).

Decode -> deduplicate -> validate -> choose specialist -> tenant rate limit -> task topic.
Invalid requests are answered ``rejected`` with a reason a person can act on; bytes that do not
decode raise ``DecodeError``, which the runtime's failure strategy sends to the DLQ with their
original bytes (and a ``failed`` response when the request id header survived).
"""

from __future__ import annotations

import inspect
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from consumers.answered import AnsweredLedger
from consumers.outcomes import Outcomes, now_ms, replay_headers
from consumers.resilience.ratelimit import TenantLimiter
from consumers.runtime import Context, Record
from consumers.triage import KeywordTriage, TriageResult, parse_command
from switchboard.core import headers as h
from switchboard.core.aio_producer import Outbound
from switchboard.core.errors import RequestInvalid
from switchboard.core.serde import REQUEST, Codec
from switchboard.core.settings import DEFAULTS, SPECIALISTS, Settings
from switchboard.core.status import ResponseStatus
from switchboard.core.topics import Topics

#: Request ids the router remembers for deduplication, at most (the oldest go first).
RECENT_IDS_MAX: Final = 200_000
#: Error code of a request turned away for its tenant's rate.
RATE_LIMITED: Final = "rate_limited"

#: Records to deliver now, or an awaitable of them (see the runtime's Handler).
Outputs = Sequence[Outbound] | Awaitable[Sequence[Outbound]]


async def _resolved(outputs: Outputs) -> Sequence[Outbound]:
    return await outputs if inspect.isawaitable(outputs) else outputs


class Triage(Protocol):
    """Picks a specialist for free text, at once or (a model) after a wait."""

    def classify(self, text: str) -> TriageResult | Awaitable[TriageResult]: ...


@dataclass(frozen=True)
class RouterRules:
    """What the router enforces; ``from_settings`` builds it (defaults: the settings')."""

    max_prompt_bytes: int = DEFAULTS.max_prompt_bytes
    max_metadata_entries: int = DEFAULTS.max_metadata_entries
    max_metadata_bytes: int = DEFAULTS.max_metadata_bytes
    tenants: frozenset[str] = DEFAULTS.tenants
    dedup_window_s: float = DEFAULTS.dedup_window_s
    #: "reject": over the tenant's rate -> rejected with a retry hint; "delay": wait and route.
    over_limit: str = DEFAULTS.over_limit

    @classmethod
    def from_settings(cls, settings: Settings) -> RouterRules:
        return cls(
            max_prompt_bytes=settings.max_prompt_bytes,
            max_metadata_entries=settings.max_metadata_entries,
            max_metadata_bytes=settings.max_metadata_bytes,
            tenants=settings.tenants,
            dedup_window_s=settings.dedup_window_s,
            over_limit=settings.over_limit,
        )


class RecentIds:
    """Request ids routed recently (bounded, time-limited): a producer retry is routed once."""

    def __init__(
        self,
        window_s: float,
        max_size: int = RECENT_IDS_MAX,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._window_s = window_s
        self._max = max_size
        self._seen: OrderedDict[str, float] = OrderedDict()

    def seen(self, request_id: str) -> bool:
        return request_id in self._seen

    def add(self, request_id: str) -> None:
        now = self._clock()
        while self._seen and (
            len(self._seen) >= self._max or next(iter(self._seen.values())) < now - self._window_s
        ):
            self._seen.popitem(last=False)
        self._seen[request_id] = now


class Router:
    """The handler of the router group."""

    def __init__(
        self,
        *,
        codec: Codec,
        topics: Topics,
        outcomes: Outcomes,
        index: AnsweredLedger,
        rules: RouterRules,
        triage: Triage | None = None,
        limiter: TenantLimiter | None = None,
    ) -> None:
        self._codec = codec
        self._topics = topics
        self._outcomes = outcomes
        self._index = index
        self._rules = rules
        self._triage: Triage = triage or KeywordTriage()
        self._limiter = limiter
        self._recent = RecentIds(rules.dedup_window_s)
        self.duplicates = 0

    def handle(self, msg: Record, ctx: Context) -> Outputs:
        """Route one request. Returns the records at once in the common case (the runtime's
        fast path); an awaitable only when it must wait (index barrier, model triage). Bytes
        that do not decode raise ``DecodeError`` (the runtime dead-letters them)."""
        received_ms = now_ms()
        request = self._codec.decode(REQUEST, msg.value() or b"", str(msg.topic()))
        if not self._index.synced(ctx.assigned_at):
            return self._route_after_sync(msg, ctx, request, received_ms)
        return self._route(msg, request, received_ms)

    async def _route_after_sync(
        self, msg: Record, ctx: Context, request: dict[str, Any], received_ms: int
    ) -> Sequence[Outbound]:
        await self._index.sync(ctx.assigned_at)
        return await _resolved(self._route(msg, request, received_ms))

    def _route(self, msg: Record, request: dict[str, Any], received_ms: int) -> Outputs:
        request_id = request["request_id"]
        # A DLQ replay follows the request's own `failed` response: only another status skips it.
        carried = replay_headers(msg)
        replay = any(name == h.REPLAY_ID for name, _value in carried)
        if self._index.is_answered(request_id, replay=replay) or (
            not replay and self._recent.seen(request_id)
        ):
            self.duplicates += 1
            return ()
        try:
            specialist, prompt = self._validate(request)
        except RequestInvalid as exc:
            return self._reject(request, exc)
        if specialist is None:
            verdict = self._triage.classify(prompt)
            if inspect.isawaitable(verdict):
                return self._route_after_triage(msg, request, prompt, verdict, received_ms, carried)
            specialist = verdict.specialist
        return self._task(msg, request, specialist, prompt, received_ms, carried)

    async def _route_after_triage(
        self,
        msg: Record,
        request: dict[str, Any],
        prompt: str,
        verdict: Awaitable[TriageResult],
        received_ms: int,
        carried: list[tuple[str, bytes]],
    ) -> Sequence[Outbound]:
        specialist = (await verdict).specialist
        return self._task(msg, request, specialist, prompt, received_ms, carried)

    def _reject(self, request: dict[str, Any], exc: RequestInvalid) -> list[Outbound]:
        self._recent.add(request["request_id"])
        return [
            self._outcomes.response(request, ResponseStatus.REJECTED, str(exc), error_code=exc.code)
        ]

    def _task(
        self,
        msg: Record,
        request: dict[str, Any],
        specialist: str,
        prompt: str,
        received_ms: int,
        carried: list[tuple[str, bytes]],
    ) -> list[Outbound]:
        request_id = request["request_id"]
        if self._limiter is not None and (wait_s := self._limiter.check(request["tenant"])) > 0:
            return self._over_limit(msg, request, wait_s)
        self._recent.add(request_id)
        task = dict(request)
        task["specialist"] = specialist
        task["prompt"] = prompt
        routed_ms = now_ms()
        meta = dict(task.get("metadata") or {})
        meta["routed_at_ms"] = str(routed_ms)
        meta["route_ms"] = str(routed_ms - received_ms)
        task["metadata"] = meta
        topic = self._topics.tasks(specialist)
        headers = [
            (h.REQUEST_ID, request_id.encode()),
            (h.TENANT, str(request["tenant"]).encode()),
            (h.SPECIALIST, specialist.encode()),
        ]
        if request.get("traceparent"):
            # With tracing on, the runtime's hook puts this hop's own context here instead.
            headers.append((h.TRACEPARENT, request["traceparent"].encode()))
            if request.get("tracestate"):
                headers.append((h.TRACESTATE, request["tracestate"].encode()))
        headers += carried  # a replayed request that fails for good is parked
        # Keyed by request id: a tenant's load spreads over every partition (no tenant can
        # starve one), and duplicates of one request always meet in the same partition.
        return [
            Outbound(topic, self._codec.encode(REQUEST, task, topic), request_id.encode(), headers)
        ]

    def _validate(self, request: dict[str, Any]) -> tuple[str | None, str]:
        """The specialist (None: triage decides) and the prompt; raises RequestInvalid."""
        rules = self._rules
        if not request["request_id"].strip():
            raise RequestInvalid("request_id is empty: give every request a unique id")
        tenant = request["tenant"]
        if rules.tenants and tenant not in rules.tenants:
            raise RequestInvalid(
                f"unknown tenant {tenant!r}: ask an operator to add it to SWITCHBOARD_TENANTS",
                code="unknown_tenant",
            )
        deadline = request.get("deadline_ms")
        if deadline is not None and deadline <= now_ms():
            raise RequestInvalid(
                "deadline already passed when the request was routed: send a later deadline",
                code="deadline_passed",
            )
        metadata = request.get("metadata") or {}
        if len(metadata) > rules.max_metadata_entries:
            raise RequestInvalid(
                f"metadata has {len(metadata)} entries; the limit is {rules.max_metadata_entries}",
                code="too_much_metadata",
            )
        metadata_bytes = sum(len(k.encode()) + len(v.encode()) for k, v in metadata.items())
        if metadata_bytes > rules.max_metadata_bytes:
            raise RequestInvalid(
                f"metadata is {metadata_bytes} bytes; the limit is {rules.max_metadata_bytes}: "
                "keep metadata to short tags and ids",
                code="too_much_metadata",
            )
        explicit = request.get("specialist")
        command, prompt = parse_command(request.get("text") or "")
        if request.get("prompt"):
            prompt = request["prompt"]
        size = len(prompt.encode("utf-8"))
        if size > rules.max_prompt_bytes:
            raise RequestInvalid(
                f"prompt is {size} bytes; the limit is {rules.max_prompt_bytes}: shorten it or "
                "split it into several requests",
                code="prompt_too_large",
            )
        if not prompt.strip():
            raise RequestInvalid(
                "the request has no question: send text such as '/backend design a rate limiter'",
                code="empty_prompt",
            )
        name = explicit or command
        if name is None:
            return None, prompt
        if name not in SPECIALISTS:
            raise RequestInvalid(
                f"unknown specialist {name!r}: use one of "
                + ", ".join(f"/{s}" for s in SPECIALISTS),
                code="unknown_specialist",
            )
        return name, prompt

    def _over_limit(self, msg: Record, request: dict[str, Any], wait_s: float) -> list[Outbound]:
        if self._rules.over_limit == "delay":
            tier = self._topics.tier_for_delay(wait_s)
            due = now_ms() + int(wait_s * 1000)
            headers = [
                *h.header_pairs(msg.headers()),
                (h.RETRY_DUE_MS, str(due).encode()),
                (h.RETRY_ORIGIN_TOPIC, str(msg.topic()).encode()),
            ]
            return [Outbound(self._topics.retry(tier), msg.value() or b"", msg.key(), headers)]
        return [
            self._outcomes.response(
                request,
                ResponseStatus.REJECTED,
                f"tenant {request['tenant']!r} is over its request rate: retry in {wait_s:.2f}s",
                error_code=RATE_LIMITED,
            )
        ]
