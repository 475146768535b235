"""The five personas ship as package data, parse, and say what each specialist owns."""

from __future__ import annotations

import hashlib

import pytest

from consumers.specialists.personas import (
    SPECIALISTS,
    Persona,
    PersonaFormatError,
    load_persona,
    parse_persona,
)


def _flat(text: str) -> str:
    """Markdown wraps lines anywhere: compare phrases with whitespace collapsed."""
    return " ".join(text.split())


def test_specialists_are_the_five_commands_in_order() -> None:
    assert SPECIALISTS == ("backend", "api", "data", "perf", "security")


@pytest.mark.parametrize("name", SPECIALISTS)
def test_each_persona_loads_with_version_digest_and_substance(name: str) -> None:
    persona = load_persona(name)

    assert isinstance(persona, Persona)
    assert persona.name == name
    assert persona.version >= 1
    assert persona.sha256 == hashlib.sha256(persona.system_prompt.encode("utf-8")).hexdigest()
    assert not persona.system_prompt.startswith("<!--"), "the header is not part of the prompt"
    lines = persona.system_prompt.splitlines()
    assert 60 <= len(lines) <= 130
    assert len(persona.system_prompt) > 4_000
    for section in ("# Role", "# Scope", "# Hand-offs", "# Answer format"):
        assert section in persona.system_prompt


@pytest.mark.parametrize("name", SPECIALISTS)
def test_each_persona_hands_off_to_every_other_specialist(name: str) -> None:
    prompt = load_persona(name).system_prompt
    for other in SPECIALISTS:
        if other != name:
            assert f"/{other}" in prompt, f"{name} persona never names /{other}"


@pytest.mark.parametrize("name", SPECIALISTS)
def test_each_persona_answers_in_one_turn_without_clarifying_questions(name: str) -> None:
    prompt = _flat(load_persona(name).system_prompt)
    assert "never ask a clarifying question" in prompt
    assert "Assumption:" in prompt


def test_backend_persona_carries_the_seed_numbers_and_anti_patterns() -> None:
    prompt = _flat(load_persona("backend").system_prompt)
    for fact in (
        "p50 < 20 ms",
        "p99 < 100 ms",
        "100K+ RPS",
        "> 10K QPS",
        "< 5 ms for 99%",
        "1M+ events/s",
        "N+1",
        "resilience4j",
        "Shared database",
        "SLIs/SLOs",
        "> 50K concurrent connections",
        "Raft",
        "SAGA",
        "Recommendation",
        "Numbers to hold",
        "Failure modes",
        "Checklist",
    ):
        assert fact in prompt, fact


@pytest.mark.parametrize(
    ("name", "topics"),
    [
        ("api", ("OpenAPI 3.1", "Idempotency-Key", "Cursor", "gRPC", "GraphQL", "RFC 9457", "429")),
        ("data", ("Debezium", "Flink", "dbt", "Iceberg", "SCD Type 2", "Schema Registry")),
        ("perf", ("flame graphs", "async-profiler", "coordinated omission", "Little's law", "ZGC")),
        ("security", ("STRIDE", "PKCE", "RFC 9700", "ASVS", "PCI DSS", "GDPR", "SOC 2")),
    ],
)
def test_other_personas_cover_their_field(name: str, topics: tuple[str, ...]) -> None:
    prompt = _flat(load_persona(name).system_prompt)
    for topic in topics:
        assert topic in prompt, f"{name}: {topic}"


def test_personas_differ_from_each_other() -> None:
    digests = {load_persona(name).sha256 for name in SPECIALISTS}
    assert len(digests) == len(SPECIALISTS)


def test_load_persona_is_cached_per_process() -> None:
    assert load_persona("perf") is load_persona("perf")


def test_unknown_persona_raises_key_error_listing_valid_names() -> None:
    with pytest.raises(KeyError) as excinfo:
        load_persona("frontend")
    message = str(excinfo.value)
    assert "frontend" in message
    for name in SPECIALISTS:
        assert name in message


def test_parse_persona_reads_header_and_strips_it() -> None:
    body = "You are a test persona.\n" * 20
    persona = parse_persona("api", f"<!-- persona: api; version: 7 -->\n{body}")
    assert persona.version == 7
    assert persona.system_prompt == body


@pytest.mark.parametrize(
    "text",
    [
        "no header at all\n" + "x" * 300,
        "<!-- persona: data; version: 1 -->\n" + "x" * 300,
        "<!-- persona: api; version: one -->\n" + "x" * 300,
        "<!-- persona: api; version: 1 -->\ntoo short",
    ],
    ids=["missing-header", "other-persona", "bad-version", "empty-prompt"],
)
def test_parse_persona_rejects_malformed_files(text: str) -> None:
    with pytest.raises(PersonaFormatError):
        parse_persona("api", text)


def test_specialists_agree_with_the_shared_settings() -> None:
    """Two modules name the specialists; they must never drift apart."""
    from switchboard.core.settings import SPECIALISTS as SETTINGS_SPECIALISTS

    assert SPECIALISTS == SETTINGS_SPECIALISTS
