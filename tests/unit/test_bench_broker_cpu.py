"""The broker's share of a drain: its CPU above its idle work, per delivered output."""

from __future__ import annotations

import pytest

from benchmarks.capacity import broker_us_per_msg, median_or_none


def test_the_idle_work_of_the_window_is_taken_out() -> None:
    drained = {"broker_cpu_s": 0.5, "seconds": 2.0, "delivered": 10_000}
    # 0.5 s of CPU in 2 s at an idle 0.1 core: 0.3 s for the records, 30 µs each.
    assert broker_us_per_msg(drained, 0.1) == pytest.approx(30.0)
    assert broker_us_per_msg(drained, 0.0) == pytest.approx(50.0)
    # Idle work is measured apart: a drain that used less than it never goes negative.
    assert broker_us_per_msg(drained, 1.0) == 0.0


def test_a_broker_elsewhere_has_no_figure() -> None:
    assert broker_us_per_msg({"broker_cpu_s": None, "seconds": 1.0, "delivered": 5}, 0.1) is None
    assert broker_us_per_msg({"broker_cpu_s": 0.2, "seconds": 1.0, "delivered": 5}, None) is None
    assert broker_us_per_msg({"broker_cpu_s": 0.2, "seconds": 1.0, "delivered": 0}, 0.1) is None
    assert median_or_none([None, 3.0, 1.0, None, 2.0]) == 2.0
    assert median_or_none([None, None]) is None
