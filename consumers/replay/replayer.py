"""Sending dead letters back: ``Replayer`` writes each to its origin topic with its original key,
value and headers plus ``sb-replay-id`` / ``sb-replay-of``, at most ``rate`` records a second,
and once a record is delivered writes its pointer to the replays ledger."""

from __future__ import annotations

import asyncio
import json
import math
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Final

from confluent_kafka import KafkaException

from consumers.outcomes import now_ms
from consumers.replay.parsing import pointer
from consumers.replay.view import DeadLetterView
from consumers.resilience.ratelimit import TokenBucket
from switchboard.core import metrics, tracing
from switchboard.core.aio_producer import AsyncProducer, Outbound
from switchboard.core.errors import ConfigError
from switchboard.core.topics import Topics

#: Records sent but not yet confirmed, at most.
DEFAULT_MAX_IN_FLIGHT: Final = 1000
#: The token bucket holds a tenth of a second's worth of ``rate`` (at least one record), so the
#: pace is smooth rather than one burst a second.
_BURSTS_PER_S: Final = 10
#: Hex digits of a uuid4 in a replay id (``replay-<12 hex>``).
_REPLAY_ID_HEX: Final = 12


@dataclass
class ReplayResult:
    """What a replay did."""

    replay_id: str
    sent: list[DeadLetterView] = field(default_factory=list)
    failed: list[tuple[DeadLetterView, str]] = field(default_factory=list)
    elapsed_s: float = 0.0
    #: How often, and how long in all, the rate limit held the replay back.
    rate_waits: int = 0
    rate_waited_s: float = 0.0

    @property
    def rate_per_s(self) -> float:
        return len(self.sent) / self.elapsed_s if self.elapsed_s > 0 else 0.0


def new_replay_id() -> str:
    return f"replay-{uuid.uuid4().hex[:_REPLAY_ID_HEX]}"


class Replayer:
    """Sends dead letters back to their origin topics and records each in the replays ledger.

    ``rate``: records a second, through a token bucket holding a tenth of a second's worth
    (at least one), so the pace is smooth rather than one burst a second. ``max_in_flight``
    bounds the records sent but not yet confirmed.
    """

    def __init__(
        self,
        producer: AsyncProducer,
        topics: Topics,
        *,
        replay_id: str | None = None,
        rate: float | None = None,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate is not None and not rate > 0:
            raise ConfigError(f"--rate {rate:g}: give a number of records a second above 0")
        self._producer = producer
        self._ledger = topics.dlq_replays
        self.replay_id = replay_id or new_replay_id()
        self._bucket = (
            TokenBucket(rate, max(1, math.ceil(rate / _BURSTS_PER_S)), clock)
            if rate is not None
            else None
        )
        self._max_in_flight = max_in_flight
        self._clock = clock
        self._m_sent = metrics.REPLAYED.labels("sent")
        self._m_failed = metrics.REPLAYED.labels("failed")
        #: With tracing on, each record sent gets a span linked to its original trace.
        self._tracer = tracing.tracer()

    async def replay(
        self,
        letters: Iterable[DeadLetterView],
        on_done: Callable[[DeadLetterView, bool], None] | None = None,
    ) -> ReplayResult:
        """Send every letter; ``on_done(letter, ok)`` runs as each one is settled."""
        result = ReplayResult(self.replay_id)
        slots = asyncio.Semaphore(self._max_in_flight)
        began = self._clock()
        pending: set[asyncio.Task[None]] = set()
        for letter in letters:
            while self._bucket is not None and (wait := self._bucket.try_acquire()) > 0:
                result.rate_waits += 1
                result.rate_waited_s += wait
                await asyncio.sleep(wait)
            await slots.acquire()
            task = asyncio.create_task(self._send_one(letter, result, on_done))
            task.add_done_callback(lambda _t: slots.release())
            pending.add(task)
            task.add_done_callback(pending.discard)
        if pending:
            await asyncio.gather(*pending)
        result.elapsed_s = self._clock() - began
        return result

    async def _send_one(
        self,
        letter: DeadLetterView,
        result: ReplayResult,
        on_done: Callable[[DeadLetterView, bool], None] | None,
    ) -> None:
        span = None
        try:
            record = letter.replay_record(self.replay_id)
            if self._tracer is not None:
                span, record = tracing.start_linked_send(
                    self._tracer,
                    record,
                    {
                        "switchboard.replay_id": self.replay_id,
                        "switchboard.replay_of": letter.pointer,
                    },
                )
            delivered = await self._producer.send(record)
            if span is not None:
                span.set_attribute(tracing.PARTITION, str(delivered.partition()))
                span.set_attribute(tracing.OFFSET, int(delivered.offset() or 0))
            # The ledger entry follows the delivery: a crash in between replays this record
            # again next time, and the workers skip it if that replay answered it meanwhile.
            entry = {
                "replay_id": self.replay_id,
                "replayed_at_ms": now_ms(),
                "request_id": letter.request_id,
                "sent_to": pointer(
                    str(delivered.topic()),
                    int(delivered.partition() or 0),
                    int(delivered.offset() or 0),
                ),
            }
            await self._producer.send(
                Outbound(self._ledger, json.dumps(entry).encode(), letter.pointer.encode())
            )
        except (KafkaException, ConfigError) as exc:  # DeliveryError is a KafkaException
            result.failed.append((letter, str(exc)))
            self._m_failed.inc()
            ok = False
            if span is not None:
                span.record_exception(exc)
                span.set_status(tracing.Status(tracing.StatusCode.ERROR, str(exc)))
        else:
            result.sent.append(letter)
            self._m_sent.inc()
            ok = True
        finally:
            if span is not None:
                span.end()
        if on_done is not None:
            on_done(letter, ok)
