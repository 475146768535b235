"""Proposed production changes, applied as patches inside benchmark stage processes only.

The harness never edits production code. To measure what a proposed change would gain, a run
applies one of these to Switchboard's classes in its own stage processes
(``python -m benchmarks --quick --only G1,G2,G5 --patch loop-delivery``) and writes
``results/patched-<name>.json``; ``README.md`` here gives the exact production diff for each.

- ``loop-delivery``: ``AsyncProducer`` serves delivery reports on the event loop
  (``poll(0)`` from a loop timer while sends are pending) instead of a poller thread that hands
  every report over with ``call_soon_threadsafe`` (a GIL hand-off and a self-pipe write per
  record).
- ``single-send``: ``AsyncProducer.send_all`` awaits the one future directly when there is one
  record (every router and worker output), instead of ``asyncio.gather``.
- ``batched-offsets``: ``ConsumerRuntime._complete`` marks the partition dirty and one
  ``call_soon`` stores the committable offsets of every dirty partition per loop turn, instead
  of a ``store_offsets`` call (and a ``TopicPartition``) per record. Commit order is unchanged:
  only offsets whose outputs are delivered are ever stored.
- ``poll-first``: the runtime's fetch is ``poll(timeout)`` (returns on the first record) then
  ``consume(n - 1, 0)`` (what is already there), instead of ``consume(n, timeout)``, which waits
  the whole timeout unless ``n`` records arrive: up to 50 ms per hop at low rates.
- ``prefetch-2x``: a partition is paused at twice its share of the in-flight cap (the second
  half waits on the runtime's semaphore, already fetched) and resumed at its share, instead of
  paused at its share and resumed at half of it: when a wave of slow calls completes, the next
  wave starts from memory instead of after a resume, a refetch (pausing drops librdkafka's
  prefetched records) and a consume timeout.
- ``all``: every patch above.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import Any

from confluent_kafka import KafkaException, Message, TopicPartition


def loop_delivery() -> None:
    from switchboard import aio_producer as ap

    def __init__(self: Any, config: dict[str, Any]) -> None:
        self._producer = ap.Producer(config)  # resolved now: the flush-counting subclass too
        self._running = True
        self._pending = 0
        self._timer: asyncio.TimerHandle | None = None

        class _NoThread:
            def join(self, timeout: float | None = None) -> None:
                return None

        self._poller = _NoThread()

    def _serve(self: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._producer.poll(0)
        self._timer = loop.call_later(0.001, _serve, self, loop) if self._pending else None

    def send(self: Any, record: Any) -> asyncio.Future[Message]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Message] = loop.create_future()

        def on_delivery(err: Any, msg: Message) -> None:
            # Runs on the loop thread, inside _serve's poll(0): no hand-off needed.
            self._pending -= 1
            if future.done():
                return
            if err is not None:
                future.set_exception(ap.DeliveryError(err))
            else:
                future.set_result(msg)

        while True:
            try:
                self._producer.produce(record.topic, record.value, record.key,
                                       headers=list(record.headers) or None,
                                       on_delivery=on_delivery)  # fmt: skip
                break
            except BufferError:
                self._producer.poll(0.05)
        self._pending += 1
        if self._timer is None:
            self._timer = loop.call_later(0.001, _serve, self, loop)
        return future

    ap.AsyncProducer.__init__ = __init__  # type: ignore[method-assign]
    ap.AsyncProducer.send = send  # type: ignore[method-assign]


def single_send() -> None:
    from switchboard import aio_producer as ap

    original = ap.AsyncProducer.send_all

    async def send_all(self: Any, records: Sequence[Any]) -> list[Message]:
        if len(records) == 1:
            return [await self.send(records[0])]
        return await original(self, records)

    ap.AsyncProducer.send_all = send_all  # type: ignore[method-assign]


def batched_offsets() -> None:
    from consumers.runtime import loop as rt

    def _store_dirty(self: Any) -> None:
        dirty, self._bench_dirty = self._bench_dirty, set()
        offsets = []
        for tp in dirty:
            ctx = self._parts.get(tp)
            if ctx is None or ctx.revoked:
                continue
            offset = ctx.tracker.committable_offset()
            if offset is not None:
                offsets.append(TopicPartition(tp[0], tp[1], offset))
        if offsets and self._consumer is not None:
            # Commit order: every stored offset's outputs, and all earlier ones', are delivered.
            # A KafkaException means revoked under us: the revoke path commits.
            with contextlib.suppress(KafkaException):
                self._consumer.store_offsets(offsets=offsets)

    def _complete(self: Any, msg: Message, ctx: Any) -> None:
        ctx.tracker.finish(msg.offset())
        self.stats.completed += 1
        self._m_records.inc()
        dirty = self.__dict__.setdefault("_bench_dirty", set())
        if not dirty:
            asyncio.get_running_loop().call_soon(_store_dirty, self)
        dirty.add((ctx.topic, ctx.partition))
        if ctx.paused and not ctx.revoked and ctx.tracker.outstanding <= self._share() // 2:
            self._set_paused(ctx, False)

    rt.ConsumerRuntime._complete = _complete  # type: ignore[method-assign]


def poll_first() -> None:
    from consumers.runtime import loop as rt

    original = rt.ConsumerRuntime._in_poll_thread

    async def _in_poll_thread(self: Any, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        if getattr(fn, "__name__", "") != "consume":
            return await original(self, fn, *args, **kw)
        consumer = fn.__self__
        want, timeout = args

        def fetch() -> list[Message]:
            first = consumer.poll(timeout)
            if first is None:
                return []
            return [first, *consumer.consume(want - 1, 0)] if want > 1 else [first]

        return await original(self, fetch)

    rt.ConsumerRuntime._in_poll_thread = _in_poll_thread  # type: ignore[method-assign]


def prefetch_2x() -> None:
    from consumers.runtime import loop as rt

    def _share(self: Any) -> int:
        return max(1, 2 * self.config.concurrency // max(1, len(self._parts)))

    rt.ConsumerRuntime._share = _share  # type: ignore[method-assign]


PATCHES: dict[str, Callable[[], None]] = {
    "prefetch-2x": prefetch_2x,
    "loop-delivery": loop_delivery,
    "single-send": single_send,
    "batched-offsets": batched_offsets,
    "poll-first": poll_first,
}


def apply(names: str) -> None:
    """Apply ``names`` (comma-separated, or ``all``)."""
    chosen = list(PATCHES) if names == "all" else [n.strip() for n in names.split(",")]
    for name in chosen:
        PATCHES[name]()
