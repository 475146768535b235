"""The answered-request index's decisions (``AnsweredLedger``), without the tail that feeds it."""

from __future__ import annotations

import asyncio

from consumers.answered import AnsweredLedger, _answers
from consumers.runtime.message import MemoryRecord
from switchboard.core import headers as h
from switchboard.core.status import ResponseStatus


class WallClock:
    def __init__(self) -> None:
        self.ms = 1_000_000

    def __call__(self) -> int:
        return self.ms


def test_any_response_answers_a_request_but_only_a_settled_one_stops_a_replay() -> None:
    ledger = AnsweredLedger(3600)
    ledger.record_response(b"failed-1", 1, ResponseStatus.FAILED)
    ledger.record_response(b"done-1", 1, ResponseStatus.ANSWERED)
    ledger.record_response(b"bare-1", 1, None)  # a response without the status header
    assert all(ledger.is_answered(r) for r in ("failed-1", "done-1", "bare-1"))
    assert ledger.is_answered("done-1", replay=True)
    assert not ledger.is_answered("failed-1", replay=True)
    assert not ledger.is_answered("bare-1", replay=True)  # the replay tool checked those
    assert not ledger.is_answered("unknown")


def test_a_response_without_a_key_is_ignored() -> None:
    ledger = AnsweredLedger(3600)
    ledger.record_response(None, 1, ResponseStatus.ANSWERED)
    ledger.record_response(b"", 1, ResponseStatus.ANSWERED)
    assert ledger.prune() == 0 and not ledger.is_answered("")


def test_our_own_failed_answer_can_be_superseded_by_a_replay() -> None:
    ledger = AnsweredLedger(3600)
    ledger.mark_answered("r-1", failed=True)
    ledger.mark_answered("r-2")
    assert ledger.is_answered("r-1") and not ledger.is_answered("r-1", replay=True)
    assert ledger.is_answered("r-2", replay=True)


def test_a_claim_is_exclusive_until_released_and_an_unanswered_release_frees_the_id() -> None:
    async def scenario() -> list[bool]:
        ledger = AnsweredLedger(3600)
        first = ledger.try_claim("r-1")
        busy = ledger.busy("r-1")
        ledger.release("r-1", answered=False)  # a retry: nothing answered yet
        again = ledger.try_claim("r-1")
        ledger.release("r-1", answered=True)
        answered = ledger.try_claim("r-1")
        return [first, busy, ledger.busy("r-1"), again, answered]

    assert asyncio.run(scenario()) == [True, True, False, True, False]


def test_a_duplicate_waits_for_the_original_claim_then_skips() -> None:
    async def scenario() -> tuple[bool, bool]:
        ledger = AnsweredLedger(3600)
        assert ledger.try_claim("r-1")
        duplicate = asyncio.ensure_future(ledger.claim("r-1"))
        await asyncio.sleep(0)
        waited = not duplicate.done()
        ledger.release("r-1", answered=True)
        return waited, await duplicate

    assert asyncio.run(scenario()) == (True, False)


def test_a_replay_claims_after_a_failed_original_but_not_after_an_answered_one() -> None:
    async def scenario() -> tuple[bool, bool]:
        ledger = AnsweredLedger(3600)
        ledger.try_claim("r-f")
        ledger.release("r-f", answered=True, failed=True)
        ledger.try_claim("r-a")
        ledger.release("r-a", answered=True)
        return ledger.try_claim("r-f", replay=True), ledger.try_claim("r-a", replay=True)

    assert asyncio.run(scenario()) == (True, False)


def test_prune_forgets_answers_older_than_the_window_only() -> None:
    clock = WallClock()
    ledger = AnsweredLedger(60, wall_ms=clock)
    ledger.record_response(b"old", clock.ms - 61_000, ResponseStatus.ANSWERED)
    ledger.record_response(b"recent", clock.ms - 59_000, ResponseStatus.ANSWERED)
    ledger.mark_answered("ours")
    assert ledger.prune() == 1
    assert not ledger.is_answered("old") and not ledger.is_answered("old", replay=True)
    assert ledger.is_answered("recent") and ledger.is_answered("ours")


def test_a_ledger_without_a_tail_is_always_synced() -> None:
    ledger = AnsweredLedger(60)
    asyncio.run(ledger.sync(float("inf")))
    assert ledger.synced(float("inf"))


def test_the_tail_reads_each_keyed_response_and_whether_it_settles_a_replay() -> None:
    """What the index's tail stores of each response it reads (``_answers``, per answer on
    every rebuild): a status other than ``failed`` settles, the last ``sb-status`` counts, a
    response without one settles nothing, and a keyless record is no answer."""
    status = h.STATUS

    def response(key: bytes | None, *statuses: bytes | None) -> MemoryRecord:
        return MemoryRecord("t", b"", key, [(status, s) for s in statuses], timestamp_ms=7)

    read = list(
        _answers(
            [
                response(b"a", b"answered"),
                response(b"f", b"failed"),
                response(b"r", b"failed", b"rejected"),  # the last one counts
                response(b"x", b"answered", b"failed"),
                response(b"n"),
                response(None, b"answered"),
                response(b"", b"answered"),
            ]
        )
    )
    assert read == [
        (b"a", 7, True),
        (b"f", 7, False),
        (b"r", 7, True),
        (b"x", 7, False),
        (b"n", 7, False),
    ]
