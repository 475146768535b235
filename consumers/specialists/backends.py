"""What answers a specialist request: Claude through the official SDK, or the offline rulebook."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from consumers.specialists.personas import load_persona
from consumers.specialists.review.answer import claude_review, offline_review
from consumers.specialists.rulebook import OfflineRulebook
from switchboard.core.findings import ReviewMeta
from switchboard.core.settings import DEFAULTS
from switchboard.core.status import ResponseStatus

if TYPE_CHECKING:  # for types only: importing the SDK takes seconds, and routers never call it
    from anthropic import AsyncAnthropic

#: Published prices in micro-dollars per token (input, output): $ per million tokens == µ$ per
#: token. Cache reads cost a tenth of input, cache writes 1.25x input.
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


def cost_micro_usd(model: str, usage: Mapping[str, int]) -> int:
    """What a call cost, from its usage and the published per-token prices."""
    price_in, price_out = next(
        (p for prefix, p in PRICES_MICRO_USD.items() if model.startswith(prefix)), (0.0, 0.0)
    )
    cost = (
        usage.get("input_tokens", 0) * price_in
        + usage.get("output_tokens", 0) * price_out
        + usage.get("cache_read_input_tokens", 0) * price_in * 0.1
        + usage.get("cache_creation_input_tokens", 0) * price_in * 1.25
    )
    return round(cost)


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
    ) -> None:
        self._client = client
        self._models = models
        self._max_tokens = max_tokens
        self._on_headers = on_headers

    async def answer(self, specialist: str, prompt: str, request: Mapping[str, Any]) -> Answer:
        persona = load_persona(specialist)
        model = self._models[specialist]
        review = ReviewMeta.from_metadata(request.get("metadata"))
        if review is not None:
            return await self._review(specialist, model, persona.system_prompt, prompt, review)
        began = time.perf_counter()
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
        if self._on_headers is not None:
            self._on_headers(raw.headers)
        message = await raw.parse()
        model_ms = int((time.perf_counter() - began) * 1000)
        # A thinking or tool block may come first: take text from text blocks only.
        text = "".join(block.text for block in message.content if block.type == "text")
        usage = {
            "input_tokens": message.usage.input_tokens,
            "output_tokens": message.usage.output_tokens,
            "cache_read_input_tokens": message.usage.cache_read_input_tokens or 0,
            "cache_creation_input_tokens": message.usage.cache_creation_input_tokens or 0,
        }
        refused = message.stop_reason == "refusal"
        return Answer(
            status=ResponseStatus.REFUSED if refused else ResponseStatus.ANSWERED,
            content=text or ("The model declined to answer this request." if refused else ""),
            backend=message.model or model,
            model=message.model or model,
            usage=usage,
            cost_micro_usd=cost_micro_usd(model, usage),
            model_ms=model_ms,
            finish_reason=message.stop_reason,
        )

    async def _review(
        self, specialist: str, model: str, persona: str, prompt: str, review: ReviewMeta
    ) -> Answer:
        """A review job's part: findings through the forced findings tool (see review.answer)."""
        system = [{"type": "text", "text": persona, "cache_control": {"type": "ephemeral"}}]
        call = await claude_review(
            self._client,
            model=model,
            system=system,
            specialist=specialist,
            prompt=prompt,
            meta=review,
            max_tokens=self._max_tokens,
            on_headers=self._on_headers,
        )
        return Answer(
            status=ResponseStatus.REFUSED if call.refused else ResponseStatus.ANSWERED,
            content=call.content,
            backend=call.model,
            model=call.model,
            usage=call.usage,
            cost_micro_usd=cost_micro_usd(model, call.usage),
            model_ms=call.model_ms,
        )
