"""The in-flight cap: never more than ``limit`` holders, FIFO hand-over, cancellation-safe."""

from __future__ import annotations

import asyncio

from consumers.runtime.slots import Slots


def test_never_more_than_the_limit_and_everyone_gets_a_turn() -> None:
    async def main() -> tuple[int, list[int]]:
        slots = Slots(3)
        holding = high = 0
        order: list[int] = []

        async def work(i: int) -> None:
            nonlocal holding, high
            async with slots:
                holding += 1
                high = max(high, holding)
                order.append(i)
                await asyncio.sleep(0.001)
                holding -= 1

        await asyncio.gather(*(work(i) for i in range(50)))
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
