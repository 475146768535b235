"""The in-flight cap: a counting semaphore that stays O(1) with thousands of waiters.

Python 3.11's ``asyncio.Semaphore.acquire`` scans every waiter (``locked()``) on each call,
which turns quadratic when a worker queues a thousand fetched records behind its cap.
"""

from __future__ import annotations

import asyncio
from collections import deque


class Slots:
    """``limit`` slots; ``acquire`` waits in FIFO order, ``release`` hands a slot over."""

    __slots__ = ("_free", "_waiters")

    def __init__(self, limit: int) -> None:
        self._free = limit
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def free(self) -> int:
        return self._free

    async def acquire(self) -> None:
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed a slot just as we were cancelled: pass it on
            raise

    def release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot goes straight to the next waiter
                return
        self._free += 1

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, *_exc: object) -> None:
        self.release()
