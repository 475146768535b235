"""Assembles the pipeline's consumers (router, specialist workers, retry relay) from settings.

One process may run any mix of them: they share one producer and one answered-request index,
and each runs its own ``ConsumerRuntime`` (its own consumer group member).
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final

from consumers.answered import AnsweredIndex, resolve_horizon
from consumers.answered_store import StateDir
from consumers.health import BEAT_INTERVAL_S, ProcessHealth
from consumers.outcomes import Outcomes, Stage
from consumers.relay import RetryRelay
from consumers.resilience.breaker import BreakerState, CircuitBreaker
from consumers.resilience.ratelimit import AimdLimiter
from consumers.router import Router, RouterRules, tenant_controls
from consumers.runtime import ConsumerRuntime, Handler, RuntimeConfig
from consumers.runtime.failures import FailureStrategy
from consumers.runtime.lag import LagMonitor
from consumers.specialists.backends import OfflineBackend, SpecialistBackend, claude_backend
from consumers.specialists.instrumented import InstrumentedBackend
from consumers.status.publisher import ProcessIdentity, StatusPublisher
from consumers.tenancy import UsageTail, partition_count
from consumers.triage_model import ModelTriage
from consumers.validation import BodyRules
from consumers.worker import SpecialistWorker
from switchboard.core import metrics
from switchboard.core.admin import partition_counts, retention_ms
from switchboard.core.aio_producer import AsyncProducer
from switchboard.core.atomic import AtomicWriter, transactional_id
from switchboard.core.envelope import content_codec
from switchboard.core.errors import ConfigError
from switchboard.core.kafka_clients import make_admin, producer_config
from switchboard.core.policy import RetryPolicy
from switchboard.core.settings import SPECIALISTS, Settings
from switchboard.core.topics import RETRY_TIERS_S, GroupRole, Topics

log = logging.getLogger(__name__)

#: In-flight caps of the router and the relay: their records are cheap (the router's) or wait
#: on a timer, not on a model (the relay's), so they run far more at once than a worker.
ROUTER_CONCURRENCY: Final = 1000
RELAY_CONCURRENCY: Final = 10_000
#: The model triage's own call budget: a cheap, short call, retried once by the SDK.
TRIAGE_TIMEOUT_S: Final = 10.0
TRIAGE_MAX_RETRIES: Final = 1
#: How long ``wait_ready`` waits for every consumer to hold partitions.
READY_TIMEOUT_S: Final = 60.0
#: The collector's youngest-generation threshold while a pipeline runs (CPython's default is
#: 700). A record's objects die by reference counting, but records in flight keep theirs for a
#: while, so the default ran a young collection every ~70 records: 438 young and 39
#: middle collections, plus 4 full ones of ~15 ms each, in a 30k-response worker drain, 9.5 us
#: of CPU a response. At 50,000 the same drain ran 23 young and 2 middle ones (1.5 us a
#: response, peak RSS unchanged), and cyclic garbage, if any, waits for at most 50,000 objects.
GC_YOUNG_THRESHOLD: Final = 50_000


def make_backend(settings: Settings, limiter: AimdLimiter | None = None) -> SpecialistBackend:
    """Claude when an API key is set, else the offline rulebook."""
    if settings.anthropic_api_key is None:
        return OfflineBackend()
    return claude_backend(
        settings,
        # One connection per call the limiter may let run at once, all kept alive.
        connections=limiter.maximum if limiter is not None else settings.concurrency,
        on_headers=limiter.observe_headers if limiter is not None else None,
    )


@dataclass
class Pipeline:
    """The consumers of one process, sharing a producer, a codec and an answered index."""

    settings: Settings
    kafka: dict[str, Any]
    backend_factory: Callable[[Settings, AimdLimiter | None], SpecialistBackend] = make_backend
    runtimes: dict[str, ConsumerRuntime] = field(default_factory=dict)
    workers: dict[str, SpecialistWorker] = field(default_factory=dict)
    #: The router handler, once ``add_router`` has added it.
    router: Router | None = None

    def __post_init__(self) -> None:
        if self.settings.gil_switch_interval_ms > 0:
            sys.setswitchinterval(self.settings.gil_switch_interval_ms / 1000)
        self.topics = Topics(self.settings.topic_prefix)
        #: Seals and opens content with the configured keyring (docs/security.md, "Content
        #: encryption"); without one it seals nothing and names any key it meets.
        self.codec = content_codec(self.settings)
        # Replies to a caller's own topic and their ledger copies go out in transactions
        # (switchboard.core.atomic): both or neither, whatever kills the process.
        self.atomic = AtomicWriter(
            producer_config(self.kafka),
            transactional_id(self.topics.prefix, self.settings.instance_id),
        )
        self.producer = AsyncProducer(producer_config(self.kafka), atomic=self.atomic)
        self._index: AnsweredIndex | None = None
        self._router_follows = False
        #: The requests topic's partition count, read with the index's topics (None: absent).
        self._requests_partitions: int | None = None
        self._index_syncs: set[asyncio.Task[None]] = set()
        #: The router's group-wide usage (only with a tenants file, where budgets live).
        self.usage: UsageTail | None = None
        #: What /healthz and /readyz report (``switchboard.core.ops_http`` reads it).
        self.health = ProcessHealth(
            stale_after_s=self.settings.health_stale_s,
            broker_stale_after_s=3 * self.settings.lag_interval_s,
        )
        self.lag: LagMonitor | None = None
        self.policy = RetryPolicy(
            self.topics,
            max_attempts=self.settings.max_attempts,
            halt_pause_s=self.settings.halt_pause_s,
        )

    @property
    def index(self) -> AnsweredIndex:
        if self._index is None:
            self._index = self._open_index()
        return self._index

    def _open_index(self) -> AnsweredIndex:
        """The answered index, after checking the co-partitioning it relies on: every task
        topic has the response topic's partition count (else a fatal ``ConfigError``)."""
        t, s = self.topics, self.settings
        admin = make_admin(self.kafka)
        counts = partition_counts(admin, [t.responses, t.requests, *t.all_task_topics()])
        responses = counts.get(t.responses)
        if responses is None:
            raise ConfigError(
                f"topic {t.responses} does not exist: run `switchboard topics ensure`"
            )
        mismatched = [
            f"{name} has {n}"
            for name, n in counts.items()
            if name in t.all_task_topics() and n != responses
        ]
        if mismatched:
            raise ConfigError(
                f"task topics must have the partition count of {t.responses} ({responses}), "
                f"so each worker reads only its own answers: {', '.join(mismatched)}; "
                "recreate them or add partitions to match (`switchboard topics ensure` creates "
                "every topic with SWITCHBOARD_PARTITIONS)"
            )
        #: The router follows its partitions of the index when the requests topic is
        #: co-partitioned too; else it keeps only its recent-id cache (the workers dedup).
        self._requests_partitions = counts.get(t.requests)
        self._router_follows = self._requests_partitions == responses
        if not self._router_follows:
            log.warning(
                "%s has %s partitions, %s has %d: the router does not read the answered index "
                "(its recent-id cache remains; the workers still never answer twice)",
                t.requests,
                counts.get(t.requests),
                t.responses,
                responses,
            )
        kept = retention_ms(admin, [t.requests, t.responses])
        horizon_s, source = resolve_horizon(
            s.dedup_horizon_s, kept.get(t.requests), kept.get(t.responses)
        )
        log.info("answered index: dedup horizon %gs (%s)", horizon_s, source)
        state = StateDir(s.answered_state_dir, t.responses, s.instance_id)
        return AnsweredIndex(
            self.kafka,
            t.responses,
            horizon_s,
            state=state,
            partitions=responses,
            cache_bytes=s.answered_cache_mb << 20,
        )

    def _following(self, role: str, then: Callable[[object], None]) -> Callable[[object], None]:
        """An assignment hook: the index follows ``role``'s partitions, then ``then`` (the
        index sync, whose barrier so covers the new partitions)."""

        def hook(assigned: object) -> None:
            self._follow(role)
            then(assigned)

        return hook

    def _follow(self, role: str) -> None:
        """The index follows the response partitions of ``role``'s partitions (task and
        requests partition ``p`` -> response partition ``p``: they are co-partitioned)."""
        runtime = self.runtimes.get(role)
        if runtime is not None and self._index is not None:
            self._index.follow(role, {p for _topic, p in runtime.assignment})

    def _failures(self, group: str, stage: Stage) -> FailureStrategy:
        """The failure strategy of one consumer group (its outcomes know the group and stage)."""
        outcomes = Outcomes(self.codec, self.topics, self.producer, group, stage)
        return FailureStrategy(outcomes, self.policy)

    def _runtime(
        self,
        role: str,
        topics: list[str],
        handler: Handler,
        failures: FailureStrategy,
        concurrency: int,
        batch_topics: frozenset[str] = frozenset(),
        on_assign: Callable[[object], None] | None = None,
        follows_index: bool = False,
        ready: Callable[[float], Awaitable[None]] | None = None,
    ) -> ConsumerRuntime:
        """The runtime of one consumer; ``role`` keys ``runtimes`` (``router``, ``relay``,
        ``worker.<specialist>``); ``failures`` writes what its handler's failures call for;
        ``follows_index``: on each assignment the answered index follows its partitions;
        ``ready``: what its handler waits for after an assignment (``ConsumerRuntime``)."""
        hook = on_assign or self._sync_index_now
        if follows_index:
            hook = self._following(role, hook)

        overrides = {}
        if self.settings.instance_id:
            overrides["group.instance.id"] = f"{role}-{self.settings.instance_id}"
        config = RuntimeConfig(
            topics,
            failures.outcomes.consumer_group,
            self.kafka,
            concurrency=concurrency,
            drain_timeout_s=self.settings.drain_timeout_s,
            consumer_overrides=overrides,
            batch_topics=batch_topics,
            batch_share=self.settings.batch_share,
        )
        runtime = ConsumerRuntime(
            config,
            handler,
            producer=self.producer,
            failures=failures,
            on_assign=hook,
            ready=ready,
        )
        self.runtimes[role] = runtime
        return runtime

    async def _index_ready(self, since: float) -> None:
        """The answered index has read every answer that existed at ``since``."""
        await self.index.sync(since)

    async def _router_ready(self, since: float) -> None:
        """``_index_ready``, and the group's usage read (with a tenants file): what the
        router's records wait for after an assignment."""
        await self._index_ready(since)
        if self.usage is not None:
            await self.usage.wait_ready()

    def _sync_index_now(self, _assigned: object) -> None:
        """On an assignment, start reading the answered index up to now at once: the first
        record of each new partition waits for exactly that barrier, so it is ready (or under
        way) when the record arrives, instead of begun by it (~100 ms per hop after a start or
        a rebalance)."""
        if self._index is None:
            return
        task = asyncio.ensure_future(self._index.sync(time.monotonic()))
        self._index_syncs.add(task)
        task.add_done_callback(self._sync_done)

    def _sync_done(self, task: asyncio.Task[None]) -> None:
        self._index_syncs.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            # The handlers wait on the same barrier and meet the same error there.
            log.warning("answered index sync on assignment failed: %s", exc)

    def add_router(self, concurrency: int | None = None) -> ConsumerRuntime:
        s = self.settings
        failures = self._failures(self.topics.group(GroupRole.ROUTER), Stage.ROUTE)
        tenants, limiter = tenant_controls(s)  # the tenants file, reloaded on change
        if s.tenants_file is not None and self.usage is None:
            # Usage needs no content: the plain codec, which leaves sealed answers sealed.
            self.usage = UsageTail(self.kafka, self.topics.responses, self.codec.inner)
        requests = self.topics.requests
        # Every topic the router may write, known before the first record: a batch job's first
        # record to its (so far unused) batch topic no longer waits on a metadata fetch.
        self.producer.learn_topics(self.topics.all_task_topics())
        index = self.index  # reads the requests topic's partition count with the other topics
        router = Router(
            codec=self.codec,
            topics=self.topics,
            outcomes=failures.outcomes,
            index=index,
            rules=RouterRules.from_settings(s),
            limiter=limiter,
            tenants=tenants,
            triage=self._triage(),
            usage=self.usage,
            partitions=self._requests_partitions or 1,
        )
        self.router = router
        assignments = itertools.count()

        def on_assign(assigned: object) -> None:
            self._sync_index_now(assigned)
            if next(assignments) == 0:
                return  # the count was read at start-up, a moment ago
            # Partitions may have been added (a rebalance follows): the rate's per-partition
            # share follows the count.
            refresh = asyncio.ensure_future(
                asyncio.to_thread(partition_count, self.kafka, requests, router.partitions)
            )
            refresh.add_done_callback(
                lambda t: (
                    router.set_partitions(t.result())
                    if not t.cancelled() and t.exception() is None
                    else None
                )  # partition_count logs and keeps the count; nothing else can fail
            )

        return self._runtime(
            "router",
            [requests],
            router.handle,
            failures,
            concurrency or ROUTER_CONCURRENCY,
            on_assign=on_assign,
            follows_index=self._router_follows,
            ready=self._router_ready,
        )

    def _triage(self) -> ModelTriage | None:
        """The model triage when configured; None means the keyword classifier."""
        s = self.settings
        if s.triage != "model" or s.anthropic_api_key is None:
            return None
        from anthropic import AsyncAnthropic  # only a model-triaging router needs the SDK

        client = AsyncAnthropic(
            api_key=s.anthropic_api_key.get_secret_value(),
            base_url=s.anthropic_base_url,
            timeout=TRIAGE_TIMEOUT_S,
            max_retries=TRIAGE_MAX_RETRIES,
        )
        return ModelTriage(client, s.models["triage"])

    def add_worker(self, specialist: str, concurrency: int | None = None) -> ConsumerRuntime:
        if specialist not in SPECIALISTS:
            raise ValueError(
                f"unknown specialist {specialist!r}; use one of {', '.join(SPECIALISTS)}"
            )
        cap = concurrency or self.settings.concurrency
        role = f"worker.{specialist}"
        failures = self._failures(self.topics.group(GroupRole.WORKER, specialist), Stage.MODEL)
        limiter = (
            AimdLimiter(initial=cap, minimum=1, maximum=cap) if not self.settings.offline else None
        )
        worker = SpecialistWorker(
            specialist,
            codec=self.codec,
            outcomes=failures.outcomes,
            index=self.index,
            backend=InstrumentedBackend(
                self.backend_factory(self.settings, limiter),
                specialist,
                self.settings.models[specialist],
            ),
            failures=failures,
            breaker=CircuitBreaker(
                name=f"{specialist}:{self.settings.models[specialist]}",
                failure_threshold=self.settings.breaker_failure_threshold,
                open_s=self.settings.breaker_open_s,
                on_state_change=_export_breaker_state,
            ),
            limiter=limiter,
            rules=BodyRules.from_settings(self.settings),
        )
        self.workers[specialist] = worker
        _export_breaker_state(worker.breaker.name, worker.breaker.state)
        # One group reads both task topics; the batch topic's records get the batch share of
        # the cap and yield to interactive ones (docs/review.md, "Priority").
        return self._runtime(
            role,
            self.topics.task_topics(specialist),
            worker.handle,
            failures,
            cap,
            batch_topics=frozenset({self.topics.batch_tasks(specialist)}),
            follows_index=True,
            ready=self._index_ready,
        )

    def add_relay(self) -> ConsumerRuntime:
        failures = self._failures(self.topics.group(GroupRole.RELAY), Stage.RELAY)
        relay = RetryRelay(self.topics)
        topics = [self.topics.retry(t) for t in RETRY_TIERS_S]
        return self._runtime("relay", topics, relay.handle, failures, RELAY_CONCURRENCY)

    def add_all(self, concurrency: int | None = None) -> None:
        self.add_router()
        self.add_relay()
        for specialist in SPECIALISTS:
            self.add_worker(specialist, concurrency)

    async def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Until every consumer holds partitions (its group has finished joining)."""
        await asyncio.wait_for(
            asyncio.gather(*(r.assigned.wait() for r in self.runtimes.values())), timeout_s
        )

    def request_stop(self) -> None:
        for runtime in self.runtimes.values():
            runtime.request_stop()

    async def run(self, **bounds: Any) -> None:
        """Run every added consumer until stopped (or until ``bounds`` end them)."""
        # Start-up objects (modules, schemas, rule tables) never die: move them out of the
        # collector's view, so a full collection during the first burst of records scans only
        # what the records made (at a batch job's start, G12: router hop p99 181 -> 36 ms).
        gc.collect()
        gc.freeze()
        thresholds = gc.get_threshold()
        gc.set_threshold(GC_YOUNG_THRESHOLD, *thresholds[1:])
        if not self.atomic.started:
            self.atomic.rename(
                transactional_id(self.topics.prefix, self.settings.instance_id, list(self.runtimes))
            )
        if self.settings.instance_id:
            # A stable transactional id: fence the previous incarnation now, so what it left
            # open does not hold this process's answered index until the coordinator's timeout.
            self.atomic.start()
        status = self._start_status()
        watch = asyncio.create_task(self._watch(), name="health-and-lag")
        clean = False
        try:
            await self._run_consumers(bounds)
            clean = True
        finally:
            watch.cancel()
            await asyncio.gather(watch, return_exceptions=True)
            await self._stop_status(status, clean=clean)
            await self.close()
            gc.set_threshold(*thresholds)
            gc.unfreeze()  # a process that runs pipelines one after another (tests) frees them

    async def _run_consumers(self, bounds: dict[str, Any]) -> None:
        """Every runtime until it ends. One that stops with an error (Kafka refuses it, a
        content key it lacks) asks the others to stop too, so they drain and commit instead
        of being cancelled; then its error is raised."""

        async def one(runtime: ConsumerRuntime) -> None:
            try:
                await runtime.run(**bounds)
            except Exception:
                self.request_stop()
                raise

        ended = await asyncio.gather(
            *(one(r) for r in self.runtimes.values()), return_exceptions=True
        )
        for result in ended:
            if isinstance(result, BaseException):
                raise result

    # --- status reports (consumers/status; read by `switchboard status`) ------------------
    def _start_status(self) -> tuple[StatusPublisher, asyncio.Task[None]] | None:
        """Publish this process's status report every ``status_interval_s`` (0: never)."""
        if self.settings.status_interval_s <= 0 or not self.runtimes:
            return None
        publisher = StatusPublisher(
            producer=self.producer,
            kafka=self.kafka,
            topic=self.topics.status,
            interval_s=self.settings.status_interval_s,
            runtimes=self.runtimes,
            workers=self.workers,
            identity=ProcessIdentity.of_this_process(
                list(self.runtimes), self.settings.instance_id
            ),
        )
        return publisher, asyncio.create_task(publisher.run(), name="status-publisher")

    async def _stop_status(
        self, status: tuple[StatusPublisher, asyncio.Task[None]] | None, *, clean: bool
    ) -> None:
        """Stop publishing; a clean stop removes the report (a crash leaves it, to go stale)."""
        if status is None:
            return
        publisher, task = status
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        if clean:
            await publisher.tombstone()

    # --- health, readiness and lag (served by switchboard.core.ops_http) -------------------
    async def _watch(self) -> None:
        """Beat and evaluate readiness every second on the loop; read lag every
        ``lag_interval_s`` off it (admin round trips block), one refresh at a time."""
        self.lag = LagMonitor(self.kafka)
        refreshing: asyncio.Task[object] | None = None
        next_lag = 0.0
        try:
            while True:
                self.health.beat()
                now = time.monotonic()
                if now >= next_lag and (refreshing is None or refreshing.done()):
                    next_lag = now + self.settings.lag_interval_s
                    assignments = {r.config.group_id: r.assignment for r in self.runtimes.values()}
                    refreshing = asyncio.ensure_future(
                        asyncio.to_thread(self.lag.refresh, assignments)
                    )
                self.health.evaluate(
                    self.runtimes,
                    index=self._index,
                    breakers={name: w.breaker for name, w in self.workers.items()},
                    broker_ok_at=self.lag.last_ok,
                    broker_error=self.lag.last_error,
                )
                await asyncio.sleep(BEAT_INTERVAL_S)
        finally:
            if refreshing is not None:
                refreshing.cancel()

    async def close(self) -> None:
        for task in self._index_syncs:
            task.cancel()
        await asyncio.gather(*self._index_syncs, return_exceptions=True)
        for worker in self.workers.values():
            await worker.close()  # the model clients' connection pools
        await asyncio.to_thread(self.producer.close)
        if self._index is not None:
            await asyncio.to_thread(self._index.close)
            self._index = None
        if self.usage is not None:
            await asyncio.to_thread(self.usage.close)
            self.usage = None
        self.codec.keys.stop()  # the keyring file's watch thread, when there is one


def _export_breaker_state(name: str, state: BreakerState) -> None:
    metrics.BREAKER_STATE.labels(name).set(state.gauge_value)


def install_signal_handlers(stop: Callable[[], None]) -> None:
    """First SIGTERM/SIGINT: graceful stop (drain, commit). Second: exit at once; whatever was
    not committed is redelivered to the next owner."""
    loop = asyncio.get_running_loop()
    fired = False

    def on_signal() -> None:
        nonlocal fired
        if fired:
            os._exit(130)
        fired = True
        log.warning("stopping: draining in-flight work (signal again to exit at once)")
        stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
