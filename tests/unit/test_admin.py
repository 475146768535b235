"""end_offsets retries the errors a just-created topic gives while its leadership settles."""

from __future__ import annotations

import concurrent.futures
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from switchboard.core.admin import end_offsets, is_settling


class FlakyAdmin:
    """Answers list_offsets with ``errors`` first (one per call), then with real offsets."""

    def __init__(self, errors: list[int], ends: dict[int, int]) -> None:
        self.errors = list(errors)
        self.ends = ends
        self.calls = 0

    def list_topics(self, topic: str | None = None, *, timeout: float) -> Any:
        assert topic is None, "naming a topic asks the broker to create it"
        parts = {p: SimpleNamespace(id=p) for p in self.ends}
        return SimpleNamespace(topics={"t": SimpleNamespace(partitions=parts)})

    def list_offsets(self, request: dict[TopicPartition, Any], request_timeout: float) -> Any:
        self.calls += 1
        out: dict[TopicPartition, concurrent.futures.Future[Any]] = {}
        for tp in request:
            future: concurrent.futures.Future[Any] = concurrent.futures.Future()
            if self.errors:
                future.set_exception(KafkaException(KafkaError(self.errors[0])))
            else:
                future.set_result(SimpleNamespace(offset=self.ends[tp.partition]))
            out[tp] = future
        if self.errors:
            self.errors.pop(0)
        return out


def test_not_leader_is_retried_until_the_offsets_come() -> None:
    admin = FlakyAdmin(
        [KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE], {0: 7, 1: 0}
    )
    assert end_offsets(admin, "t", timeout_s=5) == {0: 7, 1: 0}  # type: ignore[arg-type]
    assert admin.calls == 3


def test_a_lasting_error_is_raised_not_retried() -> None:
    admin = FlakyAdmin([KafkaError.TOPIC_AUTHORIZATION_FAILED], {0: 1})
    with pytest.raises(KafkaException):
        end_offsets(admin, "t", timeout_s=5)  # type: ignore[arg-type]
    assert admin.calls == 1


def test_settling_gives_up_at_the_deadline() -> None:
    admin = FlakyAdmin([KafkaError.NOT_LEADER_FOR_PARTITION] * 1000, {0: 1})
    with pytest.raises(KafkaException):
        end_offsets(admin, "t", timeout_s=0.5)  # type: ignore[arg-type]
    assert 1 < admin.calls < 10


@pytest.mark.parametrize(
    ("code", "settling"),
    [
        (KafkaError.NOT_LEADER_FOR_PARTITION, True),
        (KafkaError.UNKNOWN_TOPIC_OR_PART, True),
        (KafkaError.TOPIC_AUTHORIZATION_FAILED, False),
        (KafkaError.INVALID_CONFIG, False),
    ],
)
def test_is_settling(code: int, settling: bool) -> None:
    assert is_settling(KafkaError(code)) is settling
