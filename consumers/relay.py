"""The retry relay: holds each retry record until it is due, then sends it back to its origin.

Every record waits in its own task (``asyncio.sleep``), never in the poll loop: other records
keep flowing, and when too many wait at once the runtime pauses the partition, so the rest wait
in Kafka rather than in memory. A record is never sent back before its due time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from typing import Any, Final

from consumers.outcomes import now_ms
from consumers.runtime import Context, Record
from switchboard.core import headers as h
from switchboard.core.aio_producer import Outbound
from switchboard.core.errors import PermanentError
from switchboard.core.topics import Topics

_RELAY_ONLY = frozenset({h.RETRY_DUE_MS, h.RETRY_ORIGIN_TOPIC})
#: How much of a bad origin header a dead letter's reason quotes.
ORIGIN_QUOTE_CHARS: Final = 300


class RetryRelay:
    """The handler of the relay group, over every retry tier topic.

    A retry record with no usable origin raises ``PermanentError``: the runtime's failure
    strategy dead-letters it (and answers ``failed`` when its request id header survived).
    """

    def __init__(self, topics: Topics) -> None:
        self.relayed = 0
        # Where a retry may go back to: the topics that send retries (a batch task's retry goes
        # back to the batch topic, so it keeps its priority). Anything else in the header (a
        # DLQ, a retry tier, a topic of another pipeline, an illegal name) is poison.
        self._origins = frozenset({topics.requests, *topics.all_task_topics()})

    def handle(
        self, msg: Record, _ctx: Context
    ) -> Sequence[Outbound] | Awaitable[Sequence[Outbound]]:
        """The record back to its origin: at once when due, else after a wait in its own task."""
        headers = h.header_pairs(msg.headers())
        origin = h.header_value(headers, h.RETRY_ORIGIN_TOPIC)
        if not origin:
            raise PermanentError("retry record has no origin topic header")
        if origin not in self._origins:
            raise PermanentError(
                f"retry record's origin topic {origin[:ORIGIN_QUOTE_CHARS]!r} is not this "
                "pipeline's requests or tasks topic"
            )
        try:
            due_ms = int(h.header_value(headers, h.RETRY_DUE_MS) or 0)
        except ValueError:
            due_ms = 0  # a mangled due time: send it back now rather than never
        wait_ms = due_ms - now_ms()
        if wait_ms > 0:
            return self._after(wait_ms / 1000, msg, origin, headers)
        return self._send_back(msg, origin, headers)

    async def _after(
        self, wait_s: float, msg: Record, origin: str, headers: list[tuple[str, Any]]
    ) -> Sequence[Outbound]:
        await asyncio.sleep(wait_s)
        return self._send_back(msg, origin, headers)

    def _send_back(
        self, msg: Record, origin: str, headers: list[tuple[str, Any]]
    ) -> list[Outbound]:
        self.relayed += 1
        kept = [(k, v) for k, v in headers if k not in _RELAY_ONLY]
        return [Outbound(origin, msg.value() or b"", msg.key(), kept)]
