"""``switchboard submit`` as scripts drive it: stable JSON keys, JSONL files, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from switchboard.core.settings import Settings

from .harness import running_pipeline

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def running(kafka_bootstrap: str, kafka_config: dict[str, str]) -> Iterator[Settings]:
    with running_pipeline(kafka_bootstrap, kafka_config, concurrency=16) as settings:
        yield settings


def _switchboard(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": str(settings.bootstrap_servers),
        "SWITCHBOARD_TOPIC_PREFIX": settings.topic_prefix,
    }
    env.pop("ANTHROPIC_API_KEY", None)
    return subprocess.run(
        [sys.executable, "-m", "switchboard.cli.main", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_submit_wait_json_prints_one_object_with_the_stable_keys(running: Settings) -> None:
    proc = _switchboard(
        running,
        "submit",
        "/backend design microservices handling 50K RPS with circuit breakers and bulkhead patterns",
        "--request-id",
        "cli-1",
        "--wait",
        "60",
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert {"request_id", "status", "specialist", "backend", "content"} <= set(result)
    assert result["request_id"] == "cli-1"
    assert (result["status"], result["specialist"], result["backend"]) == (
        "answered",
        "backend",
        "offline",
    )
    assert "circuit breaker" in result["content"].lower()


def test_submit_file_prints_one_json_line_per_response(running: Settings, tmp_path: Path) -> None:
    requests = tmp_path / "requests.jsonl"
    requests.write_text(
        "\n".join(
            json.dumps(item)
            for item in [
                {"text": "/api design cursor pagination", "request_id": "file-1"},
                {
                    "text": "design a CDC pipeline into the warehouse",
                    "tenant": "acme",
                    "request_id": "file-2",
                },
                {"text": "/nope not a specialist", "request_id": "file-3"},
            ]
        )
    )
    proc = _switchboard(running, "submit", "--file", str(requests), "--wait", "60", "--json")
    results = {r["request_id"]: r for r in map(json.loads, proc.stdout.strip().splitlines())}
    assert results["file-1"]["specialist"] == "api" and results["file-1"]["status"] == "answered"
    assert results["file-2"]["specialist"] == "data" and results["file-2"]["status"] == "answered"
    assert results["file-3"]["status"] == "rejected"
    assert proc.returncode == 1  # not every request was answered


def test_a_bad_jsonl_line_is_one_clear_error(running: Settings, tmp_path: Path) -> None:
    requests = tmp_path / "bad.jsonl"
    requests.write_text('{"text": "/api x"}\n{"txt": "typo"}\n')
    proc = _switchboard(running, "submit", "--file", str(requests))
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0
    assert "bad.jsonl:2" in proc.stderr
