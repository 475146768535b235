"""The consumer runtime: hundreds of slow handlers in flight, at-least-once, commit in order.

One loop serves every consumer in Switchboard. Its contract:

- records are handled concurrently (asyncio tasks, a global cap), completing in any order;
- a record's outputs (response, retry or DLQ records) are confirmed delivered before its offset
  counts as done, and an offset is committed only when every earlier offset of its partition is
  done (``PartitionTracker``), so a crash redoes work but never loses it;
- the poll loop never waits on a handler: a partition is paused when its share of the cap is
  full and resumed when it drains, so slow calls never exceed ``max.poll.interval.ms``;
- batch topics (``batch_topics``: review jobs' ``priority=BATCH`` tasks) get ``batch_share`` of
  the cap at most, take a slot only when no interactive record waits for one, and are paused
  while interactive records wait: a burst of batch work never queues ahead of interactive work;
- on revoke, in-flight work of those partitions gets ``revoke_timeout_s`` to finish, the rest is
  abandoned (its outputs are never sent), and the contiguous offsets are committed;
- on stop, fetching ends, in-flight work drains for ``drain_timeout_s``, offsets are committed.

librdkafka's consumer runs on a dedicated poll thread (it blocks); rebalance callbacks, which
librdkafka calls on that thread, hand their work to the event loop and wait for it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import inspect
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal, cast

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from consumers.runtime.message import Record, Sink
from consumers.runtime.observe import observed
from consumers.runtime.slots import BatchGate, Slots
from consumers.runtime.tracker import PartitionTracker
from switchboard.core import metrics
from switchboard.core.aio_producer import Outbound
from switchboard.core.classify import classify_kafka, kafka_access_problem
from switchboard.core.errors import ErrorClass, KafkaAccessError, ProcessStop
from switchboard.core.kafka_clients import consumer_config
from switchboard.core.settings import DEFAULTS

if TYPE_CHECKING:  # failures imports outcomes, which imports this package: types only
    from consumers.runtime.failures import FailurePath

log = logging.getLogger(__name__)

TP = tuple[str, int]

#: When the error path itself fails (it cannot write the dead letter), it is tried again after
#: this long, doubling up to the longest: the record stays uncommitted meanwhile.
ERROR_PATH_FIRST_RETRY_S: Final = 0.5
ERROR_PATH_MAX_RETRY_S: Final = 30.0
#: When delivering outputs fails transiently (librdkafka already retried for
#: ``message.timeout.ms``), the delivery is tried again after this long, doubling up to the
#: longest.
DELIVERY_FIRST_RETRY_S: Final = 0.2
DELIVERY_MAX_RETRY_S: Final = 30.0
#: How often a revoke or a shutdown checks whether fast-path records were acknowledged.
FAST_ACK_CHECK_S: Final = 0.005
#: The least time a revoke or a shutdown leaves fast-path acknowledgements, whatever is left of
#: its budget (they are in flight at the broker already).
MIN_FAST_ACK_WAIT_S: Final = 1.0
#: How much longer than ``revoke_timeout_s`` the poll thread waits on the event loop's revoke
#: handling before it gives up on committing (the work then is redone by the next owner).
REVOKE_SLACK_S: Final = 10.0
#: How long the poll thread waits on the event loop to abandon lost partitions.
LOST_TIMEOUT_S: Final = 10.0
#: Pausing: slow work may reach this many times a partition's share of the cap (the second
#: half waits in memory) and fast-path records this many batches before the partition pauses;
#: it resumes at ``SLOW_RESUME_SHARES`` and at ``FAST_RESUME_BATCHES``.
SLOW_PAUSE_SHARES: Final = 2
#: Resume halfway: the records a resume fetches must be in memory before the slots they are
#: for free up. Resuming only at one share (all that waited has started), the next records
#: were fetched just when they were due, and a fetch after a resume took up to ~0.3 s here
#: (librdkafka's fetch wait), on the critical path of every wave of slow calls: G7's
#: W=1/C=1000 cell spread each wave's starts over ~0.5 s (0.89 of C/W).
SLOW_RESUME_SHARES: Final = 1.5
#: Fast-path records wait only for their acknowledgements, which come back behind the
#: producer's batches and the GIL: at 4 batches (2,000 records a partition) a router draining
#: a backlog paused 9-13 times a 60k-record drain and drained 20-32k msg/s; at 8, 42-45k
#: (2026-12-02, ``benchmarks.capacity.drain``, router hop); at 8 with the reports also served
#: between batches (``AsyncProducer.serve_reports``), 3 pauses and 83-87k msg/s. Memory bounds
#: it: ~1 KB a record (the consumed message and its outputs), ~4 MB a partition at the pause.
FAST_PAUSE_BATCHES: Final = 8
FAST_RESUME_BATCHES: Final = 4
#: Runtime tuning without a setting of its own.
DEFAULT_REVOKE_TIMEOUT_S: Final = 10.0
DEFAULT_BATCH_SIZE: Final = 500
DEFAULT_POLL_TIMEOUT_S: Final = 0.05
#: The longest a batch fetched after an assignment waits for the runtime's ``ready`` (the
#: answered index's barrier): far below ``max.poll.interval.ms`` (no poll meanwhile), and past
#: it the handlers wait per record as they would without the gate (a rebuild of a long horizon).
READY_WAIT_S: Final = 1.0


@dataclass(frozen=True)
class RuntimeConfig:
    """How one consumer group member runs."""

    topics: Sequence[str]
    group_id: str
    kafka: dict[str, Any]
    #: Records handled at once by this process, across all its partitions.
    concurrency: int = DEFAULTS.concurrency
    #: "unordered": any record may start at any time; "key": records with the same key run in
    #: the order they were read (different keys still run concurrently).
    ordering: Literal["unordered", "key"] = "unordered"
    drain_timeout_s: float = DEFAULTS.drain_timeout_s
    revoke_timeout_s: float = DEFAULT_REVOKE_TIMEOUT_S
    batch_size: int = DEFAULT_BATCH_SIZE
    poll_timeout_s: float = DEFAULT_POLL_TIMEOUT_S
    consumer_overrides: dict[str, Any] = field(default_factory=dict)
    #: Topics of batch-priority work (a worker's ``<prefix>.tasks.<specialist>.batch``): their
    #: records hold at most ``batch_share`` of ``concurrency`` and yield slots to the rest.
    batch_topics: frozenset[str] = frozenset()
    batch_share: float = DEFAULTS.batch_share


@dataclass
class Context:
    """What a handler knows about the partition a record came from."""

    topic: str
    partition: int
    assigned_at: float
    tracker: PartitionTracker = field(default_factory=PartitionTracker)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    paused: bool = False
    revoked: bool = False
    #: Fast-path records whose outputs are produced but not yet acknowledged.
    fast_pending: int = 0
    #: Completed offsets not yet stored (set by _complete, cleared once per loop turn).
    dirty: bool = False
    #: A batch-priority partition (one of ``RuntimeConfig.batch_topics``).
    batch: bool = False


@dataclass(frozen=True, slots=True)
class StoreOffsets:
    """Store these committable offsets (librdkafka commits what is stored)."""

    stores: list[tuple[Context, int]]


@dataclass(frozen=True, slots=True)
class Pause:
    """Stop fetching ``ctx``'s partition."""

    ctx: Context


@dataclass(frozen=True, slots=True)
class Resume:
    """Fetch ``ctx``'s partition again."""

    ctx: Context


#: What the event loop asks the poll thread to do with the consumer, in order.
ConsumerOp = StoreOffsets | Pause | Resume


@dataclass
class RunStats:
    received: int = 0
    completed: int = 0
    #: Handlers that raised an unexpected exception (a bug): dead-lettered by the strategy.
    handler_errors: int = 0
    #: Handlers that raised a typed failure: retried, dead-lettered or expired by the strategy.
    failures: int = 0
    delivery_retries: int = 0
    abandoned: int = 0
    not_started: int = 0
    rebalances: int = 0
    max_in_flight: int = 0
    #: The most batch-priority records handled at once (at most the batch share of the cap).
    max_batch_in_flight: int = 0
    started_at: float = field(default_factory=time.monotonic)


#: A handler returns the records to deliver, or an awaitable of them when it must wait on
#: something (a model call, a barrier). Returning them directly takes the fast path.
#: A failure is raised, never returned: the runtime's failure strategy writes what it calls for.
Handler = Callable[[Record, Context], Sequence[Outbound] | Awaitable[Sequence[Outbound]]]


class ConsumerRuntime:
    """Runs ``handler`` over the records of ``config.topics`` as one member of a group."""

    def __init__(
        self,
        config: RuntimeConfig,
        handler: Handler,
        *,
        producer: Sink,
        failures: FailurePath,
        on_assign: Callable[[list[TP]], None] | None = None,
        ready: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        """``on_assign``: called on the event loop with each assignment's partitions.
        ``ready``: what the handlers wait for on a new partition's records (the answered
        index read up to the assignment), awaited once with the assignment's time before the
        first batch after it is handled (at most ``READY_WAIT_S``): the records of a batch
        fetched before it then take the fast path, not a task each waiting on the same barrier
        (and pausing the partition at twice its share of the cap)."""
        # --- tracing and log-context hook (consumers.runtime.observe): a span per record when
        # tracing is on; handler and failure path untouched (and free) when it is off.
        handler, failures = observed(handler, failures, config.group_id)
        self.config = config
        self._handler = handler
        self._failures = failures
        self._on_assign_hook = on_assign
        self._ready = ready
        #: The latest assignment ``ready`` was awaited for (monotonic; 0.0: none yet).
        self._ready_for = 0.0
        self._producer = producer
        self._parts: dict[TP, Context] = {}
        self._key_tails: dict[bytes, asyncio.Future[None]] = {}
        self._stopping = False
        self._in_flight = 0
        self.stats = RunStats()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._consumer: Consumer | None = None
        self._sem = Slots(config.concurrency)
        # Batch records' own share of the cap: why a share and not a priority queue alone is in
        # docs/review.md ("Priority"): a model call cannot be pre-empted, so interactive work
        # keeps (1 - share) of the cap free of batch calls whatever the batch backlog.
        self._batch_topics = frozenset(config.batch_topics)
        self._batch_cap = max(1, int(config.concurrency * config.batch_share))
        self._batch_gate = BatchGate(Slots(self._batch_cap), self._sem)
        self._batch_in_flight = 0
        self._n_batch = 0
        #: Batch partitions paused now (re-checked each loop turn that completes a record, so
        #: one paused only because interactive records waited resumes when they stop waiting).
        self._paused_batch: dict[TP, Context] = {}
        #: A refusal by Kafka (credentials, ACL) met while delivering, or a handler's
        #: ``ProcessStop`` (a content key this process lacks): ``run`` raises it.
        self._refused: KafkaAccessError | ProcessStop | None = None
        # One thread owns every librdkafka consumer call. confluent-kafka serialises a
        # consumer's methods against a poll() in progress, so a store_offsets or pause made on
        # the event loop would block the loop (every runtime of the process) for up to the
        # poll timeout: the loop queues them here and the poll thread runs them between polls.
        self._poll_thread = concurrent.futures.ThreadPoolExecutor(1, "consumer-poll")
        self._consumer_ops: deque[ConsumerOp] = deque()
        self._last_activity = time.monotonic()
        self._dirty: list[Context] = []
        self._store_scheduled = False
        #: Set once this member holds at least one partition (tests and the demo wait on it).
        self.assigned = asyncio.Event()
        #: When the latest assignment arrived (monotonic; 0.0 before the first).
        self.assigned_at = 0.0
        #: This member's id in its group, as of its latest assignment (read on the poll
        #: thread, where the consumer is safe to call); None before the first.
        self.member_id: str | None = None
        self._m_records = metrics.RECORDS.labels(config.group_id)
        self._m_in_flight = metrics.IN_FLIGHT.labels(config.group_id)
        self._m_paused = metrics.PAUSED.labels(config.group_id)
        self._m_rebalances = metrics.REBALANCES.labels(config.group_id)
        self._m_assigned = metrics.ASSIGNED.labels(config.group_id)

    # --- public ------------------------------------------------------------------------
    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def assignment(self) -> list[TP]:
        return sorted(self._parts)

    @property
    def contexts(self) -> list[Context]:
        """The assigned partitions' contexts (paused, in flight via ``tracker.outstanding``),
        for status reports: read them, never change them."""
        return [self._parts[tp] for tp in sorted(self._parts)]

    def request_stop(self) -> None:
        """Stop fetching, drain in-flight work, commit, close (the graceful path)."""
        self._stopping = True

    async def run(
        self, *, max_messages: int | None = None, idle_timeout: float | None = None
    ) -> RunStats:
        """Consume until stopped, or until ``max_messages`` were handled, or idle that long."""
        self._loop = asyncio.get_running_loop()
        conf = consumer_config(
            self.config.kafka, self.config.group_id, **self.config.consumer_overrides
        )
        consumer = Consumer(conf)
        self._consumer = consumer
        await self._in_poll_thread(
            consumer.subscribe,
            list(self.config.topics),
            on_assign=self._cb_assign,
            on_revoke=self._cb_revoke,
            on_lost=self._cb_lost,
        )
        prefetched: Awaitable[list[Message]] | None = None
        try:
            while not self._stopping:
                if max_messages is not None and self.stats.received >= max_messages:
                    break
                want = self.config.batch_size
                if max_messages is not None:
                    want = min(want, max_messages - self.stats.received)
                if prefetched is None:
                    prefetched = self._in_poll_thread(self._fetch, consumer, want)
                batch = await prefetched
                prefetched = None
                if (
                    batch
                    and max_messages is None
                    and not any(c.paused for c in self._parts.values())
                ):
                    # A backlog: fetch the next batch on the poll thread while this one is
                    # handled here (librdkafka's fetch and the handlers overlap). Not under
                    # backpressure: pauses reach librdkafka when a fetch starts, so a fetch
                    # started before this batch's pauses would take one more batch past them.
                    # Submitted now (not on the next loop turn, as a task would be): the
                    # poll thread fetches during this batch's handling.
                    prefetched = self._loop.run_in_executor(
                        self._poll_thread, self._fetch, consumer, want
                    )
                if batch and self._ready is not None and self._ready_for < self.assigned_at:
                    await self._await_ready()
                self._dispatch_all(batch)
                if batch:
                    # The delivery reports that are in, served here between batches: on the
                    # poller thread each report waits for the GIL this loop holds, and the
                    # acknowledgements fast-path records wait for fell behind by batches.
                    self._producer.serve_reports()
                    self._last_activity = time.monotonic()
                elif (
                    idle_timeout is not None
                    and time.monotonic() - self._last_activity >= idle_timeout
                    and not any(c.tasks or c.fast_pending for c in self._parts.values())
                ):
                    break
        finally:
            if prefetched is not None:
                # Fetched past the stop: never handled, so never committed (read again later).
                with contextlib.suppress(Exception):
                    await prefetched
            await self._shutdown()
        if self._refused is not None:
            raise self._refused
        return self.stats

    async def _await_ready(self) -> None:
        """Wait (at most ``READY_WAIT_S``) for ``ready`` of the latest assignment; once per
        assignment, whatever the outcome: the handlers still check on every record."""
        assert self._ready is not None
        since = self._ready_for = self.assigned_at
        try:
            async with asyncio.timeout(READY_WAIT_S):
                await self._ready(since)
        except TimeoutError:
            log.info(
                "%s: not ready %.1fs after its assignment; its records wait one by one",
                self.config.group_id,
                READY_WAIT_S,
            )
        except Exception as exc:  # the handlers meet it on their own wait, and decide there
            log.warning("%s: readiness after assignment failed: %s", self.config.group_id, exc)

    def _fetch(self, consumer: Consumer, want: int) -> list[Message]:
        """On the poll thread: wait for the first record only, then take what is there.

        ``consume(n, timeout)`` would wait out the whole timeout unless n records arrive,
        adding up to that much latency per hop at low rates.
        """
        self._run_consumer_ops(consumer)
        first = consumer.poll(self.config.poll_timeout_s)
        if first is None:
            return []
        if want <= 1:
            return [first]
        return [first, *consumer.consume(want - 1, 0)]

    # --- dispatch ----------------------------------------------------------------------
    def _dispatch(self, msg: Message) -> None:
        """One record, as a batch of one."""
        self._dispatch_all([msg])

    def _dispatch_all(self, batch: Sequence[Message]) -> None:
        """Hand each record of a fetched batch to the handler, in order.

        A handler that answers at once (the common case: the router, an instant backend)
        takes the fast path: no task, no slot, no future and no callback of its own; the
        outputs of every such record of the batch are produced through one
        ``DeliveryBatch``, and when all of them are acknowledged those records complete
        together (one offset store per partition on the next loop turn). Records that wait
        (or raise) become tasks, as before; in-order commits hold across both
        (``PartitionTracker``).
        """
        fast: list[tuple[Record, Context, Sequence[Outbound]]] = []
        ready: list[tuple[Record, Context, Sequence[Outbound]]] = []
        by_key = self.config.ordering == "key"
        for msg in batch:
            ctx = self._accept(msg)
            if ctx is None:
                continue
            if by_key:
                self._spawn(ctx, self._process(msg, ctx, None))
                continue
            try:
                result = self._handler(msg, ctx)
            except Exception as exc:
                self._spawn(ctx, self._process(msg, ctx, None, exc))
                continue
            # A list or tuple is by far the common answer: skip the costlier awaitable check.
            if (
                type(result) is not list
                and type(result) is not tuple
                and inspect.isawaitable(result)
            ):
                self._spawn(ctx, self._process(msg, ctx, result))
            elif not result:
                self._complete(msg, ctx)  # nothing to deliver (a duplicate)
            elif len(result) > 1:
                # A reply and its ledger copy: all or nothing, in a transaction shared with
                # other records' pairs (``send_atomic``); no task of its own, and counted with
                # the fast path's records (a revoke or a stop waits for them alike).
                pending = asyncio.ensure_future(self._producer.send_atomic(result))
                ctx.fast_pending += 1
                pending.add_done_callback(
                    functools.partial(self._atomic_delivered, msg, ctx, result)
                )
            else:
                ctx.fast_pending += 1  # counted now: _accept's bound reads it per record
                ready.append((msg, ctx, result))
        if not ready:
            return
        # The batch's outputs go to librdkafka together, after its last record is handled:
        # produced in one burst they fill one request per partition, where produced between
        # handlers they left in a request per linger interval (many small requests, the broker
        # paying per request). A record's outputs wait for the rest of its batch only.
        deliveries = self._producer.batch(functools.partial(self._fast_delivered, fast))
        for record, ctx, result in ready:
            try:
                for out in result:
                    deliveries.add(out)
            except KafkaException:
                # Refused at once (too large for the producer, an illegal topic): the slow
                # path delivers it or sends the record to the failure path.
                ctx.fast_pending -= 1
                self._spawn(ctx, self._deliver_then_complete(record, ctx, result))
                continue
            fast.append((record, ctx, result))
        deliveries.seal()

    def _accept(self, msg: Message) -> Context | None:
        """The context of a record to handle, with its offset tracked; None for an error
        event (raised when it stops the runtime) or a record of a partition no longer ours."""
        err = msg.error()
        if err is not None:
            if err.code() != KafkaError._PARTITION_EOF:
                denied = kafka_access_problem(
                    err,
                    operation="Read",
                    resource=self.config.group_id
                    if err.code() == KafkaError.GROUP_AUTHORIZATION_FAILED
                    else msg.topic() or ",".join(self.config.topics),
                )
                if denied is not None:  # every poll would be refused alike: stop, say why
                    raise KafkaAccessError(denied)
                if err.fatal():
                    raise KafkaException(err)
                log.warning("consumer error: %s", err)
            return None
        # No typing.cast on this path: a call per record (a topic, a partition and an offset
        # are never None on a record without an error).
        tp: Any = (msg.topic(), msg.partition())
        ctx = self._parts.get(tp)
        if ctx is None or ctx.revoked:
            return None  # fetched just before a revoke: the next owner reads it again
        self.stats.received += 1
        offset: Any = msg.offset()
        ctx.tracker.start(offset)
        if not ctx.paused and self._over_bound(ctx):
            self._set_paused(ctx, True)
        return ctx

    def _spawn(self, ctx: Context, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        ctx.tasks.add(task)
        task.add_done_callback(ctx.tasks.discard)

    def _share(self, batch: bool = False) -> int:
        """Each partition's share of the in-flight cap (at least one record): interactive
        partitions split the whole cap, batch partitions split the batch share."""
        if batch:
            return max(1, self._batch_cap // max(1, self._n_batch))
        return max(1, self.config.concurrency // max(1, len(self._parts) - self._n_batch))

    def _over_bound(self, ctx: Context) -> bool:
        """Pause when slow work reaches twice the partition's share (the second half waits in
        memory, so when a wave of slow calls completes the next one starts at once: pausing
        drops librdkafka's prefetched records), or when too many fast-path records await
        their acknowledgements (those are cheap: only memory bounds them). A batch partition
        also pauses while interactive records wait for a slot: its records would only wait
        behind them, in memory."""
        slow = ctx.tracker.outstanding - ctx.fast_pending
        return (
            slow >= SLOW_PAUSE_SHARES * self._share(ctx.batch)
            or ctx.fast_pending >= FAST_PAUSE_BATCHES * self.config.batch_size
            or (ctx.batch and self._sem.contended)
        )

    def _under_bound(self, ctx: Context, share: int) -> bool:
        slow = ctx.tracker.outstanding - ctx.fast_pending
        return (
            slow <= SLOW_RESUME_SHARES * share
            and ctx.fast_pending <= FAST_RESUME_BATCHES * self.config.batch_size
            and not (ctx.batch and self._sem.contended)
        )

    def _fast_delivered(
        self,
        fast: list[tuple[Record, Context, Sequence[Outbound]]],
        failed: list[tuple[KafkaError, Message]],
    ) -> None:
        """On the event loop, once every output of a batch's fast-path records is settled:
        those records complete together. A record with an output that failed (rare:
        librdkafka already retried it) is redelivered on the slow path, which retries or
        dead-letters it; its offset stays open meanwhile."""
        lost = _failed_outputs(failed)
        done = 0
        for msg, ctx, outputs in fast:
            ctx.fast_pending -= 1
            if lost is not None and (
                not lost or any((o.topic, o.key, o.value) in lost for o in outputs)
            ):
                self._spawn(ctx, self._deliver_then_complete(msg, ctx, outputs))
                continue
            offset: Any = msg.offset()
            ctx.tracker.finish(offset)
            done += 1
            if not ctx.dirty:
                ctx.dirty = True
                self._dirty.append(ctx)
        if done:
            self.stats.completed += done
            self._m_records.inc(done)
            if len(self._dirty) and not self._store_scheduled:
                self._store_scheduled = True
                asyncio.get_running_loop().call_soon(self._store_dirty)

    def _atomic_delivered(
        self,
        msg: Record,
        ctx: Context,
        outputs: Sequence[Outbound],
        pending: asyncio.Future[None],
    ) -> None:
        """A record's group of outputs is settled: the record completes, or (the group
        failed) the slow path delivers it again, retrying or taking the failure path; a
        revoked partition's record is left to its next owner."""
        ctx.fast_pending -= 1
        if pending.cancelled() or pending.exception() is not None:
            if not ctx.revoked:
                self._spawn(ctx, self._deliver_then_complete(msg, ctx, outputs))
            return
        self._complete(msg, ctx)

    async def _deliver_then_complete(
        self, msg: Record, ctx: Context, outputs: Sequence[Outbound]
    ) -> None:
        """The slow path's delivery for a record handled on the fast path: a redelivery after
        a lost or refused output (or group of outputs)."""
        await self._deliver(msg, ctx, outputs)
        self._complete(msg, ctx)

    async def _process(
        self,
        msg: Record,
        ctx: Context,
        started: Awaitable[Sequence[Outbound]] | None,
        raised: Exception | None = None,
    ) -> None:
        key_tail: asyncio.Future[None] | None = None
        key = msg.key() if self.config.ordering == "key" else None
        try:
            if key is not None:
                previous = self._key_tails.get(key)
                key_tail = asyncio.get_running_loop().create_future()
                self._key_tails[key] = key_tail
                if previous is not None:
                    await asyncio.shield(previous)
            async with self._batch_gate if ctx.batch else self._sem:
                if self._stopping or ctx.revoked:
                    # Fetched but never started: leave it to the next owner (its offset stays
                    # uncommitted). Only work already in flight is drained.
                    self.stats.not_started += 1
                    return
                self._in_flight += 1
                self._m_in_flight.inc()
                self.stats.max_in_flight = max(self.stats.max_in_flight, self._in_flight)
                if ctx.batch:
                    self._batch_in_flight += 1
                    self.stats.max_batch_in_flight = max(
                        self.stats.max_batch_in_flight, self._batch_in_flight
                    )
                try:
                    handling, started = started, None
                    outputs = await self._handle(msg, ctx, handling, raised)
                finally:
                    self._in_flight -= 1
                    self._m_in_flight.dec()
                    if ctx.batch:
                        self._batch_in_flight -= 1
            await self._deliver(msg, ctx, outputs)
        finally:
            if inspect.iscoroutine(started):
                started.close()  # cancelled or left before it ran: no "never awaited" warning
            if key_tail is not None:
                key_tail.set_result(None)
                if self._key_tails.get(key) is key_tail:  # type: ignore[arg-type]
                    del self._key_tails[key]  # type: ignore[arg-type]
        self._complete(msg, ctx)

    async def _handle(
        self,
        msg: Record,
        ctx: Context,
        started: Awaitable[Sequence[Outbound]] | None,
        raised: Exception | None,
    ) -> Sequence[Outbound]:
        try:
            if raised is not None:
                raise raised
            if started is None:
                result = self._handler(msg, ctx)
                return await result if inspect.isawaitable(result) else result
            return await started
        except asyncio.CancelledError:
            raise
        except ProcessStop as exc:
            # No record like this one can be handled here until an operator fixes this
            # process's configuration (e.g. a content key it lacks): stop, leaving the record
            # uncommitted (abandoned like one cancelled at shutdown) for a process that can.
            if self._refused is None:
                log.error("%s: stopping: %s", self.config.group_id, exc)
                self._refused = exc
            self.request_stop()
            raise asyncio.CancelledError from exc
        except Exception as exc:
            if self._failures.expected(exc):
                self.stats.failures += 1
            else:
                self.stats.handler_errors += 1
            delay = ERROR_PATH_FIRST_RETRY_S
            while True:
                try:
                    return await self._failures.resolve(msg, exc)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    # The error path itself failed (e.g. cannot encode a DLQ record): never
                    # skip the offset; keep trying, it stays uncommitted if we die.
                    log.exception("error path failed for %s", _where(msg))
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, ERROR_PATH_MAX_RETRY_S)

    async def _deliver(self, msg: Record, ctx: Context, outputs: Sequence[Outbound]) -> None:
        """Deliver ``outputs``: one record on its own; several (a reply and its ledger copy)
        all or nothing, in one Kafka transaction with other records' groups
        (``switchboard.core.atomic``), so a process killed at any point leaves both or
        neither, never the copy alone (the redelivered task would be skipped as answered and
        the caller's topic never get its reply). A retry sends the whole group again."""
        delay = DELIVERY_FIRST_RETRY_S
        replaced = False
        while True:
            try:
                if len(outputs) == 1:
                    await self._producer.send(outputs[0])
                elif outputs:
                    await self._producer.send_atomic(outputs)
                return
            except KafkaAccessError as exc:
                # Kafka refused the producer itself (its error callback said so: credentials,
                # TLS): stop with that line, the record uncommitted, as for a denied write.
                self._refused = exc
                self.request_stop()
                raise asyncio.CancelledError from exc
            except KafkaException as exc:  # DeliveryError too: a delivery report's error
                err = exc.args[0] if exc.args else None
                resource = ",".join(sorted({o.topic for o in outputs}))
                if (
                    isinstance(err, KafkaError)
                    and err.code() == KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
                ):
                    # A group's transaction (switchboard.core.atomic): the id is what to grant.
                    resource = getattr(self._producer, "transactional_id", None) or resource
                denied = (
                    kafka_access_problem(err, operation="Write", resource=resource)
                    if isinstance(err, KafkaError)
                    else None
                )
                if denied is not None:
                    # Every record would be refused alike: stop the runtime with that line;
                    # this record is abandoned like one cancelled at shutdown (never completed,
                    # so its offset stays uncommitted and it waits in Kafka for the fix).
                    self._refused = KafkaAccessError(denied)
                    self.request_stop()
                    raise asyncio.CancelledError from exc
                permanent = classify_kafka(exc).error_class is ErrorClass.PERMANENT
                if permanent and not replaced:
                    # This output can never be written (too large, illegal topic): the record
                    # takes the error path instead (DLQ and a failed answer), once.
                    replaced = True
                    outputs = await self._failures.resolve(msg, exc)
                    continue
                # Transient (librdkafka already retried for message.timeout.ms: the cluster is
                # in trouble), or the error path's own output failed too. Keep the offset open
                # and try again: nothing is committed past this record, and lag shows it.
                self.stats.delivery_retries += 1
                log.warning(
                    "delivery for %s failed (%s); retrying in %.1fs", _where(msg), exc, delay
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, DELIVERY_MAX_RETRY_S)

    def _complete(self, msg: Record, ctx: Context) -> None:
        ctx.tracker.finish(cast(int, msg.offset()))
        self.stats.completed += 1
        self._m_records.inc()
        if not ctx.dirty:
            ctx.dirty = True
            self._dirty.append(ctx)
        if not self._store_scheduled:
            self._store_scheduled = True
            asyncio.get_running_loop().call_soon(self._store_dirty)

    def _store_dirty(self) -> None:
        """Once per loop turn: store the committable offset of every partition that moved."""
        self._store_scheduled = False
        dirty, self._dirty = self._dirty, []
        stores: list[tuple[Context, int]] = []
        share = self._share()
        for ctx in dirty:
            ctx.dirty = False
            if ctx.revoked:
                continue  # the revoke path commits what is contiguous
            offset = ctx.tracker.committable_offset()
            if offset is not None:
                stores.append((ctx, offset))
            if ctx.paused and not ctx.batch and self._under_bound(ctx, share):
                self._set_paused(ctx, False)
        if self._paused_batch:
            # Every paused batch partition, not only those that moved: one paused while
            # interactive records waited may have nothing of its own left to complete.
            batch_share = self._share(batch=True)
            for ctx in list(self._paused_batch.values()):
                if not ctx.revoked and self._under_bound(ctx, batch_share):
                    self._set_paused(ctx, False)
        if stores:
            # Commit order: each stored offset's outputs, and every earlier offset's, are
            # delivered; librdkafka commits what is stored.
            self._consumer_ops.append(StoreOffsets(stores))

    def _set_paused(self, ctx: Context, paused: bool) -> None:
        """Pause or resume ``ctx``'s partition (done on the poll thread before its next poll)."""
        if self._consumer is None or ctx.paused == paused:
            return
        ctx.paused = paused
        if paused:
            self._m_paused.inc()
        else:
            self._m_paused.dec()
        if ctx.batch:
            tp = (ctx.topic, ctx.partition)
            if paused:
                self._paused_batch[tp] = ctx
            elif self._paused_batch.get(tp) is ctx:
                del self._paused_batch[tp]
        self._consumer_ops.append(Pause(ctx) if paused else Resume(ctx))

    def _run_consumer_ops(self, consumer: Consumer) -> None:
        """On the poll thread: the stores, pauses and resumes the event loop asked for, in
        order. A partition revoked meanwhile is skipped: the revoke path committed it, and a
        stale store must not move a later owner's (or a new assignment's) offset back."""
        ops = self._consumer_ops
        while ops:
            op = ops.popleft()
            try:
                match op:
                    case StoreOffsets(stores):
                        offsets = [
                            TopicPartition(ctx.topic, ctx.partition, offset)
                            for ctx, offset in stores
                            if not ctx.revoked
                        ]
                        if offsets:
                            consumer.store_offsets(offsets=offsets)
                    case Pause(ctx) if not ctx.revoked:
                        consumer.pause([TopicPartition(ctx.topic, ctx.partition)])
                    case Resume(ctx) if not ctx.revoked:
                        consumer.resume([TopicPartition(ctx.topic, ctx.partition)])
            except KafkaException as exc:  # revoked under us: the revoke path commits
                log.debug("%s: %s", type(op).__name__, exc)

    # --- rebalance (callbacks run on the poll thread) -----------------------------------
    def _cb_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        assert self._loop is not None
        # Assign here rather than after the callback, so the partitions can be resumed: one
        # paused when we lost it must not come back paused (it would never be read again).
        if (
            self.config.consumer_overrides.get(
                "partition.assignment.strategy", "cooperative-sticky"
            )
            == "cooperative-sticky"
        ):
            consumer.incremental_assign(partitions)
        else:
            consumer.assign(partitions)
        try:
            consumer.resume(partitions)
        except KafkaException as exc:
            log.debug("resume on assign: %s", exc)
        self.member_id = consumer.memberid()
        self._loop.call_soon_threadsafe(
            self._assigned, [(p.topic, p.partition) for p in partitions]
        )

    def _assigned(self, tps: list[TP]) -> None:
        self.stats.rebalances += 1
        self._m_rebalances.inc()
        now = time.monotonic()
        if tps:
            self.assigned_at = now
        for tp in tps:
            batch = tp[0] in self._batch_topics
            self._parts[tp] = Context(tp[0], tp[1], assigned_at=now, batch=batch)
            self._n_batch += batch
        self._m_assigned.set(len(self._parts))
        if self._parts:
            self.assigned.set()
        if self._on_assign_hook is not None:
            self._on_assign_hook(tps)

    def _cb_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        assert self._loop is not None
        tps = [(p.topic, p.partition) for p in partitions]
        future = asyncio.run_coroutine_threadsafe(self._revoke(tps, abandon=False), self._loop)
        try:
            offsets = future.result(timeout=self.config.revoke_timeout_s + REVOKE_SLACK_S)
        except Exception:
            log.exception("revoke handling failed; uncommitted work will be redone")
            return
        if offsets:
            try:
                consumer.commit(offsets=offsets, asynchronous=False)
            except KafkaException as exc:
                log.warning("commit on revoke failed (%s); those records will be redone", exc)

    def _cb_lost(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        assert self._loop is not None
        tps = [(p.topic, p.partition) for p in partitions]
        future = asyncio.run_coroutine_threadsafe(self._revoke(tps, abandon=True), self._loop)
        try:
            future.result(timeout=LOST_TIMEOUT_S)
        except Exception:
            log.exception("handling lost partitions failed")

    async def _revoke(self, tps: list[TP], *, abandon: bool) -> list[TopicPartition]:
        """Finish or abandon the work of revoked partitions; return offsets safe to commit."""
        self.stats.rebalances += 1
        self._m_rebalances.inc()
        contexts = [c for tp in tps if (c := self._parts.get(tp)) is not None]
        for ctx in contexts:
            ctx.revoked = True
        if not abandon:
            await self._finish_work(contexts, self.config.revoke_timeout_s)
        await self._cancel({t for c in contexts for t in c.tasks})
        offsets = []
        for ctx in contexts:
            del self._parts[(ctx.topic, ctx.partition)]
            self._n_batch -= ctx.batch
            if self._paused_batch.get((ctx.topic, ctx.partition)) is ctx:
                del self._paused_batch[(ctx.topic, ctx.partition)]
            if ctx.paused:
                self._m_paused.dec()
            ctx.tracker.committable_offset()
            if not abandon and ctx.tracker.last_committable is not None:
                offsets.append(
                    TopicPartition(ctx.topic, ctx.partition, ctx.tracker.last_committable)
                )
        self._m_assigned.set(len(self._parts))
        return offsets

    async def _finish_work(self, contexts: Sequence[Context], timeout_s: float) -> None:
        """Until the tasks and fast-path records of ``contexts`` are done (or ``timeout_s``;
        the fast path gets at least ``MIN_FAST_ACK_WAIT_S``). Waited for in rounds: a
        fast-path batch whose delivery failed hands its records to new tasks (the slow
        path's redelivery) while it is waited for."""
        deadline = time.monotonic() + timeout_s
        while True:
            tasks = {t for c in contexts for t in c.tasks}
            if tasks:
                _done, pending = await asyncio.wait(
                    tasks, timeout=max(0.0, deadline - time.monotonic())
                )
                if pending:
                    return
            await self._wait_fast(contexts, max(MIN_FAST_ACK_WAIT_S, deadline - time.monotonic()))
            if not any(c.tasks for c in contexts) or time.monotonic() >= deadline:
                return

    async def _wait_fast(self, contexts: Sequence[Context], timeout_s: float) -> None:
        """Until the fast-path records of ``contexts`` are acknowledged (or ``timeout_s``)."""
        deadline = time.monotonic() + timeout_s
        while any(c.fast_pending for c in contexts) and time.monotonic() < deadline:
            await asyncio.sleep(FAST_ACK_CHECK_S)

    async def _cancel(self, tasks: set[asyncio.Task[None]]) -> None:
        """Abandon tasks: their outputs are never sent, their offsets never committed."""
        for task in tasks:
            task.cancel()
        if tasks:
            self.stats.abandoned += len(tasks)
            await asyncio.gather(*tasks, return_exceptions=True)

    # --- shutdown ----------------------------------------------------------------------
    async def _shutdown(self) -> None:
        consumer = self._consumer
        contexts = list(self._parts.values())
        await self._finish_work(contexts, self.config.drain_timeout_s)
        await self._cancel({t for c in contexts for t in c.tasks})
        self._store_dirty()
        if consumer is not None:
            await self._in_poll_thread(self._run_consumer_ops, consumer)
            offsets = []
            for ctx in self._parts.values():
                ctx.tracker.committable_offset()
                if ctx.tracker.last_committable is not None:
                    offsets.append(
                        TopicPartition(ctx.topic, ctx.partition, ctx.tracker.last_committable)
                    )
            if offsets:
                try:
                    await self._in_poll_thread(consumer.commit, offsets=offsets, asynchronous=False)
                except KafkaException as exc:
                    log.warning("final commit failed (%s); those records will be redone", exc)
            # close() runs the revoke callback, which waits on this loop: keep it off the loop.
            await self._in_poll_thread(consumer.close)
            self._consumer = None
        for ctx in self._parts.values():
            if ctx.paused:
                ctx.paused = False
                self._m_paused.dec()
        self._paused_batch.clear()
        self._m_assigned.set(0)
        self._poll_thread.shutdown(wait=False)

    async def _in_poll_thread(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        assert self._loop is not None
        return await self._loop.run_in_executor(self._poll_thread, lambda: fn(*args, **kwargs))


def _failed_outputs(failed: list[tuple[KafkaError, Message]]) -> set[Any] | None:
    """(topic, key, value) of each output whose delivery failed; None when none failed; an
    empty set when a failure cannot be told apart (then every record of the batch is
    redelivered: at least once)."""
    if not failed:
        return None
    lost: set[Any] = set()
    for _err, msg in failed:
        if msg is None:
            return set()
        lost.add((msg.topic(), msg.key(), msg.value()))
    return lost


def _where(msg: Record) -> str:
    return f"{msg.topic()}[{msg.partition()}]@{msg.offset()}"
