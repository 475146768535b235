"""report.html: one self-contained page (no network) rendered with Jinja2.

The template ships as package data and is loaded through ``importlib.resources``. Every
finding is rendered into the page's table by the server side, so the page reads without
JavaScript; a few lines of plain JavaScript add sorting by column and filtering by severity,
specialist and document. The same data is embedded as JSON (``<script id="review-data"
type="application/json">``) for tests and tools that drive the page in a browser.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

import jinja2

from producers.review.result import ReviewResult
from switchboard.core.findings import SEVERITIES_WORST_FIRST

TEMPLATE = "report.html.j2"


def _load_template(name: str) -> str:
    # Through importlib.resources, so the template is found inside a wheel or a zip too.
    return (
        resources.files(__package__ or "producers.review").joinpath("templates", name).read_text()
    )


@cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FunctionLoader(_load_template),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _data(result: ReviewResult) -> dict[str, Any]:
    return {
        "job": result.job,
        "verdict": result.verdict.value,
        "findings": [f.model_dump(mode="json") for f in result.findings],
    }


def render_html(result: ReviewResult) -> str:
    template = _environment().get_template(TEMPLATE)
    return template.render(
        result=result,
        severities=[s.value for s in SEVERITIES_WORST_FIRST],
        specialists=sorted({s for f in result.findings for s in f.specialists}),
        documents_by_id={d.document_id: d for d in result.documents},
        data=_data(result),
    )
