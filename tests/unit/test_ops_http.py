"""/healthz and /readyz semantics, served over real HTTP on loopback (no broker needed)."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter

from consumers.health import ProcessHealth
from consumers.resilience.breaker import BreakerState
from switchboard.core.errors import ConfigError
from switchboard.core.ops_http import OpsServer
from tests.support import FakeClock, get_json


@dataclass
class FakeRuntime:
    assignment: list[tuple[str, int]]
    assigned_at: float = 1000.0


@dataclass
class FakeIndex:
    synced_since: float

    def synced(self, since: float) -> bool:
        return self.synced_since >= since


@dataclass
class FakeBreaker:
    name: str
    state: BreakerState = BreakerState.CLOSED


@pytest.fixture
def served() -> Iterator[tuple[ProcessHealth, FakeClock, str]]:
    clock = FakeClock()
    health = ProcessHealth(stale_after_s=15, broker_stale_after_s=15, clock=clock)
    server = OpsServer(0, health=health.health, ready=health.readiness).start()
    try:
        yield health, clock, server.url
    finally:
        server.stop()


def evaluate(
    health: ProcessHealth,
    *,
    runtimes: dict[str, FakeRuntime] | None = None,
    index: FakeIndex | None = None,
    breakers: dict[str, FakeBreaker] | None = None,
    broker_ok_at: float | None = 1000.0,
) -> None:
    health.evaluate(
        runtimes if runtimes is not None else {"router": FakeRuntime([("t", 0)])},
        index=index if index is not None else FakeIndex(2000.0),
        breakers=breakers or {},
        broker_ok_at=broker_ok_at,
    )


def test_healthz_is_200_while_the_loop_beats_and_503_once_the_beat_is_stale(
    served: tuple[ProcessHealth, FakeClock, str],
) -> None:
    health, clock, url = served
    assert get_json(f"{url}/healthz")[0] == 200  # alive from construction: start-up grace
    clock.now += 14
    health.beat()
    clock.now += 14.9
    assert get_json(f"{url}/healthz")[0] == 200
    clock.now += 0.2
    code, body = get_json(f"{url}/healthz")
    assert code == 503 and body["heartbeat_age_s"] == pytest.approx(15.1)
    health.beat()
    assert get_json(f"{url}/healthz")[0] == 200


def test_readyz_is_503_before_the_first_evaluation_and_200_when_every_check_passes(
    served: tuple[ProcessHealth, FakeClock, str],
) -> None:
    health, _clock, url = served
    code, body = get_json(f"{url}/readyz")
    assert code == 503 and body["failing"] == ["started"]
    evaluate(health)
    code, body = get_json(f"{url}/readyz")
    assert code == 200 and body["failing"] == [] and body["ok"] is True
    assert set(body["checks"]) == {"assigned", "broker", "index_synced", "breakers", "heartbeat"}


def test_readyz_names_an_unassigned_consumer(served: tuple[ProcessHealth, FakeClock, str]) -> None:
    health, _clock, url = served
    evaluate(health, runtimes={"router": FakeRuntime([("t", 0)]), "relay": FakeRuntime([])})
    code, body = get_json(f"{url}/readyz")
    assert code == 503 and body["failing"] == ["assigned"]
    assert body["checks"]["assigned"]["unassigned"] == ["relay"]


def test_readyz_names_an_open_breaker_but_not_a_half_open_one(
    served: tuple[ProcessHealth, FakeClock, str],
) -> None:
    health, _clock, url = served
    breakers = {
        "backend": FakeBreaker("backend:claude-sonnet", BreakerState.OPEN),
        "api": FakeBreaker("api:claude-sonnet", BreakerState.HALF_OPEN),
    }
    evaluate(health, breakers=breakers)
    code, body = get_json(f"{url}/readyz")
    assert code == 503 and body["failing"] == ["breakers"]
    assert body["checks"]["breakers"]["open"] == ["backend:claude-sonnet"]
    breakers["backend"].state = BreakerState.CLOSED
    evaluate(health, breakers=breakers)
    assert get_json(f"{url}/readyz")[0] == 200


def test_readyz_fails_on_an_unsynced_index_a_silent_broker_and_a_stale_loop(
    served: tuple[ProcessHealth, FakeClock, str],
) -> None:
    health, clock, url = served
    evaluate(health, index=FakeIndex(999.0))
    assert get_json(f"{url}/readyz")[1]["failing"] == ["index_synced"]
    evaluate(health, broker_ok_at=None)
    assert get_json(f"{url}/readyz")[1]["failing"] == ["broker"]
    evaluate(health)
    clock.now += 16  # broker answered 16 s ago (> 15) and the loop has not beaten since
    code, body = get_json(f"{url}/readyz")
    assert code == 503 and body["failing"] == ["heartbeat"]
    evaluate(health)
    assert get_json(f"{url}/readyz")[1]["failing"] == ["broker", "heartbeat"]


def test_metrics_are_served_in_the_text_format_and_unknown_paths_are_404() -> None:
    registry = CollectorRegistry()
    Counter("sb_test_things_total", "things", registry=registry).inc(3)
    server = OpsServer(0, registry=registry).start()
    try:
        with urllib.request.urlopen(f"{server.url}/metrics", timeout=5) as response:
            assert response.headers["Content-Type"].startswith("text/plain")
            assert "sb_test_things_total 3.0" in response.read().decode()
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"{server.url}/nope", timeout=5)
        assert missing.value.code == 404
    finally:
        server.stop()


def test_a_broken_check_is_a_503_with_the_error_not_a_crash() -> None:
    def broken() -> tuple[bool, dict[str, Any]]:
        raise RuntimeError("boom")

    server = OpsServer(0, ready=broken).start()
    try:
        code, body = get_json(f"{server.url}/readyz")
        assert code == 503 and body["error"] == "RuntimeError: boom"
        assert get_json(f"{server.url}/healthz")[0] == 200
    finally:
        server.stop()


def test_a_port_in_use_is_a_one_line_error_naming_the_setting() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match="SWITCHBOARD_METRICS_PORT") as err:
            OpsServer(port)
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="SWITCHBOARD_METRICS_ADDR"):
        OpsServer(0, "203.0.113.1")  # TEST-NET-3: not an address of this host
