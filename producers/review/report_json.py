"""report.json: the review result as versioned JSON, and its documented JSON schema.

The schema ships as package data (``schemas/review-report.schema.json``) for consumers in any
language; it is generated from the pydantic models, and a unit test fails when the two differ.
Regenerate it with ``python -m producers.review.report_json > producers/review/schemas/review-report.schema.json``.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from producers.review.result import REPORT_SCHEMA_RESOURCE, REPORT_VERSION, ReviewResult

_SCHEMA_ID = "https://switchboard.dev/schemas/review-report/v1.json"


def render_json(result: ReviewResult) -> str:
    """report.json's text: the result with its computed fields (verdict, summary, usage)."""
    return result.model_dump_json(indent=2) + "\n"


def generated_report_schema() -> dict[str, Any]:
    """The schema the models define, with the header a published schema carries."""
    schema = ReviewResult.model_json_schema(mode="serialization")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": _SCHEMA_ID,
        **schema,
        "title": f"Switchboard review report, version {REPORT_VERSION}",
        "description": (
            "report.json written by `switchboard review`: the job, its documents with their "
            "merged findings (each with a fingerprint over rule, path and quoted text), failed "
            "items with reasons, findings fixed since the baseline, the verdict of the CI gate "
            "and tokens/cost. Read it back as the --baseline of the next run."
        ),
    }


def report_schema() -> dict[str, Any]:
    """The shipped schema of report.json (package data)."""
    text = resources.files(__package__).joinpath(REPORT_SCHEMA_RESOURCE).read_text()
    schema: dict[str, Any] = json.loads(text)
    return schema


if __name__ == "__main__":
    print(json.dumps(generated_report_schema(), indent=2))
