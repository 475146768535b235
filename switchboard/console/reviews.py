"""The review jobs the console lists: ``review-*/report.json`` folders under ``review_dir``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

#: The folders ``switchboard review`` writes by default (``--out`` may name any other).
JOB_GLOB: Final = "review-*/report.json"


@dataclass(frozen=True)
class ReviewJob:
    name: str
    folder: Path
    job: str
    created_at: str
    verdict: str
    documents: int
    findings: int
    failed: int
    summary: dict[str, int]
    cost_micro_usd: int
    has_html: bool
    error: str | None = None


def _job(folder: Path) -> ReviewJob:
    try:
        data: dict[str, Any] = json.loads((folder / "report.json").read_text())
    except (OSError, ValueError) as exc:
        return ReviewJob(
            folder.name, folder, "?", "?", "unreadable", 0, 0, 0, {}, 0, False, str(exc)
        )
    documents = data.get("documents") or []
    return ReviewJob(
        name=folder.name,
        folder=folder,
        job=str(data.get("job") or folder.name),
        created_at=str(data.get("created_at") or ""),
        verdict=str(data.get("verdict") or "?"),
        documents=len(documents),
        findings=sum(len(d.get("findings") or []) for d in documents),
        failed=len(data.get("failed") or []),
        summary={str(k): int(v) for k, v in (data.get("summary") or {}).items()},
        cost_micro_usd=int((data.get("usage") or {}).get("cost_micro_usd") or 0),
        has_html=(folder / "report.html").is_file(),
    )


def list_jobs(root: Path) -> list[ReviewJob]:
    """Every review job under ``root``, newest report first."""
    folders = [p.parent for p in root.glob(JOB_GLOB) if p.is_file()]
    jobs = [_job(f) for f in folders]
    return sorted(jobs, key=lambda j: j.created_at, reverse=True)


def job_html(root: Path, name: str) -> Path | None:
    """The report.html of job folder ``name`` (a plain folder name under ``root``, no path)."""
    if "/" in name or "\\" in name or name in ("", ".", "..") or not name.startswith("review-"):
        return None
    path = root / name / "report.html"
    return path if path.is_file() else None
