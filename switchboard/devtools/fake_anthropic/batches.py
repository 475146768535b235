"""Message Batches held by the fake: in progress for a set time, then ended with results."""

from __future__ import annotations

import secrets
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

EXPIRY_S: Final = 24 * 3600.0


@dataclass
class Batch:
    """One batch; ``results`` (the JSON lines of the results file) exist once it has ended.

    ``claimed`` marks a batch whose results are being made, so no two threads make (and
    bill) them twice.
    """

    id: str
    requests: list[dict[str, Any]]
    created_at: float
    ends_at: float
    cancel_initiated_at: float | None = None
    ended_at: float | None = None
    results: list[dict[str, Any]] | None = None
    claimed: bool = False

    @property
    def processing_status(self) -> str:
        if self.ended_at is not None:
            return "ended"
        return "in_progress" if self.cancel_initiated_at is None else "canceling"

    def to_json(self, origin: str) -> dict[str, Any]:
        """The MessageBatch object; ``results_url`` is absolute, on the origin the client used."""
        counts = dict.fromkeys(("processing", "succeeded", "errored", "canceled", "expired"), 0)
        if self.results is None:
            counts["processing"] = len(self.requests)
        else:
            counts.update(Counter(line["result"]["type"] for line in self.results))
        return {
            "id": self.id,
            "type": "message_batch",
            "processing_status": self.processing_status,
            "request_counts": counts,
            "created_at": rfc3339(self.created_at),
            "expires_at": rfc3339(self.created_at + EXPIRY_S),
            "ended_at": rfc3339(self.ended_at) if self.ended_at is not None else None,
            "cancel_initiated_at": (
                rfc3339(self.cancel_initiated_at) if self.cancel_initiated_at else None
            ),
            "archived_at": None,
            "results_url": (
                f"{origin}/v1/messages/batches/{self.id}/results"
                if self.results is not None
                else None
            ),
        }


class BatchStore:
    """Batches by id, newest first when listed. Not thread-safe: the owner holds a lock."""

    def __init__(self) -> None:
        self._batches: dict[str, Batch] = {}

    def add(self, requests: list[dict[str, Any]], *, now: float, processing_s: float) -> Batch:
        batch = Batch("msgbatch_fake_" + secrets.token_hex(12), requests, now, now + processing_s)
        self._batches[batch.id] = batch
        return batch

    def get(self, batch_id: str) -> Batch | None:
        return self._batches.get(batch_id)

    def delete(self, batch_id: str) -> None:
        del self._batches[batch_id]

    def clear(self) -> None:
        self._batches.clear()

    def claim_due(self, now: float) -> list[Batch]:
        """Claim the batches that should end now: their time is up, or a cancel was asked for."""
        due = [
            batch
            for batch in self._batches.values()
            if not batch.claimed and (now >= batch.ends_at or batch.cancel_initiated_at)
        ]
        for batch in due:
            batch.claimed = True
        return due

    def page(
        self, *, limit: int, after_id: str | None, before_id: str | None
    ) -> tuple[list[Batch], bool]:
        """One page of the newest-first list, and whether more lie beyond it."""
        newest_first = list(reversed(self._batches.values()))
        ids = [batch.id for batch in newest_first]
        if before_id is not None and before_id in ids:
            end = ids.index(before_id)
            start = max(0, end - limit)
            return newest_first[start:end], start > 0
        start = ids.index(after_id) + 1 if after_id is not None and after_id in ids else 0
        return newest_first[start : start + limit], start + limit < len(ids)


def rfc3339(wall: float) -> str:
    return (
        datetime.fromtimestamp(wall, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )
