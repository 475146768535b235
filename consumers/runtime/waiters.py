"""A FIFO queue of waiters that stays O(1) with thousands of them: the in-flight cap's and the
AIMD limiter's.

Python 3.11's ``asyncio.Semaphore.acquire`` scans every waiter (``locked()``) on each call,
which turns quadratic when a worker queues a thousand fetched records behind its cap. Here a
waiter cancelled while queued stays in the queue, marked done, and is skipped when reached.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable


class FifoWaiters:
    """Waiters served first come, first served; the owner decides when one may go."""

    __slots__ = ("_queue",)

    def __init__(self) -> None:
        self._queue: deque[asyncio.Future[None]] = deque()

    def __bool__(self) -> bool:
        """Whether anyone is still waiting (cancelled waiters at the head are dropped)."""
        queue = self._queue
        while queue and queue[0].done():
            queue.popleft()
        return bool(queue)

    def __len__(self) -> int:
        """How many are waiting (an O(n) count: for reading, not for deciding)."""
        return sum(1 for waiter in self._queue if not waiter.done())

    async def wait(self, hand_back: Callable[[], None]) -> None:
        """Wait until ``wake_next`` picks this waiter. ``hand_back`` runs when it was picked
        but cancelled before it could resume: whatever it was handed goes to the next one."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                hand_back()
            raise

    def wake_next(self) -> bool:
        """Let the longest waiter go; False when nobody waits."""
        queue = self._queue
        while queue:
            waiter = queue.popleft()
            if not waiter.done():  # skip the ones cancelled while waiting
                waiter.set_result(None)
                return True
        return False
