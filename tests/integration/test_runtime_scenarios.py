"""Crash, rebalance and shutdown scenarios: real worker processes, a real broker, the real SDK
against the fake model server. Every request ends with exactly one response on the topic."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from producers.client import SwitchboardClient
from switchboard.core.settings import Settings
from switchboard.devtools.fake_anthropic import FakeAnthropic

from .harness import RunningPipeline, router_only, unthrottled_settings
from .helpers import read_topic

pytestmark = pytest.mark.integration


class WorkerProcess:
    """``switchboard worker backend`` as a real OS process, so it can be SIGKILLed."""

    def __init__(
        self,
        settings: Settings,
        base_url: str,
        log_dir: Path,
        *,
        concurrency: int,
        instance: str | None = None,
    ) -> None:
        self.env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": str(settings.bootstrap_servers),
            "SWITCHBOARD_TOPIC_PREFIX": settings.topic_prefix,
            "SWITCHBOARD_PARTITIONS": str(settings.partitions),
            "ANTHROPIC_API_KEY": "sk-test",
            "ANTHROPIC_BASE_URL": base_url,
            "SWITCHBOARD_DRAIN_TIMEOUT_S": "20",
        }
        if instance:
            self.env["SWITCHBOARD_INSTANCE_ID"] = instance
        self.concurrency = concurrency
        self.log_dir = log_dir
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        log = open(self.log_dir / f"worker-{id(self)}-{self.starts}.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "switchboard.cli.main",
                "worker",
                "backend",
                "--concurrency",
                str(self.concurrency),
            ],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def wait_running(self, timeout_s: float = 60) -> None:
        """Until the worker's log says its consumers run."""
        log = self.log_dir / f"worker-{id(self)}-{self.starts}.log"
        deadline = time.monotonic() + timeout_s
        while b"running" not in log.read_bytes():
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout_s: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout_s)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def env(
    kafka_bootstrap: str, kafka_config: dict[str, str], tmp_path: Path
) -> Iterator[dict[str, Any]]:
    with FakeAnthropic(latency_ms=(50, 500)) as fake:
        settings = unthrottled_settings(kafka_bootstrap, kafka_config, fake, partitions=4)
        with (
            RunningPipeline(settings, kafka_config, router_only),
            SwitchboardClient(kafka_config, topic_prefix=settings.topic_prefix) as client,
        ):
            yield {"settings": settings, "fake": fake, "client": client, "tmp": tmp_path}


def _submit(client: SwitchboardClient, n: int, tag: str) -> list[str]:
    return client.submit_many(
        [
            {
                "text": f"/backend request {tag}-{i}: size the connection pool",
                "request_id": f"{tag}-{i}",
            }
            for i in range(n)
        ]
    )


def _await_all(client: SwitchboardClient, ids: list[str], timeout_s: float) -> list[Any]:
    deadline = time.monotonic() + timeout_s
    return [client.result(r, max(0.1, deadline - time.monotonic())) for r in ids]


def _responses_per_key(
    kafka_config: dict[str, str], settings: Settings, ids: list[str]
) -> Counter[bytes]:
    """How many responses the topic holds for each of ``ids`` (read until all are there)."""
    wanted = {r.encode() for r in ids}
    topic = f"{settings.topic_prefix}.responses"
    messages = read_topic(kafka_config, topic, until=lambda m: wanted <= {x.key() for x in m})
    time.sleep(1)  # let any late duplicate land, then count everything in the topic
    everything = read_topic(kafka_config, topic, until=lambda m: len(m) >= len(messages))
    return Counter(m.key() for m in everything if m.key() in wanted)


def test_sigkill_five_times_every_request_answered_exactly_once(
    env: dict[str, Any], kafka_config: dict[str, str]
) -> None:
    """2,000 requests, model latency 50-500 ms; the worker is SIGKILLed 5 times at random
    moments and restarted. Each request has exactly one response on the topic; calls repeated
    because a kill abandoned them never exceed the in-flight cap at each kill."""
    settings, fake, client = env["settings"], env["fake"], env["client"]
    cap = 200
    worker = WorkerProcess(settings, fake.base_url, env["tmp"], concurrency=cap, instance="w1")
    worker.start()
    ids = _submit(client, 2000, "kill")
    rng = random.Random(42)
    in_flight_at_kills = []
    try:
        for _ in range(5):
            # A random moment once the worker runs, then kill while model calls are in flight
            # (not while the process is still starting, nor in a gap between waves).
            worker.wait_running()
            time.sleep(rng.uniform(0.05, 1.0))
            deadline = time.monotonic() + 60
            while fake.stats().in_flight < 20 and time.monotonic() < deadline:
                time.sleep(0.01)
            in_flight_at_kills.append(fake.stats().in_flight)
            worker.kill()
            worker.start()
        responses = _await_all(client, ids, timeout_s=240)
    finally:
        worker.kill()
    assert {r.status for r in responses} == {"answered"}
    per_key = _responses_per_key(kafka_config, settings, ids)
    assert len(per_key) == 2000 and set(per_key.values()) == {1}
    stats = fake.stats()
    repeated = sum(n - 1 for n in stats.billed_by_key.values() if n > 1)
    resent = sum(n - 1 for n in stats.calls_by_key.values() if n > 1)
    print(
        f"\nafter 5 SIGKILLs (in flight at each: {in_flight_at_kills}): {resent} calls "
        f"repeated, {repeated} of them billed twice (bound {5 * cap}); "
        f"max in flight {stats.max_in_flight}"
    )
    assert repeated <= resent <= 5 * cap
    assert stats.max_in_flight <= cap


def test_a_second_worker_joins_and_leaves_mid_run(
    env: dict[str, Any], kafka_config: dict[str, str]
) -> None:
    settings, fake, client = env["settings"], env["fake"], env["client"]
    first = WorkerProcess(settings, fake.base_url, env["tmp"], concurrency=100)
    second = WorkerProcess(settings, fake.base_url, env["tmp"], concurrency=100)
    first.start()
    try:
        ids = _submit(client, 1000, "join")
        time.sleep(2)
        second.start()
        second.wait_running()
        time.sleep(5)
        second.signal(signal.SIGTERM)
        assert second.wait(60) == 0
        responses = _await_all(client, ids, timeout_s=180)
    finally:
        first.kill()
        second.kill()
    assert {r.status for r in responses} == {"answered"}
    per_key = _responses_per_key(kafka_config, settings, ids)
    assert len(per_key) == 1000 and set(per_key.values()) == {1}
    assert fake.stats().max_in_flight <= 200


def test_sigterm_drains_in_flight_and_exits_zero(
    env: dict[str, Any], kafka_config: dict[str, str]
) -> None:
    """SIGTERM under load: in-flight calls finish within the drain timeout, the process exits 0,
    and the next worker redoes nothing that was answered (no model call repeats)."""
    settings, fake, client = env["settings"], env["fake"], env["client"]
    worker = WorkerProcess(settings, fake.base_url, env["tmp"], concurrency=150)
    worker.start()
    ids = _submit(client, 800, "term")
    try:
        deadline = time.monotonic() + 60
        while fake.stats().in_flight < 50 and time.monotonic() < deadline:
            time.sleep(0.05)
        began = time.monotonic()
        worker.signal(signal.SIGTERM)
        assert worker.wait(60) == 0
        drained_in = time.monotonic() - began
        worker.start()
        responses = _await_all(client, ids, timeout_s=120)
    finally:
        worker.kill()
    assert drained_in < 20 + 5
    assert {r.status for r in responses} == {"answered"}
    assert max(fake.stats().billed_by_key.values()) == 1
    per_key = _responses_per_key(kafka_config, settings, ids)
    assert set(per_key.values()) == {1}
