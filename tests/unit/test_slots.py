"""The in-flight cap: never more than ``limit`` holders, FIFO hand-over, cancellation-safe."""

from __future__ import annotations

import asyncio

from consumers.runtime.slots import Slots
from tests.support import most_at_once


def test_never_more_than_the_limit_and_everyone_gets_a_turn() -> None:
    async def main() -> tuple[int, list[int]]:
        slots = Slots(3)
        order: list[int] = []
        high = await most_at_once(slots, 50, hold_s=0.001, inside=order.append)
        assert slots.free == 3
        return high, order

    high, order = asyncio.run(main())
    assert high == 3
    assert order == list(range(50))  # FIFO


def test_a_cancelled_waiter_does_not_leak_a_slot() -> None:
    async def main() -> int:
        slots = Slots(1)
        await slots.acquire()
        waiter = asyncio.create_task(slots.acquire())
        await asyncio.sleep(0)
        slots.release()  # hands the slot to the waiter ...
        waiter.cancel()  # ... which is cancelled before it runs
        await asyncio.gather(waiter, return_exceptions=True)
        return slots.free

    assert asyncio.run(main()) == 1
