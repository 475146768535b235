"""Triage of free text by a cheap Claude model, with the keyword classifier as the fallback."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from consumers.triage import KeywordTriage, TriageResult
from switchboard.core.settings import SPECIALISTS

if TYPE_CHECKING:  # for types only: importing the SDK takes seconds, and routers never call it
    from anthropic import AsyncAnthropic

log = logging.getLogger(__name__)

#: The answer is one word: a few tokens bound the cost of a confused model.
_MAX_ANSWER_TOKENS = 5
#: The request text the model sees, at most: the opening says where a request belongs.
_MAX_PROMPT_CHARS = 4000
#: How sure a model's one-word answer is taken to be (keyword triage scores its own).
MODEL_CONFIDENCE = 0.9

_SYSTEM = (
    "You route engineering questions to one specialist. Specialists: "
    "backend (server-side systems, distributed systems, databases, queues, caching), "
    "api (API contracts, REST/gRPC/GraphQL design, versioning, pagination), "
    "data (ETL/ELT, pipelines, CDC, warehouses, stream processing), "
    "perf (profiling, latency, load testing, capacity, GC), "
    "security (threat models, authn/authz, encryption, compliance, vulnerabilities). "
    "Answer with exactly one word: backend, api, data, perf or security."
)


class ModelTriage:
    """Asks ``model`` which specialist fits; any error or odd answer falls back to keywords."""

    def __init__(self, client: AsyncAnthropic, model: str) -> None:
        self._client = client
        self._model = model
        self._fallback = KeywordTriage()
        self.calls = 0
        self.fallbacks = 0

    async def classify(self, text: str) -> TriageResult:
        self.calls += 1
        prompt = f"Route this request:\n\n{text[:_MAX_PROMPT_CHARS]}"
        try:
            message = await self._client.messages.create(
                model=self._model,
                max_tokens=_MAX_ANSWER_TOKENS,
                system=_SYSTEM,
                messages=[{"role": "user", "content": prompt}],
            )
            answer = "".join(b.text for b in message.content if b.type == "text").strip().lower()
        except Exception as exc:  # triage must never fail a request: keywords still work
            log.warning("model triage failed (%s); using keywords", type(exc).__name__)
            answer = ""
        word = answer.strip(" .`*\n")
        if word in SPECIALISTS:
            return TriageResult(word, MODEL_CONFIDENCE, f"model {self._model} said {word}")
        self.fallbacks += 1
        return self._fallback.classify(text)
