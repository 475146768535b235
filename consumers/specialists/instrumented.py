"""A backend wrapper that records every model call in the metrics: outcome, duration, tokens
and cost per specialist and model (``switchboard.core.metrics.ModelMetrics``).

The ``Answer`` carries its usage, cost, model and ``model_ms``, so a success costs no clock
read here; only a failed call is timed by the wrapper. A backend that answers at once
(``answer_now``, the offline rulebook) keeps that method, so the worker's fast path stays.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from consumers.specialists.backends import Answer, SpecialistBackend
from switchboard.core import metrics
from switchboard.core.classify import classify
from switchboard.core.status import ResponseStatus

#: The model label of an answer that names none (the offline rulebook).
OFFLINE_MODEL = "offline"
#: A plain str: comparing with the enum member costs more on the fast path.
_REFUSED = str(ResponseStatus.REFUSED.value)


class InstrumentedBackend:
    """``backend``, with its calls counted for ``specialist``."""

    def __init__(self, backend: SpecialistBackend, specialist: str, model: str) -> None:
        self._backend = backend
        self.name = backend.name
        #: The model a failed call is counted under (the configured one: no answer names it).
        self._model = model if backend.name != OFFLINE_MODEL else OFFLINE_MODEL
        self._metrics = metrics.ModelMetrics(specialist)
        self._last_model: str | None = None
        self._last: metrics.ModelChildren | None = None
        inner_now = getattr(backend, "answer_now", None)
        if inner_now is not None:
            self._inner_now = inner_now
            self.answer_now = self._answer_now

    def __getattr__(self, name: str) -> Any:
        # Anything else the worker or a test asks of the backend (its client, its settings).
        return getattr(self._backend, name)

    async def answer(self, specialist: str, prompt: str, request: Mapping[str, Any]) -> Answer:
        began = time.perf_counter()
        try:
            answer = await self._backend.answer(specialist, prompt, request)
        except Exception as exc:  # counted, then raised unchanged: the worker decides
            failure = classify(exc)
            self._metrics.error(
                self._model,
                str(failure.error_class),
                failure.code,
                time.perf_counter() - began,
            )
            raise
        self._record(answer)
        return answer

    def _answer_now(self, specialist: str, prompt: str, request: Mapping[str, Any]) -> Answer:
        answer: Answer = self._inner_now(specialist, prompt, request)
        self._record(answer)
        return answer

    def _record(self, answer: Answer) -> None:
        model = answer.model or OFFLINE_MODEL
        bound = self._last
        if bound is None or model != self._last_model:
            bound = self._bind(model)
        bound.success(answer.status == _REFUSED, answer.model_ms / 1000)
        if answer.usage or answer.cost_micro_usd:
            bound.spend(answer.usage, answer.cost_micro_usd)

    def _bind(self, model: str) -> metrics.ModelChildren:
        # One model per specialist is the rule: keep its children at hand, no lookup a call.
        bound = self._metrics.children(model)
        self._last_model, self._last = model, bound
        return bound
