"""How a batch is polled, with no server: waits grow exponentially up to the cap, a provider's
``retry-after`` is honoured when it asks for longer, the wait budget ends polling without
canceling anything, a batch the API no longer knows is reported as gone, and a bad key stops
the job instead of polling forever. The SDK's own error classes carry the responses."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from types import SimpleNamespace as NS
from typing import Any, cast

import anthropic
import httpx2
import pytest

from consumers.batches import runner as runner_module
from consumers.batches.ledger import BatchState, LedgerBatch
from consumers.batches.runner import BatchJobError, BatchRunner, PollPolicy
from tests.support import FakeClock


def api_error(cls: type[anthropic.APIStatusError], status: int, **headers: str) -> Exception:
    request = httpx2.Request("GET", "http://fake/v1/messages/batches/b1")
    response = httpx2.Response(status, headers=headers, request=request)
    return cls("scripted", response=response, body=None)


class Batches:
    """``client.messages.batches`` answering ``retrieve`` from a script of states or errors."""

    def __init__(self, script: Sequence[str | Exception]) -> None:
        self.script: Iterator[str | Exception] = iter(script)
        self.calls = 0

    async def retrieve(self, batch_id: str) -> Any:
        self.calls += 1
        step = next(self.script)
        if isinstance(step, Exception):
            raise step
        counts = NS(to_dict=lambda: {"processing": 1, "succeeded": 0})
        return NS(id=batch_id, processing_status=step, request_counts=counts)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    clock = FakeClock()
    monkeypatch.setattr(runner_module.time, "monotonic", clock.monotonic)
    monkeypatch.setattr(runner_module.asyncio, "sleep", clock.sleep)
    return clock


def wait_ended(script: Sequence[str | Exception], budget_s: float = 100.0) -> tuple[Any, Batches]:
    batches = Batches(script)
    client = NS(messages=NS(batches=batches))
    runner = BatchRunner(
        cast(Any, client),
        ledger=cast(Any, None),
        outcomes=cast(Any, None),
        producer=cast(Any, None),
        codec=cast(Any, None),
        topics=cast(Any, None),
        models={},
        max_tokens=1,
        max_attempts=3,
        poll=PollPolicy(initial_s=1.0, factor=2.0, max_s=3.0, max_wait_s=budget_s),
    )
    batch = LedgerBatch("b1", "job", 1, BatchState.SUBMITTED, 0)
    return asyncio.run(runner._wait_ended(batch, budget_s)), batches


def test_waits_double_up_to_the_cap(clock: FakeClock) -> None:
    ended, batches = wait_ended(["in_progress"] * 4 + ["ended"])
    assert ended is True and batches.calls == 5
    assert clock.sleeps == [1.0, 2.0, 3.0, 3.0]


def test_a_retry_after_longer_than_the_backoff_is_honoured(clock: FakeClock) -> None:
    limited = api_error(anthropic.RateLimitError, 429, **{"retry-after-ms": "2500"})
    ended, _ = wait_ended([limited, "in_progress", "ended"])
    assert ended is True
    assert clock.sleeps == [2.5, 2.0]


def test_an_overloaded_api_is_polled_again_on_the_backoff(clock: FakeClock) -> None:
    overloaded = api_error(anthropic.InternalServerError, 529)
    ended, _ = wait_ended([overloaded, overloaded, "ended"])
    assert ended is True and clock.sleeps == [1.0, 2.0]


def test_the_budget_ends_polling_and_leaves_the_batch_open(clock: FakeClock) -> None:
    ended, batches = wait_ended(["in_progress"] * 10, budget_s=5.0)
    assert ended is None
    assert sum(clock.sleeps) <= 5.0 and batches.calls == 3


def test_a_batch_the_api_does_not_know_is_gone(clock: FakeClock) -> None:
    ended, _ = wait_ended([api_error(anthropic.NotFoundError, 404)])
    assert ended is False


def test_a_bad_key_stops_the_job_with_the_reason(clock: FakeClock) -> None:
    with pytest.raises(BatchJobError, match="polling batch b1 failed"):
        wait_ended([api_error(anthropic.AuthenticationError, 401)])
    assert clock.sleeps == []
