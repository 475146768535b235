"""G11: Avro decode + validate + encode per message, no broker, with ``timeit``.

The router's own per-record work without Kafka or asyncio: ``SingleObjectCodec.decode`` of a
request, the router's validation (``Router._validate``, driven without an event loop: it only
awaits when a request has no command, and these all have one), building the task, and
``SingleObjectCodec.encode``. The figure is the median over repetitions of the mean per call,
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

    number, repeat = (200, 7) if quick else (1000, 15)
    per_call = len(values) * number

    def us(fn: Any, timer: Any = time.process_time) -> float:
        # CPU time of this process by default: the cost per message, not how long other
        # processes on the shared cores kept this one waiting (wall time is reported too).
        runs = timeit.repeat(fn, number=number, repeat=repeat, timer=timer)
        return statistics.median(runs) / per_call * 1e6

    value = us(full_with(codec))
    wall = us(full_with(codec), timer=time.perf_counter)
    return {
        "value": round(value, 2),
        "unit": "µs",
        "target": "<= 10 µs",
        "passed": value <= 10.0,
        "detail": {
            "wall_clock_us": round(wall, 2),
            "decode_us": round(us(decode_with(codec)), 2),
            "validate_and_task_us": round(us(validate_only), 2),
            "encode_us": round(us(encode_with(codec)), 2),
            "fastavro_only_full_us": round(us(full_with(plain)), 2),
            "fastavro_only_decode_us": round(us(decode_with(plain)), 2),
            "fastavro_only_encode_us": round(us(encode_with(plain)), 2),
            "bare_fastavro_read_plus_write_us": round(us(bare_fastavro), 2),
            "record_bytes": round(statistics.mean(len(v) for v in values)),
            "method": f"timeit, median of {repeat} repetitions of {number}x{len(values)} records, "
            "process CPU time (wall_clock_us: the same by the wall clock)",
        },
    }
