"""The FIFO waiter queue shared by the in-flight cap (``Slots``) and the AIMD limiter."""

from __future__ import annotations

import asyncio

from consumers.runtime.waiters import FifoWaiters


def test_waiters_go_in_arrival_order_and_cancelled_ones_are_skipped() -> None:
    async def scenario() -> list[str]:
        waiters = FifoWaiters()
        order: list[str] = []

        async def wait(name: str) -> None:
            await waiters.wait(lambda: order.append(f"{name} handed back"))
            order.append(name)

        tasks = {n: asyncio.ensure_future(wait(n)) for n in ("a", "b", "c")}
        await asyncio.sleep(0)
        tasks["b"].cancel()
        await asyncio.sleep(0)
        assert len(waiters) == 2 and waiters
        while waiters.wake_next():
            await asyncio.sleep(0)
        await asyncio.gather(*tasks.values(), return_exceptions=True)
        assert not waiters and not waiters.wake_next()
        return order

    assert asyncio.run(scenario()) == ["a", "c"]


def test_a_waiter_woken_then_cancelled_hands_back_what_it_was_given() -> None:
    async def scenario() -> list[str]:
        waiters = FifoWaiters()
        handed: list[str] = []
        task = asyncio.ensure_future(waiters.wait(lambda: handed.append("back")))
        await asyncio.sleep(0)
        assert waiters.wake_next()
        task.cancel()  # before it could resume
        await asyncio.gather(task, return_exceptions=True)
        return handed

    assert asyncio.run(scenario()) == ["back"]
