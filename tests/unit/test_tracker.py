"""Out-of-order completion, in-order commit."""

from __future__ import annotations

from consumers.runtime.tracker import PartitionTracker


def test_commit_waits_for_the_lowest_unfinished_offset() -> None:
    tracker = PartitionTracker()
    for offset in (10, 11, 12, 13):
        tracker.start(offset)
    tracker.finish(12)
    tracker.finish(13)
    assert tracker.committable_offset() is None  # 10 and 11 still running
    assert tracker.outstanding == 2
    tracker.finish(10)
    assert tracker.committable_offset() == 11  # 11 is not done: never commit past it
    tracker.finish(11)
    assert tracker.committable_offset() == 14
    assert tracker.committable_offset() is None  # nothing new since
    assert tracker.last_committable == 14
    assert tracker.outstanding == 0


def test_gaps_in_offsets_are_fine() -> None:
    # Compacted topics and transaction markers leave holes: only handed-out offsets count.
    tracker = PartitionTracker()
    tracker.start(5)
    tracker.start(9)
    tracker.finish(9)
    tracker.finish(5)
    assert tracker.committable_offset() == 10
