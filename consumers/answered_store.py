"""The answered index on disk: one RocksDB store (``rocksdict``) per response partition.

Layout of one store (raw bytes, RocksDB's bytewise order):

- ``a<request id>`` -> 8-byte big-endian response timestamp (ms) + 1 byte ``settled`` (a
  response of a known status other than ``failed``: a DLQ replay cannot help);
- ``t<timestamp><request id>`` -> empty: the time index, so answers older than the horizon are
  pruned by one range scan from the oldest, not by reading the whole store;
- ``m:next`` -> 8-byte big-endian offset of the next response record to read: written in the
  same atomic batch as the answers it covers, so a restart (or a crash) resumes exactly where
  the store stopped, and reads only what is new.

Memory: every store of a process shares one block cache and one memtable budget
(``StoreBudget``), so a process's index memory is bounded by those two figures plus RocksDB's
per-store tables, whatever the number of answers on disk.

The state directory of a process (``StateDir``) is ``<state_dir>/<responses topic>/<member>``:
``member`` is the instance id when one is set, else the first free slot ``m0``, ``m1``, ...
held by a file lock for the process's life, so two processes on one host never share a store
and a restarted one finds its predecessor's stores (the lock dies with the process).
"""

from __future__ import annotations

import fcntl
import itertools
import logging
import os
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, cast

from rocksdict import (
    BlockBasedIndexType,
    BlockBasedOptions,
    Cache,
    DBCompressionType,
    Options,
    Rdict,
    WriteBatch,
    WriteBufferManager,
)

log = logging.getLogger(__name__)

ANSWER: Final = b"a"
TIME: Final = b"t"
NEXT_OFFSET: Final = b"m:next"
#: Shared by every store of a process: the block cache, which the memtables' budget is
#: charged to (so 64 MiB bounds both), and which holds the index and filter blocks too
#: (partitioned: a store of tens of millions of answers pages them, never holds them all).
BLOCK_CACHE_BYTES: Final = 64 << 20
MEMTABLE_BUDGET_BYTES: Final = 16 << 20
#: One store's memtable size (flushed to disk when full).
WRITE_BUFFER_BYTES: Final = 4 << 20
#: Deletions go in batches of this many while pruning.
PRUNE_BATCH: Final = 10_000


def _keys_from(db: Rdict, start: bytes) -> Iterator[bytes]:
    """The keys of a raw-mode store from ``start`` on (rocksdict types them loosely)."""
    return cast(Iterator[bytes], db.keys(from_key=start))


def _ts(ms: int) -> bytes:
    return max(0, ms).to_bytes(8, "big")


@dataclass
class StoreBudget:
    """The memory every store of one process shares (block cache, memtables)."""

    cache_bytes: int = BLOCK_CACHE_BYTES
    memtable_bytes: int = MEMTABLE_BUDGET_BYTES
    _cache: Cache = field(init=False, repr=False)
    _memtables: WriteBufferManager = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._cache = Cache(self.cache_bytes)
        self._memtables = WriteBufferManager.new_write_buffer_manager_with_cache(
            self.memtable_bytes, False, self._cache
        )

    def options(self) -> Options:
        options = Options(raw_mode=True)
        options.create_if_missing(True)
        options.set_write_buffer_size(WRITE_BUFFER_BYTES)
        options.set_max_write_buffer_number(2)
        options.set_write_buffer_manager(self._memtables)
        options.set_compression_type(DBCompressionType.lz4())
        options.set_max_open_files(64)
        table = BlockBasedOptions()
        table.set_block_cache(self._cache)
        table.set_bloom_filter(10, False)  # most lookups are misses: new requests
        table.set_cache_index_and_filter_blocks(True)  # their memory counts in the cache too
        table.set_partition_filters(True)
        table.set_index_type(BlockBasedIndexType.two_level_index_search())
        table.set_metadata_block_size(4096)
        table.set_pin_top_level_index_and_filter(True)
        options.set_block_based_table_factory(table)
        return options


class AnswerStore:
    """The answers of one response partition, on disk."""

    def __init__(self, path: Path, budget: StoreBudget) -> None:
        self.path = path
        options = budget.options()
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = Rdict(str(path), options)
        except Exception as exc:  # corrupt or from an incompatible version: rebuilt
            log.warning(
                "answered store %s unreadable (%s): rebuilding it from the topic", path, exc
            )
            shutil.rmtree(path, ignore_errors=True)
            self._db = Rdict(str(path), options)

    def next_offset(self) -> int | None:
        """The offset of the next response record to read; None for a new store."""
        raw = self._db.get(NEXT_OFFSET)
        return int.from_bytes(raw, "big") if raw is not None else None

    def write(self, answers: Iterable[tuple[bytes, int, bool]], next_offset: int | None) -> None:
        """Record ``(request id, timestamp ms, settled)`` answers and (atomically with them)
        the next offset to read. A ``failed`` answer never unsettles an earlier settled one."""
        batch = WriteBatch(raw_mode=True)
        db = self._db
        for rid, ts_ms, settled in answers:
            if not settled:
                old = db.get(ANSWER + rid)
                settled = old is not None and old[8:9] == b"\x01"
            ts = _ts(ts_ms)
            batch.put(ANSWER + rid, ts + (b"\x01" if settled else b"\x00"))
            batch.put(TIME + ts + rid, b"")
        if next_offset is not None:
            batch.put(NEXT_OFFSET, next_offset.to_bytes(8, "big"))
        db.write(batch)

    def lookup(self, rid: bytes, *, replay: bool = False) -> bool:
        """Whether ``rid`` has a response (``replay``: one that is not ``failed``)."""
        value = self._db.get(ANSWER + rid)
        return value is not None and (not replay or value[8:9] == b"\x01")

    def prune(self, before_ms: int) -> int:
        """Forget answers with a timestamp before ``before_ms``; returns how many."""
        db = self._db
        end = TIME + _ts(before_ms)
        batch = WriteBatch(raw_mode=True)
        dropped = pending = 0
        gone: set[bytes] = set()  # deleted in the batch not yet written
        for key in _keys_from(db, TIME):
            if key >= end:
                break
            rid = key[9:]
            current = None if rid in gone else db.get(ANSWER + rid)
            if current is not None and current[:8] <= key[1:9]:  # not answered again since
                batch.delete(ANSWER + rid)
                gone.add(rid)
                dropped += 1
            batch.delete(key)
            pending += 1
            if pending >= PRUNE_BATCH:
                db.write(batch)
                batch = WriteBatch(raw_mode=True)
                pending = 0
                gone.clear()
        if pending:
            db.write(batch)
        return dropped

    def answers(self, limit: int | None = None) -> list[bytes]:
        """The request ids held, in key order, at most ``limit`` (tests and tools)."""
        out = []
        for key in itertools.islice(_keys_from(self._db, ANSWER), limit):
            if not key.startswith(ANSWER):
                break
            out.append(key[1:])
        return out

    def close(self) -> None:
        self._db.close()

    def destroy(self) -> None:
        """Close and delete the store (a rebuild from the topic follows)."""
        self._db.close()
        shutil.rmtree(self.path, ignore_errors=True)


class StateDir:
    """This process's directory of answered stores, locked for its life (see the module)."""

    def __init__(self, base: Path, topic: str, member: str | None = None) -> None:
        root = base / topic
        root.mkdir(parents=True, exist_ok=True)
        names = [member] if member else (f"m{n}" for n in range(10_000))
        for name in names:
            path = root / name
            path.mkdir(exist_ok=True)
            fd = os.open(path / ".lock", os.O_CREAT | os.O_RDWR, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                if member:
                    raise RuntimeError(
                        f"answered state {path} is held by another process with instance id "
                        f"{member}: give each process its own SWITCHBOARD_INSTANCE_ID"
                    ) from None
                continue
            self.path = path
            self._fd = fd
            return
        raise RuntimeError(f"no free answered-state slot under {root}")

    def partition(self, partition: int) -> Path:
        return self.path / f"p{partition}"

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
