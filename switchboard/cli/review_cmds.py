"""``switchboard review`` (a batch architecture review through the pipeline) and
``switchboard result`` (the response of a request id, answered before or still to come).

Exit codes of ``review``, for CI: 0 pass; 1 a new finding at or above ``--fail-on``; 2 items
failed, timed out or were left unsent by ``--budget`` (or the arguments named nothing to read).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from switchboard.cli.argtypes import non_empty, positive_number, seconds, subset_of
from switchboard.cli.bootstrap import resolve_bootstrap
from switchboard.core.errors import ConfigError
from switchboard.core.findings import SEVERITIES_WORST_FIRST, Severity
from switchboard.core.settings import SPECIALISTS, Settings

#: How long ``review`` awaits its responses by default.
DEFAULT_TIMEOUT_S = 600.0
REPORT_FORMATS = ("md", "html", "json", "sarif")
_NO_GATE = "none"
_specialists = subset_of("specialist", SPECIALISTS)
_report_formats = subset_of("report format", REPORT_FORMATS)


def _severity(text: str) -> Severity | None:
    if text == _NO_GATE:
        return None
    try:
        return Severity(text.lower())
    except ValueError:
        choices = ", ".join(s.value for s in SEVERITIES_WORST_FIRST)
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a severity: use one of {choices}, or {_NO_GATE} for no gate"
        ) from None


def _readable_file(text: str) -> Path:
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text} is not a file: give the path of one")
    return path


def _job(text: str) -> str:
    name = non_empty(text)
    if any(c.isspace() for c in name) or "/" in name:
        raise argparse.ArgumentTypeError(f"{text!r} has spaces or slashes: use a short name")
    return name


_usd = positive_number("US dollars", hint="give a budget such as 5 or 0.50")


def register(sub: Any) -> None:
    review = sub.add_parser(
        "review", help="review design docs and API specs with the specialists; reports for CI"
    )
    review.add_argument("paths", nargs="*", metavar="PATH", help="files, folders or globs")
    review.add_argument(
        "--specialists",
        type=_specialists,
        default=None,
        metavar="LIST",
        help="comma-separated (default backend,security,perf)",
    )
    review.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="GLOB",
        help="gitignore-style pattern to leave out (repeatable)",
    )
    review.add_argument(
        "--manifest",
        type=_readable_file,
        metavar="FILE",
        help="JSONL of {id, path | text, specialists, tenant}",
    )
    review.add_argument(
        "--job",
        type=_job,
        metavar="NAME",
        help="job name; request ids derive from it (default: from the inputs)",
    )
    review.add_argument("--out", type=Path, metavar="DIR", help="report folder (review-JOB/)")
    review.add_argument(
        "--format",
        type=_report_formats,
        default=REPORT_FORMATS,
        metavar="LIST",
        help="comma-separated subset of md,html,json,sarif (default all)",
    )
    review.add_argument(
        "--baseline",
        type=_readable_file,
        metavar="PREVIOUS.json",
        help="an earlier report.json: mark findings new, unchanged or fixed",
    )
    review.add_argument(
        "--fail-on",
        type=_severity,
        default=Severity.HIGH,
        metavar="SEVERITY",
        help="exit 1 on a new finding at or above it (default high; none: never)",
    )
    review.add_argument(
        "--timeout",
        type=seconds,
        default=DEFAULT_TIMEOUT_S,
        metavar="S",
        help="how long to await the answers (default 600)",
    )
    review.add_argument("--tenant", type=non_empty, default="default")
    review.add_argument(
        "--estimate", action="store_true", help="print the token and dollar estimate; send nothing"
    )
    review.add_argument(
        "--budget", type=_usd, metavar="USD", help="stop submitting before the estimate passes it"
    )
    review.add_argument(
        "--batch-api",
        action="store_true",
        help="send through the Anthropic Message Batches API at half price "
        "(needs ANTHROPIC_API_KEY; a rerun resumes its batches)",
    )
    review.set_defaults(handler=review_cmd)

    result = sub.add_parser("result", help="the response of a request id (answered before or not)")
    result.add_argument("request_id", type=non_empty, metavar="ID")
    result.add_argument("--json", action="store_true", help="print the response as JSON")
    result.add_argument(
        "--timeout",
        type=seconds,
        default=30.0,
        metavar="S",
        help="how long to wait when it is not answered yet (default 30)",
    )
    result.set_defaults(handler=result_cmd)


def _kafka(settings: Settings) -> dict[str, Any]:
    return settings.client_config(resolve_bootstrap(settings))


def _pricing(settings: Settings, specialists: tuple[str, ...]) -> Any:
    from consumers.specialists.backends import PRICES_MICRO_USD
    from consumers.specialists.personas import load_persona
    from producers.review.job import CHARS_PER_TOKEN, Pricing

    models = {s: settings.models[s] for s in specialists}
    prices = {
        s: next((p for prefix, p in PRICES_MICRO_USD.items() if m.startswith(prefix)), (0.0, 0.0))
        for s, m in models.items()
    }
    personas = {s: len(load_persona(s).system_prompt) // CHARS_PER_TOKEN for s in specialists}
    return Pricing(models=models, prices=prices, persona_tokens=personas)


def _load(args: argparse.Namespace) -> Any:
    from producers.review.discovery import LoadResult, ManifestError, load_documents, load_manifest

    if not args.paths and args.manifest is None:
        raise ConfigError("give PATH... or --manifest FILE: nothing to review")
    loaded = LoadResult()
    if args.paths:
        loaded = load_documents(args.paths, exclude=args.exclude)
    if args.manifest is not None:
        try:
            extra = load_manifest(args.manifest)
        except ManifestError as exc:
            raise ConfigError(str(exc)) from None
        loaded.documents += extra.documents
        loaded.skipped += extra.skipped
    missing = [name for name, why in loaded.skipped if why == "no such file or folder"]
    if missing:
        raise ConfigError(f"{missing[0]}: no such file or folder: check the PATH")
    for name, why in loaded.skipped:
        print(f"switchboard review: skipped {name}: {why}", file=sys.stderr)
    if not loaded.documents:
        raise ConfigError(
            "no document to review in the inputs: give Markdown, text, RST, AsciiDoc, YAML or JSON"
        )
    return loaded


def review_cmd(args: argparse.Namespace, settings: Settings) -> int:
    try:
        return _review(args, settings)
    except ConfigError as exc:
        # Exit 2, never 1: a CI gate reads 1 as "new findings".
        print(f"switchboard review: error: {exc}", file=sys.stderr)
        return 2


def _review(args: argparse.Namespace, settings: Settings) -> int:
    from producers.review import job as review_job
    from producers.review.report import write_reports

    loaded = _load(args)
    specialists = args.specialists or review_job.DEFAULT_SPECIALISTS
    job_name = args.job or review_job.job_name(
        [*map(str, args.paths), *([str(args.manifest)] if args.manifest else [])]
    )
    plan = review_job.plan(
        job_name,
        loaded.documents,
        specialists,
        tenant=args.tenant,
        max_bytes=settings.max_prompt_bytes,
    )
    pricing = _pricing(settings, specialists)
    if args.estimate:
        _print_estimate(plan, pricing, args.budget)
        return 0
    out_dir = args.out or Path(f"review-{job_name}")
    if settings.metrics_port:
        # A long job's progress (switchboard_review_*) can be scraped like any process's.
        from switchboard.core.ops_http import OpsServer

        OpsServer(settings.metrics_port, settings.metrics_addr).start()
    outcome = asyncio.run(_run(args, settings, plan, pricing))
    result = review_job.collect(plan, outcome, fail_on=args.fail_on, baseline=args.baseline)
    written = write_reports(result, out_dir, args.format)
    if outcome.over_budget:
        print(
            f"switchboard review: stopped submitting at --budget ${args.budget:g}: "
            f"{len(outcome.over_budget)} of {len(plan.items)} requests not sent",
            file=sys.stderr,
        )
    counts = ", ".join(f"{n} {s}" for s, n in result.summary.items() if n)
    cost = result.usage.cost_micro_usd / 1_000_000
    print(
        f"review {job_name}: {result.verdict}: {len(result.documents)} documents, "
        f"{len(result.findings)} findings{f' ({counts})' if counts else ''}, "
        f"{len(result.failed)} failed; {outcome.sent} sent, {outcome.already_answered} answered "
        f"before; {result.usage.total_tokens} tokens, ${cost:.4f}; reports: "
        + " ".join(str(p) for p in written.values())
    )
    return result.exit_code


async def _run(args: argparse.Namespace, settings: Settings, plan: Any, pricing: Any) -> Any:
    from producers.client import AsyncSwitchboardClient
    from producers.review import job as review_job
    from producers.review.progress import progress_for
    from switchboard.core.envelope import content_codec

    client = AsyncSwitchboardClient(
        _kafka(settings),
        topic_prefix=settings.topic_prefix,
        codec=content_codec(settings),
        tenant=args.tenant,
        lookback_s=settings.dedup_window_s,
    )
    try:
        if args.batch_api:
            from switchboard.cli.review_batch import run_with_batches

            return await run_with_batches(
                client,
                plan,
                settings,
                _kafka(settings),
                timeout_s=args.timeout,
                progress=progress_for(),
                pricing=pricing,
                budget_micro_usd=round(args.budget * 1_000_000) if args.budget else None,
            )
        return await review_job.run(
            client,
            plan,
            timeout_s=args.timeout,
            progress=progress_for(),
            budget_micro_usd=round(args.budget * 1_000_000) if args.budget else None,
            pricing=pricing,
        )
    finally:
        await client.close()


def _print_estimate(plan: Any, pricing: Any, budget: float | None) -> None:
    from producers.review.job import estimate

    total = estimate(plan.items, pricing)
    parts = sum(plan.part_counts.values())
    print(
        f"estimate for job {plan.job}: {len(plan.items)} requests ({len(plan.documents)} "
        f"documents, {parts} parts, specialists {','.join(plan.specialists)}); "
        f"~{total.input_tokens} input + ~{total.output_tokens} output tokens; "
        f"~${total.usd:.4f} at "
        + ", ".join(f"{s}={m}" for s, m in pricing.models.items())
        + " prices (offline workers cost nothing); nothing sent"
    )
    if budget is not None and total.usd > budget:
        print(f"over --budget ${budget:g}: the job would stop submitting before the end")


def result_cmd(args: argparse.Namespace, settings: Settings) -> int:
    from producers.client import ResultTimeout, SwitchboardClient
    from switchboard.core.envelope import content_codec

    client = SwitchboardClient(
        _kafka(settings),
        topic_prefix=settings.topic_prefix,
        codec=content_codec(settings),
        lookback_s=settings.dedup_window_s,
    )
    try:
        found = client.lookup([args.request_id])
        try:
            response = found.get(args.request_id) or client.result(args.request_id, args.timeout)
        except ResultTimeout:
            message = (
                f"no response for {args.request_id} in the last {settings.dedup_window_s:g}s "
                f"of the response topic nor within {args.timeout:g}s: check the id, or wait longer"
            )
            if args.json:
                print(
                    json.dumps(
                        {
                            "request_id": args.request_id,
                            "status": "timeout",
                            "error_message": message,
                        }
                    )
                )
            else:
                print(f"switchboard result: error: {message}", file=sys.stderr)
            return 1
        if args.json:
            print(json.dumps(response.to_json()))
        else:
            print(
                f"{response.request_id}: {response.status} by {response.specialist} "
                f"({response.backend})\n\n{response.content}"
            )
        return 0 if response.answered else 1
    finally:
        client.close()
