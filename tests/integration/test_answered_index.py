"""The answered-request index keeps one dedup window of answers, not every answer ever."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from consumers.answered import AnsweredIndex

pytestmark = pytest.mark.integration


def test_answers_older_than_the_window_are_forgotten(
    kafka_config: dict[str, str], make_topic: Callable[..., str]
) -> None:
    index = AnsweredIndex(kafka_config, make_topic("responses"), window_s=3600)
    try:
        index.mark_answered("fresh")
        index.mark_answered("stale")
        index._answered["stale"] = 0  # answered at the epoch: far outside the hour
        assert index.prune() == 1
        assert index.is_answered("fresh")
        assert not index.is_answered("stale")
        assert not index.is_answered("stale", replay=True)
    finally:
        index.close()
