"""The in-flight cap: a counting semaphore that stays O(1) with thousands of waiters."""

from __future__ import annotations

from consumers.runtime.waiters import FifoWaiters


class Slots:
    """``limit`` slots; ``acquire`` waits in FIFO order, ``release`` hands a slot over."""

    __slots__ = ("_free", "_waiters")

    def __init__(self, limit: int) -> None:
        self._free = limit
        self._waiters = FifoWaiters()

    @property
    def free(self) -> int:
        return self._free

    async def acquire(self) -> None:
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return
        await self._waiters.wait(self.release)  # handed a slot just as we were cancelled

    def release(self) -> None:
        if not self._waiters.wake_next():  # the slot goes straight to the next waiter
            self._free += 1

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, *_exc: object) -> None:
        self.release()
