"""G11: Avro decode + validate + encode per message, no broker, with ``timeit``.

The router's own per-record work without Kafka or asyncio: ``SingleObjectCodec.decode`` of a
request, the router's validation (``Router._validate``, driven without an event loop: it only
awaits when a request has no command, and these all have one), building the task, and
``SingleObjectCodec.encode``. The figure is the median over repetitions of the mean per call.
The parts are timed alone too, with fastavro's bare reader and writer for reference.
"""

from __future__ import annotations

import statistics
import timeit
from io import BytesIO
from typing import Any

from fastavro import schemaless_reader, schemaless_writer

from benchmarks.env import Payloads
from consumers.router import Router, RouterRules
from switchboard.core.serde import REQUEST
from switchboard.core.topics import Topics


def run(payloads: Payloads, quick: bool) -> dict[str, Any]:
    codec = payloads.codec
    router = Router(
        codec=codec,
        topics=Topics("bench"),
        outcomes=None,
        index=None,  # type: ignore[arg-type]
        rules=RouterRules(),
    )
    values = [v for _k, v in payloads.requests(50)]
    topic = "bench.requests"

    def full() -> None:
        for value in values:
            request = codec.decode(REQUEST, value, topic)
            specialist, prompt = router._validate(request)
            task = dict(request, specialist=specialist, prompt=prompt)
            codec.encode(REQUEST, task, topic)

    decoded = [codec.decode(REQUEST, v, topic) for v in values]
    writer = codec._writers[REQUEST][1]

    def decode_only() -> None:
        for value in values:
            codec.decode(REQUEST, value, topic)

    def encode_only() -> None:
        for record in decoded:
            codec.encode(REQUEST, record, topic)

    def bare_fastavro() -> None:
        for value, record in zip(values, decoded, strict=True):
            schemaless_reader(BytesIO(value[10:]), writer, None)
            buf = BytesIO()
            schemaless_writer(buf, writer, record)

    number, repeat = (200, 7) if quick else (1000, 15)
    per_call = len(values) * number

    def us(fn: Any) -> float:
        runs = timeit.repeat(fn, number=number, repeat=repeat)
        return statistics.median(runs) / per_call * 1e6

    value = us(full)
    return {
        "value": round(value, 2),
        "unit": "µs",
        "target": "<= 10 µs",
        "passed": value <= 10.0,
        "detail": {
            "decode_us": round(us(decode_only), 2),
            "encode_us": round(us(encode_only), 2),
            "bare_fastavro_read_plus_write_us": round(us(bare_fastavro), 2),
            "record_bytes": round(statistics.mean(len(v) for v in values)),
            "method": f"timeit, median of {repeat} repetitions of {number}x{len(values)} records",
        },
    }
