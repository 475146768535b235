"""Routing text to a specialist: explicit /commands, then weighted keywords, backend by default."""

from __future__ import annotations

import ast
import time
from pathlib import Path

import pytest

from consumers.specialists.personas import SPECIALISTS
from consumers.triage import KeywordTriage, TriageResult, parse_command
from consumers.triage_keywords import KEYWORDS

REPO = Path(__file__).resolve().parents[2]

FREE_TEXT = [
    ("How should I version our public REST endpoints without breaking clients?", "api"),
    ("Write an OpenAPI spec for the orders resource", "api"),
    ("Cursor vs offset pagination for a list endpoint", "api"),
    ("Should we use gRPC or GraphQL for mobile clients?", "api"),
    ("Design idempotency keys for our payment POST endpoint", "api"),
    ("Webhook delivery with signatures and retries", "api"),
    ("Build an ETL pipeline from Postgres into Snowflake", "data"),
    ("Set up CDC with Debezium to stream MySQL changes", "data"),
    ("Our dbt models take 3 hours; restructure the warehouse", "data"),
    ("Flink job windowing late events from Kafka", "data"),
    ("Data quality checks for daily batch loads", "data"),
    ("Partition our Iceberg tables on S3", "data"),
    ("Profile this Python service and read the flame graph", "perf"),
    ("p99 latency jumped from 80ms to 400ms after the deploy", "perf"),
    ("Plan a load test with k6 for Black Friday traffic", "perf"),
    ("GC pauses are causing timeouts in our Java app", "perf"),
    ("We have a memory leak in our Node.js workers", "perf"),
    ("Threat model our file upload feature with STRIDE", "security"),
    ("Implement OAuth2 with PKCE and OIDC login", "security"),
    ("How do we rotate encryption keys in KMS?", "security"),
    ("Prepare for a SOC 2 Type II audit", "security"),
    ("Fix the XSS vulnerability in our comment form", "security"),
    ("A CVE was found in our log4j dependency", "security"),
    ("Implement SAGA for order and payment services", "backend"),
    ("Design a Redis cache in front of Postgres", "backend"),
    ("CQRS with event sourcing for the ledger", "backend"),
    ("Add circuit breakers between microservices", "backend"),
    ("implement CQRS with separate read/write databases for order management", "backend"),
    ("design API gateway with rate limiting (1000 RPS per user) and JWT validation", "backend"),
]


@pytest.fixture(scope="module")
def triage() -> KeywordTriage:
    return KeywordTriage()


@pytest.mark.parametrize(("text", "expected"), FREE_TEXT, ids=[t for t, _ in FREE_TEXT])
def test_free_text_goes_to_the_expected_specialist(
    triage: KeywordTriage, text: str, expected: str
) -> None:
    result = triage.classify(text)
    assert isinstance(result, TriageResult)
    assert result.specialist == expected, result.reason
    assert 0.0 < result.confidence < 1.0
    assert result.reason.startswith(expected)


def test_no_keywords_defaults_to_backend_with_zero_confidence(triage: KeywordTriage) -> None:
    result = triage.classify("Help me with my thing")
    assert result == TriageResult(
        specialist="backend",
        confidence=0.0,
        reason="no specialist keywords matched; defaulted to backend",
    )


def test_empty_text_defaults_to_backend(triage: KeywordTriage) -> None:
    assert triage.classify("").specialist == "backend"


def test_reason_names_the_keywords_and_the_runner_up(triage: KeywordTriage) -> None:
    result = triage.classify("Build an ETL pipeline from Postgres into Snowflake")
    assert "etl" in result.reason and "snowflake" in result.reason
    assert "vs backend" in result.reason and "postgres" in result.reason


def test_stronger_evidence_means_higher_confidence(triage: KeywordTriage) -> None:
    weak = triage.classify("GC pauses in production")
    strong = triage.classify("Profile the service, read the flame graph, then run a k6 load test")
    assert strong.specialist == weak.specialist == "perf"
    assert strong.confidence > weak.confidence


def test_ties_go_to_the_earlier_specialist() -> None:
    triage = KeywordTriage({"api": ((r"\bwidget\b", 2),), "backend": ((r"\bgadget\b", 2),)})
    assert triage.classify("widget and gadget").specialist == "backend"
    assert triage.classify("widget").specialist == "api"


def test_classification_is_case_insensitive_and_deterministic(triage: KeywordTriage) -> None:
    text = "Threat model our file upload feature with STRIDE"
    assert triage.classify(text) == triage.classify(text.upper()) == triage.classify(text.lower())


def test_keyword_tables_cover_every_specialist_with_lowercase_patterns() -> None:
    assert set(KEYWORDS) == set(SPECIALISTS)
    for patterns in KEYWORDS.values():
        for pattern, weight in patterns:
            assert weight in (1, 2, 3)
            assert pattern == pattern.lower(), pattern


def test_keywords_for_unknown_specialists_are_rejected() -> None:
    with pytest.raises(ValueError, match="frontend"):
        KeywordTriage({"frontend": ((r"\bcss\b", 3),)})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("/backend design X", ("backend", "design X")),
        ("/BACKEND Design X", ("backend", "Design X")),
        ("   /perf   profile the service  ", ("perf", "profile the service")),
        ("/security\nthreat model\nthe login", ("security", "threat model\nthe login")),
        ("/api", ("api", "")),
        ("/unknown foo", ("unknown", "foo")),
        ("/", ("", "")),
        ("design X with /backend later", (None, "design X with /backend later")),
        ("  plain question  ", (None, "plain question")),
        ("", (None, "")),
    ],
)
def test_parse_command(text: str, expected: tuple[str | None, str]) -> None:
    assert parse_command(text) == expected


def test_huge_text_is_classified_in_linear_time(triage: KeywordTriage) -> None:
    text = "profile the flame graph, " * 4_000 + "a" * 50_000
    start = time.process_time()
    assert triage.classify(text).specialist == "perf"
    assert time.process_time() - start < 2.0


def _consumers_imports(module: str) -> set[str]:
    """The ``consumers`` modules that ``module``'s file imports (``from a import b`` counts as
    ``a`` and ``a.b``: ``b`` may be a module)."""
    path = REPO.joinpath(*module.split("."))
    package = module.split(".") if path.is_dir() else module.split(".")[:-1]
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            source = ".".join([*base, *([node.module] if node.module else [])])
            found.add(source)
            found.update(f"{source}.{alias.name}" for alias in node.names)
    return {m for m in found if m.split(".")[0] == "consumers"}


def _is_module(name: str) -> bool:
    path = REPO.joinpath(*name.split("."))
    return (path / "__init__.py").is_file() or path.with_suffix(".py").is_file()


def test_the_router_side_imports_nothing_of_the_specialists() -> None:
    # Routing must not change when a specialist's rules or personas do: the triage owns its
    # keyword tables. Followed through every module the router side reaches, not just one file.
    reached: set[str] = set()
    todo = ["consumers.router", "consumers.triage", "consumers.triage_model"]
    while todo:
        module = todo.pop()
        if module in reached or not _is_module(module):
            continue
        reached.add(module)
        todo.extend(_consumers_imports(module))
    assert {"consumers.triage_keywords", "consumers.weighted_patterns"} <= reached
    assert sorted(m for m in reached if m.startswith("consumers.specialists")) == []
