"""Switchboard's performance harness: ``python -m benchmarks [--quick] [--only G1,G7]``.

Every figure is a ratio or a target measured in the same run, against baselines rebuilt in that
run on the same broker (see ``/work/shared/reference/performance.md`` and ``README.md`` here).
Never collected by pytest (``testpaths = ["tests"]``).

Modules by role: ``env`` (broker, topics, payloads, machine facts), ``procs`` (stage processes
from a fork server), ``stages`` (what runs inside them: raw loops, Switchboard stages, load
generator, observer, fake provider), ``measure`` (drains, timestamps, percentiles), one module
per scenario group (``capacity``, ``latency``, ``inflight``, ``overload``, ``frameworks``,
``codec``), ``profiling`` and ``report``.
"""
