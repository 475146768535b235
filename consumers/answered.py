"""The answered-request index: how a redelivered request is never answered (or billed) twice.

Mechanism: the response topic is the ledger. A request is answered iff a response keyed by its
request id exists there. Each process follows the response topic (all partitions, from
``now - window``) into a map of request ids, and before handling a record of a partition it
waits for a barrier: every response that existed when that partition was assigned has been
read. A previous owner's responses were delivered before it lost the partition (or before it
died), so they are in the log by then, and the redelivered request is recognised and skipped.

Trade-offs (vs Kafka transactions): no read_committed needed by clients and no transaction held
across slow calls; the cost is one tail consumer per process reading response keys (values are
not decoded), and a dedup horizon of ``window`` (older duplicates are answered again).
Requests in flight inside this process are deduplicated by ``claim``.

DLQ replay: a dead-lettered request already has its ``failed`` response, so a replayed record
(``sb-replay-id``) is skipped only when a response of another status exists, read from the
``sb-status`` header (a response without it counts as answered for ordinary records and as not
settled for replays: the replay tool checked the decoded responses before sending).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Final

from consumers.runtime.message import Record
from switchboard.core.headers import STATUS, header_value
from switchboard.core.status import ResponseStatus
from switchboard.core.tail import TopicTail

#: How often the tail thread forgets answers older than the dedup window.
PRUNE_EVERY_S: Final = 60.0


class AnsweredLedger:
    """Request ids that already have a terminal response, plus the ones in flight here: every
    decision of the index, without the tail that feeds it (unit tests use it as it is; it is
    always "synced": nothing exists that it has not seen)."""

    def __init__(self, window_s: float, *, wall_ms: Callable[[], int] | None = None) -> None:
        self._window_ms = int(window_s * 1000)
        self._wall_ms = wall_ms or _wall_ms
        self._answered: dict[str, int] = {}
        #: Ids with a response of a known status other than ``failed``: a replay cannot help.
        self._settled: set[str] = set()
        self._in_flight: dict[str, asyncio.Future[None]] = {}

    def record_response(self, key: bytes | None, timestamp_ms: int, status: str | None) -> None:
        """A response read from the ledger: keyed by request id, with its ``sb-status``."""
        if key:
            request_id = key.decode("utf-8", "replace")
            self._answered[request_id] = timestamp_ms
            if status is not None and status != ResponseStatus.FAILED:
                self._settled.add(request_id)

    def mark_answered(self, request_id: str, *, failed: bool = False) -> None:
        """Record our own delivered response at once (the tail will see it later too)."""
        self._answered[request_id] = self._wall_ms()
        if not failed:
            self._settled.add(request_id)

    def is_answered(self, request_id: str, *, replay: bool = False) -> bool:
        """Whether to skip the record: any response, or for a ``replay`` one not ``failed``."""
        return request_id in (self._settled if replay else self._answered)

    def busy(self, request_id: str) -> bool:
        """True while ``request_id`` is claimed (in flight) in this process."""
        return request_id in self._in_flight

    def synced(self, since: float) -> bool:
        """True when every response that existed at monotonic time ``since`` has been read."""
        return True

    async def sync(self, since: float) -> None:
        """Wait until every response that existed at monotonic time ``since`` has been read."""

    async def claim(self, request_id: str, *, replay: bool = False) -> bool:
        """Claim ``request_id`` for handling here; False if it is answered or a duplicate.

        A duplicate that arrives while the original is in flight waits for it to finish, so
        the caller can then skip it without racing the original's response.
        """
        while (running := self._in_flight.get(request_id)) is not None:
            await asyncio.shield(running)
        return self.try_claim(request_id, replay=replay)

    def try_claim(self, request_id: str, *, replay: bool = False) -> bool:
        """``claim`` when ``request_id`` is not in flight here (the caller checked ``busy``)."""
        if self.is_answered(request_id, replay=replay):
            return False
        self._in_flight[request_id] = asyncio.get_running_loop().create_future()
        return True

    def release(self, request_id: str, *, answered: bool, failed: bool = False) -> None:
        """End a claim: ``answered`` when its terminal response was delivered (``failed``: it
        was a ``failed`` one, which a DLQ replay may still supersede)."""
        if answered:
            self.mark_answered(request_id, failed=failed)
        future = self._in_flight.pop(request_id, None)
        if future is not None and not future.done():
            future.set_result(None)

    def prune(self) -> int:
        """Forget answers older than the window; returns how many were dropped."""
        horizon = self._wall_ms() - self._window_ms
        # A snapshot: the event loop may add answers while the tail thread prunes.
        old = [rid for rid, ts in list(self._answered.items()) if ts < horizon]
        for rid in old:
            self._answered.pop(rid, None)
            self._settled.discard(rid)
        return len(old)


class AnsweredIndex(AnsweredLedger):
    """The ledger, fed by a tail of the response topic, with the assignment barrier."""

    def __init__(self, config: dict[str, Any], responses_topic: str, window_s: float) -> None:
        super().__init__(window_s)
        self._synced_at = 0.0
        self._pending_sync: tuple[float, asyncio.Future[None]] | None = None
        self._next_prune = time.monotonic() + PRUNE_EVERY_S
        since = self._wall_ms() - self._window_ms
        self._tail = TopicTail(
            config, responses_topic, self._on_response, since_ms=since, name="answered-index"
        )

    def _on_response(self, msg: Record) -> None:
        self.record_response(msg.key(), msg.timestamp()[1], header_value(msg.headers(), STATUS))
        if time.monotonic() >= self._next_prune:  # keeps memory to one window of answers
            self._next_prune = time.monotonic() + PRUNE_EVERY_S
            self.prune()

    def synced(self, since: float) -> bool:
        return self._synced_at >= since

    async def sync(self, since: float) -> None:
        if self._synced_at >= since:
            return
        pending = self._pending_sync
        if pending is None or pending[0] < since:
            started = time.monotonic()
            future = asyncio.wrap_future(self._tail.barrier())
            pending = (started, future)
            self._pending_sync = pending
        await asyncio.shield(pending[1])
        self._synced_at = max(self._synced_at, pending[0])

    def close(self) -> None:
        self._tail.stop()


def _wall_ms() -> int:
    return int(time.time() * 1000)
