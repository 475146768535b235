"""Everything the fake server knows and counts, behind one lock.

Handlers run on the server's event loop while tests script and read it from other threads,
so every mutation takes ``self._lock``; nothing awaits while holding it.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Final

from switchboard.devtools.fake_anthropic.batches import Batch, BatchStore
from switchboard.devtools.fake_anthropic.faults import ApiError, Fault, FaultPlan
from switchboard.devtools.fake_anthropic.prompts import (
    PromptCache,
    PromptSplit,
    digest,
    last_user_text,
    request_key,
    split_prompt,
)
from switchboard.devtools.fake_anthropic.ratelimit import Admission, RateLimiter
from switchboard.devtools.fake_anthropic.replies import (
    compose_reply,
    compose_tool_reply,
    forced_tool,
    message_json,
    usage_json,
)

#: What ``script_batch_items`` can make a batch item's result: ``errored`` is a 500
#: ``api_error`` (worth resubmitting), ``invalid`` a 400 ``invalid_request_error``.
BATCH_OUTCOMES: Final = ("succeeded", "errored", "invalid", "expired", "canceled")

Latency = float | tuple[float, float]
"""Milliseconds per call: fixed, or (lo, hi) drawn uniformly for each call."""


def parse_latency(text: str) -> Latency:
    """``"200"`` or ``"1000-5000"`` (milliseconds); raises ValueError otherwise."""
    lo, sep, hi = text.partition("-")
    latency: Latency = (float(lo), float(hi)) if sep else float(lo)
    check_latency(latency)
    return latency


def check_latency(latency: Latency) -> None:
    lo, hi = latency if isinstance(latency, tuple) else (latency, latency)
    if not 0 <= lo <= hi:
        raise ValueError(f"latency {latency!r}: use MS >= 0 or LO-HI with 0 <= LO <= HI")


@dataclass(frozen=True)
class CallRecord:
    """One ``/v1/messages`` call: when it arrived (epoch seconds) and how it ended.

    ``status`` is 0 when no response was sent (``dropped``, or ``client_gone`` when the client
    hung up first, as after its own timeout). Outcomes: ok, refusal, fault, rate_limited,
    unauthorized, invalid, dropped, client_gone, error.
    """

    at: float
    status: int
    outcome: str
    key: str | None
    seconds: float
    #: Tokens the call took from its key's tokens-per-minute bucket (0 without limits).
    tokens: int = 0


@dataclass(frozen=True)
class FakeStats:
    """A snapshot of what the fake saw.

    ``calls_by_key`` counts ``/v1/messages`` calls per request key (``metadata.user_id``, else a
    hash of the messages); ``billed_by_key`` counts the ones the model ran for, batch items
    included, so a test can prove a prompt was never billed twice. ``calls`` is the newest
    ``log_limit`` records. ``batches_created`` counts Message Batches created and
    ``batched_by_custom_id`` how many created batches carried each ``custom_id``, so a test can
    prove a resumed job submitted nothing twice.
    """

    total_calls: int
    calls_by_key: dict[str, int]
    billed_by_key: dict[str, int]
    in_flight: int
    max_in_flight: int
    queued_faults: int
    calls: tuple[CallRecord, ...]
    batches_created: int = 0
    batched_by_custom_id: dict[str, int] = field(default_factory=dict)

    def status_counts(self) -> Counter[int]:
        return Counter(record.status for record in self.calls)

    def to_json(self, *, with_calls: bool = True) -> dict[str, Any]:
        data = asdict(self)
        data["calls"] = [asdict(record) for record in self.calls] if with_calls else []
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FakeStats:
        """Read ``GET /_fake/stats`` back into a snapshot, for tests in another process."""
        values = {**data, "calls": tuple(CallRecord(**record) for record in data["calls"])}
        return cls(**values)


@dataclass
class CallTracker:
    """What a handler learns about its call; logged when the call leaves."""

    at: float
    started: float
    key: str | None = None
    status: int = 0
    outcome: str = "client_gone"
    tokens: int = 0


@dataclass
class _Counts:
    total_calls: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    calls_by_key: Counter[str] = field(default_factory=Counter)
    billed_by_key: Counter[str] = field(default_factory=Counter)
    batches_created: int = 0
    batched_by_custom_id: Counter[str] = field(default_factory=Counter)


class FakeState:
    """Configuration, scripted faults, caches, buckets, batches and counters of one fake."""

    def __init__(
        self,
        *,
        latency_ms: Latency = 0.0,
        faults: Iterable[Fault | str] = (),
        api_keys: Collection[str] | None = None,
        models: Collection[str] | None = None,
        rpm: int | None = None,
        tpm: int | None = None,
        batch_seconds: float = 0.5,
        cache_min_tokens: int = 0,
        inline_faults: bool = True,
        seed: int = 0,
        log_limit: int = 100_000,
    ) -> None:
        check_latency(latency_ms)
        self._lock = threading.Lock()
        self._latency = latency_ms
        self._random = random.Random(seed)
        self.api_keys = frozenset(api_keys) if api_keys is not None else None
        self.models = frozenset(models) if models is not None else None
        self.batch_seconds = batch_seconds
        self.cache_min_tokens = cache_min_tokens
        self._limiter = RateLimiter(rpm, tpm)
        self._plan = FaultPlan(inline=inline_faults)
        self._cache = PromptCache()
        self._batches = BatchStore()
        self._counts = _Counts()
        self._batch_outcomes: dict[str, deque[str]] = {}
        self._log: deque[CallRecord] = deque(maxlen=log_limit)
        self.script(*faults)

    # Configuration, from any thread.

    def set_latency(self, latency_ms: Latency) -> None:
        check_latency(latency_ms)
        with self._lock:
            self._latency = latency_ms

    def set_rate_limits(self, rpm: int | None = None, tpm: int | None = None) -> None:
        with self._lock:
            self._limiter = RateLimiter(rpm, tpm)

    def script(self, *faults: Fault | str) -> None:
        parsed = [fault if isinstance(fault, Fault) else Fault.parse(fault) for fault in faults]
        with self._lock:
            for fault in parsed:
                self._plan.add(fault)

    def clear_faults(self) -> None:
        with self._lock:
            self._plan.clear()
            self._batch_outcomes.clear()

    def script_batch_items(self, outcomes: Mapping[str, str | Sequence[str]]) -> None:
        """Script batch items by ``custom_id``: the outcomes its next results take, in order
        (one of ``BATCH_OUTCOMES``); afterwards the item is answered as usual. The same item
        may be scripted again, so ``{"a": ["errored", "expired"]}`` fails it in two batches."""
        scripted = {
            custom_id: [wanted] if isinstance(wanted, str) else list(wanted)
            for custom_id, wanted in outcomes.items()
        }
        for custom_id, wanted in scripted.items():
            unknown = sorted(set(wanted) - set(BATCH_OUTCOMES))
            if unknown:
                raise ValueError(
                    f"batch item {custom_id!r}: outcome {unknown[0]!r}; use one of "
                    + ", ".join(BATCH_OUTCOMES)
                )
        with self._lock:
            for custom_id, wanted in scripted.items():
                self._batch_outcomes.setdefault(custom_id, deque()).extend(wanted)

    def set_batch_seconds(self, seconds: float) -> None:
        """How long batches created from now on stay in progress."""
        if seconds < 0:
            raise ValueError(f"batch seconds {seconds!r}: use 0 or more")
        with self._lock:
            self.batch_seconds = seconds

    def reset(self) -> None:
        """Forget faults, counters, the log, cached prefixes, rate buckets and batches."""
        with self._lock:
            self._plan.clear()
            self._cache.clear()
            self._limiter.clear()
            self._batches.clear()
            self._batch_outcomes.clear()
            self._log.clear()
            in_flight = self._counts.in_flight
            self._counts = _Counts(in_flight=in_flight, max_in_flight=in_flight)

    def stats(self) -> FakeStats:
        with self._lock:
            counts = self._counts
            return FakeStats(
                total_calls=counts.total_calls,
                calls_by_key=dict(counts.calls_by_key),
                billed_by_key=dict(counts.billed_by_key),
                in_flight=counts.in_flight,
                max_in_flight=counts.max_in_flight,
                queued_faults=self._plan.queued,
                calls=tuple(self._log),
                batches_created=counts.batches_created,
                batched_by_custom_id=dict(counts.batched_by_custom_id),
            )

    # One call, from the server's loop.

    def authenticate(self, headers: Mapping[str, str]) -> str | None:
        """The caller's key (``x-api-key`` or ``Authorization: Bearer``), None if not accepted."""
        key = headers.get("x-api-key")
        if not key:
            scheme, _, token = headers.get("authorization", "").partition(" ")
            key = token.strip() if scheme.lower() == "bearer" else ""
        if not key or (self.api_keys is not None and key not in self.api_keys):
            return None
        return key

    @contextmanager
    def track_call(self) -> Iterator[CallTracker]:
        call = CallTracker(at=time.time(), started=time.monotonic())
        with self._lock:
            counts = self._counts
            counts.total_calls += 1
            counts.in_flight += 1
            counts.max_in_flight = max(counts.max_in_flight, counts.in_flight)
        try:
            yield call
        except ApiError as exc:
            call.status, call.outcome = exc.status, exc.outcome
            raise
        except asyncio.CancelledError:
            call.status, call.outcome = 0, "client_gone"
            raise
        except Exception:
            call.status, call.outcome = 500, "error"
            raise
        finally:
            record = CallRecord(
                call.at,
                call.status,
                call.outcome,
                call.key,
                time.monotonic() - call.started,
                call.tokens,
            )
            with self._lock:
                self._counts.in_flight -= 1
                self._log.append(record)

    def count_call(self, key: str) -> None:
        with self._lock:
            self._counts.calls_by_key[key] += 1

    def draw_latency_s(self) -> float:
        with self._lock:
            latency = self._latency
            ms = self._random.uniform(*latency) if isinstance(latency, tuple) else latency
        return ms / 1000.0

    def admit(self, api_key: str, split: PromptSplit) -> Admission:
        """Take the call's request and tokens from the key's buckets; cache reads are free."""
        with self._lock:
            if not self._limiter.enabled:
                return Admission(None, {})
            tokens = split.uncached_tokens
            if self._cache_hit(split, touch=False) is not True:
                tokens += split.cached_tokens
            return self._limiter.admit(api_key, tokens, now=time.monotonic(), wall=time.time())

    def pick_fault(self, prompt: str, key: str) -> Fault | None:
        with self._lock:
            return self._plan.pick(prompt, key)

    def bill(self, key: str) -> None:
        with self._lock:
            self._counts.billed_by_key[key] += 1

    def answer(
        self,
        params: dict[str, Any],
        split: PromptSplit,
        *,
        refusal: bool = False,
        service_tier: str = "standard",
    ) -> dict[str, Any]:
        """The Message for ``params`` (a ``tool_use`` block when a tool is forced); records the
        cached prefix as written or read."""
        with self._lock:
            hit = self._cache_hit(split, touch=True)
        tool = None if refusal else forced_tool(params)
        content = None
        if tool is not None:
            reply, block = compose_tool_reply(params, tool)
            content = [block]
        else:
            reply = compose_reply(params, refusal=refusal)
        usage = usage_json(
            split, cache_hit=hit, output_tokens=reply.output_tokens, service_tier=service_tier
        )
        return message_json(str(params.get("model")), reply, usage, content=content)

    def _cache_hit(self, split: PromptSplit, *, touch: bool) -> bool | None:
        """None when nothing is cacheable (no breakpoint, or a prefix below the minimum)."""
        if split.cache_key is None or split.cached_tokens < self.cache_min_tokens:
            return None
        now = time.monotonic()
        if touch:
            return self._cache.touch(split.cache_key, split.cache_ttl_s, now)
        return self._cache.holds(split.cache_key, now)

    # Batches, from the server's loop.

    def create_batch(self, requests: list[dict[str, Any]]) -> Batch:
        with self._lock:
            self._counts.batches_created += 1
            self._counts.batched_by_custom_id.update(item["custom_id"] for item in requests)
            return self._batches.add(requests, now=time.time(), processing_s=self.batch_seconds)

    def batch(self, batch_id: str) -> Batch | None:
        with self._lock:
            return self._batches.get(batch_id)

    def batch_page(
        self, *, limit: int, after_id: str | None, before_id: str | None
    ) -> tuple[list[Batch], bool]:
        with self._lock:
            return self._batches.page(limit=limit, after_id=after_id, before_id=before_id)

    def cancel_batch(self, batch: Batch) -> None:
        with self._lock:
            if batch.ended_at is None and batch.cancel_initiated_at is None:
                batch.cancel_initiated_at = time.time()

    def delete_batch(self, batch: Batch) -> None:
        with self._lock:
            self._batches.delete(batch.id)

    def end_due_batches(self) -> None:
        """Make the results of every batch whose time is up (or that was canceled).

        A 100,000-item batch takes seconds of CPU: the server runs this in a worker thread so
        the calls in flight on its loop keep their latency.
        """
        now = time.time()
        with self._lock:
            due = self._batches.claim_due(now)
        for batch in due:
            canceled = now < batch.ends_at
            lines = [self._batch_line(request, canceled=canceled) for request in batch.requests]
            # Results come in any order from the API; a fixed shuffle keeps callers honest.
            lines.sort(key=lambda line: digest(line["custom_id"]))
            with self._lock:
                batch.results, batch.ended_at = lines, now

    def _batch_line(self, request: dict[str, Any], *, canceled: bool) -> dict[str, Any]:
        custom_id, params = request["custom_id"], request["params"]
        with self._lock:
            scripted = self._batch_outcomes.get(custom_id)
            outcome = scripted.popleft() if scripted else None
        if canceled or outcome == "canceled":
            return {"custom_id": custom_id, "result": {"type": "canceled"}}
        if outcome == "expired":
            return {"custom_id": custom_id, "result": {"type": "expired"}}
        if outcome in ("errored", "invalid"):
            error = (
                ApiError(400, f"requests.{custom_id}: scripted invalid request.")
                if outcome == "invalid"
                else ApiError(500, "Scripted fault: an internal error while processing the item.")
            )
            body = {"type": "error", "error": error.error_object(), "request_id": None}
            return {"custom_id": custom_id, "result": {"type": "errored", "error": body}}
        key = request_key(params)
        with self._lock:
            fault = (
                None
                if outcome == "succeeded"
                else self._plan.pick(last_user_text(params.get("messages")), key, use_queue=False)
            )
        result: dict[str, Any]
        if fault is None or fault.kind == "refusal":
            self.bill(key)
            message = self.answer(
                params, split_prompt(params), refusal=fault is not None, service_tier="batch"
            )
            result = {"type": "succeeded", "message": message}
        elif fault.kind == "timeout":
            result = {"type": "expired"}
        else:
            error = (
                ApiError.from_fault(fault, {})
                if fault.kind == "status"
                else ApiError(500, "Scripted fault: the item was lost.")
            )
            body = {"type": "error", "error": error.error_object(), "request_id": None}
            result = {"type": "errored", "error": body}
        return {"custom_id": custom_id, "result": result}
