"""The answered index's on-disk store, its state directory slots and the horizon's source."""

from __future__ import annotations

from pathlib import Path

import pytest

from consumers.answered import DEFAULT_HORIZON_S, AnsweredLedger, partition_of, resolve_horizon
from consumers.answered_store import AnswerStore, StateDir, StoreBudget


@pytest.fixture
def budget() -> StoreBudget:
    return StoreBudget(cache_bytes=1 << 20, memtable_bytes=1 << 20)


def test_answers_and_the_next_offset_survive_a_reopen(tmp_path: Path, budget: StoreBudget) -> None:
    store = AnswerStore(tmp_path / "p0", budget)
    assert store.next_offset() is None
    store.write([(b"ok-1", 1_000, True), (b"failed-1", 2_000, False)], 2)
    store.close()
    store = AnswerStore(tmp_path / "p0", budget)
    assert store.next_offset() == 2
    assert store.lookup(b"ok-1") and store.lookup(b"ok-1", replay=True)
    assert store.lookup(b"failed-1") and not store.lookup(b"failed-1", replay=True)
    assert not store.lookup(b"never")
    store.close()


def test_a_failed_answer_never_unsettles_a_settled_one(tmp_path: Path, budget: StoreBudget) -> None:
    store = AnswerStore(tmp_path / "p0", budget)
    store.write([(b"r", 1_000, True)], None)
    store.write([(b"r", 2_000, False)], None)
    assert store.lookup(b"r", replay=True)
    store.close()


def test_prune_drops_what_is_older_than_the_horizon_unless_answered_again(
    tmp_path: Path, budget: StoreBudget
) -> None:
    store = AnswerStore(tmp_path / "p0", budget)
    store.write([(b"old", 1_000, True), (b"again", 1_500, True), (b"new", 9_000, True)], 3)
    store.write([(b"again", 8_000, True)], 4)
    assert store.prune(5_000) == 1
    assert sorted(store.answers()) == [b"again", b"new"]
    assert store.prune(5_000) == 0  # the time index was pruned with them
    assert store.next_offset() == 4
    store.close()


def test_an_unreadable_store_is_rebuilt_empty(tmp_path: Path, budget: StoreBudget) -> None:
    path = tmp_path / "p0"
    path.mkdir()
    (path / "CURRENT").write_text("MANIFEST-999999\n")  # points at nothing: corrupt
    store = AnswerStore(path, budget)
    assert store.next_offset() is None  # read from the topic again
    store.close()


def test_processes_on_one_host_get_a_slot_each_and_a_restart_reuses_the_free_one(
    tmp_path: Path,
) -> None:
    first, second = StateDir(tmp_path, "sb.responses"), StateDir(tmp_path, "sb.responses")
    assert (first.path.name, second.path.name) == ("m0", "m1")
    first.close()
    again = StateDir(tmp_path, "sb.responses")
    assert again.path.name == "m0"
    named = StateDir(tmp_path, "sb.responses", "worker-a")
    with pytest.raises(RuntimeError, match="SWITCHBOARD_INSTANCE_ID"):
        StateDir(tmp_path, "sb.responses", "worker-a")
    for held in (second, again, named):
        held.close()


def test_the_horizon_is_the_setting_else_the_shorter_retention_else_seven_days() -> None:
    day_ms = 86_400_000
    assert resolve_horizon(7200, 7 * day_ms, 7 * day_ms)[0] == 7200
    assert resolve_horizon(None, 7 * day_ms, 3 * day_ms) == (
        3 * 86_400.0,
        "retention.ms of the responses topic",
    )
    assert resolve_horizon(None, 2 * day_ms, -1)[0] == 2 * 86_400.0
    assert resolve_horizon(None, -1, None)[0] == DEFAULT_HORIZON_S


def test_a_request_created_before_the_horizon_is_beyond_it() -> None:
    ledger = AnsweredLedger(3600, wall_ms=lambda: 10 * 3_600_000)
    assert ledger.beyond_horizon(9 * 3_600_000 - 1)
    assert not ledger.beyond_horizon(9 * 3_600_000)
    assert not ledger.beyond_horizon(None)


def _crc32_ieee(data: bytes) -> int:
    """CRC-32 (IEEE 802.3, reflected, polynomial 0xEDB88320) bit by bit: what librdkafka's
    rd_crc32 computes for ``consistent_random``, written apart from zlib."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0xEDB88320 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def test_partition_of_is_librdkafkas_consistent_random_partition() -> None:
    """The partition a Switchboard producer writes a key to: CRC-32 of the key modulo the
    count (co-partitioning against a real topic: tests/integration/test_answered_index.py)."""
    # The CRC-32 check value (of b"123456789") and the well-known CRC-32 of b"hello".
    assert _crc32_ieee(b"123456789") == 0xCBF43926 and _crc32_ieee(b"hello") == 0x3610A686
    assert [partition_of("123456789", n) for n in (1, 2, 3, 6, 7, 12)] == [
        0xCBF43926 % n for n in (1, 2, 3, 6, 7, 12)
    ]
    assert partition_of("123456789", 12) == 2 and partition_of("hello", 12) == 10
    ids = [f"req-{n:05d}" for n in range(500)] + ["", "ä-ünïcode", "x" * 300]
    for count in (1, 3, 4, 12, 100):
        assert [partition_of(rid, count) for rid in ids] == [
            _crc32_ieee(rid.encode()) % count for rid in ids
        ]
        assert [partition_of(rid.encode(), count) for rid in ids] == [
            partition_of(rid, count) for rid in ids
        ]
    # Spread: a 500-id sample lands in every one of 12 partitions.
    assert {partition_of(rid, 12) for rid in ids} == set(range(12))
