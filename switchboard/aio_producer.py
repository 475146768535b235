"""An asyncio face on confluent-kafka's Producer: ``await send(...)`` resolves on delivery.

librdkafka batches and retries on its own threads; a small poller thread serves delivery reports
and hands each one to the event loop. Nothing on the hot path flushes.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

Headers = Sequence[tuple[str, bytes | str | None]]


@dataclass(frozen=True, slots=True)
class Outbound:
    """One record to produce: the unit every handler returns and the runtime delivers."""

    topic: str
    value: bytes
    key: bytes | None = None
    headers: Headers = field(default_factory=tuple)


class DeliveryError(KafkaException):
    """Raised when librdkafka gives up on a record (after its own retries and timeout)."""


class AsyncProducer:
    """Thread-safe async producer; one per process is enough (librdkafka multiplexes)."""

    def __init__(self, config: dict[str, Any]) -> None:
        self._producer = Producer(config)
        self._running = True
        self._poller = threading.Thread(
            target=self._poll_forever, name="producer-poll", daemon=True
        )
        self._poller.start()

    @property
    def raw(self) -> Producer:
        return self._producer

    def _poll_forever(self) -> None:
        while self._running:
            self._producer.poll(0.05)

    def send(self, record: Outbound) -> asyncio.Future[Message]:
        """Produce ``record``; the returned future resolves when the broker has acknowledged it."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Message] = loop.create_future()

        def on_delivery(err: KafkaError | None, msg: Message) -> None:
            # Runs on the poller thread: hand the outcome to the event loop.
            if err is not None:
                loop.call_soon_threadsafe(_set_exception, future, DeliveryError(err))
            else:
                loop.call_soon_threadsafe(_set_result, future, msg)

        while True:
            try:
                self._producer.produce(
                    record.topic, record.value, record.key,
                    headers=list(record.headers) or None, on_delivery=on_delivery,
                )  # fmt: skip
                return future
            except BufferError:
                # The local queue is full: let delivery reports drain it, then try again.
                self._producer.poll(0.05)

    async def send_all(self, records: Sequence[Outbound]) -> list[Message]:
        """Produce every record and wait until all are delivered (raises the first failure)."""
        if not records:
            return []
        return list(await asyncio.gather(*(self.send(r) for r in records)))

    def flush(self, timeout_s: float = 30.0) -> int:
        """Wait for everything queued; returns how many records are still undelivered."""
        return int(self._producer.flush(timeout_s))

    def close(self, timeout_s: float = 30.0) -> int:
        remaining = self.flush(timeout_s)
        self._running = False
        self._poller.join(timeout=1.0)
        return remaining


def _set_result(future: asyncio.Future[Message], msg: Message) -> None:
    if not future.done():
        future.set_result(msg)


def _set_exception(future: asyncio.Future[Message], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
