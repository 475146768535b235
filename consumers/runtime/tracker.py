"""Out-of-order completion, in-order commit: which offset of a partition is safe to commit."""

from __future__ import annotations

from collections import deque


class PartitionTracker:
    """Offsets of one partition that were handed out, and which of them are done.

    Offsets arrive in increasing order; they complete in any order. The committable offset is
    one past the highest offset below which everything is done, so a crash never skips an
    unfinished record (records after it are redone instead, and deduplicated downstream).
    """

    __slots__ = ("_done", "_next_commit", "_started")

    def __init__(self) -> None:
        self._started: deque[int] = deque()
        self._done: set[int] = set()
        self._next_commit: int | None = None

    def start(self, offset: int) -> None:
        self._started.append(offset)

    def finish(self, offset: int) -> None:
        self._done.add(offset)

    @property
    def outstanding(self) -> int:
        """Records handed out and not yet done."""
        return len(self._started) - len(self._done)

    def committable_offset(self) -> int | None:
        """The offset to commit now (last contiguous done + 1), or None if nothing new."""
        advanced = False
        while self._started and self._started[0] in self._done:
            offset = self._started.popleft()
            self._done.discard(offset)
            self._next_commit = offset + 1
            advanced = True
        return self._next_commit if advanced else None

    @property
    def last_committable(self) -> int | None:
        return self._next_commit
