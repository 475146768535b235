"""G13: the answered index's memory per process over the full dedup horizon.

The load to simulate: 1,000 answers a second kept for the default horizon of 7 days is
604.8 million answers in the response topic. A process holds only its share: the response
partitions matching its consumers' partitions (co-partitioning), each in an on-disk store.

What is measured (``python -m benchmarks --only G13``): the response topic (``PARTITIONS``
partitions) is preloaded with ``N`` answers (8 million; 1 million with ``--quick``;
``G13_ANSWERS`` in the environment sets it) (keys of 32 hex characters, the ``sb-status``
header, timestamps spread over the last 7 days, as the log holds them), then a fresh process
(a child, so its memory is its own) follows ``FOLLOWED`` of the partitions, as a worker
holding that share would, and rebuilds its stores from the topic. Its RSS is sampled while
it reads; after the catch-up 100,000 lookups (half hits) are timed. The result: RSS at the
end, the RSS growth per answer once the block cache has filled (a least-squares fit over the
second half of that part; before, RSS grows with the cache up to its fixed capacity), and RSS
extrapolated linearly with it to the share of a member
holding 1 of 12 partitions (50.4 million answers) and to all 604.8 million in one process. A run
too short to fill the cache (``--quick``) reports the bound of a full cache instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Final

import psutil

from benchmarks.env import BenchKafka
from switchboard.core import headers as h
from switchboard.core.admin import ensure_topics
from switchboard.core.topics import TopicSpec

ANSWERS_PER_S: Final = 1000
HORIZON_S: Final = 7 * 24 * 3600
FULL_HORIZON_ANSWERS: Final = ANSWERS_PER_S * HORIZON_S  # 604.8 million
PARTITIONS: Final = 4
FOLLOWED: Final = (0, 1, 2)  # 3 of the 4 partitions: the child must read only these
#: A deployment's share for the extrapolation: one member holding 1 of 12 partitions.
SHARE_OF: Final = 12
TARGET_MB: Final = 200.0
PRELOAD_QUICK: Final = 1_000_000
PRELOAD_FULL: Final = 8_000_000
LOOKUPS: Final = 100_000
#: The block cache counts as filled once it holds this share of its capacity.
CACHE_FULL: Final = 0.6
#: The least span of answers read with the cache full that a slope is measured over.
MIN_SLOPE_SPAN: Final = 1_000_000


def run(bench: BenchKafka, quick: bool) -> dict[str, Any]:
    n = int(os.environ.get("G13_ANSWERS") or (PRELOAD_QUICK if quick else PRELOAD_FULL))
    topic = f"bench-index-{uuid.uuid4().hex[:10]}.responses"
    ensure_topics(
        bench.admin,
        [TopicSpec("responses", topic, {"retention.ms": str(HORIZON_S * 1000)})],
        partitions=PARTITIONS,
        replication_factor=1,
    )
    state = Path(tempfile.mkdtemp(prefix="sb-index-bench-"))
    try:
        t0 = time.monotonic()
        _preload(bench.config, topic, n)
        preload_s = time.monotonic() - t0
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "benchmarks.index_memory",
                json.dumps({"kafka": bench.config, "topic": topic, "state": str(state)}),
            ],
            capture_output=True,
            text=True,
            timeout=1800,
            check=True,
        )
        child = json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(state, ignore_errors=True)
        for future in bench.admin.delete_topics([topic], operation_timeout=30).values():
            with contextlib.suppress(Exception):  # a leftover topic is not a failure
                future.result(timeout=30)
    return judge(child, n, preload_s)


def judge(child: dict[str, Any], n: int, preload_s: float) -> dict[str, Any]:
    """G13's result from the child's measurements (``_child``) of ``n`` preloaded answers."""
    slope = child["rss_slope_bytes_per_answer"]
    rss_mb = round(child["rss_end"] / 2**20, 1)
    share = FULL_HORIZON_ANSWERS // SHARE_OF
    names = (
        f"1_of_{SHARE_OF}_partitions_{share / 1e6:.1f}M",
        f"all_{FULL_HORIZON_ANSWERS / 1e6:.1f}M_in_one_process",
    )
    if slope is not None:  # linear from the growth measured with the cache full
        extrapolated: dict[str, Any] = {
            name: round(
                (child["rss_end"] + max(0.0, slope) * (total - child["answers"])) / 2**20, 1
            )
            for name, total in zip(names, (share, FULL_HORIZON_ANSWERS), strict=True)
        }
        worst = max(rss_mb, *extrapolated.values())
    else:  # the cache did not fill: only the bound of a full cache is known
        bound = round((child["rss_end"] + child["cache_room_bytes"]) / 2**20, 1)
        extrapolated = {
            name: f"not measured: the block cache did not fill (RSS with it full <= {bound} MB)"
            for name in names
        }
        worst = bound
    failed_because = []
    # Short of an end, the figures describe fewer answers than were preloaded: no verdict on
    # memory can rest on them.
    reached = {p: at for p, at in child["reached"]}
    short = [(p, reached.get(p, 0), end) for p, end in child["ends"] if reached.get(p, 0) < end]
    if short:
        where = ", ".join(f"partition {p} at offset {at} of {end}" for p, at, end in short)
        failed_because.append(
            f"incomplete catch-up: read {child['answers']} of {child['expected']} answers ({where})"
        )
    if worst >= TARGET_MB:
        failed_because.append(f"RSS {worst:g} MB (measured or extrapolated) >= {TARGET_MB:g} MB")
    return {
        "value": rss_mb,
        "target": (
            f"< {TARGET_MB:g} MB RSS per process (measured and extrapolated), every preloaded "
            "answer of the followed partitions read"
        ),
        "passed": not failed_because,
        "detail": {
            "failed_because": failed_because,
            "preloaded": n,
            "partitions": PARTITIONS,
            "followed": list(FOLLOWED),
            "answers_read": child["answers"],
            "answers_expected": child["expected"],
            "catchup_complete": not short,
            "preload_s": round(preload_s, 1),
            "catchup_s": round(child["catchup_s"], 1),
            "catchup_per_s": round(child["answers"] / max(child["catchup_s"], 1e-9)),
            "rss_start_mb": round(child["rss_start"] / 2**20, 1),
            "rss_peak_mb": round(child["rss_peak"] / 2**20, 1),
            "rss_end_mb": rss_mb,
            "rss_slope_bytes_per_answer": None if slope is None else round(slope, 3),
            "block_cache_full_at_answers": child["cache_full_at"],
            "disk_bytes_per_answer": round(child["disk_bytes"] / max(child["answers"], 1), 1),
            "lookup_hit_us": round(child["lookup_hit_us"], 2),
            "lookup_miss_us": round(child["lookup_miss_us"], 2),
            "block_cache_used_mb": round(child["block_cache_mb"], 1),
            "extrapolated_rss_mb": extrapolated,
            "old_dict_index_bytes_per_answer": child["dict_bytes_per_answer"],
            "rss_samples": child["samples"],
        },
    }


def _preload(kafka: dict[str, Any], topic: str, n: int) -> None:
    """``n`` answers with timestamps spread evenly over the last 7 days (oldest first); not
    ``benchmarks.env.preload``, which writes no timestamps."""
    now_ms = int(time.time() * 1000)
    start = now_ms - HORIZON_S * 1000 + 3_600_000  # an hour inside the horizon
    step = (now_ms - start) / n
    status: list[tuple[str, str | bytes | None]] = [(h.STATUS, b"answered")]
    from confluent_kafka import Producer

    from switchboard.core.kafka_clients import producer_config

    producer = Producer(producer_config(kafka, **{"linger.ms": 50, "batch.size": 1_000_000}))
    for i in range(n):
        key = uuid.uuid4().hex.encode()
        while True:
            try:
                producer.produce(topic, b"", key, headers=status, timestamp=int(start + i * step))
                break
            except BufferError:
                producer.poll(0.05)
        if i % 1000 == 0:
            producer.poll(0)
    if producer.flush(120) != 0:
        raise RuntimeError(f"could not preload {n} answers into {topic}")


def _child(spec: dict[str, Any]) -> dict[str, Any]:
    """In a fresh process: follow ``FOLLOWED`` partitions, rebuild, measure."""
    from confluent_kafka import Consumer, TopicPartition

    from consumers.answered import AnsweredIndex, partition_of
    from consumers.answered_store import StateDir

    proc = psutil.Process()
    kafka, topic = spec["kafka"], spec["topic"]
    probe = Consumer({**kafka, "group.id": f"probe-{uuid.uuid4().hex}"})
    expected = 0
    ends = []  # [partition, high watermark]: where a complete catch-up ends
    for p in FOLLOWED:
        low, high = probe.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
        expected += high - low
        ends.append([p, high])
    probe.close()
    rss_start = proc.memory_info().rss
    index = AnsweredIndex(
        kafka, topic, HORIZON_S, state=StateDir(Path(spec["state"]), topic), partitions=PARTITIONS
    )
    samples: list[tuple[int, int, int]] = []  # (answers read, RSS, block cache in use)
    peak = rss_start

    async def catch_up() -> float:
        nonlocal peak
        began = time.monotonic()
        index.follow("bench", FOLLOWED)
        sync = asyncio.ensure_future(index.sync(time.monotonic()))
        while not sync.done():
            await asyncio.sleep(0.5)
            rss = proc.memory_info().rss
            peak = max(peak, rss)
            samples.append((_read(index), rss, index._budget._cache.get_usage()))
        await sync
        return time.monotonic() - began

    catchup_s = asyncio.run(catch_up())
    answers = _read(index)
    reached = [[p, index._next.get(p, 0)] for p in FOLLOWED]
    rss_end = proc.memory_info().rss
    peak = max(peak, rss_end)
    held = [
        rid.decode()
        for store in index._stores.values()
        for rid in store.answers(LOOKUPS // 2 // len(FOLLOWED))
    ]
    random.shuffle(held)
    misses = [uuid.uuid4().hex for _ in range(LOOKUPS - len(held))]
    t0 = time.perf_counter()
    hits = sum(index.is_answered(rid) for rid in held)
    hit_us = (time.perf_counter() - t0) / len(held) * 1e6
    t0 = time.perf_counter()
    found = sum(index.is_answered(rid) for rid in misses)
    miss_us = (time.perf_counter() - t0) / len(misses) * 1e6
    assert hits == len(held) and found == 0, "every held answer is found, no other"
    cache_mb = index._budget._cache.get_usage() / 2**20
    cache_cap = index._budget.cache_bytes
    assert all(partition_of(rid, PARTITIONS) in FOLLOWED for rid in held)
    disk = sum(f.stat().st_size for f in index._state.path.rglob("*") if f.is_file())
    index.close()
    # The growth per answer once the block cache has filled (before, RSS grows with the cache
    # up to its fixed capacity: no slope to extrapolate): a least-squares fit over the second
    # half of the samples from the first with the cache CACHE_FULL of its capacity on (RocksDB
    # keeps it 65-85% full here). None: the cache never got there in this run.
    first = next((i for i, x in enumerate(samples) if x[2] >= CACHE_FULL * cache_cap), None)
    full = samples[first:] if first is not None else []
    tail = full[len(full) // 2 :]
    slope: float | None = None
    if len(tail) >= 4 and tail[-1][0] - tail[0][0] >= MIN_SLOPE_SPAN:
        slope = _fit(tail)
    cache_room = cache_cap - min(cache_mb * 2**20, cache_cap)
    return {
        "answers": answers,
        "expected": expected,
        "ends": ends,
        "reached": reached,
        "catchup_s": catchup_s,
        "rss_start": rss_start,
        "rss_end": rss_end,
        "rss_peak": peak,
        "rss_slope_bytes_per_answer": slope,
        "cache_full_at": full[0][0] if full else None,
        "cache_room_bytes": cache_room,
        "disk_bytes": disk,
        "lookup_hit_us": hit_us,
        "lookup_miss_us": miss_us,
        "block_cache_mb": cache_mb,
        "dict_bytes_per_answer": _dict_bytes_per_answer(),
        "samples": [
            (a, round(r / 2**20, 1), round(c / 2**20, 1))
            for a, r, c in samples[:: max(1, len(samples) // 20)]
        ],
    }


def _fit(samples: list[tuple[int, int, int]]) -> float:
    """The least-squares slope of RSS over answers read: bytes per answer."""
    n = len(samples)
    mean_a = sum(a for a, _r, _c in samples) / n
    mean_r = sum(r for _a, r, _c in samples) / n
    num = sum((a - mean_a) * (r - mean_r) for a, r, _c in samples)
    den = sum((a - mean_a) ** 2 for a, _r, _c in samples)
    return num / den if den else 0.0


def _read(index: Any) -> int:
    """Answers read so far: the offsets the index reached in its partitions."""
    return sum(index._next.values())


def _dict_bytes_per_answer(n: int = 200_000) -> float:
    """What the previous in-memory index (a dict of request id -> timestamp) cost per answer."""
    import tracemalloc

    tracemalloc.start()
    table = {uuid.uuid4().hex: 1_700_000_000_000 + i for i in range(n)}
    size, _peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del table
    return round(size / n, 1)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    print(json.dumps(_child(json.loads(sys.argv[1]))))
