# ruff: noqa: RUF001
# (Answers use the multiplication sign; the expected phrases quote them.)
"""The offline rulebook: specific, deterministic, honest answers without a model."""

from __future__ import annotations

import re
import time

import pytest

from consumers.specialists.personas import SPECIALISTS
from consumers.specialists.rulebook import OfflineAnswer, OfflineRulebook
from consumers.specialists.rules import api, backend, data, perf, security
from consumers.specialists.rules.figures import extract_figures
from consumers.weighted_patterns import PatternGroups, normalise, required_literals

TABLES = {
    t.specialist: t for t in (backend.RULES, api.RULES, data.RULES, perf.RULES, security.RULES)
}

# The seed's "Real-World Use Cases": (request, rules expected in order, phrases the answer must
# carry: figures echoed or computed from the request, and the pattern-specific content).
SEED_CASES = [
    (
        "design microservices handling 50K RPS with circuit breakers and bulkhead patterns",
        ("backend.circuit-breaker", "backend.bulkhead", "backend.capacity"),
        (
            '"50K RPS" → 50,000 requests/s',
            "= 5,000 requests in flight",
            "needs 36 pods",
            "1.5 million calls",
            "bulkhead is 105 permits",
            "minimumNumberOfCalls = 20",
            "waitDurationInOpenState = 30 s",
        ),
    ),
    (
        "implement event sourcing with Kafka for financial transactions",
        ("backend.event-sourcing", "backend.ledger", "backend.kafka"),
        ("(aggregate_id, version)", "double-entry", "enable.idempotence=true", "Snapshots"),
    ),
    (
        "optimize PostgreSQL for 100K concurrent connections with connection pooling",
        ("backend.connection-pool", "backend.postgres"),
        ("100,000 client connections", "PgBouncer", "~10 PgBouncer processes", "~1 TB of RAM"),
    ),
    (
        "build distributed cache layer with Redis Cluster for sub-10ms response times",
        ("backend.redis-cache",),
        ("Budget for 10 ms", "leaves 8 ms for a miss", "16,384 hash slots", "≥ 99% hit ratio"),
    ),
    (
        "implement SAGA pattern for distributed transactions across payment/inventory/shipping "
        "services",
        ("backend.saga",),
        (
            "Step 1, inventory: reserve stock",
            "Step 2, payment: authorise",
            "Step 3, shipping",
            "void the authorisation",
            "Pivot: capture the payment",
        ),
    ),
    (
        "design API gateway with rate limiting (1000 RPS per user) and JWT validation",
        ("backend.api-gateway", "backend.rate-limit", "backend.jwt"),
        (
            "1,000 requests/s per user",
            "refill 1,000 tokens/s, capacity 2,000",
            "429 with Retry-After",
            "never take alg from the token",
        ),
    ),
    (
        "build event-driven architecture with dead letter queues and retry policies",
        ("backend.dlq-retry", "backend.event-driven"),
        ("1 + 2 + 4 + 8 + 16 = 31 s", ".retry.10s", "original key, value and headers", "Outbox"),
    ),
    (
        "implement CQRS with separate read/write databases for order management",
        ("backend.cqrs",),
        ("Read-your-writes", "order_id", "Projection lag p99 < 1 s"),
    ),
    (
        "profile and optimize Go service from 200ms to <50ms p99 latency",
        ("backend.latency", "backend.go-runtime"),
        ("removes 150 ms (75%)", "4.0×", "p99 budget of 50 ms", "MaxIdleConnsPerHost", "pprof"),
    ),
    (
        "implement database sharding strategy for 10TB user data across regions",
        ("backend.sharding",),
        ("20 physical shards", "1,024 logical buckets", "~14 h", "home each user in one region"),
    ),
    (
        "design connection pooling for microservices handling 500 concurrent requests",
        ("backend.connection-pool",),
        ("500 concurrent requests", "~125 connections busy", "(cores × 2) + effective spindles"),
    ),
    (
        "optimize JVM heap settings for Spring Boot service processing 1M events/hour",
        ("backend.jvm",),
        ("278 events/s", "833 events/s", "MaxRAMPercentage=75", "ZGC", "2-4 GB heap"),
    ),
]

TYPICAL = {
    "backend": ("add circuit breakers between our microservices", "backend.circuit-breaker"),
    "api": (
        "design an OpenAPI contract for the orders API with cursor pagination over 10M orders",
        "api.pagination",
    ),
    "data": (
        "build a CDC pipeline from Postgres into the Snowflake warehouse with Debezium",
        "data.cdc",
    ),
    "perf": ("profile our Java service and read the flame graphs", "perf.profiling"),
    "security": ("threat model the login flow with STRIDE", "security.threat-model"),
}

SECTIONS = (
    "## Recommendation",
    "## Design",
    "## Numbers to hold",
    "## Anti-patterns to avoid",
    "## Checklist",
)


@pytest.fixture(scope="module")
def rulebook() -> OfflineRulebook:
    return OfflineRulebook()


@pytest.mark.parametrize(
    ("prompt", "rules", "phrases"), SEED_CASES, ids=[c[1][0] for c in SEED_CASES]
)
def test_each_seed_request_gets_its_specific_rules_and_figures(
    rulebook: OfflineRulebook, prompt: str, rules: tuple[str, ...], phrases: tuple[str, ...]
) -> None:
    answer = rulebook.answer("backend", prompt)

    assert answer.matched_rules == rules
    for phrase in phrases:
        assert phrase in answer.content, phrase


def test_seed_requests_get_twelve_different_answers(rulebook: OfflineRulebook) -> None:
    answers = [rulebook.answer("backend", prompt) for prompt, _, _ in SEED_CASES]
    assert len({a.content for a in answers}) == len(SEED_CASES)
    assert len({a.matched_rules for a in answers}) == len(SEED_CASES)
    assert len({a.content.splitlines()[0] for a in answers}) == len(SEED_CASES)


@pytest.fixture(params=SPECIALISTS)
def typical(
    request: pytest.FixtureRequest, rulebook: OfflineRulebook
) -> tuple[str, str, OfflineAnswer]:
    """Each specialist, the rule its typical request must match first, and its answer to it."""
    specialist: str = request.param
    prompt, primary = TYPICAL[specialist]
    return specialist, primary, rulebook.answer(specialist, prompt)


def test_answer_has_title_sections_in_order_and_an_honest_footer(
    typical: tuple[str, str, OfflineAnswer],
) -> None:
    specialist, _, answer = typical
    lines = answer.content.rstrip("\n").splitlines()

    assert isinstance(answer, OfflineAnswer)
    assert answer.backend == "offline"
    assert lines[0].startswith(f"# {TABLES[specialist].label}: ")
    positions = [answer.content.index(section) for section in SECTIONS]
    assert positions == sorted(positions)
    assert "- [ ] " in answer.content
    assert lines[-1] == (
        f"_Answered offline by Switchboard's rulebook (rules: {', '.join(answer.matched_rules)}); "
        "set ANTHROPIC_API_KEY for a model-written answer._"
    )


def test_each_specialist_answers_its_typical_request_with_its_own_rule(
    typical: tuple[str, str, OfflineAnswer],
) -> None:
    specialist, primary, answer = typical
    assert answer.matched_rules[0] == primary
    assert all(rule.startswith(f"{specialist}.") for rule in answer.matched_rules)


def test_the_same_request_reads_differently_per_specialist(rulebook: OfflineRulebook) -> None:
    prompt = "our checkout API is slow at 5K RPS and stores card data in Postgres"
    answers = {name: rulebook.answer(name, prompt) for name in SPECIALISTS}
    assert len({a.content for a in answers.values()}) == len(SPECIALISTS)
    for name, answer in answers.items():
        assert all(rule.startswith(f"{name}.") for rule in answer.matched_rules)


def test_answers_are_deterministic_across_instances_and_without_the_cache() -> None:
    first = OfflineRulebook()
    uncached = OfflineRulebook(cache_size=0)
    for prompt, _, _ in SEED_CASES:
        expected = first.answer("backend", prompt)
        assert first.answer("backend", prompt) == expected
        assert uncached.answer("backend", prompt) == expected
        assert OfflineRulebook().answer("backend", prompt) == expected


@pytest.mark.parametrize("specialist", SPECIALISTS)
def test_unmatched_request_gets_the_general_checklist(
    rulebook: OfflineRulebook, specialist: str
) -> None:
    answer = rulebook.answer(specialist, "Can you take a look at this for me?")

    assert answer.matched_rules == (f"{specialist}.general",)
    for section in SECTIONS:
        assert section in answer.content
    assert answer.content.count("- [ ] ") >= 4
    assert f"rules: {specialist}.general" in answer.content


def test_general_checklists_differ_per_specialist(rulebook: OfflineRulebook) -> None:
    contents = {rulebook.answer(name, "hello").content for name in SPECIALISTS}
    assert len(contents) == len(SPECIALISTS)


def test_empty_prompt_gets_the_general_answer_without_an_echo(rulebook: OfflineRulebook) -> None:
    answer = rulebook.answer("backend", "   ")
    assert answer.matched_rules == ("backend.general",)
    assert "\n> " not in answer.content


def test_long_prompt_echo_is_truncated(rulebook: OfflineRulebook) -> None:
    answer = rulebook.answer("backend", "kafka " * 200)
    echo = next(line for line in answer.content.splitlines() if line.startswith("> "))
    assert echo.endswith("…")
    assert len(echo) < 200


def test_unknown_specialist_raises_key_error_listing_valid_names(
    rulebook: OfflineRulebook,
) -> None:
    with pytest.raises(KeyError, match="backend, api, data, perf, security"):
        rulebook.answer("frontend", "design a button")


def test_at_most_four_rules_per_answer(rulebook: OfflineRulebook) -> None:
    prompt = (
        "kafka saga cqrs circuit breaker bulkhead redis cache postgres sharding jwt rate limit "
        "dead letter queue event sourcing jvm heap"
    )
    assert len(rulebook.answer("backend", prompt).matched_rules) == 4


def test_weak_passing_mentions_do_not_join_a_focused_answer(rulebook: OfflineRulebook) -> None:
    # "response times" leans towards latency, but the request is about the cache.
    answer = rulebook.answer("backend", "build a Redis cache for sub-10ms response times")
    assert answer.matched_rules == ("backend.redis-cache",)


@pytest.mark.parametrize("specialist", SPECIALISTS)
def test_rule_tables_are_well_formed(rulebook: OfflineRulebook, specialist: str) -> None:
    table = TABLES[specialist]
    ids = rulebook.rule_ids(specialist)

    assert len(set(ids)) == len(ids)
    assert all(rule_id.startswith(f"{specialist}.") for rule_id in ids)
    assert (14 if specialist == "backend" else 8) <= len(ids) <= 20
    assert table.general.id == f"{specialist}.general"
    for rule in (*table.rules, table.general):
        assert rule.title and len(rule.recommendation) > 80
        assert len(rule.design) >= 3 and rule.numbers and rule.anti_patterns and rule.checklist


@pytest.mark.parametrize("specialist", SPECIALISTS)
def test_triggers_are_lowercase_so_lowercased_text_matches_them(specialist: str) -> None:
    for rule in TABLES[specialist].rules:
        for pattern, weight in rule.triggers:
            assert weight in (1, 2, 3)
            without_escapes = re.sub(r"\\.", "", pattern)
            assert without_escapes == without_escapes.lower(), (rule.id, pattern)


@pytest.mark.parametrize(
    ("specialist", "rule"),
    [(t.specialist, rule) for t in TABLES.values() for rule in t.rules],
    ids=lambda value: getattr(value, "id", value),
)
def test_every_rule_is_reachable_by_its_own_title(specialist: str, rule: object) -> None:
    selected = OfflineRulebook().select(specialist, rule.title)  # type: ignore[attr-defined]
    assert rule in selected


def test_prefilter_never_changes_which_patterns_match() -> None:
    """The literal prefilter is an optimisation only: scores equal a plain regex scan."""
    corpus = [prompt for prompt, _, _ in SEED_CASES] + [p for p, _ in TYPICAL.values()]
    corpus += [rule.title for t in TABLES.values() for rule in t.rules]
    corpus += ["xmx 4g -Xms 4g", "p99.9 at 300 ms", "CVE-2021-44228 in log4j", "10 TB", ".env"]
    for table in TABLES.values():
        groups = PatternGroups(rule.triggers for rule in table.rules)
        plain = [[(re.compile(p, re.ASCII), w) for p, w in rule.triggers] for rule in table.rules]
        for prompt in corpus:
            text = normalise(prompt)
            expected = [sum(w for p, w in group if p.search(text)) for group in plain]
            assert groups.scores(text) == expected, (table.specialist, prompt)


@pytest.mark.parametrize(
    ("pattern", "literals"),
    [
        (r"circuit[\s-]*breakers?", ("circuit",)),
        (r"\bhystrix\b|resilience4j", ("hystrix", "resilience4j")),
        (r"\bcves?\b", ("cve",)),
        (r"\b(?:rps|qps)\b(?!\s+per)", ("rps", "qps")),
        (r"little'?s\s+law", ("little",)),
        (r"(?:foo|(?:bar|baz)x)y", ("foo", "bar", "baz")),
        (r"\b\d+\s*ms\b", None),
        (r"(?:a|bb)?c", None),
        (r"\bv\d+\b", None),
    ],
)
def test_required_literals(pattern: str, literals: tuple[str, ...] | None) -> None:
    assert required_literals(pattern) == literals


@pytest.mark.parametrize(
    ("prompt", "field", "value", "text"),
    [
        ("handling 50K RPS", "rps", 50_000, "50K RPS"),
        ("at 1,500 requests per second", "rps", 1_500, "1,500 requests per second"),
        ("2M requests/day", "rps", 2e6 / 86_400, "2M requests/day"),
        ("rate limiting (1000 RPS per user)", "per_principal_rps", 1_000, "1000 RPS per user"),
        ("processing 1M events/hour", "event_rate", 1e6 / 3600, "1M events/hour"),
        ("100K concurrent connections", "concurrency", 100_000, "100K concurrent connections"),
        ("500 concurrent requests", "concurrency", 500, "500 concurrent requests"),
        ("10TB user data", "data_bytes", 1e13, "10TB"),
        ("from 200ms to <50ms p99", "latency_target_ms", 50, "from 200ms to <50ms"),
        ("from 200ms to <50ms p99", "latency_current_ms", 200, "200ms"),
        ("for sub-10ms response times", "latency_target_ms", 10, "sub-10ms"),
        ("p99 < 1.5 s", "latency_target_ms", 1500, "p99 < 1.5 s"),
        ("10M users", "item_count", 1e7, "10M users"),
    ],
)
def test_figures_read_from_the_request(prompt: str, field: str, value: float, text: str) -> None:
    quantity = getattr(extract_figures(prompt), field)
    assert quantity is not None
    assert quantity.value == pytest.approx(value)
    assert quantity.text == text


def test_figures_words_regions_services_and_language() -> None:
    figures = extract_figures(
        "profile the Go service across payment/inventory/shipping services in 3 regions"
    )
    assert figures.language == "go"
    assert figures.services == ("payment", "inventory", "shipping")
    assert figures.regions == 3 and figures.multi_region
    assert extract_figures("order and payment services").services == ("order", "payment")
    assert extract_figures("across regions").multi_region
    assert extract_figures("nothing numeric here").mentions() == []


@pytest.mark.parametrize(
    "hostile",
    [
        "a, " * 20_000 + "b services",
        "a/" * 20_000 + "b services",
        "1" * 50_000 + " rps",
        "1,111" * 10_000 + " rps",
        "a" * 60_000 + " and b services",
        "under 1" + "1" * 50_000 + "ms",
        "from 1ms to " * 5_000,
        "1000 rps per " * 5_000,
    ],
    ids=[
        "comma-list",
        "slash-list",
        "digits",
        "digit-groups",
        "long-word",
        "duration",
        "from-to",
        "per",
    ],
)
def test_hostile_prompts_cost_linear_time(hostile: str) -> None:
    """Prompts may be tens of kilobytes: no pattern may backtrack quadratically (this input
    took minutes before the repetitions were bounded)."""
    start = time.process_time()
    for specialist in SPECIALISTS:
        OfflineRulebook(cache_size=0).answer(specialist, hostile)
    assert time.process_time() - start < 5.0


def test_answer_is_fast_without_the_cache() -> None:
    """answer() sits on the worker's hot path when no API key is set: well under 1 ms each.

    Generous bound (5 ms mean) so a noisy shared machine cannot fail it; a regression to
    uncompiled regexes or per-call table building would.
    """
    rulebook = OfflineRulebook(cache_size=0)
    prompts = [prompt for prompt, _, _ in SEED_CASES]
    rulebook.answer("backend", prompts[0])  # warm imports
    start = time.process_time()
    rounds = 20
    for _ in range(rounds):
        for prompt in prompts:
            rulebook.answer("backend", prompt)
    mean = (time.process_time() - start) / (rounds * len(prompts))
    assert mean < 0.005
