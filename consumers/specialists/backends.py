"""What answers a specialist request: Claude through the official SDK, or the offline rulebook."""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol

from consumers.resilience.ratelimit import CallCost, ProviderBudget, Reservation
from consumers.specialists.personas import load_persona
from consumers.specialists.review.answer import claude_review, offline_review
from consumers.specialists.rulebook import OfflineRulebook
from switchboard.core.errors import TransientError
from switchboard.core.findings import ReviewMeta
from switchboard.core.settings import DEFAULTS
from switchboard.core.status import ResponseStatus

if TYPE_CHECKING:  # for types only: importing the SDK takes seconds, and routers never call it
    from anthropic import AsyncAnthropic

    from switchboard.core.settings import Settings

#: How long an idle connection to the provider is kept for reuse: the SDK's own default. A
#: busy worker's connections are never idle that long; a longer wait would risk reusing one
#: the server has closed, and a POST is not retried on it (the retry tiers would be).
KEEPALIVE_S = 5.0
#: Input tokens per prompt character before any usage says otherwise (the API's own rule of
#: thumb: about four characters a token), and the weight of each answer's usage after that.
TOKENS_PER_CHAR = 0.25
ESTIMATE_WEIGHT = 0.5
#: How long a cached prompt prefix lives after its last use (the API's ephemeral cache).
CACHE_TTL_S = 300.0

#: One budget per provider and API key in a process: the limits are the key's, shared by every
#: specialist's worker (held by their backends; forgotten with the last of them).
_BUDGETS: weakref.WeakValueDictionary[tuple[str, str], ProviderBudget] = (
    weakref.WeakValueDictionary()
)


def provider_budget(base_url: str | None, api_key: str) -> ProviderBudget:
    """The process's ``ProviderBudget`` for ``api_key`` at ``base_url`` (made on first use)."""
    key = (base_url or "", hashlib.sha256(api_key.encode()).hexdigest()[:16])
    budget = _BUDGETS.get(key)
    if budget is None:
        budget = _BUDGETS[key] = ProviderBudget()
    return budget


class TokenEstimate:
    """The input tokens a call will count against the limits, from its text's length.

    A call is a cached persona (the system prompt, behind a ``cache_control`` breakpoint) and
    a question. The question counts about four characters a token until usage says otherwise,
    then a moving average of ``input_tokens`` per character (each answer weighs half: an
    estimate too high makes calls wait for tokens they will not take, one too low earns
    429s). The persona counts only when its cache entry is cold: on a specialist's first call,
    or ``CACHE_TTL_S`` after its last; then as many tokens as its last cache write or read.
    """

    def __init__(self, tokens_per_char: float = TOKENS_PER_CHAR) -> None:
        self.tokens_per_char = tokens_per_char
        self._persona_tokens: dict[str, int] = {}
        self._warm_until: dict[str, float] = {}

    def input_tokens(self, persona: str, prompt: str, *, key: str, now: float) -> int:
        tokens = math.ceil(len(prompt) * self.tokens_per_char)
        if now >= self._warm_until.get(key, 0.0):
            tokens += self._persona_tokens.get(key, math.ceil(len(persona) * TOKENS_PER_CHAR))
        return max(1, tokens)

    def learn(self, prompt: str, usage: Mapping[str, int], *, key: str, now: float) -> None:
        if prompt and usage.get("input_tokens"):
            ratio = usage["input_tokens"] / len(prompt)
            self.tokens_per_char += ESTIMATE_WEIGHT * (ratio - self.tokens_per_char)
        cached = usage.get("cache_creation_input_tokens") or usage.get("cache_read_input_tokens")
        if cached:
            self._persona_tokens[key] = cached
            self._warm_until[key] = now + CACHE_TTL_S


#: Published prices in micro-dollars per token (input, output): $ per million tokens == µ$ per
#: token. Cache reads cost a tenth of input, cache writes 1.25x input (2x for a 1-hour TTL).
PRICES_MICRO_USD: dict[str, tuple[float, float]] = {
    "claude-opus": (4.0, 20.0),
    "claude-sonnet": (2.0, 10.0),
    "claude-haiku": (0.10, 0.50),
}


@dataclass(frozen=True)
class Answer:
    """A specialist's result: ``answered`` or ``refused`` (a refusal is a result, not an error)."""

    status: str
    content: str
    backend: str
    model: str | None = None
    usage: dict[str, int] | None = None
    cost_micro_usd: int = 0
    model_ms: int = 0
    #: Why the model stopped (its ``stop_reason``: end_turn, max_tokens, refusal, ...).
    finish_reason: str | None = None


class SpecialistBackend(Protocol):
    """Answers a specialist request. A backend that never waits (the rulebook) may also offer
    ``answer_now(specialist, prompt, request) -> Answer``, which lets the worker answer on the
    runtime's fast path."""

    name: str

    async def answer(self, specialist: str, prompt: str, request: Mapping[str, Any]) -> Answer: ...


class OfflineBackend:
    """The deterministic rulebook: the default with no API key, honest about what it is."""

    name = "offline"

    def __init__(self) -> None:
        self._rulebook = OfflineRulebook()

    async def answer(self, specialist: str, prompt: str, request: Mapping[str, Any]) -> Answer:
        return self.answer_now(specialist, prompt, request)

    def answer_now(self, specialist: str, prompt: str, request: Mapping[str, Any]) -> Answer:
        began = time.perf_counter()
        review = ReviewMeta.from_metadata(request.get("metadata"))
        if review is not None:  # a review job's part: findings as JSON, not prose
            content = offline_review(specialist, prompt, review)
        else:
            content = self._rulebook.answer(specialist, prompt).content
        return Answer(
            status=ResponseStatus.ANSWERED,
            content=content,
            backend="offline",
            model_ms=int((time.perf_counter() - began) * 1000),
        )


#: Cache prices relative to the input price: a read, a 5-minute write and a 1-hour write.
CACHE_READ: Final = 0.1
CACHE_WRITE_5M: Final = 1.25
CACHE_WRITE_1H: Final = 2.0


def usage_cost_micro_usd(
    model: str, usage: Mapping[str, int], *, one_hour_writes: int = 0
) -> float:
    """What ``usage`` costs at the published per-token prices, unrounded: ``one_hour_writes``
    of its cache writes were at the 1-hour TTL's price, the rest at the 5-minute one's."""
    price_in, price_out = next(
        (p for prefix, p in PRICES_MICRO_USD.items() if model.startswith(prefix)), (0.0, 0.0)
    )
    writes = usage.get("cache_creation_input_tokens", 0)
    return (
        usage.get("input_tokens", 0) * price_in
        + usage.get("output_tokens", 0) * price_out
        + usage.get("cache_read_input_tokens", 0) * price_in * CACHE_READ
        + max(0, writes - one_hour_writes) * price_in * CACHE_WRITE_5M
        + min(one_hour_writes, writes) * price_in * CACHE_WRITE_1H
    )


def cost_micro_usd(model: str, usage: Mapping[str, int]) -> int:
    """What a call cost, from its usage and the published per-token prices."""
    return round(usage_cost_micro_usd(model, usage))


def claude_client(settings: Settings, *, connections: int) -> AsyncAnthropic:
    """``AsyncAnthropic`` on the SDK's aiohttp transport, keeping ``connections`` alive.

    The SDK's default transport (httpx2 over httpcore2) keeps at most 100 idle connections
    (a cap above 100 reconnects on every call) and scans its whole pool on every request and
    every response, which costs about 3 ms of CPU a call at 100-500 in flight; the aiohttp
    transport (``anthropic[aiohttp]``, the SDK's own ``DefaultAioHttpClient``) about 1 ms
    (benchmarks/README.md, "The model path"). Without aiohttp, the default transport with
    its pool sized to ``connections``.
    """
    import httpx2
    from anthropic import AsyncAnthropic, DefaultAioHttpClient, DefaultAsyncHttpxClient

    limits = httpx2.Limits(
        max_connections=connections,
        max_keepalive_connections=connections,
        keepalive_expiry=KEEPALIVE_S,
    )
    try:
        http_client: httpx2.AsyncClient = DefaultAioHttpClient(limits=limits)
    except RuntimeError:  # the SDK says so when aiohttp is not installed
        http_client = DefaultAsyncHttpxClient(limits=limits)
    return AsyncAnthropic(
        api_key=settings.anthropic_api_key.get_secret_value()
        if settings.anthropic_api_key
        else None,
        base_url=settings.anthropic_base_url,
        timeout=settings.anthropic_timeout_s,
        max_retries=settings.anthropic_max_retries,
        http_client=http_client,
        # The worker opens its own ``chat <model>`` span per call (consumers/worker.py); the
        # SDK's would be a second span of the same call, its attributes built on every call.
        open_telemetry=False,
    )


def claude_backend(
    settings: Settings,
    *,
    connections: int,
    on_headers: Callable[[Mapping[str, str]], None] | None = None,
) -> ClaudeBackend:
    """A ``ClaudeBackend`` from the settings: its own client (``claude_client``) and the
    process's budget of the API key's limits (``provider_budget``), shared by every worker."""
    if settings.anthropic_api_key is None:
        raise ValueError("a Claude backend needs ANTHROPIC_API_KEY")
    return ClaudeBackend(
        claude_client(settings, connections=connections),
        settings.models,
        max_tokens=settings.max_output_tokens,
        on_headers=on_headers,
        budget=provider_budget(
            settings.anthropic_base_url, settings.anthropic_api_key.get_secret_value()
        ),
    )


def usage_of(usage: Any) -> dict[str, int]:
    """A response body's ``usage`` as the four token counts kept (absent or null: 0)."""
    fields = usage if isinstance(usage, Mapping) else {}
    return {
        name: int(fields.get(name) or 0)
        for name in (
            "input_tokens",
            "output_tokens",
            "cache_read_input_tokens",
            "cache_creation_input_tokens",
        )
    }


#: The provider's rate-limit headers: all that the budget and the AIMD limiter read.
_RATELIMIT_PREFIX = b"anthropic-ratelimit-"


def ratelimit_headers(headers: Any) -> dict[str, str]:
    """The ``anthropic-ratelimit-*`` headers of a response, names lowercased.

    Read once per response for both readers, from the raw byte pairs when the headers have
    them (httpx2's ``Headers``): its ``items()`` decodes every header and works out their
    encoding on each call, which was most of what reading the limits cost.
    """
    raw = getattr(headers, "raw", None)
    if isinstance(raw, list):
        return {
            key.lower().decode("latin-1"): value.decode("latin-1")
            for key, value in raw
            if key[:20].lower() == _RATELIMIT_PREFIX
        }
    return {
        key.lower(): value
        for key, value in (headers or {}).items()
        if key.lower().startswith("anthropic-ratelimit-")
    }


def _counted(usage: Mapping[str, int]) -> CallCost:
    """What a call's usage took from the limits: cache reads are free, cache writes count."""
    return CallCost(
        usage.get("input_tokens", 0) + usage.get("cache_creation_input_tokens", 0),
        usage.get("output_tokens", 0),
    )


class ClaudeBackend:
    """Claude via ``AsyncAnthropic``: the persona as a cached system block, usage and cost kept.

    The SDK's own retries are set low by the caller (``max_retries``): the pipeline's retry
    topics own retrying, so the two layers never multiply.
    """

    name = "claude"

    def model_for(self, specialist: str) -> str:
        """The model id a request for ``specialist`` is sent to."""
        return self._models[specialist]

    def __init__(
        self,
        client: AsyncAnthropic,
        models: Mapping[str, str],
        *,
        max_tokens: int = DEFAULTS.max_output_tokens,
        on_headers: Callable[[Mapping[str, str]], None] | None = None,
        budget: ProviderBudget | None = None,
    ) -> None:
        """``budget``: the provider's limits to wait for before each call (None: no waiting;
        ``claude_backend`` shares one per API key)."""
        self._client = client
        self._models = models
        self._max_tokens = max_tokens
        self._on_headers = on_headers
        self.budget = budget
        self.estimate = TokenEstimate()

    async def aclose(self) -> None:
        """Close the client's connections (the worker's ``close`` calls it at shutdown)."""
        await self._client.close()

    async def answer(self, specialist: str, prompt: str, request: Mapping[str, Any]) -> Answer:
        persona = load_persona(specialist)
        model = self._models[specialist]
        review = ReviewMeta.from_metadata(request.get("metadata"))
        if review is not None:
            return await self._review(
                specialist, model, persona.system_prompt, prompt, review, request
            )
        reservation = await self._reserve(
            specialist, persona.system_prompt, prompt, request.get("deadline_ms")
        )
        began = time.perf_counter()
        try:
            raw = await self._client.messages.with_raw_response.create(
                model=model,
                max_tokens=self._max_tokens,
                system=[
                    {
                        "type": "text",
                        "text": persona.system_prompt,
                        "cache_control": {"type": "ephemeral"},
                    }
                ],
                messages=[{"role": "user", "content": prompt}],
            )
        except Exception as exc:
            self._failed(reservation, exc)
            raise
        # The body as JSON, not the SDK's pydantic Message: the fields read here are few, and
        # building the model costs more CPU than the rest of the call's handling of the answer.
        message = json.loads(raw.http_response.content)
        model_ms = int((time.perf_counter() - began) * 1000)
        # A thinking or tool block may come first: take text from text blocks only.
        text = "".join(
            block.get("text") or ""
            for block in message.get("content") or ()
            if block.get("type") == "text"
        )
        usage = usage_of(message.get("usage"))
        self._booked(reservation, specialist, prompt, usage, raw.headers)
        stop_reason = message.get("stop_reason")
        refused = stop_reason == "refusal"
        answered_by = message.get("model") or model
        return Answer(
            status=ResponseStatus.REFUSED if refused else ResponseStatus.ANSWERED,
            content=text or ("The model declined to answer this request." if refused else ""),
            backend=answered_by,
            model=answered_by,
            usage=usage,
            cost_micro_usd=cost_micro_usd(model, usage),
            model_ms=model_ms,
            finish_reason=stop_reason,
        )

    async def _reserve(
        self, specialist: str, persona: str, prompt: str, deadline_ms: int | None = None
    ) -> Reservation | None:
        """Wait until the provider's limits (as the budget reckons them) hold this call; not
        past the request's deadline (then a transient failure, which the worker's policy
        answers ``expired`` once the deadline has passed)."""
        if self.budget is None:
            return None
        estimate, max_tokens = self.estimate, self._max_tokens

        def cost() -> CallCost:
            tokens = estimate.input_tokens(persona, prompt, key=specialist, now=time.monotonic())
            return CallCost(tokens, max_tokens)

        if deadline_ms is None:
            return await self.budget.acquire(cost)
        try:
            async with asyncio.timeout(max(0.0, deadline_ms / 1000 - time.time())):
                return await self.budget.acquire(cost)
        except TimeoutError:
            raise TransientError(
                "the provider's rate limits held the call until the request's deadline",
                code="rate_limit_wait",
            ) from None

    def _booked(
        self,
        reservation: Reservation | None,
        specialist: str,
        prompt: str,
        usage: Mapping[str, int],
        headers: Mapping[str, str],
    ) -> None:
        """An answer came: correct the budget by its usage and headers, learn the estimate."""
        headers = ratelimit_headers(headers)
        if self.budget is not None and reservation is not None:
            self.budget.settle(reservation, _counted(usage))
            self.budget.observe(headers, reservation)
            self.estimate.learn(prompt, usage, key=specialist, now=time.monotonic())
        if self._on_headers is not None:
            self._on_headers(headers)

    def _failed(self, reservation: Reservation | None, exc: Exception) -> None:
        """A call failed: a 429 took nothing (its share is given back); any error response's
        headers still tell the limits."""
        response = getattr(exc, "response", None)
        headers = getattr(response, "headers", None)
        if self.budget is not None and reservation is not None:
            if getattr(exc, "status_code", None) == 429:
                self.budget.refund(reservation)
            if headers is not None:
                self.budget.observe(ratelimit_headers(headers), reservation)

    async def _review(
        self,
        specialist: str,
        model: str,
        persona: str,
        prompt: str,
        review: ReviewMeta,
        request: Mapping[str, Any],
    ) -> Answer:
        """A review job's part: findings through the forced findings tool (see review.answer)."""
        system = [{"type": "text", "text": persona, "cache_control": {"type": "ephemeral"}}]
        reservation = await self._reserve(
            f"{specialist}:review", persona, prompt, request.get("deadline_ms")
        )
        latest: dict[str, str] = {}  # the last call's headers, booked when the review ends

        def on_headers(headers: Mapping[str, str]) -> None:
            latest.clear()
            latest.update(headers)

        try:
            call = await claude_review(
                self._client,
                model=model,
                system=system,
                specialist=specialist,
                prompt=prompt,
                meta=review,
                max_tokens=self._max_tokens,
                on_headers=on_headers,
            )
        except Exception as exc:
            self._failed(reservation, exc)
            raise
        # Booked as an ordinary answer is (usage first, then the provider's own count in its
        # headers); the estimate learns its ratio only from a single call: a retried review's
        # usage is two calls' input for one prompt.
        learnt = prompt if call.calls == 1 else ""
        self._booked(reservation, f"{specialist}:review", learnt, call.usage, latest)
        return Answer(
            status=ResponseStatus.REFUSED if call.refused else ResponseStatus.ANSWERED,
            content=call.content,
            backend=call.model,
            model=call.model,
            usage=call.usage,
            cost_micro_usd=cost_micro_usd(model, call.usage),
            model_ms=call.model_ms,
        )
