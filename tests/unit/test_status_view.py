"""The status view from synthetic reports and offsets (no broker): lag per partition, in-flight
and paused from the live reports, members tied to processes, the worst breaker, the last hour's
usage, stale processes; the retry tiers; the publisher's report and its rolling window; the
terminal rendering."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Mapping, Sequence
from types import SimpleNamespace
from typing import Any, cast

import pytest
from confluent_kafka import OFFSET_INVALID
from rich.console import Console

from consumers.resilience.breaker import CircuitBreaker
from consumers.runtime.loop import Context, RunStats, RuntimeConfig
from consumers.specialists.backends import Answer
from consumers.status.publisher import ProcessIdentity, StatusPublisher
from consumers.status.usage import UsageTotals, UsageWindow
from consumers.status.view import (
    GroupInput,
    MemberStatus,
    aggregate,
    pipeline_groups,
    retry_tier_status,
)
from switchboard.cli import status_cmds
from switchboard.cli.main import main
from switchboard.cli.status_cmds import render
from switchboard.core.status import ResponseStatus
from switchboard.core.topics import Topics
from tests.support import FakeClock

from .test_worker import ScriptedBackend, WorkerStage, _task

T = Topics("unit")
NOW = 1_800_000_000_000
BACKEND, REQUESTS = T.tasks("backend"), T.requests


def _report(
    pid: str,
    *,
    age_s: float = 1.0,
    interval_s: float = 5.0,
    consumers: list[dict[str, Any]] | None = None,
    breakers: dict[str, str] | None = None,
    last_hour: dict[str, dict[str, int]] | None = None,
) -> dict[str, Any]:
    return {
        "process_id": pid,
        "roles": ["worker.backend"],
        "reported_at_ms": NOW - int(age_s * 1000),
        "started_at_ms": NOW - 600_000,
        "interval_s": interval_s,
        "consumers": consumers or [],
        "breakers": {s: {"state": st} for s, st in (breakers or {}).items()},
        "specialists": {s: {"last_hour": u} for s, u in (last_hour or {}).items()},
    }


def _backend_consumer(member: str, parts: list[tuple[int, int, bool]]) -> dict[str, Any]:
    return {
        "group": "unit.worker.backend",
        "member_id": member,
        "partitions": [
            {"topic": BACKEND, "partition": p, "in_flight": n, "paused": paused}
            for p, n, paused in parts
        ],
    }


def _status(reports: Mapping[str, dict[str, Any]]) -> Any:
    groups = {g: (role, topics) for g, role, topics in pipeline_groups(T)}
    backend_group = "unit.worker.backend"
    return aggregate(
        prefix="unit",
        now_ms=NOW,
        groups=[
            GroupInput(
                backend_group,
                *groups[backend_group],
                "stable",
                [
                    MemberStatus("m-a", "rdkafka", "/10.0.0.1", None, [(BACKEND, 0), (BACKEND, 1)]),
                    MemberStatus("m-b", "rdkafka", "/10.0.0.2", None, [(BACKEND, 2)]),
                ],
            ),
            GroupInput("unit.router", *groups["unit.router"], "empty", []),
        ],
        committed={backend_group: {(BACKEND, 0): 40, (BACKEND, 1): OFFSET_INVALID}},
        end_offsets={(BACKEND, 0): 100, (BACKEND, 1): 30, (BACKEND, 2): 7, (REQUESTS, 0): 5},
        start_offsets={(BACKEND, 1): 10, (REQUESTS, 0): 5},
        reports=reports,
        retry=[],
        dlq=[],
    )


REPORTS = {
    "h1:1:worker.backend": _report(
        "h1:1:worker.backend",
        consumers=[_backend_consumer("m-a", [(0, 12, True), (1, 0, False)])],
        breakers={"backend": "half_open"},
        last_hour={"backend": {"model_calls": 10, "input_tokens": 1000, "cost_micro_usd": 500}},
    ),
    "h2:2:worker.backend": _report(
        "h2:2:worker.backend",
        age_s=30.0,  # six intervals without a report: stale
        consumers=[_backend_consumer("m-b", [(2, 3, False)])],
        breakers={"backend": "open"},
        last_hour={"backend": {"model_calls": 5, "input_tokens": 200, "cost_micro_usd": 100}},
    ),
}


def test_lag_counts_from_the_committed_offset_or_else_the_log_start() -> None:
    status = _status(REPORTS)
    backend = next(g for g in status.groups if g.role == "worker.backend")
    assert [(p.partition, p.committed, p.lag) for p in backend.partitions] == [
        (0, 40, 60),  # end 100 - committed 40
        (1, None, 20),  # never committed: end 30 - log start 10
        (2, None, 7),  # no log start known: from 0
    ]
    assert backend.lag == 87
    router = next(g for g in status.groups if g.role == "router")
    assert [p.lag for p in router.partitions] == [0]  # the log start moved past every record


def test_in_flight_and_paused_come_from_live_reports_only() -> None:
    status = _status(REPORTS)
    backend = next(g for g in status.groups if g.role == "worker.backend")
    by_partition = {p.partition: (p.in_flight, p.paused, p.process_id) for p in backend.partitions}
    assert by_partition == {
        0: (12, True, "h1:1:worker.backend"),
        1: (0, False, "h1:1:worker.backend"),
        2: (None, None, None),  # its process is stale: nothing known
    }
    assert (backend.in_flight, backend.paused) == (12, 1)
    members = {m.member_id: m.process_id for m in backend.members}
    assert members == {"m-a": "h1:1:worker.backend", "m-b": None}


def test_stale_processes_are_flagged_and_their_breakers_ignored_but_spend_counted() -> None:
    status = _status(REPORTS)
    stale = {p.process_id: p.stale for p in status.processes}
    assert stale == {"h1:1:worker.backend": False, "h2:2:worker.backend": True}
    # The stale process's breaker was open; only the live one's (half-open) counts.
    assert status.breakers == {
        "backend": {"state": "half_open", "processes": {"h1:1:worker.backend": "half_open"}}
    }
    assert status.usage == {
        "backend": {"model_calls": 15, "input_tokens": 1200, "cost_micro_usd": 600}
    }


def test_the_worst_live_breaker_state_wins() -> None:
    reports = {
        f"h{i}": _report(f"h{i}", breakers={"api": state, "data": "closed"})
        for i, state in enumerate(["closed", "open", "half_open"])
    }
    status = _status(reports)
    assert status.breakers["api"]["state"] == "open"
    assert status.breakers["data"]["state"] == "closed"


def test_stale_means_no_report_for_three_intervals() -> None:
    reports = {
        "fresh": _report("fresh", age_s=2.9, interval_s=1.0),
        "late": _report("late", age_s=3.1, interval_s=1.0),
    }
    assert {p.process_id: p.stale for p in _status(reports).processes} == {
        "fresh": False,
        "late": True,
    }


def test_a_retry_tier_reports_its_backlog_oldest_due_time_and_what_is_due() -> None:
    tier = retry_tier_status(
        10, T.retry(10), [NOW + 5_000, NOW - 1_000, None, NOW + 90_000], NOW, complete=True
    )
    # A record without a due time is due now, as the relay treats it.
    assert (tier.backlog, tier.oldest_due_ms, tier.due_now) == (4, 0, 2)
    empty = retry_tier_status(600, T.retry(600), [], NOW, complete=False)
    assert (empty.backlog, empty.oldest_due_ms, empty.complete) == (0, None, False)


def test_the_relay_group_lists_its_tiers_in_tier_order() -> None:
    relay = next(g for g in pipeline_groups(T) if g[1] == "relay")
    assert relay[2] == [T.retry(1), T.retry(10), T.retry(60), T.retry(600)]


def test_json_is_plain_json_with_the_documented_keys() -> None:
    out = json.loads(json.dumps(_status(REPORTS).to_json()))
    assert set(out) == {
        "schema_version",
        "prefix",
        "generated_at_ms",
        "groups",
        "retry",
        "dlq",
        "breakers",
        "usage",
        "processes",
        "notes",
    }
    group = out["groups"][0]
    assert {"group", "role", "state", "lag", "in_flight", "members", "partitions"} <= set(group)
    assert group["members"][0]["partitions"] == [[BACKEND, 0], [BACKEND, 1]]


def test_the_terminal_page_shows_lag_stale_and_breakers() -> None:
    console = Console(record=True, width=200)
    console.print(render(_status(REPORTS)))
    text = console.export_text()
    assert "worker.backend" in text and "87" in text
    assert "backend[0]=60 paused" in text
    assert "stale" in text and "half_open" in text


# --- the rolling window and the publisher --------------------------------------------------
def test_the_window_reports_growth_over_the_last_hour_only() -> None:
    clock = FakeClock()
    window = UsageWindow(3600, clock)
    assert window.over_window({"calls": 0}) == ({"calls": 0}, 0.0)
    clock.now += 1800
    assert window.over_window({"calls": 30}) == ({"calls": 30}, 1800.0)
    clock.now += 1800
    assert window.over_window({"calls": 50})[0] == {"calls": 50}  # all within the hour
    clock.now += 1800  # the snapshot of 30 calls is now an hour old: the baseline
    assert window.over_window({"calls": 60}) == ({"calls": 30}, 3600.0)
    clock.now += 7200  # nothing in two hours
    assert window.over_window({"calls": 60}) == ({"calls": 0}, 3600.0)


def test_usage_totals_count_tokens_cost_and_answers() -> None:
    totals = UsageTotals()
    totals.add({"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 2}, 70)
    totals.add(None, 0)  # the offline rulebook reports no usage
    assert totals.as_counts(model_calls=3) == {
        "model_calls": 3,
        "answers": 2,
        "input_tokens": 10,
        "output_tokens": 5,
        "cache_read_input_tokens": 2,
        "cache_creation_input_tokens": 0,
        "cost_micro_usd": 70,
    }


class UsageBackend(ScriptedBackend):
    async def answer(self, specialist: str, prompt: str, request: Mapping[str, Any]) -> Answer:
        self.calls += 1
        usage = {"input_tokens": 100, "output_tokens": 40, "cache_creation_input_tokens": 7}
        return Answer(ResponseStatus.ANSWERED, "ok", "claude", "m", usage, cost_micro_usd=900)


def test_a_worker_counts_the_usage_of_each_answer() -> None:
    stage = WorkerStage(UsageBackend())
    stage.feed(_task())
    stage.feed(_task())
    counts = stage.worker.usage.as_counts(stage.worker.model_calls)
    assert (counts["model_calls"], counts["answers"]) == (2, 2)
    assert (counts["input_tokens"], counts["cache_creation_input_tokens"]) == (200, 14)
    assert counts["cost_micro_usd"] == 1800


def _backend_publisher(
    worker: Any,
    stats: RunStats,
    *,
    member_id: str = "rdkafka-1",
    in_flight: int = 0,
    contexts: Sequence[Context] = (),
) -> StatusPublisher:
    """The publisher of a process that runs the backend worker, on a stand-in runtime."""
    runtime = SimpleNamespace(
        config=RuntimeConfig([BACKEND], "unit.worker.backend", {}, concurrency=8),
        stats=stats,
        member_id=member_id,
        in_flight=in_flight,
        contexts=list(contexts),
    )
    return StatusPublisher(
        producer=cast(Any, None),
        kafka={},
        topic=T.status,
        interval_s=5.0,
        runtimes=cast(Any, {"worker.backend": runtime}),
        workers=cast(Any, {"backend": worker}),
        identity=ProcessIdentity("host", 42, ("worker.backend",), NOW),
    )


def test_the_publisher_report_reads_runtimes_and_workers() -> None:
    ctx = Context(BACKEND, 1, assigned_at=0.0)
    ctx.tracker.start(5)
    ctx.tracker.start(6)
    ctx.paused = True
    usage = UsageTotals()
    usage.add({"input_tokens": 3, "output_tokens": 4}, 12)
    worker = SimpleNamespace(
        breaker=CircuitBreaker("backend:m"), usage=usage, model_calls=1, specialist="backend"
    )
    publisher = _backend_publisher(
        worker,
        RunStats(received=9, completed=7),
        member_id="rdkafka-1234",
        in_flight=2,
        contexts=[ctx],
    )
    report = asyncio.run(_in_loop(publisher.report))
    assert publisher.key == b"host:42:worker.backend"
    assert report["process_id"] == "host:42:worker.backend"
    [consumer] = report["consumers"]
    assert (consumer["group"], consumer["member_id"], consumer["in_flight"]) == (
        "unit.worker.backend",
        "rdkafka-1234",
        2,
    )
    assert consumer["partitions"] == [
        {"topic": BACKEND, "partition": 1, "in_flight": 2, "paused": True}
    ]
    assert consumer["records"]["received"] == 9
    assert report["breakers"]["backend"]["state"] == "closed"
    last = report["specialists"]["backend"]["last_hour"]
    assert (last["model_calls"], last["input_tokens"], last["cost_micro_usd"]) == (1, 3, 12)
    json.dumps(report)  # plain JSON


async def _in_loop(fn: Any) -> Any:
    return fn()


# --- the command -------------------------------------------------------------------------
def test_watch_redraws_until_ctrl_c(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    reads: list[int] = []
    sleeps: list[float] = []

    class Reader:
        def read(self) -> Any:
            reads.append(1)
            return _status(REPORTS)

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(status_cmds, "_reader", lambda settings: Reader())
    monkeypatch.setattr(status_cmds.time, "sleep", sleep)
    assert main(["status", "--watch", "3"]) == 130
    assert (len(reads), sleeps) == (2, [3.0, 3.0])  # drawn, redrawn once, then Ctrl-C
    assert "worker.backend" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--watch", "0"], "'0' must be more than 0 (e.g. --watch 5)"),
        (["--watch", "soon"], "'soon' is not a number of seconds"),
        (["--json", "--watch"], "--watch redraws tables: drop --json"),
    ],
)
def test_bad_arguments_get_one_line_that_says_what_to_change(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with contextlib.suppress(SystemExit):
        assert main(["status", *argv]) != 0
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
