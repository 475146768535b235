"""G11: Avro decode + validate + encode per message, no broker, with ``timeit``.

The router's own per-record work without Kafka or asyncio: ``SingleObjectCodec.decode`` of a
request, the router's validation (``Router._validate``, driven without an event loop: it only
awaits when a request has no command, and these all have one), building the task, and
``SingleObjectCodec.encode``. The figure is the fastest repetition's mean per call (timeit's advice),
in this process's CPU time (on cores shared with other work, wall time also counts the time
the process waited to run; it is reported beside it).
The parts are timed alone too (decode, the router's validation with building the task, encode),
and the same loop through a codec without the compiled fast path (``avro_compiled``), i.e.
fastavro alone as before it, with fastavro's bare reader and writer for reference.
"""

from __future__ import annotations

import statistics
import time
import timeit
from io import BytesIO
from typing import Any

from fastavro import schemaless_reader, schemaless_writer

from benchmarks.env import Payloads
from consumers.router import Router, RouterRules
from switchboard.core.serde import REQUEST, SingleObjectCodec
from switchboard.core.topics import Topics


def _fastavro_only(codec: SingleObjectCodec) -> SingleObjectCodec:
    """A codec on the same schemas without the compiled fast path: fastavro alone, as before."""
    plain = SingleObjectCodec()
    plain._fast_writers.clear()
    plain._fast_readers.clear()
    return plain


def run(payloads: Payloads, quick: bool) -> dict[str, Any]:
    codec = payloads.codec
    router = Router(
        codec=codec,
        topics=Topics("bench"),
        outcomes=None,  # type: ignore[arg-type]
        index=None,  # type: ignore[arg-type]
        rules=RouterRules(),
    )
    values = [v for _k, v in payloads.requests(50)]
    topic = "bench.requests"
    # The tenant's policy, as the router looks it up before validating (an allowed tenant).
    policies = {}
    for value in values:
        tenant = codec.decode(REQUEST, value, topic)["tenant"]
        found = router.tenants.config.policy(tenant)
        assert found is not None, f"{tenant} is not an allowed tenant"
        policies[tenant] = found

    def full_with(c: SingleObjectCodec) -> Any:
        def full() -> None:
            for value in values:
                request = c.decode(REQUEST, value, topic)
                specialist, prompt = router._validate(request, policies[request["tenant"]])
                task = dict(request, specialist=specialist, prompt=prompt)
                c.encode(REQUEST, task, topic)

        return full

    decoded = [codec.decode(REQUEST, v, topic) for v in values]
    writer = codec._writers[REQUEST][1]
    plain = _fastavro_only(codec)

    def decode_with(c: SingleObjectCodec) -> Any:
        def decode_only() -> None:
            for value in values:
                c.decode(REQUEST, value, topic)

        return decode_only

    def encode_with(c: SingleObjectCodec) -> Any:
        def encode_only() -> None:
            for record in decoded:
                c.encode(REQUEST, record, topic)

        return encode_only

    def validate_only() -> None:
        for request in decoded:
            specialist, prompt = router._validate(request, policies[request["tenant"]])
            dict(request, specialist=specialist, prompt=prompt)

    def bare_fastavro() -> None:
        for value, record in zip(values, decoded, strict=True):
            schemaless_reader(BytesIO(value[10:]), writer, None)
            buf = BytesIO()
            schemaless_writer(buf, writer, record)

    number, repeat = (200, 15) if quick else (1000, 15)
    per_call = len(values) * number
    measured = {
        "full": full_with(codec),
        "decode": decode_with(codec),
        "validate": validate_only,
        "encode": encode_with(codec),
        "fastavro_full": full_with(plain),
        "fastavro_decode": decode_with(plain),
        "fastavro_encode": encode_with(plain),
        "bare_fastavro": bare_fastavro,
    }
    # CPU time of this process: the cost per message, not how long other processes on the
    # shared cores kept this one waiting (the full loop's wall time is reported too). Each
    # figure is its fastest repetition, as timeit's documentation advises (slower ones are
    # other work interfering), and the repetitions are interleaved, one round of every loop at
    # a time: here the machine's speed swung a whole figure by 30-60% from one second to the
    # next, so a figure timed in one block could land wholly in a slow spell.
    cpu: dict[str, list[float]] = {name: [] for name in measured}
    wall: list[float] = []
    for _ in range(repeat):
        for name, fn in measured.items():
            cpu[name].append(timeit.timeit(fn, number=number, timer=time.process_time))
        wall.append(timeit.timeit(measured["full"], number=number, timer=time.perf_counter))

    def us(runs: list[float], pick: Any = min) -> float:
        return float(pick(runs)) / per_call * 1e6

    value = us(cpu["full"])
    return {
        "value": round(value, 2),
        "unit": "µs",
        "target": "<= 10 µs",
        "passed": value <= 10.0,
        "detail": {
            "median_us": round(us(cpu["full"], statistics.median), 2),
            "wall_clock_us": round(us(wall), 2),
            "decode_us": round(us(cpu["decode"]), 2),
            "validate_and_task_us": round(us(cpu["validate"]), 2),
            "encode_us": round(us(cpu["encode"]), 2),
            "fastavro_only_full_us": round(us(cpu["fastavro_full"]), 2),
            "fastavro_only_decode_us": round(us(cpu["fastavro_decode"]), 2),
            "fastavro_only_encode_us": round(us(cpu["fastavro_encode"]), 2),
            "bare_fastavro_read_plus_write_us": round(us(cpu["bare_fastavro"]), 2),
            "record_bytes": round(statistics.mean(len(v) for v in values)),
            "method": f"timeit, the fastest of {repeat} interleaved repetitions of "
            f"{number}x{len(values)} records, process CPU time (median_us: their median; "
            "wall_clock_us: the fastest by the wall clock)",
        },
    }
