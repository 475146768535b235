"""``run_batch_job``: the one call a review command makes to answer its items in batches.

It assembles what ``BatchRunner`` needs from the settings (the SDK client, the codec, one
producer, the outcomes of each specialist's worker group, the ledger), reads which items are
already answered on the response topic and which of the job's batches are still open, runs,
and closes everything it opened.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final

from confluent_kafka import Message

from consumers.batches.ledger import BatchLedger, read_open_batches
from consumers.batches.requests import (
    BATCH_BYTES_MARGIN,
    MAX_BATCH_BYTES,
    MAX_BATCH_REQUESTS,
    BatchItem,
)
from consumers.batches.runner import BatchRunner, BatchSummary, PollPolicy
from consumers.outcomes import Outcomes, Stage
from switchboard.core.aio_producer import AsyncProducer
from switchboard.core.atomic import AtomicWriter, transactional_id
from switchboard.core.envelope import content_codec
from switchboard.core.errors import ConfigError
from switchboard.core.kafka_clients import producer_config
from switchboard.core.settings import Settings
from switchboard.core.tail import read_once
from switchboard.core.topics import GroupRole, Topics

if TYPE_CHECKING:
    from anthropic import AsyncAnthropic

#: How long reading the response topic for already answered items may take.
ANSWERED_SCAN_TIMEOUT_S: Final = 120.0


async def run_batch_job(
    items: Iterable[BatchItem],
    settings: Settings,
    kafka: Mapping[str, Any],
    *,
    job: str,
    poll: PollPolicy | None = None,
    on_event: Callable[[str], None] | None = None,
    client: AsyncAnthropic | None = None,
    max_requests: int = MAX_BATCH_REQUESTS,
    max_bytes: int = MAX_BATCH_BYTES - BATCH_BYTES_MARGIN,
) -> BatchSummary:
    """Answer ``items`` through the Message Batches API; every one ends with one terminal
    response on the response topic (or stays in an open batch that a rerun of ``job``
    resumes, counted as ``unfinished``).

    ``kafka`` is the librdkafka config (``settings.client_config(bootstrap)``); ``job`` names
    the job in the batch ledger (the review's ``--job``); ``client`` defaults to an
    ``AsyncAnthropic`` from the settings (it needs ``ANTHROPIC_API_KEY``); ``on_event`` gets a
    line for every batch created and every poll (its state and request counts), for progress.
    Raises ``ConfigError`` without a key, ``BatchJobError`` when the API refuses the job.
    """
    items = list(items)
    for item in items:
        if item.specialist not in settings.models:
            raise ConfigError(
                f"batch item {item.request_id}: specialist {item.specialist!r} has no model; "
                f"use one of {', '.join(sorted(settings.models))}"
            )
    own_client = client is None
    if client is None:
        client = make_client(settings)
    topics = Topics(settings.topic_prefix)
    codec = content_codec(settings)
    # Replies to a caller's topic and their ledger copies: one transaction each batch of them
    # (switchboard.core.atomic); the job's name keeps the id stable, so a rerun fences a killed
    # run of the same job at once.
    atomic = AtomicWriter(
        producer_config(dict(kafka)), transactional_id(topics.prefix, job, ["review-batch"])
    )
    producer = AsyncProducer(producer_config(dict(kafka)), atomic=atomic)
    try:
        ledger = BatchLedger(
            kafka, topics, producer, job, replication_factor=settings.replication_factor
        )
        open_batches = await read_open_batches(ledger)
        wanted = {item.request_id for item in items}
        wanted |= {li.request_id for batch in open_batches for li in batch.items.values()}
        answered = await asyncio.to_thread(answered_among, kafka, topics.responses, wanted)
        outcomes = {
            name: Outcomes(
                codec, topics, producer, topics.group(GroupRole.WORKER, name), Stage.MODEL
            )
            for name in settings.models
        }
        runner = BatchRunner(
            client,
            ledger=ledger,
            outcomes=lambda specialist: outcomes[specialist],
            producer=producer,
            codec=codec,
            topics=topics,
            models=settings.models,
            max_tokens=settings.max_output_tokens,
            max_attempts=settings.max_attempts,
            poll=poll,
            on_event=on_event,
            max_requests=max_requests,
            max_bytes=max_bytes,
        )
        return await runner.run(items, answered=answered, open_batches=open_batches)
    finally:
        await asyncio.to_thread(producer.close)
        if own_client:
            await client.close()


def require_key(settings: Settings) -> None:
    """Raise ``ConfigError`` (saying what to change) when there is no API key to batch with."""
    if settings.anthropic_api_key is None:
        raise ConfigError(
            "--batch-api sends the job to the Anthropic Message Batches API: set "
            "ANTHROPIC_API_KEY, or drop --batch-api to review through the workers"
        )


def make_client(settings: Settings) -> AsyncAnthropic:
    """The SDK client of the settings; its own retries stay low (the runner owns retrying)."""
    require_key(settings)
    assert settings.anthropic_api_key is not None
    from anthropic import AsyncAnthropic  # here, not at the top: it takes seconds to import

    return AsyncAnthropic(
        api_key=settings.anthropic_api_key.get_secret_value(),
        base_url=settings.anthropic_base_url,
        timeout=settings.anthropic_timeout_s,
        max_retries=settings.anthropic_max_retries,
    )


def answered_among(kafka: Mapping[str, Any], topic: str, wanted: set[str]) -> set[str]:
    """Which of ``wanted`` have a response on ``topic`` (a scan of its keys to its end)."""
    found: set[str] = set()
    if not wanted:
        return found

    def keep(msg: Message) -> None:
        key = msg.key()
        if key:
            request_id = key.decode("utf-8", "replace")
            if request_id in wanted:
                found.add(request_id)

    read_once(
        dict(kafka),
        topic,
        keep,
        since_ms=0,
        timeout_s=ANSWERED_SCAN_TIMEOUT_S,
        name="batch-answered",
    )
    return found
