# ruff: noqa: RUF001
# (The multiplication sign and other typographic signs are intended: this module is answer prose.)
"""The perf specialist's offline rules: measure first, then budgets, profiles and load tests."""

from __future__ import annotations

from consumers.specialists.rules.figures import Figures, ceil_div, fmt_int, fmt_ms, fmt_rate
from consumers.specialists.rules.rule import Derived, Rule, SpecialistRules

_PROFILERS = {
    "go": "Go: `go tool pprof -http=: http://HOST:6060/debug/pprof/profile?seconds=30` under load, "
    "then `allocs`, `mutex` and `block` profiles; `go tool trace` for scheduler and GC assist.",
    "jvm": "JVM: async-profiler `asprof -d 30 -e cpu -f cpu.html PID` (then `-e alloc`, `-e lock`, "
    "`-e wall`), or JFR `jcmd PID JFR.start duration=60s filename=rec.jfr`.",
    "python": "Python: `py-spy record -o profile.svg --pid PID --duration 30` (add `--idle` for "
    "wall-clock, `--native` for C extensions); Scalene for CPU vs memory vs GPU split.",
    "node": "Node.js: `node --cpu-prof` or `0x`/clinic.js flame; watch event-loop lag with "
    "`monitorEventLoopDelay` while profiling.",
    "rust": "Rust: `cargo flamegraph` (perf underneath) with debug symbols in release "
    "(`[profile.release] debug = true`); tokio-console for async stalls.",
}


def profiling_math(figures: Figures) -> Derived:
    if figures.language is None:
        return Derived()
    return Derived(design=(_PROFILERS[figures.language],))


def budget_math(figures: Figures) -> Derived:
    target = figures.latency_target_ms.value if figures.latency_target_ms else None
    current = figures.latency_current_ms.value if figures.latency_current_ms else None
    numbers: list[str] = []
    if current is not None and target is not None and current > target:
        numbers.append(
            f"Gap: {fmt_ms(current)} → {fmt_ms(target)} is {fmt_ms(current - target)} "
            f"({(current - target) / current:.0%}) at the same percentile; find which spans own "
            f"that {fmt_ms(current - target)} in traces of requests slower than {fmt_ms(target)}."
        )
    if target is not None:
        numbers.append(
            f"Budget for {fmt_ms(target)}: edge {fmt_ms(target * 0.1)}, service CPU "
            f"{fmt_ms(target * 0.25)}, data {fmt_ms(target * 0.35)}, downstream "
            f"{fmt_ms(target * 0.2)}, headroom {fmt_ms(target * 0.1)}; each hop's timeout ≈ its "
            "budget × 2, never above the caller's remaining time."
        )
    return Derived(numbers=tuple(numbers))


def capacity_math(figures: Figures) -> Derived:
    if not figures.rps:
        return Derived()
    rps = figures.rps.value
    latency = figures.latency_target_ms.value if figures.latency_target_ms else 100.0
    return Derived(
        numbers=(
            f"Little's law: {fmt_int(rps)} RPS × {fmt_ms(latency)} = "
            f"{fmt_int(rps * latency / 1000)} requests in flight; every thread, connection and "
            "queue bound on the path must hold its share of that.",
            "Queueing: mean wait grows as ρ/(1-ρ) of service time: ×1 at 50% utilisation, ×4 at "
            f"80%, ×9 at 90%. Run {fmt_int(rps)} RPS at ≤ 60-70% of the measured knee.",
        )
    )


def load_test_math(figures: Figures) -> Derived:
    if not figures.rps:
        return Derived()
    rps = figures.rps.value
    vus = ceil_div(rps * 0.1 * 2, 1)
    return Derived(
        numbers=(
            f"Plan: warm-up 5 min, ramp in 10% steps to {fmt_int(rps)} RPS, hold 30 min, stress to "
            f"{fmt_int(rps * 1.5)}-{fmt_int(rps * 2)} RPS to find the knee, soak at "
            f"{fmt_int(rps)} RPS for 4-24 h.",
            f"k6: `executor: 'constant-arrival-rate', rate: {fmt_int(rps)}, timeUnit: '1s', "
            f"preAllocatedVUs: {fmt_int(vus)}` (VUs ≈ rate × p99 × 2, assuming a 100 ms p99); one "
            "generator host rarely sustains more than ~10-30K RPS, so distribute above that.",
        )
    )


def gc_math(figures: Figures) -> Derived:
    rate = figures.event_rate or figures.rps
    if rate is None:
        return Derived()
    per_second = rate.value
    return Derived(
        numbers=(
            f'"{rate.text}" ≈ {fmt_rate(per_second)}/s: at ~50 KB allocated per unit of work the '
            f"allocation rate is ~{per_second * 0.05:.3g} MB/s; measure the real figure from GC "
            "logs before sizing the young generation.",
        )
    )


def tail_math(figures: Figures) -> Derived:
    return Derived(
        numbers=(
            "Fan-out: a request calling 100 backends each slow 1% of the time is slow "
            "1 - 0.99^100 = 63% of the time; at 10 backends, 10%.",
        )
    )


RULES = SpecialistRules(
    specialist="perf",
    label="Perf",
    rules=(
        Rule(
            id="perf.profiling",
            title="Profiling and flame graphs",
            triggers=(
                (r"\bprofil\w*", 3),
                (r"flame\s*graphs?|\bflamegraph\b", 3),
                (
                    r"\bpprof\b|async[\s-]profiler|\bjfr\b|py[\s-]spy|\bperf\s+record\b|\bebpf\b|"
                    r"\bbpftrace\b",
                    3,
                ),
                (r"\bhot\s*(?:spots?|paths?)\b|\bcpu\b", 1),
                (r"\bbottlenecks?\b", 2),
            ),
            recommendation=(
                "Profile under production-like load before changing anything: a CPU flame graph "
                "for where cycles go, an allocation profile for GC pressure, and an off-CPU or "
                "wall-clock profile for time spent waiting on locks, pools and I/O — the part CPU "
                "profiles cannot see."
            ),
            design=(
                "Capture 30-60 s profiles at steady load, not at start-up; keep symbols (frame "
                "pointers or debug info) so stacks are complete.",
                "Read the flame graph by width: the widest plateaus are the cost; compare "
                "before/after with a differential flame graph.",
                "Off-CPU: `offcputime` (BCC) or wall-clock mode (async-profiler `-e wall`, py-spy "
                "`--idle`) to find lock, pool and I/O waits.",
                "Continuous profiling (Pyroscope, Parca) for problems that only appear in "
                "production.",
                "One hypothesis, one change, one re-measurement; keep the profile in the PR.",
            ),
            numbers=(
                "A frame must own ≥ ~5% of samples to be worth optimising first.",
                "Profiler overhead ≤ a few percent at default sampling (~100 Hz per core).",
            ),
            anti_patterns=(
                "Optimising what looks slow in code review instead of what the profile shows.",
                "Profiling an idle or warming-up process.",
                "Ignoring off-CPU time when latency, not CPU, is the complaint.",
            ),
            checklist=(
                "CPU, allocation and off-CPU profiles captured at steady load.",
                "Top 5 frames explained in writing.",
                "Before/after differential flame graph attached to the change.",
            ),
            calculate=profiling_math,
        ),
        Rule(
            id="perf.latency-budget",
            title="Latency budgets",
            triggers=(
                (r"\blatenc\w*", 3),
                (r"\bp9\d(?:\.\d+)?\b|\bp50\b|percentiles?", 3),
                (r"\bslo\b|\bsla\b|\bbudgets?\b", 2),
                (r"response\s+times?|\bslow\w*\b", 2),
                (r"\b\d+\s*ms\b", 1),
            ),
            recommendation=(
                "Express the goal as a percentile at a rate, split it into per-hop budgets that "
                "sum below it with headroom, derive timeouts from the budgets, and find the hop "
                "that overspends from traces of the slow requests, not from averages."
            ),
            design=(
                "Histograms (HDR, Prometheus native histograms) per hop; percentiles are never "
                "averaged across instances — merge histograms.",
                "Tail-sampled traces (OpenTelemetry) of requests over the target; group by span "
                "to see which hop owns the excess.",
                "Separate queueing from service time: time waiting for a thread, connection or "
                "partition is latency too.",
                "Budgets include retries: a retry after a 50 ms timeout spends 50 ms of the "
                "budget.",
            ),
            numbers=(
                "Platform benchmarks: p50 < 20 ms, p99 < 100 ms for database-backed endpoints; "
                "< 5 ms for 99% of indexed queries.",
                "Report p50, p95, p99 and max with the request rate at which they were measured.",
            ),
            anti_patterns=(
                "Averages and averaged percentiles.",
                "Timeouts longer than the caller's remaining budget.",
                "A latency SLO without the load it applies to.",
            ),
            checklist=(
                "SLO written as percentile + rate.",
                "Per-hop budget table agreed with owning teams.",
                "Alert on budget burn for the user-facing percentile.",
            ),
            calculate=budget_math,
        ),
        Rule(
            id="perf.load-test",
            title="Load testing",
            triggers=(
                (r"load[\s-]*test\w*|stress[\s-]*test\w*|soak[\s-]*test\w*|spike\s+test\w*", 3),
                (r"\bk6\b|\bgatling\b|\blocust\b|\bjmeter\b|\bwrk2?\b|\bvegeta\b", 3),
                (r"\bbenchmark\w*", 2),
                (r"black\s+friday|\blaunch\b|peak\s+(?:traffic|load)", 2),
            ),
            recommendation=(
                "Load-test with an open-model generator at a fixed arrival rate (so slow "
                "responses do not slow the generator and hide the tail), against production-like "
                "data and topology, with warm-up excluded, stepping up to find the knee and "
                "soaking for leaks."
            ),
            design=(
                "Open model: k6 constant-arrival-rate or ramping-arrival-rate, wrk2 with -R, "
                "Gatling open injection; closed-loop tools (plain wrk, JMeter threads) suffer "
                "coordinated omission.",
                "Shapes: baseline, step ramp to the knee, stress to 1.5-2× expected peak, spike "
                "(0 → peak in seconds), soak 4-24 h.",
                "Data and traffic mix from production (sampled logs, realistic cache hit ratios, "
                "production-sized database).",
                "Observe the system, not just the generator: RED per service, USE per resource, "
                "GC, pool waits, consumer lag.",
                "Thresholds as pass/fail in CI for a short smoke-load test (k6 thresholds on "
                "p(99) and error rate).",
            ),
            numbers=(
                "Run ≥ 3 repetitions and report the median and spread; differences below 2× the "
                "run-to-run noise are not results.",
                "Peak design point ≤ 60-70% of the knee.",
            ),
            anti_patterns=(
                "Two-minute tests with no warm-up.",
                "Empty databases and 100% cache hits.",
                "Generator saturated (check its CPU) and reported as a system limit.",
            ),
            checklist=(
                "Open-model generator configured with a fixed arrival rate.",
                "Knee found and documented with the resource that saturated first.",
                "Soak shows flat memory and latency over hours.",
            ),
            calculate=load_test_math,
        ),
        Rule(
            id="perf.capacity",
            title="Capacity modelling",
            triggers=(
                (r"capacity\s+plan\w*|\bcapacity\b", 3),
                (r"\bthroughput\b|\brps\b|\bqps\b|requests?\s+per\s+second", 2),
                (r"\bheadroom\b|\butili[sz]ation\b|\bsaturat\w*", 2),
                (r"little'?s\s+law|\bqueueing\b|\bqueuing\b", 3),
                (r"\bscal\w*", 1),
            ),
            recommendation=(
                "Model capacity from measurements: find each service's knee under load, apply "
                "Little's law for concurrency limits, keep peak utilisation well below the knee "
                "because queueing delay explodes near saturation, and re-test after every "
                "significant change."
            ),
            design=(
                "Per service: throughput at the knee per instance, the resource that saturates "
                "first (CPU, pool, lock, I/O) and its p99 at 60/80/100% of the knee.",
                "Concurrency limits everywhere (threads, connections, in-flight) sized with "
                "Little's law, so overload becomes fast rejections rather than queues.",
                "Universal Scalability Law fit over 1, 2, 4, 8 instances to detect contention "
                "and coherency costs before they cap scale-out.",
                "Headroom for zone loss, deploys (surge pods) and retries.",
            ),
            numbers=(
                "CPU ≤ 60-70% at peak; queueing wait ×4 service time at 80% utilisation, ×9 at "
                "90%.",
                "Seed benchmark: 100K+ RPS sustained with auto-scaling.",
            ),
            anti_patterns=(
                "Linear extrapolation from one instance.",
                "Sizing on averages while peaks are 3-10× higher.",
                "No concurrency limits: overload turns into unbounded queues.",
            ),
            checklist=(
                "Knee per service measured and recorded.",
                "Concurrency limits configured from Little's law.",
                "Capacity plan reviewed before each launch or peak event.",
            ),
            calculate=capacity_math,
            numbers_first=True,
        ),
        Rule(
            id="perf.jvm-gc",
            title="JVM and GC tuning",
            triggers=(
                (r"\bjvm\b|\bjava\b|\bkotlin\b|\bscala\b|spring\s*boot", 2),
                (r"\bgc\b|garbage[\s-]collect\w*|\bg1\b|\bzgc\b|\bshenandoah\b", 3),
                (r"\bheap\b|-xm[xs]|\bmetaspace\b", 3),
                (r"gc\s+pauses?|stop[\s-]the[\s-]world|allocation\s+rate", 3),
            ),
            recommendation=(
                "Read the GC logs before touching flags: find the allocation rate, promotion "
                "rate, live set and pause distribution; reduce allocation at the top allocation "
                "sites first, then size the heap from the live set and choose G1 or generational "
                "ZGC by pause requirement."
            ),
            design=(
                "`-Xlog:gc*,safepoint:file=gc.log:time,uptime:filecount=5,filesize=20m` and JFR "
                "in production; analyse with GCViewer/GCeasy or JMC.",
                "Allocation flame graph (async-profiler `-e alloc`) to find the top allocators.",
                "Heap = 3-4× live set; -Xms = -Xmx; -XX:+AlwaysPreTouch; MaxRAMPercentage=75 in "
                "containers.",
                "G1 with MaxGCPauseMillis near the hop budget; generational ZGC (JDK 21+) when "
                "pauses must be < 1 ms; check safepoint time as well as GC time.",
            ),
            numbers=(
                "GC CPU < 5%; G1 pause p99 within the hop's budget; ZGC pauses < 1 ms.",
                "Young GCs seconds apart, not milliseconds; no full GCs in steady state.",
            ),
            anti_patterns=(
                "Copy-pasted flag lists.",
                "Bigger heaps to fix leaks.",
                "Ignoring safepoint pauses and time-to-safepoint.",
            ),
            checklist=(
                "GC and safepoint logs on in production.",
                "Top 5 allocation sites reviewed.",
                "Pause p99 and GC CPU on a dashboard with alerts.",
            ),
            calculate=gc_math,
        ),
        Rule(
            id="perf.tail-latency",
            title="Tail latency",
            triggers=(
                (r"tail\s+latenc\w*|\bp99\.9\b|\bp999\b|\boutliers?\b", 3),
                (r"\bspikes?\b|\bjitter\b|\bintermittent\w*", 2),
                (r"hedg\w*\s+requests?|\bfan[\s-]?out\b", 3),
                (r"coordinated\s+omission|noisy\s+neighbou?rs?|\bthrottl\w*", 2),
            ),
            recommendation=(
                "Tails come from queueing, pauses (GC, safepoints, CPU throttling), contention, "
                "retries and fan-out: correlate slow requests with those signals in time, remove "
                "the largest source, and use hedged or tied requests for idempotent reads where "
                "fan-out makes tails inevitable."
            ),
            design=(
                "Correlate p99 spikes with GC pauses, CFS throttling "
                "(container_cpu_cfs_throttled_periods_total), pool wait time, and deploys.",
                "Hedged requests: send a second copy after the p95 delay to another replica, "
                "cancel the loser; cap hedges at ~5% of traffic.",
                "Limit fan-out; return partial results with deadlines.",
                "Isolate noisy neighbours (dedicated nodes, CPU pinning for latency-critical "
                "pods).",
            ),
            numbers=("Track p99.9 and max as well as p99 for user-facing paths with fan-out.",),
            anti_patterns=(
                "Retries without budgets (they amplify tails under load).",
                "Tight CPU limits on latency-critical pods (throttling shows up as tail spikes).",
            ),
            checklist=(
                "Tail spikes correlated with GC, throttling and pool-wait metrics.",
                "Hedging limited to idempotent reads with a budget.",
            ),
            calculate=tail_math,
        ),
        Rule(
            id="perf.database",
            title="Slow queries",
            triggers=(
                (r"slow\s+quer\w*|query\s+(?:plans?|performance|optimi[sz]\w*)", 3),
                (r"\bexplain\b|pg_stat_statements|\bindex\w*", 2),
                (r"\bn\+1\b|\borm\b|\bhibernate\b|\bsqlalchemy\b", 2),
                (r"\bpostgres\w*|\bmysql\b|\bsql\b|\bdatabase\b", 1),
            ),
            recommendation=(
                "Rank queries by total time (pg_stat_statements or the slow log), read the plans "
                "with actual timings and buffers, and fix the biggest with indexes, rewritten "
                "access patterns or batching; detect N+1 patterns from the ORM by counting "
                "queries per request."
            ),
            design=(
                "`SELECT query, calls, total_exec_time, mean_exec_time FROM pg_stat_statements "
                "ORDER BY total_exec_time DESC LIMIT 20;`",
                "`EXPLAIN (ANALYZE, BUFFERS)`: look for sequential scans on large tables, row "
                "estimate errors > 10×, sorts spilling to disk, nested loops over many rows.",
                "Queries-per-request metric or test assertion to catch N+1s.",
                "Connection-pool wait time alongside query time: slow queries often hide a "
                "saturated pool.",
            ),
            numbers=("< 5 ms for 99% of indexed queries (platform benchmark).",),
            anti_patterns=(
                "Adding indexes without checking write cost and plan usage.",
                "Caching around an N+1 instead of removing it.",
            ),
            checklist=(
                "Top 20 queries by total time reviewed with plans.",
                "N+1 detection in tests.",
            ),
        ),
        Rule(
            id="perf.memory",
            title="Memory growth and leaks",
            triggers=(
                (r"memory\s+leaks?|\bleak\w*", 3),
                (r"\boom\w*|out\s+of\s+memory|oomkill\w*", 3),
                (r"\brss\b|memory\s+(?:usage|growth|footprint)", 2),
                (r"heap\s+dumps?|\bsnapshots?\b", 1),
            ),
            recommendation=(
                "Confirm the leak with a soak test and a time series of RSS and post-GC heap, "
                "then compare two heap snapshots taken minutes apart to find the growing "
                "retainers; most leaks are unbounded caches, listeners never removed, or "
                "per-request state kept in globals."
            ),
            design=(
                "JVM: heap dumps (`jcmd PID GC.heap_dump`) compared in Eclipse MAT (dominator "
                "tree); "
                "Go: `pprof -diff_base` on two heap profiles; Python: tracemalloc snapshots or "
                "memray; Node.js: two heap snapshots compared in DevTools.",
                "Off-heap growth (RSS grows, heap does not): native allocators, direct buffers, "
                "thread counts; try jemalloc with profiling for native leaks.",
                "Bound every cache (size and TTL) and every queue.",
            ),
            numbers=("Soak: memory flat within ~5% after warm-up over 4-24 h.",),
            anti_patterns=(
                "Raising memory limits to make OOM kills go away.",
                "Unbounded in-process caches and maps keyed by request data.",
            ),
            checklist=(
                "Soak test with memory time series.",
                "Two-snapshot diff identifies the retainer.",
                "Caches bounded in size and time.",
            ),
        ),
        Rule(
            id="perf.concurrency",
            title="Contention and concurrency",
            triggers=(
                (r"lock\s+contention|\bmutex\w*|\bdeadlocks?\b|\bcontention\b", 3),
                (r"thread[\s-]*pools?|\bevent[\s-]loop\b|\bgil\b|context\s+switch\w*", 3),
                (r"\basync\w*\b|\bgoroutines?\b|virtual\s+threads", 1),
                (r"\bcpu[\s-]bound\b|\bi/?o[\s-]bound\b|\bblocking\b", 2),
            ),
            recommendation=(
                "Find where threads wait, not just where they run: lock and off-CPU profiles "
                "show contention, event-loop lag shows blocking in async runtimes; then shrink "
                "critical sections, shard hot locks, move blocking work off event loops, and size "
                "pools to the resource they protect."
            ),
            design=(
                "JVM: async-profiler `-e lock`, JFR monitor events; Go: mutex/block profiles; "
                "Python asyncio: debug mode slow-callback warnings; Node: event-loop delay "
                "histogram.",
                "CPU-bound pools ≈ cores; I/O-bound pools from Little's law on the downstream.",
                "Replace global locks with striped/sharded locks or lock-free structures where "
                "the profile proves it matters.",
                "Python CPU-bound work: process pools or native extensions; GIL-free builds only "
                "with measured gains.",
            ),
            numbers=("Event-loop lag p99 < 10 ms in Node.js/asyncio services.",),
            anti_patterns=(
                "Thread pools of hundreds for CPU-bound work.",
                "Blocking calls on event loops.",
            ),
            checklist=(
                "Lock/block profiles reviewed at peak.",
                "Event-loop lag monitored with alerts.",
            ),
        ),
        Rule(
            id="perf.caching",
            title="Caching for performance",
            triggers=(
                (r"\bcach\w*", 3),
                (r"hit\s+(?:ratio|rate)|\bcdn\b|\bmemoi[sz]\w*", 3),
                (r"\bredis\b|\bmemcached\b|\bcaffeine\b", 2),
            ),
            recommendation=(
                "Add a cache only where the profile shows repeated expensive work with tolerable "
                "staleness, then measure hit ratio, latency on hit and miss, and origin load; a "
                "cache that misses more than ~1% decides your p99 by its miss path."
            ),
            design=(
                "Layering: in-process (Caffeine/ristretto) for hot, small data; Redis for shared "
                "data; CDN/HTTP caching (Cache-Control, ETag) for public reads.",
                "Request coalescing on misses; TTL jitter; stale-while-revalidate.",
                "Measure hit ratio per key pattern and the miss-path latency separately.",
            ),
            numbers=("p99 ≈ miss-path latency whenever misses exceed 1% of requests.",),
            anti_patterns=(
                "Caches without hit-ratio metrics.",
                "Caching to hide an N+1.",
            ),
            checklist=(
                "Hit ratio and miss latency per cache on dashboards.",
                "Stampede test on a hot key.",
            ),
        ),
    ),
    general=Rule(
        id="perf.general",
        title="Performance investigation checklist",
        triggers=(),
        recommendation=(
            "No specific performance topic was recognised, so this is the method the perf "
            "specialist applies: define the goal as a percentile at a rate, measure, profile, "
            "change one thing, re-measure. Give the current and target latency or throughput "
            "for a specific plan."
        ),
        design=(
            "Goal as percentile + rate (e.g. p99 < 50 ms at 5K RPS).",
            "RED per endpoint, USE per resource, traces for slow requests.",
            "CPU, allocation and off-CPU profiles under load.",
            "Open-model load tests with warm-up and repetitions.",
            "Fix in order of measured gain; keep a regression guard.",
        ),
        numbers=(
            "Platform benchmarks: p50 < 20 ms, p99 < 100 ms; < 5 ms indexed queries; 100K+ RPS.",
            "CPU ≤ 60-70% at peak; GC CPU < 5%.",
        ),
        anti_patterns=(
            "Optimising without a profile.",
            "Averages instead of percentiles.",
            "Closed-loop load tests.",
        ),
        checklist=(
            "Baseline measured and recorded.",
            "Bottleneck identified by a profile.",
            "Improvement verified at the same load, with noise reported.",
            "Regression guard in CI.",
        ),
    ),
)
