"""Shared helpers of the review tests: run the offline review over documents, broker-free."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from consumers.specialists.review import detect_findings, offline_answer
from producers.review.assemble import assemble_result
from producers.review.discovery import load_documents
from producers.review.documents import Document
from producers.review.result import ReviewResult
from producers.review.splitting import split_document

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "review"
ALL_SPECIALISTS = ("backend", "security", "perf", "api")


def corpus_documents() -> list[Document]:
    return load_documents([CORPUS], root=CORPUS, exclude=["expected.json"]).documents


def offline_review(
    documents: Sequence[Document],
    specialists: Sequence[str] = ALL_SPECIALISTS,
    **options: object,
) -> ReviewResult:
    """What the review job does with offline workers, without Kafka: split, answer, assemble."""
    answers, counts = [], {}
    for document in documents:
        parts = split_document(document)
        counts[document.doc_id] = len(parts)
        for part in parts:
            for specialist in document.specialists or specialists:
                findings = detect_findings(
                    part.text,
                    path=document.path,
                    specialist=specialist,
                    start_line=part.start_line,
                    heading_path=part.heading_path,
                    doc_format=document.format,
                    context=part.context(),
                )
                answer = offline_answer(specialist, findings)
                answers.append((document.doc_id, answer))
    return assemble_result(
        job="test",
        specialists=list(specialists),
        documents=documents,
        answers=answers,
        part_counts=counts,
        created_at="2026-12-01T00:00:00+00:00",
        **options,  # type: ignore[arg-type]
    )
