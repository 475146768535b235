"""``benchmarks.live_cpu`` on the real broker: a pipeline at a steady rate serves that rate and
reports each process's CPU per response; a bad argument is a one-line error."""

from __future__ import annotations

import pytest

from benchmarks import live_cpu
from benchmarks.env import BenchKafka


def test_a_steady_rate_is_served_and_its_cpu_reported(kafka_config: dict[str, str]) -> None:
    bench = BenchKafka(kafka_config["bootstrap.servers"], started=False)
    result = live_cpu.measure(bench, 200.0, 2.0)
    # Open loop at 200 req/s: the window's responses came at that rate (not a backlog drained).
    assert 150 <= result["served_per_s"] <= 250, result
    us, cores = result["cpu_us_per_response"], result["cores"]
    for stage in ("sb-router", "sb-worker"):
        # Each stage's own process was measured: busy, and within the machine's two cores.
        assert us[stage] > 0 and 0 < cores[stage] < 2.0, result
    if bench.broker_cpu_s() is not None:  # this machine's broker: its share too
        assert us["broker"] > 0


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--rates", "fast"], "--rates takes numbers separated by commas"),
        (["--rates", "0"], "--rates needs at least one rate above 0"),
        (["--seconds", "0"], "--seconds must be above 0"),
    ],
)
def test_a_bad_argument_says_what_to_change(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        live_cpu.main(argv)
    assert exit_.value.code == 2
    assert says in capsys.readouterr().err
