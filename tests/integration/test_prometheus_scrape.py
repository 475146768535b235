"""A real Prometheus (Debian's ``prometheus``) scrapes a running ``switchboard router``
process and answers a query for its records over its HTTP API."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from producers.client import SwitchboardClient

pytestmark = pytest.mark.integration

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def until(check: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if found := check():
                return found
        except (OSError, urllib.error.URLError, ValueError):
            pass  # not up yet
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.3)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.fixture
def router_process(kafka_bootstrap: str, tmp_path: Path) -> Iterator[tuple[str, int]]:
    prefix = f"sbt-{uuid.uuid4().hex[:10]}"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "SWITCHBOARD_"))}
    env.update(
        KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
        SWITCHBOARD_TOPIC_PREFIX=prefix,
        SWITCHBOARD_PARTITIONS="1",
        SWITCHBOARD_METRICS_PORT=str(port),
        SWITCHBOARD_LAG_INTERVAL_S="1",
    )
    log = (tmp_path / "router.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "switchboard.cli.main", "router"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield prefix, port
    finally:
        _stop(proc)
        log.close()
        assert proc.returncode == 0, (tmp_path / "router.log").read_text()[-3000:]


def test_prometheus_scrapes_a_running_pipeline_process(
    router_process: tuple[str, int], kafka_config: dict[str, str], tmp_path: Path
) -> None:
    """The router serves /readyz once assigned; Prometheus scrapes it every second; after 5
    requests its query API returns the router group's ``switchboard_records_total`` of 5,
    its lag series and ``up == 1``."""
    if not Path(PROMETHEUS).exists():
        pytest.fail("prometheus is missing: apt-get install -y --no-install-recommends prometheus")
    prefix, metrics_port = router_process
    target = f"http://127.0.0.1:{metrics_port}"
    until(
        lambda: urllib.request.urlopen(f"{target}/readyz", timeout=2).status == 200,
        60,
        "the router to be ready",
    )

    prom_port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        "  - job_name: switchboard\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{metrics_port}']}}]\n"
    )
    prometheus = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "prometheus.log").open("wb"),
    )
    try:
        with SwitchboardClient(kafka_config, topic_prefix=prefix) as client:
            ids = [client.submit(f"/api design pagination {i}") for i in range(5)]
        assert len(ids) == 5
        api = f"http://127.0.0.1:{prom_port}/api/v1/query?query="

        def query(promql: str) -> list[dict[str, Any]]:
            with urllib.request.urlopen(api + urllib.parse.quote(promql), timeout=5) as r:
                body = json.loads(r.read())
            assert body["status"] == "success", body
            return list(body["data"]["result"])

        group = f"{prefix}.router"

        def five_records() -> list[dict[str, Any]] | None:
            result = query(f'switchboard_records_total{{group="{group}"}}')
            return result if result and float(result[0]["value"][1]) >= 5 else None

        records = until(five_records, 25, "Prometheus to see the router's 5 records")
        assert float(records[0]["value"][1]) == 5
        assert records[0]["metric"]["job"] == "switchboard"
        up = query('up{job="switchboard"}')
        assert [float(s["value"][1]) for s in up] == [1.0]
        lag = until(
            lambda: query(f'switchboard_consumer_lag_records{{group="{group}"}}'),
            10,
            "the lag series",
        )
        assert lag[0]["metric"]["topic"] == f"{prefix}.requests"
    finally:
        _stop(prometheus)
