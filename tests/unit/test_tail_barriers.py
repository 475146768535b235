"""A reader's read-your-writes barriers (``core.tail.Barriers``) and the compacted-topic record
reader (``core.tail.json_record``), without a broker."""

from __future__ import annotations

from typing import Any, cast

import pytest
from confluent_kafka import Message

from switchboard.core.errors import KafkaAccessError
from switchboard.core.tail import Barriers, Unreadable, json_record


def test_a_barrier_resolves_once_every_partition_is_read_up_to_its_mark() -> None:
    barriers = Barriers()
    first = barriers.request()
    barriers.take_requests(lambda: {0: 5, 1: 2})
    second = barriers.request()
    barriers.take_requests(lambda: {0: 7, 1: 2})

    barriers.resolve({0: 5, 1: 1})
    assert not first.done() and not second.done()
    barriers.resolve({0: 5, 1: 2})
    assert first.done() and first.result() is None and not second.done()
    barriers.resolve({0: 7, 1: 2})
    assert second.done()


def test_a_barrier_not_yet_taken_up_waits_for_its_marks() -> None:
    barriers = Barriers()
    pending = barriers.request()
    barriers.resolve({0: 100})  # not marked yet: nothing to resolve it against
    assert not pending.done()
    barriers.take_requests(dict)  # no partitions read: nothing to wait for
    barriers.resolve({})
    assert pending.done()


def test_a_partition_dropped_after_the_mark_no_longer_holds_the_barrier() -> None:
    """The answered index stops reading a partition a revoke took (mid catch-up): a barrier
    marked before must still resolve once the partitions it still reads are caught up."""
    barriers = Barriers()
    waiting = barriers.request()
    barriers.take_requests(lambda: {0: 5, 2: 900})
    barriers.resolve({0: 5, 2: 10})  # partition 2 still read and behind: wait
    assert not waiting.done()
    barriers.resolve({0: 5})  # partition 2 dropped: only partition 0 counts
    assert waiting.done()


def test_a_refusal_fails_waiting_pending_and_later_barriers() -> None:
    barriers = Barriers()
    waiting = barriers.request()
    barriers.take_requests(lambda: {0: 1})
    pending = barriers.request()
    refused = KafkaAccessError("not authorized to read")
    barriers.fail(refused)
    later = barriers.request()
    for future in (waiting, pending, later):
        with pytest.raises(KafkaAccessError):
            future.result(timeout=0)


class _Record:
    def __init__(self, key: bytes | None, value: bytes | None) -> None:
        self._key, self._value = key, value

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        (b"a", b'{"n": 1}', ("a", {"n": 1})),
        (b"a", None, ("a", Unreadable.TOMBSTONE)),
        (b"a", b"null", ("a", None)),
        (b"a", b"{not json", ("a", Unreadable.NOT_JSON)),
        (None, b"[1]", ("", [1])),
    ],
    ids=["object", "tombstone", "json-null-is-a-value", "not-json", "no-key"],
)
def test_json_record_reads_key_and_value_and_names_what_is_not_json(
    key: bytes | None, value: bytes | None, expected: tuple[str, Any]
) -> None:
    assert json_record(cast(Message, _Record(key, value))) == expected
