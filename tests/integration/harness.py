"""Run the pipeline's consumers in a background thread for a test, with uuid-named topics."""

from __future__ import annotations

import asyncio
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from confluent_kafka.admin import AdminClient

from consumers.app import Pipeline
from switchboard.core.admin import ensure_topics
from switchboard.core.settings import Settings
from switchboard.core.topics import Topics
from switchboard.devtools.fake_anthropic import FakeAnthropic


def settings_for_test(
    bootstrap: str, *, fake: FakeAnthropic | None = None, **overrides: Any
) -> Settings:
    """Settings for one test: its own topic prefix, nothing read from a real key; with
    ``fake``, the workers call that fake Anthropic server with a test key."""
    values: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "topic_prefix": f"sbt-{uuid.uuid4().hex[:10]}",
        "partitions": 3,
        "anthropic_api_key": None if fake is None else "sk-test",
        "anthropic_base_url": None if fake is None else fake.base_url,
        "drain_timeout_s": 10.0,
        # The answered index's stores: a directory per test, not the checkout's .switchboard.
        "answered_dir": Path(tempfile.mkdtemp(prefix="sb-answered-")),
    }
    values.update(overrides)
    return Settings(**values)


def create_topics(settings: Settings, kafka: dict[str, Any]) -> Topics:
    topics = Topics(settings.topic_prefix)
    ensure_topics(
        AdminClient(kafka),
        topics.specs(
            retention_ms=settings.retention_ms, dlq_retention_ms=settings.dlq_retention_ms
        ),
        partitions=settings.partitions,
        replication_factor=1,
    )
    return topics


def router_only(pipeline: Pipeline) -> None:
    """A ``RunningPipeline`` setup with the router alone: the workers of such a test run in
    processes of their own (``WorkerProcess``), so that it can kill them."""
    pipeline.add_router()


def unthrottled_settings(
    bootstrap: str, kafka: dict[str, Any], fake: FakeAnthropic, *, partitions: int
) -> Settings:
    """Settings and fresh topics for a test that kills workers under thousands of requests
    from one tenant at once: it is about the runtime, so the router's per-tenant rate limit
    (1,000 req/s by default) is off."""
    settings = settings_for_test(bootstrap, fake=fake, partitions=partitions, tenant_rate_per_s=0)
    create_topics(settings, kafka)
    return settings


@contextmanager
def running_pipeline(
    bootstrap: str, kafka: dict[str, Any], concurrency: int, **overrides: Any
) -> Iterator[Settings]:
    """Fresh topics and the whole pipeline (router, relay, every specialist's workers at
    ``concurrency``) running until the block ends; yields its settings (``overrides`` as in
    ``settings_for_test``)."""
    settings = settings_for_test(bootstrap, **overrides)
    create_topics(settings, kafka)
    with RunningPipeline(settings, kafka, lambda p: p.add_all(concurrency=concurrency)):
        yield settings


class RunningPipeline:
    """The consumers ``setup`` adds, running on their own event loop until ``stop``."""

    def __init__(
        self,
        settings: Settings,
        kafka: dict[str, Any],
        setup: Callable[[Pipeline], None],
        **pipeline_kwargs: Any,
    ) -> None:
        self.pipeline = Pipeline(settings, kafka, **pipeline_kwargs)
        setup(self.pipeline)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        async def run() -> None:
            self._loop = asyncio.get_running_loop()
            self._ready.set()
            await self.pipeline.run()

        try:
            asyncio.run(run())
        except BaseException as exc:  # surfaced by stop()
            self.error = exc

    def __enter__(self) -> RunningPipeline:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def stop(self, timeout_s: float = 60.0) -> None:
        if self._loop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self.pipeline.request_stop)
        self._thread.join(timeout_s)
        assert not self._thread.is_alive(), "pipeline did not stop in time"
        if self.error is not None:
            raise self.error

    def __exit__(self, *_exc: object) -> None:
        self.stop()
