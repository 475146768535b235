"""DLQ replay without a broker: time and id parsing, filters, the replay plan, grouping, the
replayed record, and the CLI's one-line argument errors."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from confluent_kafka import Message

from consumers.replay.parsing import parse_duration, parse_instant, parse_record_id
from consumers.replay.selection import (
    OLDEST_BUCKET,
    SKIP_ANSWERED,
    SKIP_DUPLICATE,
    SKIP_LIMIT,
    SKIP_REPLAYED,
    SKIP_TRUNCATED,
    SKIP_UNDECODABLE,
    ReplayFilter,
    age_bucket,
    group_counts,
    plan_replay,
    select,
)
from consumers.replay.view import DeadLetterView
from switchboard.cli.main import main
from switchboard.core import headers as h
from switchboard.core.errors import ConfigError
from switchboard.core.serde import DEAD_LETTER, SingleObjectCodec
from switchboard.core.topics import Topics

NOW = 1_750_000_000_000  # epoch ms
MIN = 60_000
DLQ = "sb.dlq"
CODEC = SingleObjectCodec()


def letter(
    offset: int,
    *,
    request_id: str | None = "r",
    specialist: str | None = "api",
    tenant: str | None = "acme",
    error_class: str = "permanent",
    error_code: str | None = "invalid_request",
    failed_at: int = NOW,
    headers: list[dict[str, Any]] | None = None,
    dlq_headers: list[tuple[str, bytes]] | None = None,
) -> DeadLetterView:
    record = {
        "original_key": b"key",
        "original_value": b"value",
        "original_headers": headers if headers is not None else [{"key": "a", "value": b"1"}],
        "origin_topic": f"sb.tasks.{specialist}",
        "origin_partition": 0,
        "origin_offset": offset,
        "origin_timestamp_ms": failed_at,
        "stage": "model",
        "error_class": error_class,
        "error_type": "BadRequestError",
        "error_code": error_code,
        "error_message": "no",
        "attempts": [],
        "first_failure_ms": failed_at,
        "last_failure_ms": failed_at,
        "request_id": request_id,
        "tenant": tenant,
        "specialist": specialist,
    }
    value = CODEC.encode(DEAD_LETTER, record, DLQ)
    msg = Message(
        topic=DLQ,
        partition=0,
        offset=offset,
        value=value,
        timestamp=(1, failed_at),
        headers=dlq_headers or [],
    )
    return DeadLetterView.from_message(msg, CODEC)


def garbage(offset: int) -> DeadLetterView:
    msg = Message(topic=DLQ, partition=1, offset=offset, value=b"junk", timestamp=(1, NOW))
    return DeadLetterView.from_message(msg, CODEC)


# --- durations and times -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("30m", 1800),
        ("2h", 7200),
        ("7d", 604800),
        ("1w", 604800),
        ("1h30m", 5400),
        ("250ms", 0.25),
        (" 2H ", 7200),
        ("1.5h", 5400),
        ("1d 12h", 129600),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "2", "2x", "h", "-2h", "1h30", "2h x", "h2"])
def test_bad_durations_say_what_to_write(text: str) -> None:
    with pytest.raises(ConfigError, match="30m"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2h", NOW - 2 * 3600_000),
        ("90s", NOW - 90_000),
        ("2025-06-01T12:00:00Z", int(datetime(2025, 6, 1, 12, tzinfo=UTC).timestamp() * 1000)),
        ("2025-06-01T14:00:00+02:00", int(datetime(2025, 6, 1, 12, tzinfo=UTC).timestamp() * 1000)),
        ("2025-06-01T12:00", int(datetime(2025, 6, 1, 12, tzinfo=UTC).timestamp() * 1000)),
        ("2025-06-01", int(datetime(2025, 6, 1, tzinfo=UTC).timestamp() * 1000)),
    ],
)
def test_instants_are_iso_utc_or_a_duration_ago(text: str, expected: int) -> None:
    assert parse_instant(text, NOW) == expected


@pytest.mark.parametrize("text", ["yesterday", "2h ago", "2025-13-01", "", "12:00:00x"])
def test_bad_instants_name_both_forms(text: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_instant(text, NOW)
    message = str(caught.value)
    assert "ISO 8601" in message and "2h" in message and "\n" not in message


def test_record_ids() -> None:
    assert parse_record_id("2:1041") == (None, 2, 1041)
    assert parse_record_id("sb.dlq/2/1041") == ("sb.dlq", 2, 1041)
    for bad in ("2-1041", "a:b", "2:", "sb.dlq/2", "-1:3", "1:2:3"):
        with pytest.raises(ConfigError, match=r"PARTITION:OFFSET|negative"):
            parse_record_id(bad)


# --- filters -----------------------------------------------------------------------------------
def test_an_empty_filter_matches_everything_even_undecodable_records() -> None:
    flt = ReplayFilter()
    assert flt.is_empty
    assert flt.matches(letter(1)) and flt.matches(garbage(2))


def test_values_of_one_field_are_alternatives_and_fields_combine() -> None:
    api = letter(1, specialist="api", tenant="acme")
    data = letter(2, specialist="data", tenant="acme")
    other = letter(3, specialist="api", tenant="globex")
    flt = ReplayFilter(specialists=frozenset({"api", "data"}), tenants=frozenset({"acme"}))
    assert [x.offset for x in (api, data, other) if flt.matches(x)] == [1, 2]


@pytest.mark.parametrize(
    ("flt", "matches"),
    [
        (ReplayFilter(error_classes=frozenset({"transient"})), False),
        (ReplayFilter(error_classes=frozenset({"permanent"})), True),
        (ReplayFilter(error_codes=frozenset({"invalid_request"})), True),
        (ReplayFilter(request_ids=frozenset({"other"})), False),
        (ReplayFilter(pointers=frozenset({f"{DLQ}/0/7"})), True),
        (ReplayFilter(pointers=frozenset({f"{DLQ}/0/8"})), False),
        (ReplayFilter(since_ms=NOW, until_ms=NOW), True),  # bounds are inclusive
        (ReplayFilter(since_ms=NOW + 1), False),
        (ReplayFilter(until_ms=NOW - 1), False),
    ],
)
def test_each_field(flt: ReplayFilter, matches: bool) -> None:
    assert flt.matches(letter(7)) is matches
    assert not flt.is_empty


def test_undecodable_records_match_only_by_class_time_or_id() -> None:
    junk = garbage(5)
    assert junk.error_class == "undecodable" and junk.request_id is None
    assert ReplayFilter(error_classes=frozenset({"undecodable"})).matches(junk)
    assert ReplayFilter(since_ms=NOW - MIN).matches(junk)
    assert not ReplayFilter(specialists=frozenset({"api"})).matches(junk)
    assert not ReplayFilter(error_codes=frozenset({"invalid_request"})).matches(junk)


def test_since_after_until_is_refused() -> None:
    with pytest.raises(ConfigError, match="swap them"):
        ReplayFilter(since_ms=NOW, until_ms=NOW - 1)


def test_select_hides_acknowledged_records_unless_asked() -> None:
    letters = [letter(1), letter(2), letter(3, specialist="data")]
    acked = {letters[1].pointer}
    flt = ReplayFilter(specialists=frozenset({"api"}))
    hidden = select(letters, flt, acked)
    assert [x.offset for x in hidden.records] == [1] and hidden.hidden_acked == 1
    shown = select(letters, flt, acked, include_acked=True)
    assert [x.offset for x in shown.records] == [1, 2] and shown.hidden_acked == 0


# --- the replay plan ---------------------------------------------------------------------------
def test_plan_sends_oldest_first_and_says_why_it_leaves_records_out() -> None:
    fresh = letter(1, request_id="a", failed_at=NOW)
    older = letter(2, request_id="b", failed_at=NOW - MIN)
    replayed = letter(3, request_id="c")
    answered = letter(4, request_id="d")
    dup_old = letter(5, request_id="e", failed_at=NOW - 2 * MIN)
    dup_new = letter(6, request_id="e", failed_at=NOW - MIN)
    no_id = letter(7, request_id=None)
    junk = garbage(8)
    cut = letter(9, request_id="f", dlq_headers=[(h.DLQ_TRUNCATED, b"1048000")])
    plan = plan_replay(
        [fresh, older, replayed, answered, dup_old, dup_new, no_id, junk, cut],
        replayed={replayed.pointer},
        settled={"d"},
    )
    assert [x.offset for x in plan.to_send] == [2, 6, 1, 7]
    assert plan.skipped_counts() == {
        SKIP_UNDECODABLE: 1,
        SKIP_TRUNCATED: 1,
        SKIP_REPLAYED: 1,
        SKIP_ANSWERED: 1,
        SKIP_DUPLICATE: 1,
    }
    assert plan.skipped[SKIP_DUPLICATE] == [dup_old]
    assert cut.truncated and cut.summary()["truncated"] and not fresh.truncated


def test_plan_limit_keeps_the_oldest() -> None:
    letters = [letter(i, request_id=f"r{i}", failed_at=NOW - i * MIN) for i in range(5)]
    plan = plan_replay(letters, limit=2)
    assert [x.offset for x in plan.to_send] == [4, 3]
    assert len(plan.skipped[SKIP_LIMIT]) == 3


def test_the_replayed_record_is_the_original_with_fresh_replay_headers() -> None:
    old = [{"key": h.REPLAY_ID, "value": b"replay-old"}, {"key": h.REPLAY_OF, "value": b"x/0/1"}]
    view = letter(
        9, headers=[{"key": "sb-request-id", "value": b"r"}, *old, {"key": "empty", "value": None}]
    )
    out = view.replay_record("replay-new")
    assert (out.topic, out.key, out.value) == ("sb.tasks.api", b"key", b"value")
    assert list(out.headers) == [
        ("sb-request-id", b"r"),
        ("empty", None),
        (h.REPLAY_ID, b"replay-new"),
        (h.REPLAY_OF, f"{DLQ}/0/9".encode()),
    ]
    with pytest.raises(ConfigError, match="cannot be replayed"):
        garbage(1).replay_record("replay-new")


# --- grouping and rows -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("age_ms", "bucket"),
    [
        (0, "<5m"),
        (5 * MIN - 1, "<5m"),
        (5 * MIN, "5m-1h"),
        (60 * MIN, "1h-1d"),
        (24 * 60 * MIN, "1d-7d"),
        (7 * 24 * 60 * MIN, OLDEST_BUCKET),
    ],
)
def test_age_buckets(age_ms: int, bucket: str) -> None:
    assert age_bucket(age_ms) == bucket


def test_group_counts() -> None:
    letters = [
        letter(1, specialist="api", tenant="acme"),
        letter(
            2,
            specialist="api",
            tenant="globex",
            error_class="transient",
            failed_at=NOW - 2 * 60 * MIN,
        ),
        letter(3, specialist="data", tenant=None, failed_at=NOW - 8 * 24 * 60 * MIN),
        garbage(4),
    ]
    groups = group_counts(letters, NOW)
    assert groups == {
        "error_class": {"permanent": 2, "transient": 1, "undecodable": 1},
        "specialist": {"api": 2, "data": 1, "(none)": 1},
        "tenant": {"(none)": 2, "acme": 1, "globex": 1},
        "age": {"<5m": 2, "1h-1d": 1, OLDEST_BUCKET: 1},
    }
    assert list(groups["age"]) == ["<5m", "1h-1d", OLDEST_BUCKET]  # youngest first
    assert next(iter(groups["error_class"])) == "permanent"  # largest first


def test_summary_row_shape() -> None:
    row = letter(3).summary(acked=True, replayed="replay-1")
    assert {
        "id",
        "pointer",
        "request_id",
        "error_class",
        "stage",
        "specialist",
        "origin_topic",
        "tenant",
        "failed_at",
        "acked",
        "replayed",
    } <= set(row)
    assert (row["id"], row["pointer"], row["acked"]) == ("0:3", f"{DLQ}/0/3", True)
    junk = garbage(4).summary()
    assert junk["error_class"] == "undecodable" and "C3 01" in junk["error_message"]


def test_ledgers_are_compacted_topics_beside_the_dlq() -> None:
    topics = Topics("sb")
    assert (topics.dlq_replays, topics.dlq_acks) == ("sb.dlq.replays", "sb.dlq.acks")
    for spec in topics.ledger_specs(1000):
        assert spec.config == {"cleanup.policy": "compact,delete", "retention.ms": "1000"}


# --- the CLI's argument errors -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["dlq", "list", "--since", "2x"], "is not a time"),
        (["dlq", "replay", "--specialist", "frontend"], "use one of backend"),
        (["dlq", "replay", "--error-class", "boom"], "use one of transient"),
        (["dlq", "replay", "--rate", "0"], "must be more than 0"),
        (["dlq", "replay", "--rate", "fast"], "records a second"),
        (["dlq", "replay", "--limit", "0"], "1 or more"),
        (["dlq", "show", "1-2"], "PARTITION:OFFSET"),
        (["dlq", "purge", "--tenant", " "], "give a value"),
    ],
)
def test_bad_arguments_are_one_line(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert says in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["dlq", "replay", "--apply"], "--all"),
        (["dlq", "purge", "--apply"], "--all"),
        (["dlq", "list", "--since", "1h", "--until", "2h"], "swap them"),
        (["dlq", "replay", "--id", "other.dlq/0/1"], "--parking-lot"),
    ],
)
def test_impossible_requests_fail_before_touching_kafka(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")  # nothing listens there
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert says in err and len(err.strip().splitlines()) == 1


def test_replay_headers_carry_the_last_replay_id_and_pointer_only() -> None:
    from consumers.outcomes import replay_headers

    plain = Message(topic="t", headers=[("sb-request-id", b"r")])
    assert replay_headers(plain) == []
    assert replay_headers(Message(topic="t")) == []
    replayed = Message(
        topic="t",
        headers=[
            (h.REPLAY_OF, b"dlq/0/1"),
            ("sb-request-id", b"r"),
            (h.REPLAY_ID, b"replay-old"),
            (h.REPLAY_ID, b"replay-new"),
        ],
    )
    assert replay_headers(replayed) == [(h.REPLAY_ID, b"replay-new"), (h.REPLAY_OF, b"dlq/0/1")]
