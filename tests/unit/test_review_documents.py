"""Review inputs: discovery (folders, globs, excludes, .gitignore, manifest), ids and hashes,
and splitting that keeps every line in exactly one part with its true start line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from producers.review.discovery import ManifestError, load_documents, load_manifest
from producers.review.documents import Document
from producers.review.splitting import DocumentPart, split_document
from tests.unit.review_corpus import corpus_documents


def _tree(root: Path, files: dict[str, str | bytes]) -> None:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())


def test_folders_globs_excludes_and_gitignore(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _tree(
        tmp_path,
        {
            ".gitignore": "build/\n*.draft.md\n",
            "docs/a.md": "# A\n",
            "docs/b.draft.md": "# draft\n",
            "docs/nested/.gitignore": "secret-notes.txt\n",
            "docs/nested/c.rst": "C\n=\n",
            "docs/nested/secret-notes.txt": "notes\n",
            "docs/api/openapi.yaml": "openapi: 3.0.0\ninfo:\n  title: T\n",
            "docs/old/legacy.md": "# legacy\n",
            "docs/image.png": b"\x89PNG",
            "docs/blob.md": b"\xff\xfe\x00bad",
            "build/out.md": "# generated\n",
            ".git/HEAD": "ref\n",
        },
    )
    monkeypatch.chdir(tmp_path)
    result = load_documents(["docs", "build/out.md", "missing.md"], exclude=["docs/old/**"])
    paths = [d.path for d in result.documents]
    # build/out.md is named explicitly, so .gitignore does not hide it (as with git add -f).
    assert paths == ["build/out.md", "docs/a.md", "docs/api/openapi.yaml", "docs/nested/c.rst"]
    assert dict(result.skipped) == {
        "docs/blob.md": "not UTF-8 text",
        "missing.md": "no such file or folder",
    }
    assert [d.format for d in result.documents] == ["markdown", "markdown", "openapi", "rst"]
    globbed = load_documents(["docs/**/*.md"], honour_gitignore=False)
    assert [d.path for d in globbed.documents] == [
        "docs/a.md",
        "docs/b.draft.md",
        "docs/old/legacy.md",
    ]


def test_a_manifest_gives_ids_texts_specialists_and_tenants(tmp_path: Path) -> None:
    _tree(tmp_path, {"design/x.md": "# X\n\nbody\n"})
    manifest = tmp_path / "review.jsonl"
    manifest.write_text(
        "\n".join(
            [
                json.dumps({"id": "x-design", "path": "design/x.md", "specialists": ["security"]}),
                "# a comment",
                json.dumps({"id": "note-1", "text": "Workers retry forever.", "tenant": "search"}),
            ]
        )
    )
    [by_path, by_text] = load_manifest(manifest).documents
    assert (by_path.doc_id, by_path.path, by_path.specialists) == (
        "x-design",
        "design/x.md",
        ("security",),
    )
    assert (by_text.doc_id, by_text.text, by_text.tenant) == (
        "note-1",
        "Workers retry forever.",
        "search",
    )
    manifest.write_text(json.dumps({"text": "no id"}))
    with pytest.raises(ManifestError, match="needs an id"):
        load_manifest(manifest)


def test_ids_are_stable_and_hashes_follow_the_content() -> None:
    one = Document.from_text("docs/a.md", "# A\n")
    assert one.doc_id == Document.from_text("docs/a.md", "# A, edited\n").doc_id
    assert one.content_hash != Document.from_text("docs/a.md", "# A, edited\n").content_hash
    assert one.title == "A"
    assert (
        Document.from_text("s.yaml", "openapi: 3.1.0\ninfo:\n  title: Orders API\n").title
        == "Orders API"
    )
    assert Document.from_text("p.rst", "=====\nTitle\n=====\n\ntext\n").title == "Title"


def _assert_parts_cover(document: Document, max_bytes: int) -> list[DocumentPart]:
    parts = split_document(document, max_bytes)
    lines = document.text.splitlines(keepends=True)
    assert "".join(p.text for p in parts) == document.text
    next_line = 1
    for part in parts:
        assert part.start_line == next_line
        assert part.text == "".join(lines[part.start_line - 1 : part.end_line])
        assert len(part.request_text().encode()) <= max_bytes
        assert part.count == len(parts)
        next_line = part.end_line + 1
    assert next_line == len(lines) + 1
    return parts


def test_the_large_corpus_document_is_split_on_headings_with_context() -> None:
    [handbook] = [d for d in corpus_documents() if d.path == "platform-handbook.md"]
    parts = _assert_parts_cover(handbook, 32_000)
    assert len(parts) > 1
    assert parts[0].heading_path == ("Platform Engineering Handbook",)
    assert parts[-1].heading_path[-1] == "Appendix B: Legacy systems still in service"
    assert parts[-1].text.startswith("## Appendix B")
    context = parts[-1].context()
    assert "Document: Platform Engineering Handbook" in context
    assert "Timeouts, retries and circuit breakers (line" in context
    assert ">   Appendix B: Legacy systems still in service" in context
    # The catalogue section alone is over the limit: its pieces say so.
    assert any("split on paragraph boundaries" in p.note for p in parts)


@pytest.mark.parametrize("max_bytes", [4_000, 8_000, 32_000])
def test_every_corpus_document_splits_into_exact_parts(max_bytes: int) -> None:
    for document in corpus_documents():
        _assert_parts_cover(document, max_bytes)


@pytest.mark.parametrize(
    ("path", "text", "heading"),
    [
        (
            "a.rst",
            "".join(f"Section {i}\n==========\n\n" + "words here\n" * 120 + "\n" for i in range(8)),
            "Section",
        ),
        (
            "a.adoc",
            "= Doc\n\n" + "".join(f"== Part {i}\n\n" + "words here\n" * 120 for i in range(8)),
            "Part",
        ),
        (
            "a.yaml",
            "openapi: 3.0.0\npaths:\n"
            + "".join(f"  /p{i}:\n" + "    get: {}\n" * 150 for i in range(8)),
            "/p",
        ),
        ("a.txt", "".join("a paragraph line\n" * 40 + "\n" for _ in range(30)), None),
    ],
)
def test_other_formats_split_on_their_own_headings(
    path: str, text: str, heading: str | None
) -> None:
    parts = _assert_parts_cover(Document.from_text(path, text), 4_000)
    assert len(parts) > 1
    for part in parts[1:]:
        if heading is None:  # no headings: paragraph boundaries, and the part says so
            assert "paragraph boundaries" in part.note and part.text.startswith("a paragraph")
        else:  # each later part starts at the section its heading path names
            assert part.heading_path[-1].startswith(heading)
            assert part.heading_path[-1] in part.text.splitlines()[0]


def test_a_single_line_over_the_limit_is_cut_inside_the_line_and_says_so() -> None:
    document = Document.from_text("min.json", '{"k": "' + "x" * 9000 + '"}\n')
    parts = split_document(document, 4_000)
    assert "".join(p.text for p in parts) == document.text
    assert len(parts) > 1 and all("alone is over the request limit" in p.note for p in parts)
