"""The two ledgers beside a dead-letter topic, compacted and keyed by the dead letter's pointer
(``topic/partition/offset``), with JSON values:

- ``<prefix>.dlq.replays``: records already replayed (written by ``Replayer``). A second replay
  skips them, so running the same replay twice sends nothing the second time.
- ``<prefix>.dlq.acks``: records an operator acknowledged (``dlq purge``). Kafka cannot delete
  one record, so acknowledging hides it from ``list`` and ``replay``; retention (or
  ``kafka-delete-records``) frees the space.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from consumers.outcomes import now_ms
from consumers.replay.view import DeadLetterView
from switchboard.core.aio_producer import AsyncProducer, Outbound
from switchboard.core.topics import Topics


async def acknowledge(
    producer: AsyncProducer,
    topics: Topics,
    letters: Iterable[DeadLetterView],
    *,
    reason: str | None = None,
) -> int:
    """Write each letter's pointer to the acks ledger; returns how many were written."""
    ledger = topics.dlq_acks
    at = now_ms()
    records = [
        Outbound(
            ledger,
            json.dumps(
                {
                    "acked_at_ms": at,
                    "reason": reason,
                    "request_id": letter.request_id,
                    "error_class": letter.error_class,
                }
            ).encode(),
            letter.pointer.encode(),
        )
        for letter in letters
    ]
    await producer.send_all(records)
    return len(records)


def ledger_state(
    letters: Iterable[DeadLetterView],
    acked: Mapping[str, Any],
    replayed: Mapping[str, dict[str, Any]],
) -> list[dict[str, Any]]:
    """``summary`` rows of ``letters`` with their ledger state filled in."""
    rows = []
    for letter in letters:
        entry = replayed.get(letter.pointer)
        replay_id = None if entry is None else str(entry.get("replay_id") or "unknown")
        rows.append(letter.summary(acked=letter.pointer in acked, replayed=replay_id))
    return rows
