"""A review job: every part of every document to each chosen specialist, through the pipeline.

``plan`` turns documents into ``ReviewItem``s, one request each, with ids derived from the job
name, the document's content hash, the part and the specialist: the same job over the same
text makes the same ids, so a rerun asks the client's ``lookup`` for what is already answered
and submits only what is missing or changed (an edited document has a new hash, so new ids).
``run`` submits at ``priority=BATCH`` with the review metadata the workers read, awaits the
responses until the job's timeout, and stops submitting before the cost estimate passes the
budget; ``collect`` turns the responses into the ``ReviewResult`` the reports render.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, Protocol

from producers.client import Response, ResultTimeout
from producers.review.assemble import assemble_result
from producers.review.documents import Document
from producers.review.result import FailedItem, ReviewResult, Usage
from producers.review.splitting import DEFAULT_MAX_BYTES, DocumentPart, split_document
from switchboard.core import metrics
from switchboard.core.findings import (
    FindingsAnswer,
    FindingsParseError,
    ReviewMeta,
    Severity,
    parse_findings_answer,
)
from switchboard.core.status import ResponseStatus

#: The specialists a review asks when ``--specialists`` is not given.
DEFAULT_SPECIALISTS: tuple[str, ...] = ("backend", "security", "perf")
#: The estimate's characters per token (the usual rule of thumb for English prose and specs).
CHARS_PER_TOKEN = 4
#: The estimate's output per request: a findings answer is a few hundred tokens of JSON.
ESTIMATED_OUTPUT_TOKENS = 600
#: Tokens of the review instructions and the findings tool's schema sent with every request.
REVIEW_OVERHEAD_TOKENS = 1_200


def job_name(inputs: Sequence[str]) -> str:
    """A default job name from the inputs: readable, and the same for the same inputs."""
    names = sorted(str(i).rstrip("/") or "/" for i in inputs)
    stem = PurePosixPath(names[0]).name if names else ""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", stem).strip("-.") or "inputs"
    digest = hashlib.sha256("\0".join(names).encode()).hexdigest()[:8]
    return f"{slug[:40]}-{digest}"


def request_id(job: str, content_hash: str, part: int, specialist: str) -> str:
    """``review-`` and 32 hex digits of job, document version, part and specialist."""
    material = "\0".join((job, content_hash, str(part), specialist))
    return "review-" + hashlib.sha256(material.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class ReviewItem:
    """One request of a job: a part of a document for one specialist."""

    document: Document
    part: DocumentPart
    specialist: str
    request_id: str
    tenant: str

    @property
    def prompt(self) -> str:
        return self.part.request_text()

    def request_fields(self, job: str) -> dict[str, Any]:
        """What the item's request carries besides its prompt (the keywords of ``submit`` and
        ``build_request``): a review item always goes at ``BATCH`` priority."""
        return {
            "request_id": self.request_id,
            "specialist": self.specialist,
            "tenant": self.tenant,
            "priority": "BATCH",
            "metadata": self.metadata(job),
        }

    def metadata(self, job: str) -> dict[str, str]:
        return ReviewMeta(
            job=job,
            path=self.part.path,
            start_line=self.part.start_line,
            heading_path=self.part.heading_path,
            format=self.part.format,
            context=self.part.context(),
        ).to_metadata()

    def failed(self, status: str, reason: str) -> FailedItem:
        return FailedItem(
            document_id=self.document.doc_id,
            path=self.document.path,
            part=self.part.index,
            specialist=self.specialist,
            status=status,
            reason=reason,
        )


@dataclass(frozen=True)
class Plan:
    """What a job will ask: its items and each document's part count."""

    job: str
    specialists: tuple[str, ...]
    documents: tuple[Document, ...]
    items: tuple[ReviewItem, ...]
    part_counts: Mapping[str, int]


def plan(
    job: str,
    documents: Sequence[Document],
    specialists: Sequence[str],
    *,
    tenant: str = "default",
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Plan:
    """Every (part, specialist) of every document; a manifest's per-document specialists and
    tenant override the job's."""
    items: list[ReviewItem] = []
    counts: dict[str, int] = {}
    for document in documents:
        parts = split_document(document, max_bytes)
        counts[document.doc_id] = len(parts)
        for part in parts:
            for specialist in document.specialists or specialists:
                items.append(
                    ReviewItem(
                        document=document,
                        part=part,
                        specialist=specialist,
                        request_id=request_id(job, document.content_hash, part.index, specialist),
                        tenant=document.tenant or tenant,
                    )
                )
    return Plan(job, tuple(specialists), tuple(documents), tuple(items), counts)


# --- cost -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Pricing:
    """What the estimate needs per specialist: its model, the model's prices in micro-dollars
    per token (input, output), and its persona's size in tokens. The CLI fills it from the
    workers' price table and personas (the client library cannot import the workers)."""

    models: Mapping[str, str]
    prices: Mapping[str, tuple[float, float]]
    persona_tokens: Mapping[str, int]


@dataclass(frozen=True)
class Estimate:
    input_tokens: int
    output_tokens: int
    cost_micro_usd: int

    @property
    def usd(self) -> float:
        return self.cost_micro_usd / 1_000_000


def estimate_item(item: ReviewItem, pricing: Pricing) -> Estimate:
    """Characters / 4 of the request, plus the persona and the review overhead, at the
    specialist's model's prices, with ``ESTIMATED_OUTPUT_TOKENS`` out."""
    tokens_in = (
        len(item.prompt) // CHARS_PER_TOKEN
        + pricing.persona_tokens.get(item.specialist, 0)
        + REVIEW_OVERHEAD_TOKENS
    )
    price_in, price_out = pricing.prices.get(item.specialist, (0.0, 0.0))
    cost = round(tokens_in * price_in + ESTIMATED_OUTPUT_TOKENS * price_out)
    return Estimate(tokens_in, ESTIMATED_OUTPUT_TOKENS, cost)


def estimate(items: Sequence[ReviewItem], pricing: Pricing) -> Estimate:
    parts = [estimate_item(item, pricing) for item in items]
    return Estimate(
        sum(e.input_tokens for e in parts),
        sum(e.output_tokens for e in parts),
        sum(e.cost_micro_usd for e in parts),
    )


# --- running --------------------------------------------------------------------------------
class ReviewClient(Protocol):
    """What a job needs of ``producers.AsyncSwitchboardClient``."""

    async def lookup(self, request_ids: Any, *, timeout: float = ...) -> dict[str, Response]: ...

    async def submit(self, text: str, **kwargs: Any) -> str: ...

    async def result(self, request_id: str, timeout: float = ...) -> Response: ...


class Progress(Protocol):
    """Told as the job goes: the total, then every item settled (``response`` None: timed out)."""

    def start(self, total: int, already_answered: int, to_send: int) -> None: ...

    def settled(self, item: ReviewItem, response: Response | None) -> None: ...

    def stop(self) -> None: ...


@dataclass
class Outcome:
    """What ``run`` gathered: a response per answered id, and the items that got none."""

    responses: dict[str, Response] = field(default_factory=dict)
    timed_out: list[ReviewItem] = field(default_factory=list)
    over_budget: list[ReviewItem] = field(default_factory=list)
    already_answered: int = 0
    sent: int = 0
    budget_micro_usd: int | None = None


async def run(
    client: ReviewClient,
    job: Plan,
    *,
    timeout_s: float,
    progress: Progress | None = None,
    budget_micro_usd: int | None = None,
    pricing: Pricing | None = None,
    lookup_timeout_s: float = 60.0,
) -> Outcome:
    """Look up what is already answered, submit the rest (while the estimate stays within the
    budget) at ``priority=BATCH``, and await every response until ``timeout_s`` from now."""
    outcome = Outcome(budget_micro_usd=budget_micro_usd)
    ids = [item.request_id for item in job.items]
    found = await client.lookup(ids, timeout=lookup_timeout_s)
    outcome.responses.update(found)
    outcome.already_answered = len(found)
    to_send: list[ReviewItem] = []
    planned = 0
    for item in job.items:
        if item.request_id in found:
            continue
        if budget_micro_usd is not None and pricing is not None:
            cost = estimate_item(item, pricing).cost_micro_usd
            if planned + cost > budget_micro_usd:
                outcome.over_budget.append(item)
                continue
            planned += cost
        to_send.append(item)
    metrics.REVIEW_ITEMS.labels("reused").inc(len(found))
    if progress is not None:
        progress.start(len(job.items), len(found), len(to_send))
        for item in job.items:
            if item.request_id in found:
                progress.settled(item, found[item.request_id])
    deadline = time.monotonic() + timeout_s
    for item in to_send:
        await client.submit(item.prompt, **item.request_fields(job.job))
        outcome.sent += 1
        metrics.REVIEW_PENDING.inc()

    async def wait(item: ReviewItem) -> tuple[ReviewItem, Response | None]:
        try:
            remaining = max(0.0, deadline - time.monotonic())
            return item, await client.result(item.request_id, timeout=remaining)
        except ResultTimeout:
            return item, None

    for next_done in asyncio.as_completed([wait(item) for item in to_send]):
        item, response = await next_done
        metrics.REVIEW_PENDING.dec()
        if response is None:
            outcome.timed_out.append(item)
            metrics.REVIEW_ITEMS.labels("timed_out").inc()
        else:
            outcome.responses[item.request_id] = response
            settled = "answered" if response.answered else "not_answered"
            metrics.REVIEW_ITEMS.labels(settled).inc()
        if progress is not None:
            progress.settled(item, response)
    if progress is not None:
        progress.stop()
    return outcome


# --- results --------------------------------------------------------------------------------
def _usage(record: Mapping[str, Any]) -> Usage:
    usage = record.get("usage") or {}
    return Usage(
        input_tokens=int(usage.get("input_tokens") or 0),
        output_tokens=int(usage.get("output_tokens") or 0),
        cache_read_input_tokens=int(usage.get("cache_read_input_tokens") or 0),
        cache_creation_input_tokens=int(usage.get("cache_creation_input_tokens") or 0),
        cost_micro_usd=int(record.get("cost_micro_usd") or 0),
    )


def collect(
    job: Plan,
    outcome: Outcome,
    *,
    fail_on: Severity | None = Severity.HIGH,
    baseline: Any = None,
    describe_budget: Callable[[int], str] = lambda micro: f"${micro / 1_000_000:.2f}",
) -> ReviewResult:
    """The job's ``ReviewResult``: findings of every answered item, an unstructured note for an
    answer that is not valid findings, a failed item for every other status, timeout or item
    left unsent by the budget, and tokens and cost per document and specialist."""
    answers: list[tuple[str, FindingsAnswer]] = []
    notes: dict[str, list[str]] = {}
    failed: list[FailedItem] = []
    usage: dict[tuple[str, str], Usage] = {}
    for item in job.items:
        response = outcome.responses.get(item.request_id)
        if response is None:
            continue
        key = (item.document.doc_id, item.specialist)
        usage[key] = usage.get(key, Usage()) + _usage(response.record)
        if response.status != ResponseStatus.ANSWERED:
            reason = response.record.get("error_message") or response.content or response.status
            failed.append(item.failed(response.status, str(reason)))
            continue
        try:
            answers.append((item.document.doc_id, parse_findings_answer(response.content)))
        except FindingsParseError as exc:
            where = f"part {item.part.index + 1}, {item.specialist}"
            notes.setdefault(item.document.doc_id, []).append(
                f"{where} ({exc}): {response.content.strip()}"
            )
    for item in outcome.timed_out:
        failed.append(item.failed("timeout", "no response before --timeout: rerun to resume"))
    for item in outcome.over_budget:
        budget = describe_budget(outcome.budget_micro_usd or 0)
        failed.append(
            item.failed("skipped", f"not sent: the estimate would pass --budget {budget}")
        )
    return assemble_result(
        job=job.job,
        specialists=job.specialists,
        documents=job.documents,
        answers=answers,
        part_counts=job.part_counts,
        failed=failed,
        notes=notes,
        usage=usage,
        fail_on=fail_on,
        baseline=baseline,
    )
