"""The in-flight cap: a counting semaphore that stays O(1) with thousands of waiters.

Two priorities share one cap: a slot that frees goes to the longest-waiting interactive
record first, and to a batch record only when no interactive one waits. ``BatchGate`` adds
the batch records' own, smaller cap on top (``SWITCHBOARD_BATCH_SHARE`` of the whole).
"""

from __future__ import annotations

from consumers.runtime.waiters import FifoWaiters


class Slots:
    """``limit`` slots; ``acquire`` waits in FIFO order per priority, ``release`` hands a slot
    over (to an interactive waiter before any ``low`` one)."""

    __slots__ = ("_free", "_low", "_waiters")

    def __init__(self, limit: int) -> None:
        self._free = limit
        self._waiters = FifoWaiters()
        self._low = FifoWaiters()

    @property
    def free(self) -> int:
        return self._free

    @property
    def contended(self) -> bool:
        """Whether an interactive (not ``low``) acquirer is waiting for a slot."""
        return bool(self._waiters)

    async def acquire(self, *, low: bool = False) -> None:
        if low:
            if self._free > 0 and not self._waiters and not self._low:
                self._free -= 1
                return
            await self._low.wait(self.release)
            return
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return
        await self._waiters.wait(self.release)  # handed a slot just as we were cancelled

    def release(self) -> None:
        # The slot goes straight to the next waiter: interactive first, batch only if none.
        if not self._waiters.wake_next() and not self._low.wake_next():
            self._free += 1

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, *_exc: object) -> None:
        self.release()


class BatchGate:
    """A batch record's way into the cap: one of ``batch`` own slots (its share), then a
    low-priority slot of the ``shared`` cap. At most ``batch``'s limit of batch records hold
    or wait for shared slots, and none takes a shared slot an interactive record waits for."""

    __slots__ = ("_batch", "_shared")

    def __init__(self, batch: Slots, shared: Slots) -> None:
        self._batch = batch
        self._shared = shared

    async def __aenter__(self) -> None:
        await self._batch.acquire()
        try:
            await self._shared.acquire(low=True)
        except BaseException:
            self._batch.release()
            raise

    async def __aexit__(self, *_exc: object) -> None:
        self._shared.release()
        self._batch.release()
