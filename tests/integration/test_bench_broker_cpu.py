"""A drain against this machine's local broker reports what it cost the broker."""

from __future__ import annotations

import pytest

from benchmarks.capacity import broker_us_per_msg, drain
from benchmarks.env import BenchKafka, Payloads


def test_a_drain_reports_the_brokers_cpu(kafka_config: dict[str, str]) -> None:
    bench = BenchKafka(kafka_config["bootstrap.servers"], started=False)
    if bench.broker_cpu_s() is None:
        pytest.skip("the broker of this session is not this machine's `switchboard kafka start`")
    idle = bench.broker_idle_cores(0.5)
    assert idle is not None and idle >= 0.0
    result = drain(bench, Payloads().requests(3_000, headers=True), "raw", "chain")
    assert result["complete"]
    # Two hops of 3,000 records were appended and fetched: the broker did work for them.
    assert result["broker_cpu_s"] > 0.0
    per_msg = broker_us_per_msg(result, idle)
    assert per_msg is not None and per_msg >= 0.0
