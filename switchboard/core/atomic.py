"""Groups of records written all or nothing: Kafka transactions, many groups per transaction.

A reply to a caller's own topic travels with its copy on the responses topic (the ledger the
answered index reads). Written one after the other, a process killed between the two left the
answer in the ledger only: the redelivered task was recognised as answered and the caller's
topic never got its reply. Written in one transaction, both are visible to a
``read_committed`` reader (librdkafka's default, and every Switchboard tail's) or neither is,
and the task is answered again.

One transaction per group would serialise every reply behind a commit round trip. The writer
thread takes every group queued while the previous transaction committed and writes them in
the next one, so the cost is one commit per batch of groups, and a group waits at most about
two commits. confluent-kafka's transactional calls block, so they run on that thread only.

A group that cannot be written (a record too large, an illegal topic) fails alone: the
transaction is aborted, the group's future gets the error and the other groups go into the
next transaction. A transaction that fails as a whole (the broker, a fenced producer) fails
every group in it with the error: nothing of theirs is visible, and the runtime delivers them
again. The transactional id is stable per process instance (``Settings.instance_id``), so a
restarted instance fences its predecessor and aborts what the predecessor left open at once;
without an instance id, what a dead process left open is aborted by the coordinator after
``TRANSACTION_TIMEOUT_MS``, and until then ``read_committed`` readers of the partitions it
touched wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from switchboard.core import metrics
from switchboard.core.aio_producer import DeliveryError, Outbound, produce_into
from switchboard.core.kafka_clients import with_logger

log = logging.getLogger(__name__)

_COMMITTED = metrics.REPLY_TRANSACTIONS.labels("committed")
_ABORTED = metrics.REPLY_TRANSACTIONS.labels("aborted")

#: How long the coordinator keeps a transaction a dead process left open before aborting it
#: (``read_committed`` readers of its partitions wait that long). A commit here takes
#: milliseconds; librdkafka's default (60 s) would stall the ledger's readers for a minute.
TRANSACTION_TIMEOUT_MS: Final = 10_000
#: The budget of each blocking transactional call (init, flush, commit, abort).
CALL_TIMEOUT_S: Final = 30.0
#: At most this many groups in one transaction (a bound on what one failure fails).
MAX_GROUPS: Final = 1_000
#: Tries of a commit that fails with a retriable error.
COMMIT_ATTEMPTS: Final = 3
#: Transactions a group may be in that fail on another's account before it fails too.
MAX_RETRIES: Final = 5
#: Delivery errors of records librdkafka dropped from its queue when their transaction failed.
_PURGED: Final = frozenset({KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT})
#: How long the writer waits before it tries again after its producer failed to start.
RESTART_PAUSE_S: Final = 0.5


def transactional_id(prefix: str, instance_id: str | None, roles: Sequence[str] = ()) -> str:
    """This process's transactional id: stable per instance when it has an id (a restart fences
    the previous incarnation), else unique to the host and process. ``roles`` (the consumers it
    runs) keep apart processes of different roles given the same instance id, as static group
    membership does (``group.instance.id`` is ``<role>-<instance id>``): two live producers with
    one id would fence each other in turn."""
    instance = instance_id or f"{socket.gethostname()}-{os.getpid()}"
    role = "+".join(sorted(roles)) or "pipeline"
    return f"{prefix}.txn.{role}.{instance}"


@dataclass(eq=False, slots=True)
class _Group:
    records: Sequence[Outbound]
    future: asyncio.Future[None]
    loop: asyncio.AbstractEventLoop
    #: Written in a transaction of its own: it was among the refused records of a shared one
    #: (a broker refuses a partition's whole batch at once, innocent records too).
    alone: bool = False
    #: Transactions it was in that failed on another's account (purged, refused with others).
    retries: int = 0


def _settle_all(outcomes: Sequence[tuple[_Group, BaseException | None]]) -> None:
    """Tell each group's waiter how its transaction went: one wake-up of each event loop for
    all of them (a wake-up per group cost a write to the loop's self-pipe each)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[None], Any]]] = {}
    for group, exc in outcomes:
        by_loop.setdefault(group.loop, []).append((group.future, exc))
    for loop, settled in by_loop.items():
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
            loop.call_soon_threadsafe(_settle, settled)


def _settle(settled: list[tuple[asyncio.Future[None], BaseException | None]]) -> None:
    for future, exc in settled:
        if future.done():  # the waiter was cancelled (a revoke): nothing to tell
            continue
        if exc is None:
            future.set_result(None)
        else:
            future.set_exception(exc)


class AtomicWriter:
    """Writes each ``send`` group all or nothing; thread-safe, one per process."""

    def __init__(self, config: dict[str, Any], transactional_id: str) -> None:
        self._config = {
            **with_logger(config),
            "transactional.id": transactional_id,
            "transaction.timeout.ms": TRANSACTION_TIMEOUT_MS,
        }
        self.transactional_id = transactional_id
        self._pending: deque[_Group] = deque()
        self._wake = threading.Condition()
        self._running = True
        self._thread: threading.Thread | None = None
        self._producer: Producer | None = None
        #: Transactions committed and aborted so far (tests and status read them).
        self.committed = 0
        self.aborted = 0

    @property
    def started(self) -> bool:
        """Whether the writer's thread (and so its producer, under its id) has started."""
        return self._thread is not None

    def rename(self, transactional_id: str) -> None:
        """Use ``transactional_id`` instead (before the writer starts: a running producer keeps
        its id)."""
        with self._wake:
            if self._thread is not None:
                raise RuntimeError("the atomic writer has started: its transactional id is fixed")
            self.transactional_id = transactional_id
            self._config["transactional.id"] = transactional_id

    def start(self) -> None:
        """Start the producer now rather than at the first group: with a stable transactional
        id this fences the previous incarnation at once and aborts what it left open (which
        otherwise holds ``read_committed`` readers, this process's answered index among them,
        until the coordinator's timeout)."""
        with self._wake:
            self._start_thread()
            self._wake.notify()

    def _start_thread(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="atomic-writer", daemon=True)
            self._thread.start()

    def send(self, records: Sequence[Outbound]) -> asyncio.Future[None]:
        """Queue ``records`` as one group; the future resolves once the transaction holding
        them committed, or fails with the error that left none of them visible."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._wake:
            if not self._running:
                raise RuntimeError("the atomic writer is closed")
            self._pending.append(_Group(records, future, loop))
            # Started on first use unless ``start`` was called: a process that never writes a
            # group never opens a transactional producer (nor needs its id's ACL).
            self._start_thread()
            self._wake.notify()
        return future

    def close(self, timeout_s: float = CALL_TIMEOUT_S) -> None:
        """Write what is queued, then stop the thread and close the producer."""
        with self._wake:
            self._running = False
            self._wake.notify()
            thread = self._thread
        if thread is not None:
            thread.join(timeout_s)

    # --- the writer thread ----------------------------------------------------------------
    def _run(self) -> None:
        if not self._pending:  # started by ``start``: the producer first
            try:
                self._ready()
            except Exception as exc:  # a refusal too: tried again (and told) at the first group
                log.warning("transactional producer %s: %s", self.transactional_id, exc)
        while True:
            with self._wake:
                while self._running and not self._pending:
                    self._wake.wait()
                if not self._pending:
                    break  # closed and nothing left
                if self._pending[0].alone:
                    groups = [self._pending.popleft()]
                else:
                    groups = []
                    while self._pending and len(groups) < MAX_GROUPS:
                        if self._pending[0].alone:
                            break
                        groups.append(self._pending.popleft())
            try:
                self._write(groups)
            except Exception as exc:  # never leave a waiter hanging, whatever went wrong
                log.exception("atomic writer failed")
                self._fail(groups, exc)
        if self._producer is not None:
            self._producer.flush(CALL_TIMEOUT_S)

    def _ready(self) -> Producer:
        if self._producer is None:
            producer = Producer(self._config)
            producer.init_transactions(CALL_TIMEOUT_S)
            self._producer = producer
        return self._producer

    def _write(self, groups: list[_Group]) -> None:
        try:
            producer = self._ready()
        except KafkaException as exc:
            log.warning("transactional producer %s: %s", self.transactional_id, exc)
            self._fail(groups, exc)
            threading.Event().wait(RESTART_PAUSE_S)
            return
        producer.begin_transaction()
        # One delivery callback for the whole transaction: it only collects failures (the
        # reports of an earlier, aborted transaction's purged records go to that one's list).
        failed: list[tuple[KafkaError, Message]] = []

        def on_delivery(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                failed.append((err, msg))

        written: list[_Group] = []
        for group in groups:
            try:
                for record in group.records:
                    produce_into(producer, record, on_delivery)
            except KafkaException as exc:
                # Refused at once (too large, an illegal topic), maybe after some of its records
                # were produced: abort, fail it alone, and write the others next time.
                self._abort(producer)
                _settle_all([(group, exc)])
                self._requeue([g for g in groups if g is not group])
                return
            written.append(group)
        try:
            producer.flush(CALL_TIMEOUT_S)  # serves the delivery reports: who failed, if any
            if failed:
                self._abort(producer)
                self._after_refusal(written, failed)
                return
            self._commit(producer)
        except KafkaException as exc:
            self._failed_transaction(producer, exc)
            self._fail(written, exc)
            return
        self.committed += 1
        _COMMITTED.inc()
        _settle_all([(group, None) for group in written])

    @staticmethod
    def _commit(producer: Producer) -> None:
        """Commit, again while the error says a retry may pass (a commit that timed out may
        have succeeded at the coordinator: failing its groups would write them twice)."""
        for attempt in range(COMMIT_ATTEMPTS):
            try:
                producer.commit_transaction(CALL_TIMEOUT_S)
                return
            except KafkaException as exc:
                err = exc.args[0] if exc.args else None
                if attempt + 1 == COMMIT_ATTEMPTS or not (
                    isinstance(err, KafkaError) and err.retriable()
                ):
                    raise

    def _abort(self, producer: Producer) -> None:
        self.aborted += 1
        _ABORTED.inc()
        try:
            producer.abort_transaction(CALL_TIMEOUT_S)
        except KafkaException as exc:
            self._failed_transaction(producer, exc, aborting=True)

    def _failed_transaction(
        self, producer: Producer, exc: KafkaException, *, aborting: bool = False
    ) -> None:
        """After a failed commit or abort: abort what can be, or start a new producer."""
        err = exc.args[0] if exc.args else None
        if isinstance(err, KafkaError) and err.txn_requires_abort() and not aborting:
            self._abort(producer)
            return
        log.warning(
            "transactional producer %s failed (%s): starting a new one", self.transactional_id, exc
        )
        self._producer = None  # fatal (fenced) or unusable: init_transactions again

    def _after_refusal(
        self, written: list[_Group], failed: list[tuple[KafkaError, Message]]
    ) -> None:
        """After an aborted transaction with failed deliveries: fail what failed on its own
        account, and try the rest again. The broker refuses a partition's whole batch,
        innocent records with the guilty, so a refused group shared with others is tried
        again in a transaction of its own; librdkafka may purge the records it had queued
        when the transaction failed (``_PURGE_QUEUE``), which says nothing of them."""
        refused = _refused(written, [(e, m) for e, m in failed if e.code() not in _PURGED])
        failing: list[tuple[_Group, BaseException | None]] = []
        again: list[_Group] = []
        for group in written:
            exc = refused.get(group)
            if exc is not None and (group.alone or len(written) == 1):
                failing.append((group, exc))  # alone: the error is its own
                continue
            group.retries += 1
            if group.retries > MAX_RETRIES:
                failing.append((group, exc or DeliveryError(failed[0][0])))
                continue
            group.alone = group.alone or exc is not None
            again.append(group)
        _settle_all(failing)
        self._requeue(again)

    def _requeue(self, groups: list[_Group]) -> None:
        with self._wake:
            self._pending.extendleft(reversed(groups))

    @staticmethod
    def _fail(groups: list[_Group], exc: BaseException) -> None:
        _settle_all([(group, exc) for group in groups])


def _refused(
    groups: list[_Group], failed: list[tuple[KafkaError, Message]]
) -> dict[_Group, BaseException]:
    """The groups with a record among the ``failed`` deliveries, each with its error; every
    group when a failure cannot be told apart; none when nothing failed."""
    if not failed:
        return {}
    errors: dict[tuple[Any, Any, Any], KafkaError] = {}
    for err, msg in failed:
        if msg is None:
            return {group: DeliveryError(err) for group in groups}
        errors.setdefault((msg.topic(), msg.key(), msg.value()), err)
    refused: dict[_Group, BaseException] = {}
    for group in groups:
        for record in group.records:
            found = errors.get((record.topic, record.key, record.value))
            if found is not None:
                refused[group] = DeliveryError(found)
                break
    return refused or {group: DeliveryError(failed[0][0]) for group in groups}
