"""Writing a review's reports: report.md, report.html, report.json and report.sarif.

``write_reports(result, out_dir, formats)`` is what ``switchboard review --out DIR --format``
calls; it returns the path of each file written.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path

from producers.review.report_html import render_html
from producers.review.report_json import render_json
from producers.review.report_md import render_markdown
from producers.review.report_sarif import render_sarif
from producers.review.result import ReviewResult


def _sarif_text(result: ReviewResult) -> str:
    return json.dumps(render_sarif(result), indent=2) + "\n"


#: Format name -> (file name, renderer).
RENDERERS: dict[str, tuple[str, Callable[[ReviewResult], str]]] = {
    "md": ("report.md", render_markdown),
    "html": ("report.html", render_html),
    "json": ("report.json", render_json),
    "sarif": ("report.sarif", _sarif_text),
}
ALL_FORMATS: tuple[str, ...] = tuple(RENDERERS)


def write_reports(
    result: ReviewResult, out_dir: str | Path, formats: Iterable[str] = ALL_FORMATS
) -> dict[str, Path]:
    """Render each chosen format into ``out_dir`` (created); unknown formats raise ValueError."""
    chosen = list(formats)
    unknown = sorted(set(chosen) - set(RENDERERS))
    if unknown:
        raise ValueError(f"unknown report format(s) {unknown}; choose from {list(RENDERERS)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for name in chosen:
        file_name, render = RENDERERS[name]
        path = out / file_name
        path.write_text(render(result), encoding="utf-8")
        written[name] = path
    return written
