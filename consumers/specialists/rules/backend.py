# ruff: noqa: RUF001, RUF002
# (The multiplication sign and other typographic signs are intended: this module is answer prose.)
"""The backend specialist's offline rules, written from the /backend seed's world.

Numbers quoted here are the seed's benchmarks (p50 < 20 ms, p99 < 100 ms, 100K+ RPS, < 5 ms
indexed queries, 1M+ events/s) and widely published defaults; the calculators turn the
request's own figures into the arithmetic an expert would show.
"""

from __future__ import annotations

from consumers.specialists.rules.figures import (
    Figures,
    ceil_div,
    fmt_bytes,
    fmt_count,
    fmt_int,
    fmt_ms,
    fmt_rate,
)
from consumers.specialists.rules.rule import Derived, Rule, SpecialistRules

P99_BUDGET_MS = 100.0
P50_BUDGET_MS = 20.0
ASSUMED_POD_RPS = 2_000.0  # replace with the load-tested figure for the real service
CPU_CEILING = 0.7
ASSUMED_DEPENDENCY_P99_S = 0.05
ASSUMED_MSGS_PER_CONSUMER = 2_000.0  # ~0.5 ms of work per message per consumer instance
MESSAGE_BYTES = 1_000.0

_PER_PRINCIPAL = r"(?!\s+per\s+(?:user|client|tenant|ip|key|api|account|customer|token))"


def _fleet(rps: float) -> tuple[int, int]:
    """Pods for ``rps`` at the assumed per-pod rate and CPU ceiling; then zone-loss safe."""
    base = ceil_div(rps, ASSUMED_POD_RPS * CPU_CEILING)
    return base, ceil_div(base * 3, 2)


def _budget_ms(figures: Figures) -> float:
    return figures.latency_target_ms.value if figures.latency_target_ms else P99_BUDGET_MS


def _message_rate(figures: Figures) -> tuple[float, str] | None:
    if figures.event_rate:
        return figures.event_rate.value, figures.event_rate.text
    if figures.rps:
        return figures.rps.value, figures.rps.text
    return None


def _partitions_for(rate: float) -> int:
    """Partitions so each consumer runs at ≤ 50% of what it can process (2× headroom)."""
    return max(6, ceil_div(rate * 2, ASSUMED_MSGS_PER_CONSUMER))


def capacity_math(figures: Figures) -> Derived:
    if not figures.rps:
        return Derived()
    rps = figures.rps.value
    budget = _budget_ms(figures)
    base, zone_safe = _fleet(rps)
    numbers = [
        f"Little's law at your {fmt_int(rps)} RPS: {fmt_int(rps)} × {fmt_ms(budget)} (p99 budget) "
        f"= {fmt_int(rps * budget / 1000)} requests in flight across the fleet at worst; "
        f"at the {fmt_ms(P50_BUDGET_MS)} p50 it is {fmt_int(rps * P50_BUDGET_MS / 1000)}.",
        f"Fleet: at an assumed {fmt_int(ASSUMED_POD_RPS)} RPS per pod capped at 70% CPU, "
        f"{fmt_int(rps)} RPS needs {base} pods; to survive losing one of three zones, "
        f"run {zone_safe} (replace {fmt_int(ASSUMED_POD_RPS)} with your load-tested figure).",
        f"Volume: {fmt_int(rps)} RPS sustained is {fmt_count(rps * 86_400)} requests a day; "
        f"a 0.1% error rate is {fmt_rate(rps / 1000)} failed requests every second.",
    ]
    if rps > 100_000:
        numbers.append(
            "Above the seed's 100K RPS sustained benchmark: split into cells (independent "
            "stacks of ≤ 50K RPS each, users pinned to a cell) to bound the blast radius."
        )
    return Derived(numbers=tuple(numbers))


def breaker_math(figures: Figures) -> Derived:
    if not figures.rps:
        return Derived()
    rps = figures.rps.value
    base, _ = _fleet(rps)
    per_pod = rps / base
    window_ms = 100 / per_pod * 1000
    return Derived(
        numbers=(
            f"At {fmt_int(rps)} RPS a breaker held open for 30 s diverts up to "
            f"{fmt_count(rps * 30)} calls to the fallback: it must be local and cheap "
            "(cached value, default, fast 503), never another remote call.",
            f"Per pod (~{fmt_int(per_pod)} RPS over {base} pods) a 100-call count window spans "
            f"only {fmt_ms(window_ms)} of traffic; use a 10 s time-based window "
            f"(~{fmt_int(per_pod * 10)} calls) so a momentary blip does not trip it.",
        )
    )


def bulkhead_math(figures: Figures) -> Derived:
    if not figures.rps:
        return Derived()
    rps = figures.rps.value
    base, _ = _fleet(rps)
    per_pod = rps / base
    in_flight = per_pod * ASSUMED_DEPENDENCY_P99_S
    return Derived(
        numbers=(
            f"At ~{fmt_int(per_pod)} RPS per pod, a dependency called once per request with a "
            f"50 ms p99 holds {fmt_int(in_flight)} calls in "
            f"flight (Little's law), so its bulkhead is {ceil_div(in_flight * 1.5, 1)} permits "
            "(×1.5 headroom); the next call is rejected in < 1 ms instead of queueing.",
        )
    )


def event_store_math(figures: Figures) -> Derived:
    rate = _message_rate(figures)
    if rate is None:
        return Derived(
            numbers=(
                "No event rate given. Assumption: 1,000 events/s at ~1 KB → ~86 GB/day in the "
                "event store before indexes; 6-12 partitions on the distribution topic.",
            )
        )
    per_second, text = rate
    daily = per_second * 86_400
    return Derived(
        numbers=(
            f'From "{text}": {fmt_count(daily)} events/day; at ~1 KB each that is '
            f"{fmt_bytes(daily * MESSAGE_BYTES)}/day in the event store "
            f"(×3 with Kafka replication on the distribution topic).",
            f"Distribution topic: {_partitions_for(per_second)} partitions keyed by aggregate id "
            f"(each consumer at ≤ 50% of ~{fmt_int(ASSUMED_MSGS_PER_CONSUMER)} msgs/s).",
        )
    )


def kafka_math(figures: Figures) -> Derived:
    rate = _message_rate(figures)
    if rate is None:
        return Derived()
    per_second, text = rate
    partitions = _partitions_for(per_second)
    return Derived(
        numbers=(
            f'From "{text}": {fmt_rate(per_second)} msgs/s → {partitions} partitions '
            f"(consumers at ≤ 50% of ~{fmt_int(ASSUMED_MSGS_PER_CONSUMER)} msgs/s each; "
            "add partitions before you need them, keys remap when you do).",
            f"Broker disk: {fmt_rate(per_second)} msgs/s × ~1 KB × 3 replicas = "
            f"{fmt_bytes(per_second * MESSAGE_BYTES * 3 * 86_400)}/day of retention.",
        )
    )


def postgres_math(figures: Figures) -> Derived:
    numbers: list[str] = []
    if figures.concurrency and figures.concurrency_noun == "connections":
        clients = figures.concurrency.value
        numbers.append(
            f"{fmt_int(clients)} direct backends would cost ~{fmt_bytes(clients * 10e6)} of RAM "
            "(~10 MB each before work_mem) and thrash on locks and snapshots; keep "
            "max_connections at 200-500 and multiplex the clients through a pooler."
        )
    if figures.data_bytes:
        size = figures.data_bytes.value
        numbers.append(
            f"{fmt_bytes(size)} of data: partition tables above ~100 GB by time or tenant, and "
            f"plan for sharding past ~1-2 TB per primary (restore time grows with size: "
            f"{fmt_bytes(min(size, 2e12))} at ~200 MB/s is ~{min(size, 2e12) / 2e8 / 3600:.1f} h)."
        )
    return Derived(numbers=tuple(numbers))


def _database_fit(busy: float) -> str:
    if busy <= 33:
        return (
            f"~{fmt_int(busy)} busy connections fit a 16-vCPU database's useful budget of ~33 "
            "((cores × 2) + 1)."
        )
    return (
        f"A 16-vCPU database does useful work on ~33 connections at once; {fmt_int(busy)} wanted "
        "means requests queue for a connection, which is better in the pool (bounded, fast to "
        "fail) than inside PostgreSQL. To serve them without queueing, shorten queries, cache "
        f"reads, or size the primary at ~{ceil_div(busy - 1, 2)} vCPU."
    )


def pool_math(figures: Figures) -> Derived:
    numbers: list[str] = []
    concurrency, noun = figures.concurrency, figures.concurrency_noun
    if concurrency and noun == "connections":
        clients = concurrency.value
        numbers += [
            f"{fmt_int(clients)} client connections → PgBouncer (pool_mode=transaction, "
            f"max_client_conn sized to the clients): ~{ceil_div(clients, 10_000)} PgBouncer "
            "processes (single-threaded, ~10,000 clients each, behind so_reuseport or a "
            "load balancer) multiplexing onto ~100-300 server connections in total.",
            f"That is a {fmt_int(clients / 200)}:1 multiplexing ratio at 200 server connections; "
            "it works because a transaction holds a server connection for milliseconds.",
        ]
    elif concurrency:
        busy = concurrency.value * 0.25
        numbers += [
            f"{fmt_int(concurrency.value)} concurrent {noun}, each holding a DB connection for "
            "~25% "
            f"of its life (a 5 ms query inside a 20 ms request): ~{fmt_int(busy)} connections busy "
            "at once across the fleet (Little's law on the pool, not the request).",
            f"Assumption: 10 pods → {ceil_div(busy, 10)} per pod; set max pool = "
            f"{ceil_div(busy * 1.2, 10)} (×1.2), min idle = max, acquire timeout 250-1000 ms.",
            _database_fit(busy),
        ]
    elif figures.rps:
        busy = figures.rps.value * 0.005
        numbers.append(
            f"{fmt_int(figures.rps.value)} RPS × one 5 ms query each = {fmt_int(busy)} connections "
            f"busy on average (Little's law); size fleet-wide pools to ~{ceil_div(busy * 1.5, 1)}."
        )
    return Derived(numbers=tuple(numbers))


def cache_math(figures: Figures) -> Derived:
    numbers: list[str] = []
    if figures.latency_target_ms:
        target = figures.latency_target_ms.value
        miss_budget = max(target - 2.0, 0.5)
        numbers += [
            f"Budget for {fmt_ms(target)}: Redis round trip ≤ 1 ms p99 in-zone + client and "
            f"serialisation ≤ 1 ms leaves {fmt_ms(miss_budget)} for a miss, so the origin query "
            f"must finish in {fmt_ms(miss_budget)} or be served stale-while-revalidate.",
            f"p99 arithmetic: if more than 1% of requests miss, the p99 is the miss path; "
            f"holding p99 < {fmt_ms(target)} needs a ≥ 99% hit ratio on hot keys or a miss path "
            f"that itself fits in {fmt_ms(target)}.",
        ]
    if figures.rps:
        ops = figures.rps.value * 1.2
        numbers.append(
            f"{fmt_int(figures.rps.value)} RPS ≈ {fmt_int(ops)} Redis ops/s with writes and "
            f"refreshes → ≥ {max(3, ceil_div(ops, 50_000))} primaries at ≤ 50K ops/s each, "
            "one replica per primary."
        )
    if figures.data_bytes:
        numbers.append(
            f"{fmt_bytes(figures.data_bytes.value)} of cached data × 1.3 overhead → "
            f"≥ {max(3, ceil_div(figures.data_bytes.value * 1.3, 25e9))} primaries at ≤ 25 GB each."
        )
    return Derived(numbers=tuple(numbers))


_SAGA_STEPS: dict[str, tuple[int, str, str]] = {
    "order": (0, "create the order as PENDING", "mark the order CANCELLED"),
    "orders": (0, "create the order as PENDING", "mark the order CANCELLED"),
    "cart": (0, "lock the cart", "unlock the cart"),
    "inventory": (1, "reserve stock with a 15-minute TTL", "release the reservation"),
    "stock": (1, "reserve stock with a 15-minute TTL", "release the reservation"),
    "warehouse": (1, "reserve stock with a 15-minute TTL", "release the reservation"),
    "payment": (2, "authorise the payment (hold funds, no capture)", "void the authorisation"),
    "payments": (2, "authorise the payment (hold funds, no capture)", "void the authorisation"),
    "billing": (2, "authorise the charge (no capture)", "void the authorisation"),
    "shipping": (3, "book the shipment", "cancel the shipment before carrier hand-off"),
    "shipment": (3, "book the shipment", "cancel the shipment before carrier hand-off"),
    "delivery": (3, "book the delivery slot", "release the delivery slot"),
    "fulfillment": (3, "create the fulfilment request", "cancel the fulfilment request"),
    "fulfilment": (3, "create the fulfilment request", "cancel the fulfilment request"),
    "notification": (9, "send the confirmation (retriable)", "none: retry until sent"),
    "email": (9, "send the confirmation (retriable)", "none: retry until sent"),
}


def saga_math(figures: Figures) -> Derived:
    services = figures.services
    if len(services) < 2:
        return Derived()
    ordered = sorted(
        enumerate(services),
        key=lambda item: (_SAGA_STEPS.get(item[1], (5, "", ""))[0], item[0]),
    )
    steps: list[str] = []
    for number, (_, name) in enumerate(ordered, start=1):
        _, action, compensation = _SAGA_STEPS.get(
            name, (5, f"perform the {name} step", f"undo the {name} step")
        )
        steps.append(f"Step {number}, {name}: {action}; compensation: {compensation}.")
    design = [
        f"Order for {' / '.join(services)}: cheapest-to-undo first, so a late failure has the "
        "least to compensate.",
        *steps,
    ]
    if any(name in ("payment", "payments", "billing") for name in services):
        design.append(
            "Pivot: capture the payment only after every compensatable step has succeeded; "
            "after the capture the saga only moves forward (retries, never compensation)."
        )
    return Derived(
        design=tuple(design),
        numbers=(
            f"{len(services)} participants → {len(services)} commands, {len(services)} replies "
            f"and up to {len(services) - 1} compensations per saga; with a 2-5 s step timeout the "
            f"worst-case happy path is ~{len(services) * 5} s, so set the saga deadline above it.",
        ),
    )


def rate_limit_math(figures: Figures) -> Derived:
    if figures.per_principal_rps:
        rate = figures.per_principal_rps.value
        who = figures.principal or "principal"
        return Derived(
            numbers=(
                f"Token bucket per {who}: refill {fmt_int(rate)} tokens/s, capacity "
                f"{fmt_int(rate * 2)} (2 s of burst); 1 token per request, 5-10 for expensive "
                "routes.",
                f"Rejected requests: 429 with Retry-After = ceil(missing tokens / {fmt_int(rate)}) "
                "s, "
                "normally 1 s at this rate.",
                f"The per-{who} figure is a ceiling, not a capacity plan: 1,000 active {who}s at "
                f"{fmt_int(rate)} RPS each would be {fmt_count(rate * 1000)} RPS, so add a global "
                "per-route limit sized from what the fleet can serve.",
                "Local pre-check: each of N gateway nodes keeps a local bucket of "
                f"{fmt_int(rate)}/N "
                "tokens/s and syncs with Redis every 100 ms: ~10× fewer Redis calls, ≤ ~10% "
                "overshoot.",
            )
        )
    if figures.rps:
        rps = figures.rps.value
        return Derived(
            numbers=(
                f"Global limit: admit at most ~{fmt_int(rps * 1.1)} RPS (your {fmt_int(rps)} plus "
                "10%) "
                "per route class and shed the rest with 429/503 before it reaches the services.",
            )
        )
    return Derived()


def jwt_math(figures: Figures) -> Derived:
    rps = figures.rps.value if figures.rps else None
    if rps is None:
        return Derived()
    return Derived(
        numbers=(
            f"Verifying ES256/RS256 costs ~0.05-0.15 ms of CPU per token: at {fmt_int(rps)} RPS "
            f"that is up to {rps * 0.00015:.1f} cores fleet-wide; cache verified tokens by hash "
            "for their remaining lifetime (bounded LRU) if it shows in the profile.",
        )
    )


def gateway_math(figures: Figures) -> Derived:
    rps = figures.rps.value if figures.rps else None
    if rps is None:
        return Derived()
    return Derived(
        numbers=(
            f"At {fmt_int(rps)} RPS, plan gateway replicas from a load test of the gateway alone "
            f"(TLS + JWT + rate limit); at ~5,000 RPS per replica that is "
            f"{ceil_div(rps, 5_000 * CPU_CEILING)} replicas at 70% CPU.",
        )
    )


def eda_math(figures: Figures) -> Derived:
    rate = _message_rate(figures)
    if rate is None:
        return Derived()
    per_second, text = rate
    partitions = _partitions_for(per_second)
    return Derived(
        numbers=(
            f'From "{text}": {fmt_rate(per_second)} events/s ({fmt_count(per_second * 3600)}/hour)'
            f" → {partitions} partitions per topic and up to {partitions} consumers per group.",
        )
    )


def dlq_math(figures: Figures) -> Derived:
    rate = _message_rate(figures)
    if rate is None:
        return Derived()
    per_second, text = rate
    return Derived(
        numbers=(
            f'At "{text}", a 1% transient failure rate puts {fmt_rate(per_second * 0.01)} '
            f"msgs/s into the retry tiers; the DLQ alert at 0.1% is {fmt_rate(per_second * 0.001)} "
            "msgs/s sustained for 5 minutes.",
        )
    )


def cqrs_math(figures: Figures) -> Derived:
    if not figures.rps:
        return Derived()
    rps = figures.rps.value
    return Derived(
        numbers=(
            f"Of {fmt_int(rps)} RPS, assume ~90% reads: {fmt_int(rps * 0.9)} RPS on the read "
            f"models, {fmt_int(rps * 0.1)} commands/s on the write store and its outbox.",
        )
    )


def latency_math(figures: Figures) -> Derived:
    target = figures.latency_target_ms.value if figures.latency_target_ms else None
    current = figures.latency_current_ms.value if figures.latency_current_ms else None
    numbers: list[str] = []
    if current is not None and target is not None and current > target:
        cut = current - target
        numbers.append(
            f"From {fmt_ms(current)} to {fmt_ms(target)} p99 removes {fmt_ms(cut)} "
            f"({cut / current:.0%}), a {current / target:.1f}× reduction: rarely one fix; expect "
            "2-4 changes each taking 20-40%, measured one at a time."
        )
    if target is not None:
        split = (
            ("ingress, TLS and routing", 0.10),
            ("handler CPU (parsing, logic, serialisation)", 0.25),
            ("data access", 0.35),
            ("downstream calls", 0.20),
            ("headroom for GC and queueing", 0.10),
        )
        parts = ", ".join(f"{name} {fmt_ms(target * share)}" for name, share in split)
        numbers.append(f"p99 budget of {fmt_ms(target)} per hop: {parts}.")
    return Derived(numbers=tuple(numbers))


def go_math(figures: Figures) -> Derived:
    if not figures.latency_target_ms:
        return Derived()
    target = figures.latency_target_ms.value
    return Derived(
        numbers=(
            f"With a {fmt_ms(target)} p99, a GC cycle's stop-the-world pauses (sub-ms) are not "
            f"the problem; GC assist and CPU throttling are: keep GC CPU < 5% and "
            "container_cpu_cfs_throttled_periods_total flat during p99 spikes.",
        )
    )


def shard_math(figures: Figures) -> Derived:
    numbers: list[str] = []
    if figures.data_bytes:
        size = figures.data_bytes.value
        planned = size * 2
        shards = ceil_div(planned, 1e12)
        buckets = 1024 if shards <= 64 else 4096
        numbers.append(
            f"{fmt_bytes(size)} today × 2 growth headroom = {fmt_bytes(planned)} → {shards} "
            f"physical shards of ≤ 1 TB; map {fmt_int(buckets)} logical buckets onto them "
            f"(~{fmt_int(buckets / shards)} buckets per shard), so rebalancing moves whole buckets."
        )
        numbers.append(
            f"Each 1 TB shard restores in ~1.4 h at 200 MB/s; a single {fmt_bytes(size)} "
            f"database would take ~{size / 2e8 / 3600:.0f} h, which is the real argument for "
            "sharding."
        )
    if figures.regions:
        numbers.append(
            f"{figures.regions} regions: every user has one home region for writes; replicate "
            "only global reference data; synchronous cross-region calls (60-150 ms RTT) do not "
            "fit a 100 ms p99."
        )
    elif figures.multi_region:
        numbers.append(
            "Across regions: home each user in one region for writes (residency and latency); "
            "cross-region RTT of 60-150 ms rules out synchronous cross-region calls at 100 ms p99."
        )
    return Derived(numbers=tuple(numbers))


def jvm_math(figures: Figures) -> Derived:
    rate = _message_rate(figures)
    if rate is None:
        return Derived()
    per_second, _ = rate
    peak = per_second * 3
    alloc_mb = peak * 50_000 / 1e6
    young_gc_s = 512 / alloc_mb if alloc_mb else float("inf")
    return Derived(
        numbers=(
            f"Plan for 3× peaks over the {fmt_rate(per_second)} events/s average: "
            f"{fmt_rate(peak)} events/s.",
            f"At ~50 KB allocated per event, peak allocation is ~{alloc_mb:.0f} MB/s: a 512 MB "
            "young "
            f"generation collects every ~{young_gc_s:.0f} s, so a 2-4 GB heap is plenty; a "
            "bigger heap only lengthens the rare full collections.",
            f"Per-event budget: 4 worker threads at {fmt_rate(peak)} events/s leave "
            f"{fmt_ms(4000 / peak)} per event per thread before the consumer falls behind.",
        )
    )


RULES = SpecialistRules(
    specialist="backend",
    label="Backend",
    rules=(
        Rule(
            id="backend.circuit-breaker",
            title="Circuit breakers",
            triggers=(
                (r"circuit[\s-]*breakers?", 3),
                (r"\bhystrix\b|resilience4j|\bgobreaker\b|\bpolly\b", 3),
                (r"cascad\w*\s+failures?", 2),
                (r"fault[\s-]*toleran\w*", 2),
                (r"\bfallbacks?\b", 1),
            ),
            recommendation=(
                "Wrap every remote call in a timeout and a circuit breaker per downstream "
                "dependency (resilience4j on the JVM, sony/gobreaker in Go, aiobreaker in Python, "
                "or the mesh's outlier detection) with a cheap local fallback, so a failing "
                "dependency costs milliseconds of fast failures instead of exhausting threads "
                "across the fleet."
            ),
            design=(
                "Compose as resilience4j does by default: Retry(CircuitBreaker(RateLimiter("
                "TimeLimiter(Bulkhead(call))))); mark CallNotPermittedException non-retryable so "
                "an "
                "open breaker fails fast instead of being retried.",
                "One breaker per dependency (per endpoint class when one endpoint is slow and "
                "another healthy), never one global breaker.",
                "Count slow calls as failures: slowCallDurationThreshold = the dependency's p99 "
                "budget, so a dependency that is up but slow also trips.",
                "Closed → Open at the threshold; Open rejects at once for waitDurationInOpenState; "
                "Half-open lets a few trial calls through and closes only if they succeed.",
                "Fallbacks, best first: cached or stale value, a degraded response (drop the "
                "optional widget), a queued write, a fast 503 with Retry-After.",
                "Export state transitions (resilience4j-micrometer → Prometheus) and alert on "
                "any breaker open for more than a minute.",
            ),
            numbers=(
                "failureRateThreshold = 50% with minimumNumberOfCalls = 20 (Hystrix's classic "
                "request-volume threshold), so 3 failures in 4 calls at night do not trip it.",
                "waitDurationInOpenState = 30 s; permittedNumberOfCallsInHalfOpenState = 5; "
                "automaticTransitionFromOpenToHalfOpenEnabled = true.",
                "slowCallDurationThreshold = the dependency's p99 budget (e.g. 50 ms); "
                "slowCallRateThreshold = 80%.",
                "Per-call timeout below the caller's remaining budget: inside a 100 ms p99 "
                "endpoint one downstream hop gets ≤ 30-50 ms.",
            ),
            anti_patterns=(
                "A breaker without a timeout: a hanging dependency never produces a failure to "
                "count.",
                "Retrying at every layer (3 retries × 3 layers = 27× load) or retrying an open "
                "breaker.",
                "One shared breaker for all dependencies, so one bad dependency cuts off healthy "
                "ones.",
                "Hystrix in new code: it has been in maintenance mode since 2018.",
                "Fallbacks that make another synchronous remote call.",
            ),
            checklist=(
                "Timeout and breaker on every outbound call: HTTP, gRPC, database driver, cache "
                "client.",
                "Thresholds in configuration per dependency, not in code.",
                "Chaos test: 100% errors and 10× latency on one dependency; the endpoint keeps its "
                "p99, degrades, and no pool is exhausted.",
                "Dashboards for breaker state, rejected calls and fallback rate.",
                "Fallback paths covered by tests.",
            ),
            calculate=breaker_math,
        ),
        Rule(
            id="backend.bulkhead",
            title="Bulkheads",
            triggers=(
                (r"bulk[\s-]*heads?", 3),
                (r"noisy\s+neighbou?rs?", 2),
                (r"resource\s+isolation|failure\s+isolation", 2),
                (r"thread[\s-]*pools?", 1),
                (r"load[\s-]*shedding", 2),
            ),
            recommendation=(
                "Give each downstream dependency, and each class of work (interactive, batch), "
                "its own bounded pool or semaphore sized by Little's law from its rate and p99, "
                "and reject immediately when it is full, so a slow dependency can only exhaust "
                "its own slice of the service."
            ),
            design=(
                "Semaphore bulkheads (resilience4j Bulkhead, maxWaitDuration 0-10 ms) for async "
                "code and virtual threads; ThreadPoolBulkhead only where calls block platform "
                "threads.",
                "Go: a buffered channel or x/sync/semaphore per dependency, acquired with the "
                "request's context deadline; asyncio: one asyncio.Semaphore per dependency.",
                "A separate HTTP connection pool per downstream host: a shared client pool is a "
                "hidden shared bulkhead.",
                "Bulkheads at deployment level too: separate deployments for public traffic, "
                "admin and batch consumers; dedicated cells for the largest tenants.",
                "Shed load at the edge when in-flight exceeds the pod's budget (503 + Retry-After "
                "before doing work; Envoy adaptive concurrency or a middleware counter).",
            ),
            numbers=(
                "Bulkhead size = dependency calls/s per pod × dependency p99 (s) × 1.5 headroom; "
                "maxWaitDuration ≤ 10 ms.",
                "Σ bulkheads ≤ the pod's concurrency budget (threads, goroutines, event-loop "
                "capacity) minus ~20% for the service's own work.",
            ),
            anti_patterns=(
                "Unbounded executors or unbounded queues in front of a pool.",
                "One HTTP connection pool shared by every downstream.",
                "Pools sized by habit (200 threads everywhere) instead of rate × latency.",
            ),
            checklist=(
                "Each dependency has its own bounded pool with in-use and rejection metrics.",
                "Rejections return in < 1 ms and map to 503/429 upstream.",
                "Load test with one dependency slowed 10×: other endpoints keep their SLO.",
            ),
            calculate=bulkhead_math,
        ),
        Rule(
            id="backend.capacity",
            title="Capacity and horizontal scaling",
            triggers=(
                (r"\b(?:rps|qps|tps)\b" + _PER_PRINCIPAL, 2),
                (r"requests?\s+per\s+second", 2),
                (r"\bthroughput\b|\bcapacity\b", 2),
                (r"\bauto[\s-]?scal\w*|\bhpa\b", 2),
                (r"\bmicroservices?\b", 1),
                (r"\bhigh[\s-]traffic\b|\bscale\s+(?:to|out|up)\b", 1),
            ),
            recommendation=(
                "Treat the throughput target as a sizing problem first: stateless services "
                "behind a load balancer, scaled horizontally on Kubernetes (HPA on CPU and on "
                "requests per pod), state in stores that scale independently, and the per-pod "
                "figure taken from a load test rather than a guess."
            ),
            design=(
                "Stateless pods (no sticky sessions); readiness probes check the pod itself, "
                "not shared dependencies, or every pod drops out together.",
                "HPA on CPU (target 60-70%) plus requests per pod via Prometheus Adapter or KEDA; "
                "scale up fast (0-30 s stabilisation), scale down slowly (5 min).",
                "Topology spread across 3 zones and PodDisruptionBudgets; CPU requests from the "
                "load test, no tight CPU limits (CFS throttling shows up as p99 spikes).",
                "Keep the synchronous path ≤ 3 hops; work the user does not wait for goes to Kafka "
                "and returns 202.",
                "Graceful shutdown: preStop sleep 5-10 s so the load balancer deregisters first, "
                "then drain in-flight requests within terminationGracePeriodSeconds.",
                "SLIs per endpoint (availability, p99) with burn-rate alerts (14.4× over 1 h for "
                "a 99.9% SLO).",
            ),
            numbers=(
                "Seed benchmarks: p50 < 20 ms and p99 < 100 ms for database-backed endpoints; "
                "100K+ RPS sustained with auto-scaling.",
                "Scale out at ≤ 70% CPU; keep zone headroom (lose one of three zones, still serve "
                "peak).",
                "A 100 ms p99 over 3 synchronous hops: ingress 5-10 ms, service 20-30 ms, data "
                "20-30 ms, downstream 20 ms, 10 ms headroom.",
            ),
            anti_patterns=(
                "Scaling I/O-bound services on CPU alone: they saturate pools, not cores.",
                "Synchronous fan-out across 5+ services on the request path.",
                "Capacity figures from one pod on a laptop.",
            ),
            checklist=(
                "Load test to 1.5× expected peak with an open-model generator (k6 "
                "constant-arrival-rate); record the per-pod knee.",
                "HPA minimum replicas cover a zone loss at peak; PDBs set.",
                "SLOs and burn-rate alerts on every user-facing endpoint.",
                "Zero 5xx during a rolling deploy under load.",
            ),
            calculate=capacity_math,
            numbers_first=True,
        ),
        Rule(
            id="backend.event-sourcing",
            title="Event sourcing",
            triggers=(
                (r"event[\s-]*sourc\w*", 3),
                (r"event\s+stores?", 3),
                (r"append[\s-]only", 2),
                (r"\bsnapshots?\b|\brehydrat\w*", 1),
                (r"\baudit\s+trail\b", 1),
            ),
            recommendation=(
                "Keep an event store as the system of record with per-aggregate optimistic "
                "concurrency (a PostgreSQL table with a unique (aggregate_id, version), or "
                "EventStoreDB), and use Kafka as the distribution log fed from it by an outbox "
                'or CDC: Kafka alone cannot enforce "append only if the aggregate is still at '
                'version N".'
            ),
            design=(
                "Event row: aggregate_id, version, event_type, schema_version, payload, metadata "
                "(correlation_id, causation_id, actor), recorded_at; PRIMARY KEY (aggregate_id, "
                "version); a unique violation is a concurrency conflict: reload and retry the "
                "command.",
                "Publish from the same commit: Debezium on the events table or an outbox relay, "
                "keyed by aggregate_id so per-aggregate order holds within a partition.",
                "Producer enable.idempotence=true, acks=all; topic replication.factor=3, "
                "min.insync.replicas=2; downstream isolation.level=read_committed if producers "
                "are transactional.",
                "Snapshots every 100-500 events per aggregate to bound rehydration.",
                "Projections are idempotent (store the last applied version per aggregate) and "
                "rebuilt by replaying into a new table, then swapping.",
                "Events are immutable: evolve them with upcasters (v1 → v2 at read time) and a "
                "registry in BACKWARD mode; personal data via crypto-shredding (per-subject key).",
            ),
            numbers=(
                "Rehydration: snapshot + ≤ 500 events in < 10 ms.",
                "Projection lag: p99 < 1 s behind the store; alert above 5 s.",
                "Kafka retention sized to the replay window (7-30 days) when the event store is "
                "the permanent record.",
            ),
            anti_patterns=(
                "Kafka as the only event store, without per-aggregate optimistic concurrency.",
                "Dual writes: saving state and publishing to Kafka in two steps without an outbox.",
                "CRUD events (OrderUpdated) instead of domain facts (OrderShipped).",
                "Editing past events to fix bugs instead of appending a correcting event.",
            ),
            checklist=(
                "Unique (aggregate_id, version) enforced and the conflict path tested.",
                "Kill the service between commit and publish: nothing is lost or duplicated "
                "downstream.",
                "Projection rebuild from zero tested and timed.",
                "Upcasters tested for every historical event version.",
            ),
            calculate=event_store_math,
        ),
        Rule(
            id="backend.ledger",
            title="Money movement and ledgers",
            triggers=(
                (r"\bfinancial\b|\bfintech\b", 3),
                (r"\bledgers?\b|double[\s-]entry", 3),
                (r"\bmoney\b|\bcurrenc\w*|\bbalances?\b", 2),
                (r"\bbank\w*\b|\baccounting\b", 2),
                (r"\btransfers?\b|\bwallets?\b", 1),
            ),
            recommendation=(
                "Model money as an immutable double-entry ledger: each financial transaction is "
                "a journal entry whose postings sum to zero per currency, written atomically and "
                "idempotently; balances are derived (and cached with a version), never updated "
                "without the postings that justify them."
            ),
            design=(
                "Amounts as integers in minor units (or DECIMAL(19,4)), never floats; an ISO 4217 "
                "currency on every amount; no implicit FX.",
                "Journal entry = header (id, idempotency_key UNIQUE, type, occurred_at) + ≥ 2 "
                "postings (account, direction, amount); Σ debits = Σ credits enforced on the "
                "single "
                "write path.",
                "Idempotency key per client request, stored with a hash of the request: a retry "
                "returns the first result, a different body under the same key is rejected.",
                "Concurrency on balances: SELECT … FOR UPDATE on the account, or optimistic "
                "versions with retry; hot accounts (fees, treasury) split into sub-accounts summed "
                "on read.",
                "Exactly-once effects: Kafka transactions for consume-transform-produce; external "
                "calls (card networks, banks) carry their own idempotency keys.",
                "Daily reconciliation against processor settlement files; breaks go to a human "
                "queue.",
            ),
            numbers=(
                "Σ postings = 0 for 100% of entries, checked on write and by a nightly audit "
                "query.",
                "Idempotency keys kept ≥ 24 h, or longer than the processor's retry window.",
                "Reconciliation breaks: target 0; alert on any unexplained difference.",
            ),
            anti_patterns=(
                "Floating-point amounts; UPDATE balance = balance - x without a journal entry.",
                "Editing or deleting posted entries instead of reversing them.",
                "Retrying payment calls without an idempotency key.",
            ),
            checklist=(
                "Double-entry invariant enforced and audited nightly.",
                "Idempotency on every money-moving endpoint and consumer.",
                "Reconciliation job with alerting; who or what initiated every entry is recorded.",
                "PCI DSS scope reviewed with /security if card data is involved.",
            ),
        ),
        Rule(
            id="backend.kafka",
            title="Kafka topics, producers and consumers",
            triggers=(
                (r"\bkafka\b", 3),
                (r"exactly[\s-]once", 2),
                (r"consumer[\s-]groups?", 2),
                (r"\bredpanda\b|\bmsk\b|\bconfluent\b", 2),
                (r"\btopics?\b|\bpartitions?\b", 1),
            ),
            recommendation=(
                "Use Kafka as the durable, ordered log between services: key by the entity whose "
                "order matters, make producers and consumers idempotent, commit offsets only "
                "after the effect is durable, and size partitions for the consumers, not just "
                "the brokers."
            ),
            design=(
                "Producer: acks=all, enable.idempotence=true, linger.ms 5-20 and lz4/zstd "
                "compression; never flush per message.",
                "Topic: replication.factor=3, min.insync.replicas=2; cleanup.policy=compact for "
                "latest-state topics, delete + retention for event streams.",
                "Consumer: enable.auto.commit=false, commit after processing (at-least-once) with "
                "idempotent handlers; partition.assignment.strategy=cooperative-sticky.",
                "Exactly-once only for consume-transform-produce inside Kafka: transactional.id "
                "per producer, isolation.level=read_committed; external effects need idempotency "
                "keys.",
                "Schema Registry (Avro or Protobuf) in BACKWARD mode, one subject per topic.",
                "Multi-region: a cluster per region plus MirrorMaker 2 or cluster linking; "
                "replication is asynchronous, so RPO > 0 — decide per topic.",
            ),
            numbers=(
                "Seed benchmark: 1M+ messages/s per cluster with < 100 ms end to end.",
                "Per partition, plan ~5-10 MB/s or what one consumer can process, whichever is "
                "lower.",
                "Alert on consumer lag in time (e.g. > 30 s), not in messages.",
            ),
            anti_patterns=(
                "Low-cardinality keys (country, status) that create hot partitions.",
                "Auto-commit with asynchronous processing: offsets committed before the work is "
                "done.",
                "Adding partitions to a keyed topic without a plan: keys move to other partitions.",
            ),
            checklist=(
                "Redelivery test proves producers and consumers are idempotent.",
                "Alerts on lag, under-replicated partitions and ISR shrinks.",
                "Partition count justified by per-consumer throughput; key skew checked.",
                "Schema compatibility enforced in CI.",
            ),
            calculate=kafka_math,
        ),
        Rule(
            id="backend.postgres",
            title="PostgreSQL under load",
            triggers=(
                (r"\bpostgres(?:ql)?\b|\bpg\b", 3),
                (r"\bmysql\b|\bmariadb\b|\baurora\b", 2),
                (r"\bvacuum\w*\b|\bwal\b", 2),
                (r"slow\s+quer\w*|\bquery\s+optimi[sz]\w*", 2),
                (r"\bindex(?:es|ing)?\b", 1),
            ),
            recommendation=(
                "Keep PostgreSQL doing what it does well: a small number of busy backends behind "
                "a pooler, hot queries served from indexes in < 5 ms, big tables partitioned, "
                "reads offloaded to replicas, and autovacuum tuned before it becomes an outage."
            ),
            design=(
                "Find the cost first: pg_stat_statements by total_exec_time, EXPLAIN (ANALYZE, "
                "BUFFERS) on the top 10, auto_explain for queries over 100 ms; fix with composite, "
                "covering (INCLUDE) or partial indexes.",
                "Memory: shared_buffers ≈ 25% of RAM, effective_cache_size 50-75%, work_mem small "
                "(16-64 MB; raise per session for reports), maintenance_work_mem 1-2 GB.",
                "Connections: max_connections in the low hundreds behind PgBouncer in transaction "
                "mode (no session state; prepared statements need PgBouncer ≥ 1.21).",
                "Partition tables beyond ~100 GB or ~100M rows by time or tenant; drop old "
                "partitions instead of DELETE.",
                "Autovacuum on big hot tables: autovacuum_vacuum_scale_factor 0.01-0.05, more "
                "workers and cost limit; watch dead tuples and transaction-ID age.",
                "Timeouts per role: statement_timeout 1-5 s for OLTP, "
                "idle_in_transaction_session_timeout 30-60 s, lock_timeout for migrations.",
            ),
            numbers=(
                "< 5 ms for 99% of indexed queries; > 10K QPS per cluster with replicas.",
                "Each backend costs ~5-10 MB plus work_mem per sort or hash; throughput falls "
                "once active backends exceed ~2-4× cores.",
                "Replica lag: route read-your-writes to the primary above 1 s; page above 30 s.",
            ),
            anti_patterns=(
                "Thousands of direct connections from every pod.",
                "ORM N+1 queries; OFFSET pagination deep into large tables.",
                "Long transactions holding back vacuum (the xmin horizon).",
                "Migrations taking ACCESS EXCLUSIVE locks at peak (use CREATE INDEX CONCURRENTLY).",
            ),
            checklist=(
                "pg_stat_statements on; top-10 queries reviewed with plans.",
                "Pooler in front; connection counts alerted.",
                "statement_timeout and idle_in_transaction_session_timeout set per role.",
                "PITR backups restored in a drill, restore time measured.",
            ),
            calculate=postgres_math,
        ),
        Rule(
            id="backend.connection-pool",
            title="Connection pooling",
            triggers=(
                (r"connection[\s-]*pool\w*", 3),
                (r"\bpgbouncer\b|\bpgcat\b|\bodyssey\b|\brds\s+proxy\b|\bproxysql\b", 3),
                (r"\bhikari\w*", 3),
                (r"pool\s+siz\w*", 3),
                (r"concurrent\s+(?:connections|requests)", 2),
                (r"too\s+many\s+connections|max_connections", 3),
            ),
            recommendation=(
                "Size pools from the database outwards: it does useful work with only about "
                "(cores × 2) + effective spindles active connections, so keep per-pod pools "
                "small and fixed, put a transaction-mode pooler between many clients and the "
                "database, and make callers fail fast when no connection is free."
            ),
            design=(
                "HikariCP: maximumPoolSize = minimumIdle (fixed pool), connectionTimeout 250-1000 "
                "ms "
                "(not the 30 s default), maxLifetime under any proxy idle cut (e.g. 30 min). Go "
                "database/sql: SetMaxOpenConns = SetMaxIdleConns, SetConnMaxLifetime 30 min. "
                "SQLAlchemy: small pool_size and max_overflow, pool_pre_ping=True, pool_timeout 1 "
                "s.",
                "Hold a connection only for the query or transaction, never across a remote call.",
                "PgBouncer: pool_mode=transaction, default_pool_size from the server budget, "
                "max_client_conn for the client side, small reserve_pool_size, query_wait_timeout "
                "set.",
                "Watch acquire wait time (hikaricp_connections_pending, acquire p99): rising wait "
                "with idle database CPU means the pool is the bottleneck.",
                "Separate pools for OLTP and reporting/batch so reports cannot starve requests.",
            ),
            numbers=(
                "Server-side active connections ≈ (cores × 2) + effective spindles: ~33 on "
                "16 vCPU, ~65 on 32 vCPU.",
                "Σ (pods × max pool) over every service sharing the database ≤ that budget, or "
                "≤ the pooler's server pool.",
                "Acquire timeout ≤ 1 s; alert when acquire p99 > 10 ms.",
            ),
            anti_patterns=(
                'Pools of 100 per pod "to be safe": × 50 pods = 5,000 backends.',
                "The 30 s default acquire timeout: requests queue behind a dead pool.",
                "Session features (advisory locks, SET, LISTEN, temp tables) through a "
                "transaction pooler.",
            ),
            checklist=(
                "Pool size per service written down with its arithmetic; the sum checked "
                "against the database budget.",
                "Acquire-time and pending metrics with alerts.",
                "Peak load test: database CPU < 70%, acquire p99 < 10 ms.",
                "Failover test: pools recover within seconds of a primary switch.",
            ),
            calculate=pool_math,
        ),
        Rule(
            id="backend.redis-cache",
            title="Distributed cache with Redis",
            triggers=(
                (r"\bredis\b|\bvalkey\b", 3),
                (r"\bcach\w*", 3),
                (r"\bmemcached?\b", 3),
                (r"redis\s+cluster", 2),
                (
                    r"cache[\s-]aside|write[\s-]through|write[\s-]behind|\bstampede\b|"
                    r"\bhot\s+keys?\b",
                    2,
                ),
                (r"\bttl\b", 1),
            ),
            recommendation=(
                "Use cache-aside on Redis Cluster: read from Redis, fall back to the source on a "
                "miss, populate with a TTL plus jitter, and protect the origin from stampedes; "
                "design keys for the cluster's 16,384 hash slots and keep every hot-path command "
                "O(1)."
            ),
            design=(
                "Topology: ≥ 3 primaries across zones with one replica each; a cluster-aware "
                "client with topology refresh (Lettuce adaptive refresh, go-redis ClusterClient); "
                "replica reads only for data that tolerates staleness.",
                "Keys like {tenant}:entity:id; hash tags only when multi-key operations need "
                "co-location; no values over ~1 MB and no unbounded collections.",
                "TTL = freshness requirement ± 10% jitter; short negative caching for missing ids.",
                "Stampede protection: per-key request coalescing (singleflight) in-process plus "
                "probabilistic early refresh or a short lock for hot keys; stale-while-revalidate.",
                "Invalidate on write after the DB commit (or from CDC); never write the cache "
                "before commit.",
                "Hot keys: an in-process L1 (Caffeine, ristretto) for 1-5 s in front of Redis.",
                "Client timeouts 5-50 ms and a breaker that falls back to a rate-limited origin "
                "path when Redis is down; maxmemory-policy allkeys-lfu.",
            ),
            numbers=(
                "In-zone Redis round trip ~0.2-0.5 ms p50, ≤ 1-2 ms p99; one primary does ~100K "
                "simple ops/s: plan on ≤ 50% of that.",
                "Hit ratio ≥ 95%, ≥ 99% when the p99 budget is tighter than the miss path.",
                "≤ ~25 GB per shard so resync and failover stay fast.",
            ),
            anti_patterns=(
                "KEYS, HGETALL/SMEMBERS on huge collections, or slow Lua on the hot path.",
                "No TTLs; the cache treated as the source of truth.",
                "Identical TTLs on a bulk load: synchronised expiry and a thundering herd.",
                "Caching to hide an N+1 query.",
            ),
            checklist=(
                "Hit ratio, latency, evictions and hot keys on a dashboard.",
                "Stampede test: expire a hot key under load; origin QPS stays bounded.",
                "Failover drill: kill a primary; the client recovers in seconds.",
                "Every key pattern has an owner, a TTL and a size bound.",
            ),
            calculate=cache_math,
        ),
        Rule(
            id="backend.saga",
            title="SAGA for distributed transactions",
            triggers=(
                (r"\bsagas?\b", 3),
                (r"distributed\s+transactions?", 3),
                (r"compensat\w*", 3),
                (r"two[\s-]phase\s+commit|\b2pc\b|\bxa\s+transactions?\b", 2),
                (r"\boutbox\b", 2),
                (r"\btemporal\b|\bcamunda\b|step\s+functions", 2),
                (r"orchestrat\w*|choreograph\w*", 1),
            ),
            recommendation=(
                "Use an orchestrated saga: one durable orchestrator (Temporal, or a state machine "
                "persisted in the owning service) drives each step by command and reply, every "
                "step is a local ACID transaction with an idempotent compensation, and each "
                "participant publishes through a transactional outbox. Avoid 2PC across "
                "services: it blocks when the coordinator fails and couples their availability."
            ),
            design=(
                "Saga state (saga_id, step, status, deadline, data) persisted before each command; "
                "the orchestrator resumes after a crash.",
                "Participant: consume command → local transaction + outbox row in one commit → "
                "reply event; idempotent by (saga_id, step).",
                "Semantic locks: resources stay PENDING (reserved, authorised) until the saga "
                "ends, so nobody acts on half-done state.",
                "Compensations retry until they succeed and must not fail for business reasons; "
                "if one cannot finish, park the saga for a human with an alert.",
                "Choreography is fine for 2-3 steps; beyond that the implicit flow is hard to "
                "reason about: orchestrate.",
            ),
            numbers=(
                "Step timeout 2-5 s for flows a user waits on; saga deadline (e.g. 30 s) after "
                "which compensation starts.",
                "Reservations expire (e.g. 15 min) so a lost saga cannot hold stock forever.",
                "Alert on sagas past their deadline and on > 10 compensation retries.",
            ),
            anti_patterns=(
                "2PC/XA across microservices.",
                "Publishing events outside the local transaction (dual write).",
                "Compensations that are not idempotent or can fail permanently.",
                "All participants called synchronously in one HTTP request.",
            ),
            checklist=(
                "Every step and compensation tested with duplicate delivery.",
                "Kill the orchestrator mid-saga: it resumes and completes or compensates.",
                "Outbox relay (or CDC) in every participant.",
                "Dashboard of saga states and a runbook for parked sagas.",
            ),
            calculate=saga_math,
        ),
        Rule(
            id="backend.api-gateway",
            title="API gateway",
            triggers=(
                (r"api[\s-]*gateways?", 3),
                (r"\bgateways?\b", 2),
                (r"\benvoy\b|\bkong\b|\bnginx\b|\btraefik\b|\bapigee\b|\bingress\b", 2),
                (r"\bbff\b|backend[\s-]for[\s-]frontends?", 2),
                (r"reverse\s+proxy|\bedge\b", 1),
            ),
            recommendation=(
                "Put a thin gateway at the edge (Envoy-based, Kong, or the cloud's managed "
                "gateway) that terminates TLS, validates tokens against cached JWKS, rate-limits, "
                "routes and observes; keep business logic out of it so it stays stateless, "
                "horizontally scaled, and cheap in latency."
            ),
            design=(
                "Request path: TLS 1.3 termination → size and header limits → JWT validation → "
                "per-principal rate limit → routing (weighted for canaries) → upstream with "
                "timeouts, retries for idempotent methods only, outlier detection.",
                "Identity to services as verified claims in headers set by the gateway "
                "(x-user-id, x-tenant-id), stripped when clients send them; services still "
                "authorise.",
                "Access logs with request id, W3C traceparent injected, RED metrics per route.",
                "Configuration as code (Envoy xDS, Kong decK, Gateway API), rolled out as a "
                "canary.",
                "≥ 3 stateless replicas across zones; limiter state in Redis or a rate-limit "
                "service (envoyproxy/ratelimit).",
            ),
            numbers=(
                "Gateway overhead ≤ 5 ms p99 out of the endpoint's 100 ms p99.",
                "Retries ≤ 2 per request under a retry budget of 20% of active requests "
                "(Envoy retry_budget).",
                "Request body limit per route (1 MB default; larger only for upload routes).",
            ),
            anti_patterns=(
                "Business logic and orchestration in the gateway: a distributed monolith.",
                "Trusting identity headers supplied by clients.",
                "Gateway retries of non-idempotent POSTs.",
            ),
            checklist=(
                "Identity headers stripped on ingress and set only by the gateway.",
                "Per-route timeouts, size limits and retry policy defined.",
                "Gateway load-tested alone for its overhead at peak.",
            ),
            calculate=gateway_math,
        ),
        Rule(
            id="backend.rate-limit",
            title="Rate limiting",
            triggers=(
                (r"rate[\s-]*limit\w*", 3),
                (r"\bthrottl\w*", 3),
                (r"token[\s-]*bucket|leaky[\s-]*bucket|sliding[\s-]*window|\bgcra\b", 3),
                (r"\bquotas?\b", 2),
                (r"\bper\s+(?:user|client|tenant|ip|api[\s-]*key)\b", 2),
                (r"\b429\b", 2),
            ),
            recommendation=(
                "Enforce a token bucket per principal (user, API key, tenant) at the gateway "
                "against shared state in Redis with one atomic Lua call, add a global limit per "
                "route to protect capacity, and reject with 429 and Retry-After so well-behaved "
                "clients back off."
            ),
            design=(
                "Token bucket (rate r, burst b) allows short bursts at a steady rate; GCRA stores "
                "one timestamp per key and is the compact equivalent.",
                "One Lua script (EVALSHA) refills and takes tokens in a single round trip; key "
                "rl:{principal}:{route-class}; TTL = b / r + 1 s so idle keys expire.",
                "Layers: per-principal limits for fairness, per-route global limits for capacity, "
                "adaptive load shedding when the fleet is unhealthy.",
                "Identify the principal after authentication (JWT sub or API key); IP only for "
                "anonymous traffic (beware NAT and IPv6 /64s).",
                "Decide fail-open or fail-closed for a Redis outage; usually fail open onto a "
                "local in-memory limiter as the backstop.",
                "Tell clients: 429 + Retry-After, and RateLimit/RateLimit-Policy (IETF draft) or "
                "X-RateLimit-Limit/Remaining/Reset headers.",
            ),
            numbers=(
                "One Redis round trip (~0.2-0.5 ms in-zone) per request; ≤ ~50K limiter calls/s "
                "per Redis primary, shard keys across a cluster above that.",
            ),
            anti_patterns=(
                "Fixed-window counters: up to 2× the limit at window edges.",
                "GET-then-SET without atomicity: races let bursts through.",
                "Per-pod in-memory limits presented as global (effective limit = limit × pods).",
                "Limiting authenticated APIs by IP only.",
            ),
            checklist=(
                "Limits documented per plan and route; every 429 carries Retry-After.",
                "Load test: one principal at 2× its limit gets ~50% 429s, others are unaffected.",
                "Redis outage test matches the fail-open/closed decision.",
            ),
            calculate=rate_limit_math,
        ),
        Rule(
            id="backend.jwt",
            title="JWT validation",
            triggers=(
                (r"\bjwts?\b|json\s+web\s+tokens?", 3),
                (r"\bjwks\b", 3),
                (r"\boauth\s*2?(?:\.\d)?\b|\boidc\b|\bopenid\b", 2),
                (r"\bbearer\b", 2),
                (r"token\s+validation|validat\w*\s+(?:the\s+)?tokens?", 2),
                (r"\bclaims?\b", 1),
            ),
            recommendation=(
                "Validate JWTs locally and strictly: asymmetric signatures (ES256/RS256) checked "
                "against the issuer's JWKS cached in memory, an algorithm allowlist, and "
                "iss/aud/exp/nbf checks with small clock skew; keep access tokens short-lived so "
                "no revocation lookup is needed per request."
            ),
            design=(
                "A maintained library, never hand-rolled: Nimbus/jose4j (JVM), golang-jwt v5 or "
                "lestrrat-go/jwx (Go), PyJWT or joserfc (Python), jose (Node.js).",
                "Pin allowed algorithms; never take alg from the token; reject none, and HS* when "
                "you expect asymmetric keys.",
                "JWKS cached 5-15 min, refreshed on an unknown kid at most once a minute (so a "
                "flood of random kids cannot DoS the issuer).",
                "Validate signature, iss (exact), aud (this API), exp/nbf with ≤ 60 s skew, and "
                "required claims (tenant_id, scope); multi-tenant: map iss → tenant and compare "
                "with the resource's tenant.",
                "Coarse scope checks at the gateway, object-level authorisation in the service.",
                "Revocation: short lifetimes + rotating refresh tokens; a jti deny-list in Redis "
                "checked only on sensitive operations.",
            ),
            numbers=(
                "Access tokens 5-15 min; clock skew ≤ 60 s; JWKS cache 5-15 min.",
                "Token size under ~1-2 KB: it travels in every request header.",
            ),
            anti_patterns=(
                "Decoding without verifying; trusting the header's alg; ignoring aud.",
                "Access tokens valid for days, kept in browser localStorage.",
                "Calling the introspection endpoint on every request at high RPS.",
            ),
            checklist=(
                "Negative tests: expired, wrong aud, wrong iss, alg=none, unknown kid, tampered "
                "payload; all rejected.",
                "Key rotation tested: new key published before use, old kept until tokens expire.",
                "OAuth flow and threat model reviewed with /security.",
            ),
            calculate=jwt_math,
        ),
        Rule(
            id="backend.event-driven",
            title="Event-driven architecture",
            triggers=(
                (r"event[\s-]*driven", 3),
                (r"message\s+(?:queues?|brokers?|bus)", 3),
                (
                    r"\brabbitmq\b|\bsqs\b|\bsns\b|\bnats\b|\bpulsar\b|\bpub\s*/\s*sub\b|"
                    r"\bpubsub\b",
                    2,
                ),
                (r"\basync\w*\s+(?:messaging|processing|communication)", 2),
                (r"\bevents?\b", 1),
            ),
            recommendation=(
                "Decouple services with domain events on a durable broker: producers publish "
                "through a transactional outbox, consumers are idempotent and own their read "
                "models, and every consumer has a retry path and a dead-letter path so one bad "
                "message never blocks a partition."
            ),
            design=(
                "Envelope: event_id (UUID), type, version, occurred_at, producer, correlation_id, "
                "causation_id, key (CloudEvents attributes are a good default); payload schema "
                "in a registry.",
                "Outbox: the event row commits with the state change; Debezium or a poller relays "
                "it; consumers de-duplicate by event_id.",
                "Broker: Kafka for ordered, replayable, high-throughput streams; RabbitMQ quorum "
                "queues for task queues with routing and TTLs; SQS/SNS when managed simplicity "
                "matters more than ordering.",
                "Ordering per key only (partition by aggregate id); consumers tolerate reordering "
                "across keys.",
                "Backpressure: bounded in-flight work per consumer; pause partitions at the bound.",
            ),
            numbers=(
                "Seed thresholds: a broker earns its keep beyond ~100K messages/hour; the top end "
                "is 1M+ events/s at < 100 ms end to end.",
                "Consumer lag SLO in time per group (e.g. p99 < 5 s).",
            ),
            anti_patterns=(
                "Dual writes (commit, then publish) without an outbox.",
                "Id-only events that force every consumer to call back synchronously.",
                "Consumers that are not idempotent under at-least-once delivery.",
            ),
            checklist=(
                "Outbox in every producer; de-duplication in every consumer.",
                "Schemas registered and compatibility checked in CI.",
                "Lag, throughput and DLQ depth dashboards per consumer group.",
            ),
            calculate=eda_math,
        ),
        Rule(
            id="backend.dlq-retry",
            title="Retries and dead-letter queues",
            triggers=(
                (r"dead[\s-]*letter\w*|\bdlq\b|\bdlt\b", 3),
                (r"\bretr(?:y|ies|ying)\b", 2),
                (r"back[\s-]*off|\bjitter\b", 2),
                (r"\bpoison\b", 3),
                (r"\bredeliver\w*|\breplay\w*", 1),
            ),
            recommendation=(
                "Classify every failure before deciding: transient errors retry with exponential "
                "backoff and jitter (a few quick attempts in-process, then delayed retry topics so "
                "the partition keeps flowing); permanent errors go straight to a dead-letter topic "
                "with the original bytes and the error; fatal errors (credentials, configuration) "
                "stop the consumer instead of filling the DLQ."
            ),
            design=(
                "Decision table: transient (timeouts, 429/503, broker unavailable) → retry; "
                "permanent (undecodable, invalid, other 4xx) → DLQ at once; fatal (auth, quota "
                "exhausted, misconfiguration) → pause and alert.",
                "Non-blocking retries: tiered retry topics (e.g. .retry.10s, .retry.1m, "
                ".retry.10m) "
                "read by a relay that waits for the due time, then the DLQ.",
                "DLQ record: original key, value and headers; source topic, partition and offset; "
                "error class and message; attempt count; first and last failure time.",
                "Replay tool: select DLQ records by error class and time range, dry-run, "
                "re-publish "
                "at a rate limit; handlers are idempotent so replays are safe.",
                "Commit order: an offset is committed only after its output or its retry/DLQ "
                "record is acknowledged by the broker.",
                "Honour the provider's Retry-After on 429/503 as the minimum delay.",
            ),
            numbers=(
                "Backoff: min(cap, base × 2^attempt) with full jitter, base 1 s, cap 5 min; 5 "
                "attempts ≈ 1 + 2 + 4 + 8 + 16 = 31 s of base delay before the longer tiers.",
                "Retry budget ≤ 10% of requests fleet-wide, so an outage is not turned into 4× "
                "load.",
                "DLQ alert: any growth for payment-like flows; > 0.1% of throughput otherwise.",
            ),
            anti_patterns=(
                "Sleeping in the poll loop to retry: lag grows and the group rebalances.",
                "Infinite retries of a poison message.",
                "DLQ records without the original bytes or error metadata: unreplayable.",
                "Auth and configuration errors sent to the DLQ by the thousand.",
            ),
            checklist=(
                "Table-driven test of the retry decision for each error class.",
                "Poison message at index k goes to the DLQ once; the rest of the partition is "
                "processed.",
                "Replay with dry-run and rate limit; replays processed idempotently.",
                "DLQ depth and age on a dashboard with an owner.",
            ),
            calculate=dlq_math,
        ),
        Rule(
            id="backend.cqrs",
            title="CQRS",
            triggers=(
                (r"\bcqrs\b", 3),
                (r"command[\s-]query\s+(?:responsibility\s+)?segregation", 3),
                (
                    r"separate\s+read\s*(?:/|and)\s*write|read\s*/\s*write\s+(?:databases?|"
                    r"stores?|models?)",
                    3,
                ),
                (r"read\s+models?|read[\s-]side|write[\s-]side", 2),
                (r"materiali[sz]ed\s+views?|\bprojections?\b", 1),
                (r"read\s+replicas?", 1),
            ),
            recommendation=(
                "Split the write model (normalised, transactional, enforcing invariants) from "
                "read models shaped for each query, fed asynchronously from an outbox or CDC; "
                "bound and document the staleness, and give the writing user read-your-writes."
            ),
            design=(
                "Write side (order management example): PostgreSQL holds the Order aggregate; "
                "PlaceOrder/CancelOrder commands commit state and OrderPlaced/OrderCancelled "
                "outbox rows in one transaction.",
                "Read side, one model per query shape: order history per customer "
                "(PostgreSQL or OpenSearch), operations dashboards (ClickHouse), status "
                "lookups (Redis or a denormalised table).",
                "Projector: consumes events keyed by order_id, upserts idempotently by event "
                "version (ignore versions ≤ stored), records its position.",
                "Read-your-writes: the command returns the new version; the client reads until "
                "the read model reaches it, or reads the write store for a few seconds.",
                "Rebuild by replaying into a new index, then switching an alias.",
            ),
            numbers=(
                "Projection lag p99 < 1 s, alert above 5 s; acceptable staleness documented per "
                "screen.",
                "Read/write ratios are typically 10:1 to 100:1: scale the read side on its own.",
            ),
            anti_patterns=(
                "CQRS for simple CRUD with one query shape: two models and eventual consistency "
                "for nothing.",
                "Read models updated synchronously in the command transaction across databases.",
                "Projections that cannot be rebuilt from history.",
            ),
            checklist=(
                "Every read model rebuildable, rebuild time measured.",
                "Lag metric and alert per projection.",
                "Projector tested with duplicate and out-of-order events.",
            ),
            calculate=cqrs_math,
        ),
        Rule(
            id="backend.latency",
            title="Latency reduction",
            triggers=(
                (r"\blatenc\w*", 3),
                (r"\bp9\d(?:\.\d+)?\b|\bp50\b|\btail\b", 2),
                (r"\bprofil\w*", 2),
                (r"\bslow(?:er|ness)?\b", 2),
                (r"response\s+times?", 1),
                (r"\boptimi[sz]\w*", 1),
                (r"\b\d+\s*ms\b", 1),
            ),
            recommendation=(
                "Treat the latency goal as a budget: trace where the time goes per hop at p99 "
                "(not the average), fix the largest contributor first (usually data access, "
                "sequential downstream calls or runtime pauses) and verify each change under the "
                "same offered load."
            ),
            design=(
                "Measure: OpenTelemetry traces tail-sampled on slow requests, RED metrics per "
                "endpoint, CPU and off-CPU profiles under production-like load.",
                "Data access: remove N+1s (batch or eager load), add the missing index, cap "
                "result sizes, move non-critical writes off the request path.",
                "Downstream calls: run independent calls concurrently, cache idempotent lookups, "
                "derive per-hop timeouts from the budget, hedge reads at the p95 where safe.",
                "Runtime: connection reuse (keep-alive, HTTP/2), fewer per-request allocations, "
                "worker pools sized to cores; GC tuning only after allocations are cut.",
                "Guard it: an SLO alert and a CI benchmark or load test that fails on regression.",
            ),
            numbers=(
                "Seed benchmarks: p50 < 20 ms, p99 < 100 ms for database-backed endpoints; "
                "< 5 ms for 99% of indexed queries.",
            ),
            anti_patterns=(
                "Optimising averages, or tuning without a profile.",
                "Adding a cache before finding the N+1.",
                "Sequential downstream calls that could run concurrently.",
            ),
            checklist=(
                "p50/p95/p99 before and after at the same offered load (open-model generator).",
                "Traces show every hop inside its budget.",
                "A regression guard in CI; /perf for deep profiling if the first fixes fall short.",
            ),
            calculate=latency_math,
        ),
        Rule(
            id="backend.go-runtime",
            title="Go service tuning",
            triggers=(
                (
                    r"\bgolang\b|\bgo\s+(?:service|services|app|api|code|server|microservices?|"
                    r"backend|worker)\b|\bin\s+go\b",
                    3,
                ),
                (r"\bgoroutines?\b", 3),
                (r"\bpprof\b", 3),
                (r"\bgomaxprocs\b|\bgogc\b|\bgomemlimit\b", 3),
            ),
            recommendation=(
                "Profile with pprof under load first; in Go services the usual wins, in order of "
                "frequency, are connection reuse, fewer allocations (less GC work), a GOMAXPROCS "
                "that matches the container, and removing lock or channel contention."
            ),
            design=(
                "net/http/pprof on an internal port; under load capture `go tool pprof -http=: "
                "host:6060/debug/pprof/profile?seconds=30`, plus allocs, heap, mutex and block "
                "profiles (runtime.SetMutexProfileFraction, SetBlockProfileRate).",
                "One shared http.Client per downstream with a tuned Transport: MaxIdleConnsPerHost "
                "raised from the default 2 to ≥ 100, IdleConnTimeout 90 s, timeouts set; always "
                "drain and close response bodies.",
                "Containers: GOMAXPROCS = CPU limit (automatic from Go 1.25; before that "
                "go.uber.org/automaxprocs); GOMEMLIMIT ≈ 90% of the memory limit.",
                "Allocations: pre-size slices and maps, sync.Pool for hot short-lived buffers, no "
                "reflection-heavy JSON on hot paths; check escapes with `go build -gcflags=-m`.",
                "errgroup with context for concurrent downstream calls; bounded worker pools; "
                "deadlines propagated through every call.",
                "`go tool trace` for scheduler latency and GC assist; PGO (Go 1.21+) for a few "
                "percent of CPU from a production profile.",
            ),
            numbers=(
                "GC CPU < 5%; raise GOGC (e.g. 200) only with GOMEMLIMIT as the ceiling.",
                "Scheduler latency in `go tool trace` < 1 ms; more means CPU throttling or a "
                "wrong GOMAXPROCS.",
            ),
            anti_patterns=(
                "A new http.Client or Transport per request: no reuse, a TLS handshake every call.",
                "Unbounded goroutines per request item.",
                "Ignoring context cancellation, so work continues after the client gave up.",
            ),
            checklist=(
                "CPU, allocs, mutex and block profiles captured at peak; top frames explained.",
                "Shared Transport with MaxIdleConnsPerHost set; bodies closed.",
                "GOMAXPROCS and GOMEMLIMIT right for the container.",
                "`go test -bench . -benchmem` on the hot path, compared with benchstat.",
            ),
            calculate=go_math,
        ),
        Rule(
            id="backend.sharding",
            title="Sharding and multi-region data",
            triggers=(
                (r"\bshard\w*", 3),
                (r"consistent\s+hashing", 3),
                (r"horizontal(?:ly)?\s+(?:scal|partition)\w*", 2),
                (r"\b\d+(?:\.\d+)?\s*(?:tb|pb)\b", 2),
                (
                    r"multi[\s-]?region|across\s+regions|cross[\s-]region|geo[\s-]?distributed|"
                    r"data\s+residency",
                    2,
                ),
                (r"\bcitus\b|\bvitess\b|\bcockroach\w*|\byugabyte\w*|\bspanner\b", 2),
            ),
            recommendation=(
                "Shard by the key that keeps a user's data and transactions together (user_id or "
                "tenant_id), through a directory of logical buckets mapped to physical shards, so "
                "rebalancing moves whole buckets and never re-hashes rows; give each user a home "
                "region. First check that partitioning, replicas or a distributed SQL database "
                "(Citus, Vitess, CockroachDB, Spanner) do not already cover the need."
            ),
            design=(
                "Shard key: user_id or tenant_id: high cardinality, present in every hot query, "
                "the boundary of most transactions; cross-shard analytics go to a warehouse.",
                "Mapping: hash(user_id) → one of a fixed number of logical buckets → "
                "bucket-to-shard "
                "directory (in etcd or config, cached in services); consistent hashing with "
                "virtual nodes when there is no directory.",
                "Resharding: copy a bucket (snapshot + CDC catch-up), freeze writes to it briefly, "
                "flip the directory, clean up; automated and rehearsed.",
                "Multi-region: writes go to the user's home region (chosen by residency rules); "
                "global reference data replicated everywhere.",
                "Ids: globally unique and sortable (UUIDv7 or Snowflake), encoding nothing that "
                "changes when a user moves.",
                "Cross-shard operations: avoid; otherwise sagas, and fan-out reads with timeouts "
                "and partial results.",
            ),
            numbers=(
                "Keep a physical shard ≤ ~1-2 TB so backups, restores and index builds take hours, "
                "not days.",
                "Seed benchmark: sharding across 50+ nodes with consistent hashing; < 5 ms for 99% "
                "of indexed queries on each shard.",
            ),
            anti_patterns=(
                "A low-cardinality or time-based shard key: one hot shard.",
                "hash(key) mod N straight onto physical shards: adding one moves nearly "
                "everything.",
                "Cross-shard joins on the request path.",
                "Sharding before indexes, partitioning, replicas and vertical scaling are "
                "exhausted.",
            ),
            checklist=(
                "Shard key checked against the top 20 queries and transactions.",
                "A bucket move rehearsed on production-sized data, duration measured.",
                "Per-shard size, QPS and p99 with skew alerts (> 1.5× the average).",
                "Residency rules mapped to regions and reviewed with /security (GDPR).",
            ),
            calculate=shard_math,
        ),
        Rule(
            id="backend.jvm",
            title="JVM heap and GC for Spring Boot",
            triggers=(
                (r"\bjvm\b|\bhotspot\b", 3),
                (r"\bheap\b", 3),
                (r"\bgc\b|garbage[\s-]collect\w*", 3),
                (r"\bg1(?:gc)?\b|\bzgc\b|\bshenandoah\b", 3),
                (r"\bxm[xs]\w*", 3),
                (r"spring\s*boot|\bspring\b|\bjava\b|\bkotlin\b", 2),
                (r"virtual\s+threads?|\bwebflux\b", 2),
            ),
            recommendation=(
                "Size the heap from the measured live set, not from the machine: -Xms = -Xmx at "
                "3-4× the post-GC live set (or MaxRAMPercentage=75 in containers), G1 with a pause "
                "target that fits the latency budget, or generational ZGC on Java 21+ for "
                "sub-millisecond pauses; cut allocation before tuning flags."
            ),
            design=(
                "Flags (Java 17/21): -XX:MaxRAMPercentage=75 (or -Xms = -Xmx), -XX:+UseG1GC "
                "-XX:MaxGCPauseMillis=50-100, -XX:+AlwaysPreTouch, "
                "-Xlog:gc*:file=gc.log:time,uptime:filecount=5,filesize=20m, "
                "-XX:+HeapDumpOnOutOfMemoryError; tail-sensitive: -XX:+UseZGC -XX:+ZGenerational "
                "(generational by default from JDK 23).",
                "Measure: GC logs (pause p99, allocation and promotion rates), JFR for allocation "
                "hot spots, async-profiler -e alloc for allocation flame graphs.",
                "Spring Boot 3.2+ on Java 21: spring.threads.virtual.enabled=true for blocking "
                "I/O; "
                "Hibernate default_batch_fetch_size=50 and jdbc.batch_size=50.",
                "Event processing: batch listeners (max.poll.records 500), one shared "
                "ObjectMapper, "
                "no large per-event temporary objects.",
                "Container memory = heap + metaspace + direct buffers + thread stacks + ~25% "
                "headroom; watch RSS, not just the heap.",
            ),
            numbers=(
                "Heap = 3-4× the live set after a full GC; young collections seconds apart; GC CPU "
                "< 5%.",
                "G1 pause p99 within the hop's latency budget; ZGC pauses < 1 ms regardless of "
                "heap size.",
            ),
            anti_patterns=(
                '-Xmx set to most of the node "because it is free": longer pauses, OOM kills '
                "when off-heap grows.",
                "Dozens of GC flags copied from blogs before measuring the allocation rate.",
                "Ignoring off-heap memory (Netty direct buffers, metaspace) in container sizing.",
            ),
            checklist=(
                "GC logging on in production; pause p99 and GC CPU on a dashboard.",
                "Allocation profile of the event path; top allocators fixed.",
                "Load test at 3× the average event rate: no full GCs.",
                "24 h soak: no OOM kills with the container limit including off-heap.",
            ),
            calculate=jvm_math,
        ),
    ),
    general=Rule(
        id="backend.general",
        title="Backend production checklist",
        triggers=(),
        recommendation=(
            "No specific backend pattern was recognised in the request, so this is the checklist "
            "the backend specialist applies to any production service. Add the load (peak RPS, "
            "p99 target, data size, read/write ratio) and the pattern in question for a specific "
            "design."
        ),
        design=(
            "State the load: peak RPS, p99 target, data size and growth, read/write ratio, and "
            "the consistency each operation needs.",
            "Stateless services scaled horizontally; state in stores that scale independently.",
            "Every remote call: timeout, retries with backoff and jitter (idempotent operations "
            "only), circuit breaker, bulkhead.",
            "Data: an index for every hot query, pooled connections, a partitioning or sharding "
            "plan before 1-2 TB per node.",
            "Work the user does not wait for goes async (Kafka + outbox) with idempotent "
            "consumers and a DLQ.",
            "Observability: RED metrics, traces, structured logs, SLOs with burn-rate alerts.",
        ),
        numbers=(
            "API latency p50 < 20 ms, p99 < 100 ms for database-backed endpoints.",
            "100K+ RPS sustained with auto-scaling; > 10K QPS per database cluster.",
            "< 5 ms for 99% of indexed queries; 1M+ events/s at < 100 ms end to end.",
        ),
        anti_patterns=(
            "N+1 queries.",
            "Synchronous call chains without timeouts, retries and breakers.",
            "A database shared between services.",
            "Missing circuit breakers.",
            "No SLIs/SLOs or alerting.",
        ),
        checklist=(
            "Load figures written down and a load test at 1.5× peak.",
            "Timeouts, retries, breakers and bulkheads on every outbound call.",
            "Top queries indexed and reviewed with EXPLAIN.",
            "SLOs and burn-rate alerts per user-facing endpoint.",
            "Runbooks for the top three failure modes.",
        ),
    ),
)
