"""``python -m benchmarks.handlers`` against the real broker: the router routes every request
from its headers and the worker answers every task the router returned, in each repetition;
the figures are read in ``benchmarks/README.md``, never asserted here beyond being measured."""

from __future__ import annotations

from benchmarks.handlers import run


def test_every_request_is_routed_and_answered_in_every_repetition(
    kafka_config: dict[str, str],
) -> None:
    result = run(records=200, reps=2, config=kafka_config)
    assert result["answered"] == 400  # fresh ids per repetition: no duplicate was dropped
    for part in ("router_us", "worker_us"):
        assert len(result[part]["runs"]) == 2
        assert 0 < result[part]["best"] <= result[part]["median"]
