"""Review jobs through the Anthropic Message Batches API, at half price (``--batch-api``).

A consumers-side component: it writes responses and dead letters as a worker does, so the
answered index, the client and the report cannot tell how a request was answered.

Entry point, for the review command (the composition root)::

    from consumers.batches import BatchItem, run_batch_job

    items = [BatchItem(request_id, specialist, request, document) for ...]
    summary = await run_batch_job(items, settings, kafka, job="review-abc")
    # summary.answered, .refused, .failed, .unfinished, .already_answered,
    # .batches_created, .batches_resumed, .resubmitted, .cost_micro_usd, .batch_ids

``request`` is the SpecialistRequest record (``build_request``'s, with ``prompt`` filled in),
``document`` the whole document (the cached prefix its specialists share). Responses arrive on
the response topic keyed by request id, as from the workers; collect them as usual.

Modules: ``requests`` (items, ``custom_id``, params, splitting within 100,000 requests and
256 MB), ``ledger`` (the batches in a compacted topic, for resuming), ``results`` (what each
result type means: publish, resubmit or dead-letter, and the half-price cost), ``runner``
(``BatchRunner``: create, poll with backoff, publish, resubmit) and ``job``
(``run_batch_job``).
"""

from consumers.batches.job import run_batch_job
from consumers.batches.requests import BatchItem, custom_id_for
from consumers.batches.runner import BatchJobError, BatchRunner, BatchSummary, PollPolicy

__all__ = [
    "BatchItem",
    "BatchJobError",
    "BatchRunner",
    "BatchSummary",
    "PollPolicy",
    "custom_id_for",
    "run_batch_job",
]
