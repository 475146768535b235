"""Review progress as metrics: a job's settled requests by outcome and the ones still pending,
counted by the job itself (``switchboard review`` serves them on SWITCHBOARD_METRICS_PORT)."""

from __future__ import annotations

import asyncio
from typing import Any

from producers.client import Response, ResultTimeout
from producers.review.job import plan, run
from switchboard.core import metrics
from tests.unit.review_corpus import corpus_documents


class ScriptedClient:
    """Answers some ids before the run (reused), answers or refuses the rest, times one out."""

    def __init__(self, earlier: set[str], refused: set[str], silent: set[str]) -> None:
        self.earlier, self.refused, self.silent = earlier, refused, silent
        self.pending_seen: list[float] = []

    async def lookup(self, request_ids: Any, *, timeout: float = 0) -> dict[str, Response]:
        return {i: self._response(i, "answered") for i in request_ids if i in self.earlier}

    async def submit(self, text: str, **kwargs: Any) -> str:
        return str(kwargs["request_id"])

    async def result(self, request_id: str, timeout: float = 0) -> Response:
        self.pending_seen.append(_value("switchboard_review_pending_items"))
        await asyncio.sleep(0)
        if request_id in self.silent:
            raise ResultTimeout(request_id)
        status = "rejected" if request_id in self.refused else "answered"
        return self._response(request_id, status)

    @staticmethod
    def _response(request_id: str, status: str) -> Response:
        record = {"request_id": request_id, "status": status, "content": "{}"}
        return Response(request_id, status, "backend", "offline", "{}", record)


def _value(name: str, **labels: str) -> float:
    found = metrics.REGISTRY.get_sample_value(name, labels)
    return 0.0 if found is None else found


def test_a_jobs_requests_are_counted_by_outcome_and_pending_drains_to_zero() -> None:
    job = plan("metrics-job", corpus_documents()[:3], ("backend", "security"))
    ids = [item.request_id for item in job.items]
    assert len(ids) >= 4
    client = ScriptedClient(earlier={ids[0]}, refused={ids[1]}, silent={ids[2]})
    outcomes = ("reused", "answered", "not_answered", "timed_out")
    before = {o: _value("switchboard_review_items_total", outcome=o) for o in outcomes}

    asyncio.run(run(client, job, timeout_s=1.0))

    moved = {o: _value("switchboard_review_items_total", outcome=o) - before[o] for o in outcomes}
    assert moved == {
        "reused": 1,
        "answered": len(ids) - 3,
        "not_answered": 1,
        "timed_out": 1,
    }
    assert max(client.pending_seen) == len(ids) - 1  # every sent request was pending at once
    assert _value("switchboard_review_pending_items") == 0
