"""Backend and performance rules: the seed's anti-patterns, read off design prose.

The recommendations carry the seed's numbers (p99 <100 ms for database-backed endpoints,
<5 ms indexed queries, 1,000 RPS per user, breakers in the resilience4j style).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from consumers.specialists.review.rule import Hit, ReviewRule, absence, negated, presence
from consumers.specialists.review.view import PartView
from switchboard.core.findings import Effort, Severity

BACKEND = "backend"
PERF = "perf"

# Lines that describe a call to another service or API.
REMOTE_CALL = (
    r"\b(?:calls?|invokes?|queries|requests?(?: data)? from|posts? to|sends? (?:a )?requests? to)"
    r"\b(?:[^.]|\.(?=\S)){0,60}?\b(?:service|api|endpoint|provider|gateway)s?\b"
    r"|\b(?:http|rest|grpc)\b(?:[^.]|\.(?=\S)){0,30}?\b(?:calls?|requests?|clients?)\b"
)
# Lines that describe consuming a queue or topic.
CONSUMES = (
    r"\b(?:consum(?:e|es|ed|ing)|subscribes? to|listens? (?:to|on)|polls?)\b(?:[^.]|\.(?=\S)){0,50}?"
    r"\b(?:topics?|queues?|kafka|sqs|rabbitmq|streams?|events?|messages?)\b"
    r"|\b(?:kafka|sqs|rabbitmq|pub/?sub|queue) (?:consumer|listener|subscriber)s?\b"
)

_LOOP = re.compile(r"^\s*(?:for\s+\w+\s+in\b|for\s*\(|\w+\.(?:forEach|each|map)\b)")
_QUERY_CALL = re.compile(
    r"\.(?:query|execute|get|filter|find\w*|fetch\w*|select|load)\s*\(|\b(?:SELECT|get_by_id)\b"
)


def _query_in_loop(view: PartView) -> Iterator[Hit]:
    """Code that loops over rows and runs a query per iteration (within the next three lines)."""
    for index, line in enumerate(view.lines):
        if not _LOOP.match(line):
            continue
        for offset in range(1, 4):
            if index + offset < len(view.lines) and _QUERY_CALL.search(view.lines[index + offset]):
                yield Hit(index, index + offset, confidence=0.7)
                break


_N_PLUS_ONE_PROSE = presence(
    r"\bN\s*\+\s*1\b",
    r"\b(?:for|in) (?:each|every) (?!request\b|incoming\b|call\b|message\b|event\b|record\b)\w+"
    r"(?:[^.]|\.(?=\S)){0,60}?\b(?:we |it |the \w+ )?(?:quer(?:y|ies)|selects?|looks? up|fetch(?:es)? (?:its|the|their)"
    r"|loads? (?:its|the|their)|calls? the \w+ service)\b",
    r"\bone (?:query|request|call|round[- ]trip) (?:per|for each|for every) "
    r"(?!request\b|tenant\b|batch\b|page\b)\w+",
)


def _n_plus_one(view: PartView) -> Iterator[Hit]:
    seen: set[int] = set()
    for hit in [*_N_PLUS_ONE_PROSE(view), *_query_in_loop(view)]:
        if hit.first not in seen and not negated(view, hit.first, 0):
            seen.add(hit.first)
            yield hit


RULES: tuple[ReviewRule, ...] = (
    ReviewRule(
        "SB-BE-001",
        "N+1 data access: one query per item of a list",
        Severity.HIGH,
        "performance",
        "Load related rows in one batched query (eager loading, `WHERE id = ANY($1)`, a "
        "DataLoader) so a page costs 1-2 queries, not N+1; hold indexed queries under 5 ms and "
        "database-backed endpoints at p99 <100 ms.",
        frozenset({BACKEND, PERF}),
        Effort.SMALL,
        _n_plus_one,
    ),
    ReviewRule(
        "SB-BE-002",
        "Synchronous call chain between services",
        Severity.HIGH,
        "resilience",
        "Break the chain: publish an event (Kafka) where the caller does not need the answer "
        "now; where it does, give each hop a timeout from the end-to-end budget (p99 <100 ms), "
        "bounded retries with backoff and a circuit breaker, so one slow service does not stall "
        "every caller above it.",
        frozenset({BACKEND, PERF}),
        Effort.MEDIUM,
        presence(
            r"\bsynchronous(?:ly)?\b(?:[^.]|\.(?=\S)){0,60}?\b(?:calls?|requests?|http|rest|grpc|invokes?|waits?)\b",
            r"\b(?:calls?|invokes?|requests?)\b(?:[^.]|\.(?=\S)){0,60}?\bsynchronously\b",
            r"\bwhich (?:then |in turn )?(?:synchronously )?calls\b",
            r"\bblocks? (?:on|until|waiting for)\b(?:[^.]|\.(?=\S)){0,60}?\b(?:services?|responses?|calls?|api)\b",
        ),
    ),
    ReviewRule(
        "SB-BE-003",
        "Database shared between services",
        Severity.HIGH,
        "architecture",
        "Database-per-service: each service owns its tables; others read through its API or "
        "consume its change events (transactional outbox or CDC into Kafka), so one service's "
        "schema change or slow query cannot break another.",
        frozenset({BACKEND}),
        Effort.LARGE,
        presence(
            r"\bshared (?:database|db|schema|postgres\w*|mysql|tables?)\b(?!-per)",
            r"\bshare (?:a |the |one |a single )?(?:same )?(?:database|db|schema|postgres\w*|mysql)\b",
            r"\b(?:reads?|writes?|quer(?:y|ies)|joins?)\b(?:[^.]|\.(?=\S)){0,40}?\bdirectly (?:from|to|against|into) "
            r"(?:the )?\w+(?: service)?(?:'s)? (?:database|db|tables?|schema)\b",
            r"\bboth (?:read|write|update|own)s? (?:to |from |in )?(?:the )?same (?:\w+ )?(?:database|db|schema|tables?)\b",
            r"\b(?:both|all|every) (?:\w+ )?services?\b(?:[^.]|\.(?=\S)){0,60}?\bsame (?:database|db|schema|tables?|postgres\w*)\b",
        ),
    ),
    ReviewRule(
        "SB-BE-004",
        "Calls to other services without circuit breakers",
        Severity.HIGH,
        "resilience",
        "Wrap each downstream dependency in a circuit breaker (resilience4j style: open after "
        "about 5 consecutive failures or a 50% error rate over a window, half-open probes) and a "
        "bulkhead (a bounded pool per dependency), with a fallback for when it is open.",
        frozenset({BACKEND}),
        Effort.SMALL,
        absence(
            REMOTE_CALL,
            r"circuit[- ]?breakers?|bulkheads?|resilience4j|hystrix|fail(?:s|ing)? fast",
        ),
    ),
    ReviewRule(
        "SB-BE-005",
        "Calls to other services without timeouts",
        Severity.HIGH,
        "resilience",
        "Set connect and request timeouts on every remote call from the caller's latency budget "
        "(e.g. 50-100 ms per hop for a p99 <100 ms API) and propagate deadlines (gRPC/context "
        "cancellation), so a hung dependency costs a bounded wait, not a thread forever.",
        frozenset({BACKEND, PERF}),
        Effort.SMALL,
        absence(REMOTE_CALL, r"time[- ]?outs?|deadlines?|timed out"),
    ),
    ReviewRule(
        "SB-BE-006",
        "Unbounded or immediate retries",
        Severity.HIGH,
        "resilience",
        "Cap retries (3-5 attempts) with exponential backoff and full jitter (e.g. 100 ms base, "
        "10 s cap), honour Retry-After, retry only idempotent operations, and dead-letter what "
        "still fails; immediate unbounded retries turn a blip into a retry storm.",
        frozenset({BACKEND}),
        Effort.SMALL,
        presence(
            r"\bretr(?:y|ies|ied|ying)\b(?:[^.]|\.(?=\S)){0,40}?\b(?:forever|indefinitely|infinitely|"
            r"until (?:it |they )?succeeds?|without (?:a |any )?(?:limit|backoff|delay|cap)|"
            r"with no (?:limit|backoff|delay|cap)|immediately|in a (?:tight )?loop)",
            r"\b(?:infinite|unlimited|unbounded|endless) retr(?:y|ies)\b",
            r"\b(?:max_?retries|max_?attempts|retries|retry_?count)\b[\"']?\s*[:=]\s*[\"']?(?:-1|unlimited|infinite|inf)\b",
            r"\bimmediately retr(?:y|ies|ied)\b",
            r"\b(?:backoff|retry_?delay|retry_?backoff_?ms)[\"']?\s*[:=]\s*[\"']?(?:0|none)\b",
        ),
    ),
    ReviewRule(
        "SB-BE-007",
        "Consumer without a dead-letter queue",
        Severity.MEDIUM,
        "resilience",
        "Send messages that still fail after bounded retries to a dead-letter topic with the "
        "original payload, headers and error, alert on its growth, and provide replay; a poison "
        "message must never block its partition.",
        frozenset({BACKEND}),
        Effort.SMALL,
        absence(CONSUMES, r"dead[- ]letter|\bdlq\b|parking[- ]lot|poison"),
    ),
    ReviewRule(
        "SB-BE-008",
        "Consumer without idempotency",
        Severity.HIGH,
        "data-integrity",
        "Delivery is at-least-once: make the handler idempotent (store the event id or an "
        "idempotency key under a unique constraint in the same transaction, or upsert), so a "
        "redelivered message changes nothing.",
        frozenset({BACKEND}),
        Effort.SMALL,
        absence(
            CONSUMES,
            r"idempoten|de-?dup|exactly[- ]once|upsert|processed[- ](?:ids?|keys?|events?)|unique (?:constraint|key|index)",
        ),
    ),
    ReviewRule(
        "SB-BE-009",
        "No SLOs, metrics or alerts",
        Severity.MEDIUM,
        "observability",
        "Define SLIs and SLOs (e.g. 99.9% availability; p50 <20 ms and p99 <100 ms for "
        "database-backed endpoints), export Prometheus metrics (rate, errors, duration) and "
        "traces (Jaeger/OpenTelemetry), and alert on SLO burn rate.",
        frozenset({BACKEND, PERF}),
        Effort.SMALL,
        absence(
            r"\b(?:services?|system|api|pipeline|consumers?|workers?|endpoints?)\b",
            r"\bslos?\b|\bslis?\b|service[- ]level|error budget|\bp9\d\b|percentile|alert|"
            r"metrics?\b|prometheus|grafana|dashboards?|monitor|observab|tracing|opentelemetry",
            document_wide=True,
        ),
    ),
    ReviewRule(
        "SB-PERF-001",
        "A new connection per request instead of a pool",
        Severity.MEDIUM,
        "performance",
        "Use a connection pool sized from concurrency (HikariCP, SQLAlchemy's pool, PgBouncer "
        "in transaction mode) instead of a connection per request; pooling is how 10K+ "
        "concurrent clients share a few hundred database connections.",
        frozenset({PERF, BACKEND}),
        Effort.SMALL,
        presence(
            r"\b(?:opens?|creates?|establish(?:es)?) (?:a )?(?:new|fresh) (?:\w+ )?connections?\b"
            r"(?:[^.]|\.(?=\S)){0,40}?\b(?:per|for each|for every|on each|on every)\b",
            r"\bnew (?:\w+ )?connection (?:per|for each|for every) (?:request|call|message|query)\b",
            r"\b(?:no|without (?:a |any )?)connection pool(?:ing|s)?\b",
        ),
    ),
    ReviewRule(
        "SB-PERF-002",
        "Unbounded result set or in-memory load",
        Severity.MEDIUM,
        "performance",
        "Bound every query and response: paginate with a cursor (default page 50-100, a hard "
        "maximum), stream large exports, and never load a table that grows without limit into "
        "memory.",
        frozenset({PERF}),
        Effort.MEDIUM,
        presence(
            r"\b(?:returns?|loads?|fetch(?:es)?|reads?) (?:all|every|the (?:entire|whole|full)) "
            r"(?:\w+ ){0,2}(?:rows|records|orders|items|events|users|table|history|results)\b"
            r"(?:[^.]|\.(?=\S)){0,40}?\b(?:into memory|at once|in (?:one|a single) (?:response|request|call|query)|"
            r"without (?:a )?(?:limit|pagination|paging))",
            r"\bSELECT \* FROM \w+\s*(?:;|$|\"|`)",
            r"\bunbounded (?:queue|buffer|cache|list|result)s?\b",
        ),
    ),
)
