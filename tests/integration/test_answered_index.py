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


def test_an_assignment_starts_the_index_sync_before_any_record_arrives(
    kafka_bootstrap: str, kafka_config: dict[str, str]
) -> None:
    """The first record of a new partition waits until the index has read every answer that
    existed at the assignment. The pipeline starts that read on the assignment itself, so with
    no request sent at all the index is synced past the moment the consumers started."""
    import asyncio
    import time

    from consumers.app import Pipeline

    from .harness import create_topics, settings_for_test

    settings = settings_for_test(kafka_bootstrap)
    create_topics(settings, kafka_config)

    async def main() -> bool:
        pipeline = Pipeline(settings, kafka_config)
        pipeline.add_router()
        pipeline.add_worker("backend", 8)
        began = time.monotonic()
        running = asyncio.create_task(pipeline.run())
        try:
            await pipeline.wait_ready()
            deadline = time.monotonic() + 20
            while not pipeline.index.synced(began) and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            return pipeline.index.synced(began)
        finally:
            pipeline.request_stop()
            await running

    assert asyncio.run(main())
