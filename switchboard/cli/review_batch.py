"""``switchboard review --batch-api``: the job's requests through the Message Batches API.

The composition root's glue between the review job (``producers.review.job``: the plan, the
lookup of what is answered, the outcome the reports are built from) and the batch component
(``consumers.batches.run_batch_job``). What is already answered is not sent; the rest goes out
in batches at half price; the responses land on the response topic as the workers' would, and
are read back with the same lookup. ``--timeout`` bounds the wait: items still in a batch then
are reported ``timeout``, and rerunning the same job resumes that batch instead of sending it
again. ``--budget`` applies the half-price estimate.
"""

from __future__ import annotations

import sys
from typing import Any

from consumers.batches import BatchItem, PollPolicy, run_batch_job
from consumers.batches.job import require_key
from consumers.batches.results import BATCH_PRICE_FACTOR
from producers.client import build_request
from producers.review import job as review_job
from switchboard.core.settings import Settings


def batch_items(plan: Any, to_send: list[Any]) -> list[BatchItem]:
    """Each review item as a batch item: its request (as the workers get it), and the whole
    document as the prefix every specialist reviewing it shares."""
    items = []
    for item in to_send:
        request = build_request(item.prompt, **item.request_fields(plan.job))
        request["prompt"] = item.prompt
        items.append(BatchItem(item.request_id, item.specialist, request, item.document.text))
    return items


async def run_with_batches(
    client: Any,
    plan: Any,
    settings: Settings,
    kafka: dict[str, Any],
    *,
    timeout_s: float,
    progress: Any = None,
    budget_micro_usd: int | None = None,
    pricing: Any = None,
) -> Any:
    """The job's ``Outcome``, as ``review_job.run`` gives it, answered through batches."""
    require_key(settings)
    outcome = review_job.Outcome(budget_micro_usd=budget_micro_usd)
    ids = [item.request_id for item in plan.items]
    # The whole response topic, not the dedup window: a batch can take a day, and its rerun the
    # next day must still find yesterday's answers (the batch job reads it whole too).
    found = await client.lookup(ids, since_ms=0)
    outcome.responses.update(found)
    outcome.already_answered = len(found)
    to_send, planned = [], 0
    for item in plan.items:
        if item.request_id in found:
            continue
        if budget_micro_usd is not None and pricing is not None:
            cost = round(
                review_job.estimate_item(item, pricing).cost_micro_usd * BATCH_PRICE_FACTOR
            )
            if planned + cost > budget_micro_usd:
                outcome.over_budget.append(item)
                continue
            planned += cost
        to_send.append(item)
    if progress is not None:
        progress.start(len(plan.items), len(found), len(to_send))
        for item in plan.items:
            if item.request_id in found:
                progress.settled(item, found[item.request_id])
    if to_send:
        poll = PollPolicy(max_wait_s=timeout_s)
        await run_batch_job(
            batch_items(plan, to_send),
            settings,
            kafka,
            job=plan.job,
            poll=poll,
            on_event=lambda line: print(f"review: {line}", file=sys.stderr, flush=True),
        )
        outcome.sent = len(to_send)
        answered = await client.lookup([item.request_id for item in to_send], since_ms=0)
        outcome.responses.update(answered)
        for item in to_send:
            response = answered.get(item.request_id)
            if response is None:
                outcome.timed_out.append(item)
            if progress is not None:
                progress.settled(item, response)
    if progress is not None:
        progress.stop()
    return outcome
