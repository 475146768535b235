"""Splitting a document over the request limit into parts, on its headings.

Every part carries what a reviewer of a page torn from a document would need: the document's
title, the heading path the part starts under, its line range, and an outline of the whole
document with the part's own headings marked, so a reviewer can see that "Timeouts" is covered
three sections later. Parts cover the document exactly: joined in order they are the original
text, each line in exactly one part, each part's ``start_line`` its first line's number.

Nothing is cut silently. Sections (Markdown ``#``, RST underlines, AsciiDoc ``=``, YAML/JSON
top-level keys, then second-level keys such as each path of an OpenAPI ``paths``) are packed
greedily into parts; a single section over the limit is split on paragraph boundaries, then
lines, and its parts say so in ``note``; a single line over the limit (minified JSON) is split
inside the line, and says that too.
"""

from __future__ import annotations

from dataclasses import dataclass

from producers.review.documents import Document
from producers.review.outline import Heading, find_headings, render_outline

#: The router's default request limit (SWITCHBOARD_MAX_PROMPT_BYTES).
DEFAULT_MAX_BYTES = 32_000
#: Room kept in each request for the title, heading path, note and framing around the outline.
FRAMING_BYTES = 600


@dataclass(frozen=True)
class DocumentPart:
    """A run of a document's lines with the context a reviewer needs to read it alone."""

    doc_id: str
    path: str
    title: str
    format: str
    index: int
    count: int
    start_line: int
    end_line: int
    heading_path: tuple[str, ...]
    text: str
    outline: str
    note: str = ""

    @property
    def part_id(self) -> str:
        """``<doc_id>:<index>``: with the content hash and specialist, a request's identity."""
        return f"{self.doc_id}:{self.index}"

    def context(self) -> str:
        """What the request says about the part besides its text (also what the detectors'
        absence checks read, so a topic covered in another part counts as addressed)."""
        lines = [
            f"Document: {self.title} ({self.path}, {self.format})",
            f"Part {self.index + 1} of {self.count}: lines {self.start_line}-{self.end_line}",
        ]
        if self.heading_path:
            lines.append("Section: " + " > ".join(self.heading_path))
        if self.note:
            lines.append("Note: " + self.note)
        if self.count > 1 and self.outline:
            lines += ["Outline of the whole document (> marks this part):", self.outline]
        return "\n".join(lines)

    def request_text(self) -> str:
        """The context, then the part's text between markers that give its first line number."""
        return (
            f"{self.context()}\n\n----- {self.path} from line {self.start_line} -----\n"
            f"{self.text}\n----- end of part -----\n"
        )


@dataclass
class _Span:
    start: int  # line index, inclusive
    end: int  # line index, exclusive
    heading_path: tuple[str, ...]
    note: str = ""


def _size(lines: list[str], start: int, end: int) -> int:
    return sum(len(line.encode()) for line in lines[start:end])


def _sections(lines: list[str], headings: list[Heading]) -> list[_Span]:
    starts = [h for h in headings if h.index > 0]
    spans = [_Span(0, starts[0].index if starts else len(lines), ())]
    first = [h for h in headings if h.index == 0]
    if first:
        spans[0].heading_path = first[0].path
    for number, heading in enumerate(starts):
        end = starts[number + 1].index if number + 1 < len(starts) else len(lines)
        spans.append(_Span(heading.index, end, heading.path))
    return [s for s in spans if s.end > s.start]


def _split_big(lines: list[str], span: _Span, budget: int) -> list[_Span]:
    """A section over the budget, on paragraph boundaries (blank lines), else line by line."""
    pieces: list[_Span] = []
    start = span.start
    cursor = span.start
    last_break: int | None = None
    while cursor < span.end:
        if _size(lines, start, cursor + 1) > budget:
            cut = last_break if last_break and last_break > start else cursor
            if cut == start:  # one line alone is over the budget: it becomes its own piece
                cut = start + 1
            pieces.append(_Span(start, cut, span.heading_path))
            start, last_break = cut, None
            cursor = max(cursor, start)
            continue
        if not lines[cursor].strip():
            last_break = cursor + 1
        cursor += 1
    pieces.append(_Span(start, span.end, span.heading_path))
    pieces = [p for p in pieces if p.end > p.start]
    where = " > ".join(span.heading_path) or "the text"
    for number, piece in enumerate(pieces, start=1):
        piece.note = (
            f"section '{where}' is over the request limit, so it is split on paragraph "
            f"boundaries: piece {number} of {len(pieces)}"
        )
    return pieces


def _pack(lines: list[str], spans: list[_Span], budget: int) -> list[_Span]:
    parts: list[_Span] = []
    for span in spans:
        if _size(lines, span.start, span.end) > budget:
            parts.extend(_split_big(lines, span, budget))
        elif parts and not parts[-1].note and _size(lines, parts[-1].start, span.end) <= budget:
            parts[-1].end = span.end
        else:
            parts.append(_Span(span.start, span.end, span.heading_path))
    return parts


def _cut_long_line(line: str, budget: int) -> list[str]:
    chunks, current = [], ""
    for char in line:
        if len((current + char).encode()) > budget:
            chunks.append(current)
            current = ""
        current += char
    return [*chunks, current]


def split_document(document: Document, max_bytes: int = DEFAULT_MAX_BYTES) -> list[DocumentPart]:
    """The document as parts whose request text fits ``max_bytes``; one part when it fits."""
    lines = document.text.splitlines(keepends=True)
    headings = find_headings(document.format, lines)
    title = document.title
    whole_outline = render_outline(headings, marked=range(0))
    budget = max_bytes - FRAMING_BYTES - len(whole_outline.encode()) - len(title.encode())
    if budget < 1024:
        raise ValueError(f"max_bytes={max_bytes} leaves no room for text next to the outline")
    if document.size_bytes + len(whole_outline.encode()) + FRAMING_BYTES <= max_bytes:
        spans = [_Span(0, len(lines), ())]
    else:
        spans = _pack(lines, _sections(lines, headings), budget)
    parts: list[DocumentPart] = []
    for span in spans:
        text = "".join(lines[span.start : span.end])
        note = span.note
        chunks = _cut_long_line(text, budget) if len(text.encode()) > budget else [text]
        for number, chunk in enumerate(chunks, start=1):
            if len(chunks) > 1:
                note = f"line {span.start + 1} alone is over the request limit: chunk {number} of {len(chunks)}"
            parts.append(
                DocumentPart(
                    doc_id=document.doc_id,
                    path=document.path,
                    title=title,
                    format=document.format,
                    index=len(parts),
                    count=0,
                    start_line=span.start + 1,
                    end_line=max(span.end, span.start + 1),
                    heading_path=span.heading_path,
                    text=chunk,
                    outline=render_outline(headings, marked=range(span.start, span.end)),
                    note=note,
                )
            )
    return [_with_count(part, len(parts)) for part in parts]


def _with_count(part: DocumentPart, count: int) -> DocumentPart:
    from dataclasses import replace

    return replace(part, count=count)
