"""The router: validate each request, pick its specialist, and route it (or answer it at once).

Two paths. A request the client wrote with routing headers (``switchboard.core.routing``) is
routed from those headers alone and its original bytes forwarded (``_route_by_headers``: dedup,
the tenant's lane, value size, header limits, deadline, signature, rate); the worker validates
its body (``consumers.validation``). Everything else, and anything the header path would
refuse, takes the decoding path below, which gives every refusal its reason.

Decode -> deduplicate -> tenant (known, signature, reply topic) -> validate (headers, metadata,
prompt) -> choose specialist -> tenant's specialists and models -> budgets and tokens a minute
-> tenant rate -> task topic. Budgets are group-wide (usage summed from the response topic,
``consumers.tenancy.usage``); the rate and the in-flight tokens are split into per-partition
shares of the requests topic, so any number of routers together allow one tenant's limit.
Every refusal happens here, before any model call, and is answered ``rejected`` with an
``error_code`` (the reasons are listed in docs/security.md, "Tenants") and a message a person
can act on. Bytes that do not decode raise ``DecodeError``, which the runtime's failure
strategy sends to the DLQ with their original bytes (and a ``failed`` response when the
request id header survived); a string that is not UTF-8 is the caller's bad input, answered
``rejected`` (``invalid_utf8``) when the request id header tells whom to answer.
"""

from __future__ import annotations

import inspect
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Final, Protocol

from consumers.answered import AnsweredLedger
from consumers.outcomes import Outcomes, now_ms, replay_headers
from consumers.resilience.ratelimit import TenantLimiter
from consumers.runtime import Context, Record
from consumers.tenancy.usage import BudgetVerdict, TenantUsage
from consumers.triage import KeywordTriage, TriageResult
from consumers.validation import BodyRules, header_request, invalid_utf8, validate_body
from switchboard.core import headers as h
from switchboard.core.aio_producer import Outbound
from switchboard.core.errors import DecodeError, RequestInvalid
from switchboard.core.headers import RawHeaders
from switchboard.core.routing import SIGNED_ROUTING, request_schema_ids, signed_routing
from switchboard.core.serde import REQUEST, Codec
from switchboard.core.settings import DEFAULTS, SPECIALISTS, Settings
from switchboard.core.status import ResponseStatus
from switchboard.core.tenants import (
    TenantPolicy,
    TenantsConfig,
    TenantsSource,
    internal_topic,
    sign,
    signature_ok,
)
from switchboard.core.topics import Topics

#: Request ids the router remembers for deduplication, at most (the oldest go first).
RECENT_IDS_MAX: Final = 200_000
#: Error code of a request turned away for its tenant's rate.
RATE_LIMITED: Final = "rate_limited"
#: The default rate when only some tenants have one (``SWITCHBOARD_TENANT_RATE_PER_S=0``).
UNLIMITED_RATE: Final = 1e12

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
    max_headers: int = DEFAULTS.max_headers
    max_header_bytes: int = DEFAULTS.max_header_bytes
    #: The model each specialist answers with (a tenant's ``models`` must include it).
    models: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULTS.models))
    #: The workers' output cap: a request's token estimate is prompt characters / 4 + this.
    max_output_tokens: int = DEFAULTS.max_output_tokens

    @classmethod
    def from_settings(cls, settings: Settings) -> RouterRules:
        """The rules ``settings`` set: each field is the setting of the same name."""
        values = {f.name: getattr(settings, f.name) for f in fields(cls)}
        return cls(**{**values, "models": dict(settings.models)})


def tenant_controls(settings: Settings) -> tuple[TenantsSource, TenantLimiter | None]:
    """The router's tenants (the file, watched for changes, or ``SWITCHBOARD_TENANTS``) and its
    per-tenant limiter, reshaped whenever the file's rates change. A bad file at start-up
    raises ``TenantsFileError`` (one line)."""
    source = TenantsSource.from_settings(settings.tenants_file, settings.tenants)
    rate, burst = settings.tenant_rate_per_s, settings.tenant_burst
    shapes = source.config.rate_shapes(rate or UNLIMITED_RATE, burst)
    limiter = None
    if rate > 0 or shapes:
        limiter = TenantLimiter(default_rate=rate or UNLIMITED_RATE, default_burst=burst)
        source.subscribe(
            lambda config: limiter.reshape(config.rate_shapes(rate or UNLIMITED_RATE, burst))
        )
    source.start()
    return source, limiter


#: Routing-header combinations (tenant, specialist, priority, reply topic) whose decision the
#: router keeps, at most: all are dropped when more arrive (or the tenants file changes).
MAX_LANES: Final = 10_000
#: The headers the client writes (``routing_headers``). A record with these only has each one's
#: size checked exactly and cheaply (the lane's four once per lane); any other header takes
#: the general, conservative check (``Router._headers_fit``).
_ROUTING_NAMES: Final = frozenset({h.REQUEST_ID, h.TENANT, *SIGNED_ROUTING})
# The header path's names as module constants: read per record.
_REQUEST_ID, _TENANT, _SPECIALIST = h.REQUEST_ID, h.TENANT, h.SPECIALIST
_PRIORITY, _REPLY_TO, _DEADLINE_MS = h.PRIORITY, h.REPLY_TO, h.DEADLINE_MS
_SCHEMA, _REPLAY_ID, _ROUTED = h.SCHEMA, h.REPLAY_ID, h.ROUTED
#: The headers a lane is keyed by, in the key's order.
_LANE_NAMES: Final = (_TENANT, _SPECIALIST, _PRIORITY, _REPLY_TO)


@dataclass(frozen=True, slots=True)
class _Lane:
    """The header path's decision for one combination of routing headers."""

    tenant: str
    policy: TenantPolicy
    topic: str
    #: A value up to this size holds a prompt within the tenant's limit (the prompt is part of
    #: the value); a larger one goes to the decoding path, which measures the prompt.
    max_value: int


@dataclass(frozen=True, slots=True)
class _Admitted:
    """A decoded request that passed the tenant's and the body's checks: what routing it
    takes from here (the specialist's fences, budgets, rate, the task)."""

    msg: Record
    request: dict[str, Any]
    prompt: str
    received_ms: int
    #: A DLQ replay's headers, carried onto the task (a replay that fails again is parked).
    carried: list[tuple[str, bytes]]
    policy: TenantPolicy


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
        #: When the oldest id expires: ``add`` looks at the oldest only from then on (an id is
        #: forgotten at the first ``add`` after its window, as when every ``add`` looked).
        self._next_expiry = -math.inf

    def seen(self, request_id: str) -> bool:
        return request_id in self._seen

    def add(self, request_id: str) -> None:
        now = self._clock()
        seen = self._seen
        if now > self._next_expiry or len(seen) >= self._max:
            self._forget(now)
        seen[request_id] = now

    def _forget(self, now: float) -> None:
        """Drop the ids older than the window and, past the bound, the oldest ones."""
        seen, oldest = self._seen, now - self._window_s
        while seen and (len(seen) >= self._max or next(iter(seen.values())) < oldest):
            seen.popitem(last=False)
        self._next_expiry = (next(iter(seen.values())) if seen else now) + self._window_s


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
        tenants: TenantsSource | None = None,
        usage: TenantUsage | None = None,
        partitions: int = 1,
    ) -> None:
        """``usage``: group-wide spend (a ``UsageTail`` in production); without it budgets
        and tokens a minute are not enforced. ``partitions``: the requests topic's partition
        count, which splits each tenant's rate (``set_partitions`` on each assignment)."""
        self._codec = codec
        self._topics = topics
        self._outcomes = outcomes
        self._index = index
        self._rules = rules
        self._body_rules = BodyRules(rules.max_metadata_entries, rules.max_metadata_bytes)
        self._triage: Triage = triage or KeywordTriage()
        self._limiter = limiter
        #: Without a tenants file: ``SWITCHBOARD_TENANTS`` (any tenant when empty), unsigned.
        self.tenants = tenants or TenantsSource(TenantsConfig.from_names(rules.tenants))
        self._recent = RecentIds(rules.dedup_window_s)
        # The header path's lookups, once: request schemas this code reads (a task must be
        # decodable by the workers), task topics and each specialist's model.
        # A schema header over the header size limit is the decoding path's to refuse.
        limit = rules.max_header_bytes
        self._schemas = frozenset(s for s in request_schema_ids() if len(_SCHEMA) + len(s) <= limit)
        self._max_headers = rules.max_headers
        self._id_limit = limit - len(_REQUEST_ID)  # the largest id value that fits
        self._deadline_limit = limit - len(_DEADLINE_MS)
        self._task_topics = {s: topics.tasks(s) for s in SPECIALISTS}
        self._batch_topics = {s: topics.batch_tasks(s) for s in SPECIALISTS}
        self._lanes: dict[tuple[Any, Any, Any, Any], _Lane | None] = {}
        self._lanes_config: TenantsConfig | None = None
        #: The latest assignment time at which the index and the usage tail were ready.
        self._ready_since = -math.inf
        #: The ``sb-routed`` header of the last millisecond a record was routed in.
        self._routed: tuple[int, tuple[str, bytes]] = (-1, (_ROUTED, b""))
        self.duplicates = 0
        self._usage = usage
        self.partitions = 1
        self.set_partitions(partitions)

    def set_partitions(self, partitions: int) -> None:
        """The requests topic's partition count: a router holding k of P partitions allows
        k/P of each tenant's rate, one share per partition (a partition has one owner)."""
        self.partitions = max(1, partitions)
        if self._limiter is not None:
            self._limiter.set_partitions(self.partitions)

    def handle(self, msg: Record, ctx: Context) -> Outputs:
        """Route one request. Returns the records at once in the common case (the runtime's
        fast path); an awaitable only when it must wait (index barrier, model triage). Bytes
        that do not decode raise ``DecodeError`` (the runtime dead-letters them)."""
        received_ms = time.time_ns() // 1_000_000  # outcomes.now_ms, at half the cost
        headers = msg.headers()
        if headers:
            routed = self._route_by_headers(msg, headers, ctx, received_ms)
            if routed is not None:
                return routed
        try:
            request = self._codec.decode(REQUEST, msg.value() or b"", str(msg.topic()))
        except DecodeError as exc:
            if isinstance(exc.__cause__, UnicodeDecodeError):
                return self._reject_undecodable(msg, exc.__cause__)
            raise
        if not self._index.synced(ctx.assigned_at) or (
            self._usage is not None and not self._usage.ready
        ):
            return self._route_after_sync(msg, ctx, request, received_ms)
        return self._route(msg, request, received_ms)

    def _route_by_headers(
        self, msg: Record, headers: RawHeaders, ctx: Context, received_ms: int
    ) -> list[Outbound] | None:
        """The header path: route a record the client wrote with routing headers from those
        headers alone and forward its original bytes (the worker validates the body), or
        drop it as a duplicate. None when anything calls for the body or for a refusal: the
        decoding path then decides, with the exact reasons it always gives (a refusal is the
        rare case; only routing and duplicates must be cheap).

        What depends only on (tenant, specialist, priority, reply topic) is decided once per
        tenants configuration and kept (``_lane``); per record remain the id, dedup, the
        value's size, header limits, deadline, signature and rate. Every read of the rules
        and of the lanes is an attribute of this router set up front: this runs per record."""
        pairs = headers if type(headers) is list else h.header_pairs(headers)
        facts = dict(pairs)  # the last value of each header, as everywhere
        raw_id = facts.get(_REQUEST_ID)
        if (
            not raw_id
            or facts.get(_SCHEMA) not in self._schemas
            or len(facts) != len(pairs)  # a repeated header: the decoding path weighs each
            or len(pairs) > self._max_headers
        ):
            return None
        config = self.tenants.config
        lanes = self._lanes
        if config is not self._lanes_config:
            self._lanes_config, self._lanes = config, {}
            lanes = self._lanes
        key = (
            facts.get(_TENANT),
            facts.get(_SPECIALIST),
            facts.get(_PRIORITY),
            facts.get(_REPLY_TO),
        )
        try:
            lane = lanes[key]
        except KeyError:  # a new combination: decided once
            if len(lanes) >= MAX_LANES:
                lanes.clear()
            lane = lanes[key] = self._lane(key, config)
        if lane is None or (ctx.assigned_at > self._ready_since and not self._ready(ctx)):
            return None
        value = msg.value() or b""
        deadline = facts.get(_DEADLINE_MS)
        if len(value) > lane.max_value:
            return None  # maybe over the prompt limit: the decoding path measures it exactly
        if facts.keys() <= _ROUTING_NAMES:
            # Only the client's routing headers: the lane fits its four, the schema set its
            # one; the id's and the deadline's sizes are the rest (each exact, as the
            # decoding path's check).
            if len(raw_id) > self._id_limit or (
                deadline is not None and len(deadline) > self._deadline_limit
            ):
                return None
        elif not self._headers_fit(facts):
            return None  # maybe over a limit: the decoding path measures it exactly
        try:
            request_id = raw_id.decode()
            if deadline is not None and int(deadline) <= received_ms:
                return None
        except (AttributeError, TypeError, ValueError):  # not bytes, not UTF-8, not a number
            return None
        replay = _REPLAY_ID in facts
        if self._index.is_answered(request_id, replay=replay) or (
            not replay and self._recent.seen(request_id)
        ):
            self.duplicates += 1
            return []
        if not request_id.strip() or (
            lane.policy.require_signature
            and not self._signed(facts, value, request_id, lane.tenant, lane.policy)
        ):
            return None
        # The rate is charged here, before the worker validates the body: the token is the
        # tenant's admission into a task topic, and a record the worker then rejects has
        # taken the router's and the worker's time all the same (and no other process can
        # give a token back). A body the decoding path refuses costs no token: it is turned
        # away before it is admitted (docs/security.md, "Tenants").
        if (
            self._limiter is not None
            and self._limiter.check(lane.tenant, partition=msg.partition() or 0) > 0
        ):
            return None  # the decoding path asks again and answers or delays it
        self._recent.add(request_id)
        stamp = self._routed
        if stamp[0] != received_ms:  # one header a millisecond, shared by its records
            stamp = self._routed = (received_ms, (_ROUTED, b"%d 0" % received_ms))
        # Routed when received: the header path takes microseconds (one clock read a record).
        return [Outbound(lane.topic, value, raw_id, [*pairs, stamp[1]])]

    def _ready(self, ctx: Context) -> bool:
        """Whether the answered index has read every answer up to ``ctx``'s assignment and the
        usage tail has caught up. Both only ever become true, so the latest assignment time
        seen ready is kept and the header path asks again only for a later one."""
        if not self._index.synced(ctx.assigned_at) or (
            self._usage is not None and not self._usage.ready
        ):
            return False
        self._ready_since = max(self._ready_since, ctx.assigned_at)
        return True

    def _headers_fit(self, facts: Mapping[str, Any]) -> bool:
        """Whether every header of a record with headers beyond the routing ones surely fits
        ``max_header_bytes``: the longest name with the longest value does (conservative:
        the decoding path measures a record this refuses exactly)."""
        try:
            return max(map(len, facts)) + max(
                map(len, facts.values())
            ) <= self._rules.max_header_bytes and all(map(str.isascii, facts))
        except TypeError:  # a None header value
            return False

    def _lane(self, key: tuple[Any, Any, Any, Any], config: TenantsConfig) -> _Lane | None:
        """What a (tenant, specialist, priority, reply topic) of routing headers allows under
        ``config``: the task topic and the largest value that surely holds a prompt under
        the tenant's limit; None when the decoding path must decide (a refusal, a budget)."""
        raw_tenant, raw_specialist, priority, reply_to = key
        try:
            tenant = raw_tenant.decode()
            specialist = raw_specialist.decode()
            reply = reply_to.decode() if reply_to is not None else None
            fits = all(
                value is None or len(name) + len(value) <= self._rules.max_header_bytes
                for name, value in zip(_LANE_NAMES, key, strict=True)
            )
        except (AttributeError, TypeError, UnicodeDecodeError):
            return None
        policy = config.policy(tenant)
        if (
            not fits  # a header over the size limit: the decoding path refuses it
            or policy is None
            or specialist not in self._task_topics
            or (policy.specialists is not None and specialist not in policy.specialists)
            or (
                policy.models is not None
                and self._rules.models.get(specialist) not in policy.models
            )
            or (
                self._usage is not None
                and (
                    policy.tokens_per_minute is not None
                    or policy.tokens_per_day is not None
                    or policy.dollars_per_month is not None
                )
            )
            or (reply is not None and not self._reply_allowed(reply, policy))
        ):
            return None
        topics = self._batch_topics if priority == b"BATCH" else self._task_topics
        return _Lane(
            tenant,
            policy,
            topics[specialist],
            policy.max_prompt_bytes or self._rules.max_prompt_bytes,
        )

    @staticmethod
    def _signed(
        facts: dict[str, Any],
        value: bytes,
        request_id: str,
        tenant: str,
        policy: TenantPolicy,
    ) -> bool:
        """Whether a record routed by its headers carries a valid signature over its value,
        id, tenant and routing headers (a forged routing header breaks it)."""
        try:
            key_id = facts[h.KEY_ID].decode()
            signature = facts[h.SIGNATURE].decode()
        except (KeyError, AttributeError, UnicodeDecodeError):
            return False
        secret = policy.secret(key_id)
        return secret is not None and signature_ok(
            signature, sign(value, request_id, tenant, key_id, secret, signed_routing(facts))
        )

    async def _route_after_sync(
        self, msg: Record, ctx: Context, request: dict[str, Any], received_ms: int
    ) -> Sequence[Outbound]:
        await self._index.sync(ctx.assigned_at)
        if self._usage is not None:
            await self._usage.wait_ready()  # once, at start-up: spend before the first decision
        headers = msg.headers()
        if headers:
            # Held back by the sync alone (the records fetched between an assignment and its
            # barrier): the header path routes it now, as it routes every record after them,
            # not the decoding path's validate-and-encode (7% of a 60k-record start here).
            routed = self._route_by_headers(msg, headers, ctx, received_ms)
            if routed is not None:
                return routed
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
        policy = self.tenants.config.policy(request["tenant"])
        try:
            if policy is None:
                raise RequestInvalid(
                    f"unknown tenant {request['tenant']!r}: ask an operator to add it to the "
                    "tenants file (or SWITCHBOARD_TENANTS)",
                    code="unknown_tenant",
                )
            self._check_signature(msg, request, policy)
            self._check_reply_to(request, policy)
            self._check_headers(msg)
            specialist, prompt = self._validate(request, policy)
        except RequestInvalid as exc:
            return self._reject(request, exc, policy)
        admitted = _Admitted(msg, request, prompt, received_ms, carried, policy)
        if specialist is None:
            verdict = self._triage.classify(prompt)
            if inspect.isawaitable(verdict):
                return self._route_after_triage(admitted, verdict)
            specialist = verdict.specialist
        return self._permitted_task(admitted, specialist)

    async def _route_after_triage(
        self, admitted: _Admitted, verdict: Awaitable[TriageResult]
    ) -> Sequence[Outbound]:
        return self._permitted_task(admitted, (await verdict).specialist)

    def _permitted_task(self, admitted: _Admitted, specialist: str) -> list[Outbound]:
        """``_task``, once the tenant may ask ``specialist`` and be answered by its model."""
        msg, request, policy = admitted.msg, admitted.request, admitted.policy
        tenant = request["tenant"]
        if policy.specialists is not None and specialist not in policy.specialists:
            allowed = ", ".join(f"/{s}" for s in sorted(policy.specialists)) or "none"
            return self._reject(
                request,
                RequestInvalid(
                    f"tenant {tenant!r} may not ask the {specialist} specialist: it may ask "
                    f"{allowed} (the tenants file's specialists)",
                    code="specialist_not_allowed",
                ),
                policy,
            )
        model = self._rules.models.get(specialist)
        if policy.models is not None and model not in policy.models:
            return self._reject(
                request,
                RequestInvalid(
                    f"tenant {tenant!r} may not use model {model!r} (the {specialist} "
                    f"specialist's): it may use {', '.join(sorted(policy.models)) or 'none'}",
                    code="model_not_allowed",
                ),
                policy,
            )
        partition = msg.partition() or 0
        estimate = len(admitted.prompt) // 4 + self._rules.max_output_tokens
        mode = policy.over_limit or self._rules.over_limit
        if self._usage is not None:
            verdict = self._usage.check(
                tenant, policy, estimate, partition=partition, partitions=self.partitions
            )
            if verdict is not None:
                return self._over_budget(msg, request, verdict, mode, policy)
        if (
            self._limiter is not None
            and (wait_s := self._limiter.check(tenant, partition=partition)) > 0
        ):
            return self._over_limit(msg, request, wait_s, mode)
        outputs = self._task(admitted, specialist)
        if self._usage is not None and (
            policy.tokens_per_minute is not None or policy.tokens_per_day is not None
        ):
            self._usage.reserve(request["request_id"], tenant, partition, estimate)
        return outputs

    def _over_budget(
        self,
        msg: Record,
        request: dict[str, Any],
        verdict: BudgetVerdict,
        mode: str,
        policy: TenantPolicy,
    ) -> list[Outbound]:
        """Over a budget: rejected (it resets later, waiting cannot help); over the tokens a
        minute: waits in a retry tier when the tenant's ``over_limit`` is ``delay``."""
        if verdict.wait_s is not None and mode == "delay":
            return self._over_limit(msg, request, verdict.wait_s, mode)
        return self._reject(request, RequestInvalid(verdict.message, code=verdict.code), policy)

    def _reject(
        self, request: dict[str, Any], exc: RequestInvalid, policy: TenantPolicy | None = None
    ) -> list[Outbound]:
        self._recent.add(request["request_id"])
        if request.get("reply_to") and not self._reply_allowed(request["reply_to"], policy):
            # Never write into a topic the request may not name: answer on the shared one.
            request = {**request, "reply_to": None}
        response = self._outcomes.response(
            request, ResponseStatus.REJECTED, str(exc), error_code=exc.code
        )
        return self._outcomes.recorded(response)

    def _reject_undecodable(self, msg: Record, exc: UnicodeDecodeError) -> list[Outbound]:
        """A request whose strings are not UTF-8: the caller's bad input, not a pipeline
        failure. Answered from its headers (nothing else is readable); with no request id
        header there is nobody to answer, and the DLQ keeps the bytes."""
        request = header_request(msg.headers())
        if request is None:
            raise DecodeError(f"a string in the request is not UTF-8: {exc}", code="invalid_utf8")
        return self._reject(
            request, invalid_utf8(exc), self.tenants.config.policy(request["tenant"])
        )

    def _check_signature(self, msg: Record, request: dict[str, Any], policy: TenantPolicy) -> None:
        """A tenant that must sign: ``sb-signature`` by one of its keys over this record."""
        if not policy.require_signature:
            return
        headers = msg.headers()
        key_id = h.header_value(headers, h.KEY_ID)
        signature = h.header_value(headers, h.SIGNATURE)
        tenant = request["tenant"]
        if not key_id or not signature:
            raise RequestInvalid(
                f"tenant {tenant!r} must sign its requests: give the client "
                "signing_key=(key_id, secret) from the tenants file",
                code="unsigned",
            )
        secret = policy.secret(key_id)
        header_id = h.header_value(headers, h.REQUEST_ID) or ""
        header_tenant = h.header_value(headers, h.TENANT) or ""
        if (
            secret is None
            or (header_id, header_tenant) != (request["request_id"], tenant)
            or not self._signature_verifies(
                signature, msg, header_id, header_tenant, key_id, secret
            )
        ):
            # One reason for all three: which part failed would help a forger, not a caller.
            raise RequestInvalid(
                f"the signature does not verify for tenant {tenant!r} (key id {key_id!r}): "
                "sign with a current key of the tenant, and send the record unchanged",
                code="bad_signature",
            )

    @staticmethod
    def _signature_verifies(
        signature: str, msg: Record, request_id: str, tenant: str, key_id: str, secret: bytes
    ) -> bool:
        """The decoding path decides from the (signed) body, so either scheme will do: the
        one covering the routing headers too (what today's client signs whenever it writes
        routing headers, so it is tried first: one HMAC) or the original (value, id, tenant)."""
        value = msg.value() or b""
        routing = signed_routing(h.header_pairs(msg.headers()))
        if routing and signature_ok(
            signature, sign(value, request_id, tenant, key_id, secret, routing)
        ):
            return True
        return signature_ok(signature, sign(value, request_id, tenant, key_id, secret))

    def _reply_allowed(self, reply_to: str, policy: TenantPolicy | None) -> bool:
        return (
            policy is not None
            and policy.reply_to_prefix is not None
            and reply_to.startswith(policy.reply_to_prefix)
            and not internal_topic(reply_to, self._topics.prefix)
        )

    def _check_reply_to(self, request: dict[str, Any], policy: TenantPolicy) -> None:
        reply_to = request.get("reply_to")
        if reply_to and not self._reply_allowed(reply_to, policy):
            if policy.reply_to_prefix is None:
                allowed = "none: leave reply_to unset to use the shared responses topic"
            else:
                allowed = (
                    f"topics starting with {policy.reply_to_prefix!r}"
                    if policy.reply_to_prefix
                    else "any"
                )
                allowed += " outside Kafka's and the pipeline's own"
            raise RequestInvalid(
                f"reply_to {reply_to!r} is not a reply topic tenant {request['tenant']!r} may "
                f"use (allowed: {allowed})",
                code="forbidden_reply_to",
            )

    def _check_headers(self, msg: Record) -> None:
        pairs = h.header_pairs(msg.headers())
        rules = self._rules
        if len(pairs) > rules.max_headers:
            raise RequestInvalid(
                f"the record has {len(pairs)} headers; the limit is {rules.max_headers}",
                code="too_many_headers",
            )
        for name, value in pairs:
            size = len(name.encode()) + (
                len(value) if isinstance(value, bytes) else len(str(value or "").encode())
            )
            if size > rules.max_header_bytes:
                raise RequestInvalid(
                    f"header {name[:64]!r} is {size} bytes; the limit is {rules.max_header_bytes}",
                    code="header_too_large",
                )

    def _task(self, admitted: _Admitted, specialist: str) -> list[Outbound]:
        request = admitted.request
        request_id = request["request_id"]
        self._recent.add(request_id)
        task = dict(request)
        task["specialist"] = specialist
        task["prompt"] = admitted.prompt
        routed_ms = now_ms()
        meta = dict(task.get("metadata") or {})
        meta["routed_at_ms"] = str(routed_ms)
        meta["route_ms"] = str(routed_ms - admitted.received_ms)
        task["metadata"] = meta
        # Batch work (review jobs) goes to the specialist's batch topic: the same workers read
        # it with a smaller share of their cap, so it never queues ahead of interactive work.
        topic = (
            self._topics.batch_tasks(specialist)
            if request.get("priority") == "BATCH"
            else self._topics.tasks(specialist)
        )
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
        headers += admitted.carried  # a replayed request that fails for good is parked
        # Keyed by request id: a tenant's load spreads over every partition (no tenant can
        # starve one), and duplicates of one request always meet in the same partition.
        return [
            Outbound(topic, self._codec.encode(REQUEST, task, topic), request_id.encode(), headers)
        ]

    def _validate(self, request: dict[str, Any], policy: TenantPolicy) -> tuple[str | None, str]:
        """The specialist (None: triage decides) and the prompt; raises RequestInvalid."""
        rules = self._rules
        if not request["request_id"].strip():
            raise RequestInvalid("request_id is empty: give every request a unique id")
        deadline = request.get("deadline_ms")
        if deadline is not None and deadline <= now_ms():
            raise RequestInvalid(
                "deadline already passed when the request was routed: send a later deadline",
                code="deadline_passed",
            )
        limit = policy.max_prompt_bytes or rules.max_prompt_bytes
        return validate_body(request, self._body_rules, limit)

    def _over_limit(
        self, msg: Record, request: dict[str, Any], wait_s: float, mode: str
    ) -> list[Outbound]:
        if mode == "delay":
            tier = self._topics.tier_for_delay(wait_s)
            due = now_ms() + int(wait_s * 1000)
            headers = [
                *h.header_pairs(msg.headers()),
                (h.RETRY_DUE_MS, str(due).encode()),
                (h.RETRY_ORIGIN_TOPIC, str(msg.topic()).encode()),
            ]
            return [Outbound(self._topics.retry(tier), msg.value() or b"", msg.key(), headers)]
        response = self._outcomes.response(
            request,
            ResponseStatus.REJECTED,
            f"tenant {request['tenant']!r} is over its request rate: retry in {wait_s:.2f}s",
            error_code=RATE_LIMITED,
        )
        return self._outcomes.recorded(response)  # a reply-topic rejection is in the ledger too
