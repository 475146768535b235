"""``BatchRunner``: review items through the Message Batches API, to ordinary responses.

A run, in rounds: resume this job's open batches from the ledger and create batches for the
items no batch holds yet (each ledgered as soon as the API has it); poll every open batch with
exponential backoff (honouring a provider's ``retry-after``); when one ends, judge each result
(``results.judge``), deliver its responses and dead letters, then mark the batch ``done`` in
the ledger; what is to be resubmitted goes into the next round's batches. The run ends when
nothing is left to resubmit, or at ``max_wait_s``, leaving the open batches in the ledger for
the next run to resume (nothing is canceled).

Exactly one visible answer: an item already answered on the response topic (read before the
run, and every answer this run delivers) is never sent and never published again, so a job
restarted after publishing but before its ``done`` mark publishes nothing twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from consumers.batches.ledger import BatchLedger, BatchState, LedgerBatch, LedgerItem
from consumers.batches.requests import (
    BATCH_BYTES_MARGIN,
    MAX_BATCH_BYTES,
    MAX_BATCH_REQUESTS,
    BatchItem,
    Planned,
    plan,
    split_batches,
)
from consumers.batches.results import Dead, Publish, Resubmit, Verdict, batch_failure, judge
from consumers.outcomes import Outcomes, now_ms
from consumers.runtime.message import MemoryRecord, Sink
from switchboard.core import headers as h
from switchboard.core.aio_producer import Outbound
from switchboard.core.classify import Failure, classify
from switchboard.core.errors import ErrorClass, SwitchboardError
from switchboard.core.serde import REQUEST, Codec
from switchboard.core.topics import Topics

if TYPE_CHECKING:  # the SDK takes seconds to import; only model paths need it
    from anthropic import AsyncAnthropic

log = logging.getLogger(__name__)

#: Polling: the first wait, the factor and the longest wait between two looks at a batch.
POLL_INITIAL_S: Final = 1.0
POLL_FACTOR: Final = 2.0
POLL_MAX_S: Final = 300.0
#: How long a run keeps polling before it leaves its open batches to the next run (a batch
#: expires after 24 h, so a run that waits a day has seen every outcome).
MAX_WAIT_S: Final = 25 * 3600.0
#: Tries of one create call on transient errors (429, 5xx) before the run gives up.
CREATE_TRIES: Final = 5


class BatchJobError(SwitchboardError):
    """Raised when the API refuses the job for good (bad key, spend limit); the open batches
    stay in the ledger, so a rerun resumes them."""


@dataclass(frozen=True)
class PollPolicy:
    """Exponential backoff between looks at a batch, bounded, and the run's overall budget."""

    initial_s: float = POLL_INITIAL_S
    factor: float = POLL_FACTOR
    max_s: float = POLL_MAX_S
    max_wait_s: float = MAX_WAIT_S

    def next_delay(self, delay_s: float) -> float:
        return min(self.max_s, delay_s * self.factor)


@dataclass
class BatchSummary:
    """What a run did; ``unfinished`` items are in batches still open when it stopped."""

    items: int = 0
    already_answered: int = 0
    batches_created: int = 0
    batches_resumed: int = 0
    answered: int = 0
    refused: int = 0
    failed: int = 0
    resubmitted: int = 0
    unfinished: int = 0
    cost_micro_usd: int = 0
    batch_ids: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class _Pending:
    """An item to (re)send, and the attempt it will be."""

    item: BatchItem
    attempt: int


class BatchRunner:
    """Runs one review job's items through the Batches API (see the module docstring)."""

    def __init__(
        self,
        client: AsyncAnthropic,
        *,
        ledger: BatchLedger,
        outcomes: Callable[[str], Outcomes],
        producer: Sink,
        codec: Codec,
        topics: Topics,
        models: Mapping[str, str],
        max_tokens: int,
        max_attempts: int,
        poll: PollPolicy | None = None,
        on_event: Callable[[str], None] | None = None,
        max_requests: int = MAX_BATCH_REQUESTS,
        max_bytes: int = MAX_BATCH_BYTES - BATCH_BYTES_MARGIN,
    ) -> None:
        self._client = client
        self._ledger = ledger
        self._outcomes = outcomes
        self._producer = producer
        self._codec = codec
        self._topics = topics
        self._models = models
        self._max_tokens = max_tokens
        self._max_attempts = max_attempts
        self._poll = poll or PollPolicy()
        self._on_event = on_event or (lambda _line: None)
        self._max_requests = max_requests
        self._max_bytes = max_bytes
        self._items: dict[str, BatchItem] = {}
        self._answered: set[str] = set()
        self.summary = BatchSummary()

    async def run(
        self,
        items: Iterable[BatchItem],
        *,
        answered: Iterable[str] = (),
        open_batches: Sequence[LedgerBatch] = (),
    ) -> BatchSummary:
        """Drive ``items`` to their terminal responses; ``answered`` are request ids that
        already have one, ``open_batches`` this job's batches from the ledger."""
        summary = self.summary
        self._answered = set(answered)
        for item in items:
            self._items.setdefault(item.custom_id, item)
        summary.items = len(self._items)
        held = {cid for batch in open_batches for cid in batch.items}
        pending = []
        for custom_id, item in self._items.items():
            if item.request_id in self._answered:
                summary.already_answered += 1
            elif custom_id not in held:
                pending.append(_Pending(item, 1))
        summary.batches_resumed = len(open_batches)
        started = time.monotonic()
        round_no = max((b.round for b in open_batches), default=0) + 1
        batches = list(open_batches)
        while batches or pending:
            batches += await self._create(pending, round_no)
            remaining = self._poll.max_wait_s - (time.monotonic() - started)
            try:
                # A task group, not gather: when one batch stops the job, the others stop too.
                async with asyncio.TaskGroup() as group:
                    drives = [group.create_task(self._drive(b, remaining)) for b in batches]
            except BaseExceptionGroup as failed:
                raise failed.exceptions[0] from None
            batches, pending = [], [p for drive in drives for p in drive.result()]
            summary.resubmitted += len(pending)
            round_no += 1
        return summary

    # Creating.

    async def _create(self, pending: list[_Pending], round_no: int) -> list[LedgerBatch]:
        if not pending:
            return []
        attempts = {p.item.custom_id: p.attempt for p in pending}
        planned = plan((p.item for p in pending), self._models, max_tokens=self._max_tokens)
        groups, oversize = split_batches(
            planned, max_requests=self._max_requests, max_bytes=self._max_bytes
        )
        if oversize:
            await self._fail_now(oversize, attempts)
        created = []
        for group in groups:
            batch_id = await self._create_one([p.wire for p in group])
            batch = LedgerBatch(
                batch_id,
                self._ledger.job,
                round_no,
                BatchState.SUBMITTED,
                now_ms(),
                {p.item.custom_id: _ledger_item(p.item, attempts[p.item.custom_id]) for p in group},
            )
            # Ledgered before anything waits on it: a crash from here on resumes, not resends.
            await self._ledger.record(batch)
            self.summary.batches_created += 1
            self.summary.batch_ids.append(batch_id)
            log.info("batch %s created: %d requests (round %d)", batch_id, len(group), round_no)
            self._on_event(f"batch {batch_id} created: {len(group)} requests")
            created.append(batch)
        return created

    async def _create_one(self, requests: list[dict[str, Any]]) -> str:
        delay = self._poll.initial_s
        for tries in range(1, CREATE_TRIES + 1):
            try:
                batch = await self._client.messages.batches.create(requests=requests)  # type: ignore[arg-type]  # wire dicts
                return batch.id
            except Exception as exc:  # classified below: transient waits, the rest stops the job
                failure = classify(exc)
                if failure.error_class is not ErrorClass.TRANSIENT or tries == CREATE_TRIES:
                    raise BatchJobError(f"creating a batch failed: {failure.message}") from exc
                await asyncio.sleep(max(delay, failure.retry_after_s or 0.0))
                delay = self._poll.next_delay(delay)
        raise AssertionError("unreachable")

    async def _fail_now(self, oversize: list[Planned], attempts: Mapping[str, int]) -> None:
        records: list[Sequence[Outbound]] = []  # one request's outputs each, in their order
        for p in oversize:
            failure = Failure(
                ErrorClass.PERMANENT,
                "request_too_large",
                f"Message Batches: the request is {p.size} bytes, over the batch limit of "
                f"{self._max_bytes}; split the document into smaller parts",
                "BatchItemTooLarge",
            )
            records.append(
                await self._dead(
                    p.item.request, p.item.specialist, failure, attempts[p.item.custom_id]
                )
            )
        await self._deliver(records)

    # Polling and results.

    async def _drive(self, batch: LedgerBatch, budget_s: float) -> list[_Pending]:
        """Poll ``batch`` until it ends, publish its results; returns what to resubmit."""
        ended = await self._wait_ended(batch, budget_s)
        if ended is None:
            self.summary.unfinished += len(batch.items)
            return []
        verdicts: dict[str, Verdict] = {}
        if ended:
            verdicts = await self._read_results(batch)
        # No result (or no batch: the API forgot it) means the item never ran: send it again.
        lost = "no result for the item" if ended else "the batch is gone at the API"
        resubmit: list[_Pending] = []
        records: list[Sequence[Outbound]] = []  # one request's outputs each, in their order
        for custom_id, held in batch.items.items():
            if held.request_id in self._answered:
                continue  # published before a restart, or answered elsewhere: never twice
            verdict = verdicts.get(custom_id, Resubmit(lost))
            if isinstance(verdict, Resubmit):
                known = self._items.get(custom_id)
                if known is not None and held.attempt < self._max_attempts:
                    log.info("%s resubmitted: %s", held.request_id, verdict.reason)
                    resubmit.append(_Pending(known, held.attempt + 1))
                    continue
                verdict = Dead(self._not_resubmitted(held, verdict, known is None))
            records.append(await self._terminal(batch, custom_id, verdict))
        # Commit order: the responses (and dead letters, delivered inside) are confirmed
        # delivered before the ledger says done, so a crash in between republishes nothing
        # (the answered scan skips them) and loses nothing.
        await self._deliver(records)
        await self._ledger.mark_done(batch)
        return resubmit

    def _not_resubmitted(self, held: LedgerItem, verdict: Resubmit, orphan: bool) -> Failure:
        if orphan:  # a resumed batch's item that this run's job no longer lists
            return batch_failure(
                "batch_item_dropped",
                f"{verdict.reason}; the job no longer includes this request, so it was not "
                "sent again: rerun the job with it to review it",
            )
        return batch_failure(
            "batch_retries_exhausted", f"{verdict.reason} ({held.attempt} attempts)"
        )

    async def _read_results(self, batch: LedgerBatch) -> dict[str, Verdict]:
        """Each result's verdict, by ``custom_id``; transient errors are tried again."""
        delay = self._poll.initial_s
        for tries in range(1, CREATE_TRIES + 1):
            verdicts: dict[str, Verdict] = {}
            try:
                async for line in await self._client.messages.batches.results(batch.batch_id):
                    held = batch.items.get(line.custom_id)
                    if held is not None:
                        verdicts[line.custom_id] = judge(
                            line.result,
                            attempt=held.attempt,
                            max_attempts=self._max_attempts,
                            specialist=held.specialist,
                        )
                return verdicts
            except Exception as exc:  # classified below: transient waits, the rest stops the job
                failure = classify(exc)
                if failure.error_class is not ErrorClass.TRANSIENT or tries == CREATE_TRIES:
                    raise BatchJobError(
                        f"reading the results of batch {batch.batch_id} failed: {failure.message}"
                    ) from exc
                await asyncio.sleep(max(delay, failure.retry_after_s or 0.0))
                delay = self._poll.next_delay(delay)
        raise AssertionError("unreachable")

    async def _wait_ended(self, batch: LedgerBatch, budget_s: float) -> bool | None:
        """True once ended, False if the API does not know it, None when the budget ran out."""
        deadline = time.monotonic() + budget_s
        delay = self._poll.initial_s
        while True:
            wait = delay
            try:
                status = await self._client.messages.batches.retrieve(batch.batch_id)
                counts = ", ".join(
                    f"{n} {name}" for name, n in status.request_counts.to_dict().items() if n
                )
                self._on_event(f"batch {batch.batch_id} {status.processing_status}: {counts}")
                if status.processing_status == "ended":
                    return True
                delay = self._poll.next_delay(delay)
            except Exception as exc:  # classified below: transient waits, the rest stops the job
                failure = classify(exc)
                if failure.provider_status == 404:
                    return False
                if failure.error_class is not ErrorClass.TRANSIENT:
                    raise BatchJobError(
                        f"polling batch {batch.batch_id} failed: {failure.message}"
                    ) from exc
                wait = max(delay, failure.retry_after_s or 0.0)
                delay = self._poll.next_delay(delay)
                log.warning(
                    "polling batch %s: %s; again in %.1fs", batch.batch_id, failure.message, wait
                )
            if time.monotonic() + wait > deadline:
                return None
            await asyncio.sleep(wait)

    async def _terminal(
        self, batch: LedgerBatch, custom_id: str, verdict: Verdict
    ) -> list[Outbound]:
        held = batch.items[custom_id]
        known = self._items.get(custom_id)
        request: Mapping[str, Any] = (
            known.request
            if known is not None
            else {
                "request_id": held.request_id,
                "tenant": held.tenant,
                "specialist": held.specialist,
            }
        )
        self._answered.add(held.request_id)
        if isinstance(verdict, Dead):
            return await self._dead(request, held.specialist, verdict.failure, held.attempt)
        assert isinstance(verdict, Publish)
        if verdict.status == "refused":
            self.summary.refused += 1
        else:
            self.summary.answered += 1
        self.summary.cost_micro_usd += verdict.cost_micro_usd
        outcomes = self._outcomes(held.specialist)
        return outcomes.recorded(
            outcomes.answer(
                request,
                verdict,
                backend=verdict.model,
                specialist=held.specialist,
                stage_latency_ms={"batch": max(0, now_ms() - batch.created_at_ms)},
                attempts=held.attempt,
            )
        )

    async def _dead(
        self, request: Mapping[str, Any], specialist: str, failure: Failure, attempt: int
    ) -> list[Outbound]:
        """Dead-letter the request (delivered on return) and build its ``failed`` response."""
        self.summary.failed += 1
        self._answered.add(str(request.get("request_id")))
        record = self._as_task_record(request, specialist)
        return await self._outcomes(specialist).fail(
            record, failure, request=request, specialist=specialist, attempts=attempt
        )

    def _as_task_record(self, request: Mapping[str, Any], specialist: str) -> MemoryRecord:
        """The request as the task record a worker would have read: what the dead letter
        keeps, so ``dlq replay`` can send it to the specialist's ordinary workers."""
        topic = self._topics.tasks(specialist)
        request_id = str(request.get("request_id") or "")
        try:
            value = self._codec.encode(REQUEST, request, topic)
        except SwitchboardError:
            value = b""  # a request known only from the ledger: the pointer still answers it
        headers: list[tuple[str, bytes | None]] = [
            (h.REQUEST_ID, request_id.encode()),
            (h.TENANT, str(request.get("tenant") or "default").encode()),
            (h.SPECIALIST, specialist.encode()),
        ]
        created = request.get("created_at_ms")
        return MemoryRecord(
            topic,
            value,
            request_id.encode(),
            headers,
            partition_=-1,  # never consumed from a topic: no origin offset to point at
            offset_=-1,
            timestamp_ms=int(created) if created else None,
        )

    async def _deliver(self, records: list[Sequence[Outbound]]) -> None:
        """Every request's outputs: a lone response as it is, a reply and its ledger copy all
        or nothing (``send_atomic``: one transaction for many of them), so a process killed at
        any point never leaves the copy without the reply (the request then counts as
        answered and the caller's topic never gets it) nor the reply without the copy (a
        rerun would answer, and bill, it again)."""
        singles = [r[0] for r in records if len(r) == 1]
        groups = [r for r in records if len(r) > 1]
        await asyncio.gather(
            self._producer.send_all(singles), *(self._producer.send_atomic(g) for g in groups)
        )


def _ledger_item(item: BatchItem, attempt: int) -> LedgerItem:
    return LedgerItem(
        item.request_id, item.specialist, str(item.request.get("tenant") or "default"), attempt
    )
