"""What a detector sees of a document part: its lines, numbered as in the original file.

A part arrives as text plus where it starts (``start_line``), the heading path it begins under,
its document's format and the context the review job sent with it (title, outline of the rest).
``PartView`` numbers every line as in the original file, tracks the heading each line sits
under, and answers the two questions most rules ask: is this line in a section that discusses
what *not* to do, and is a topic addressed anywhere the part (or its context) can see.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import PurePosixPath

from switchboard.core.findings import DOCUMENT_FORMATS

#: Formats whose text is prose, where "is X addressed?" absence checks make sense.
PROSE_FORMATS = frozenset({"markdown", "rst", "asciidoc", "text"})
#: Formats that are API specifications: the spec checks apply.
SPEC_FORMATS = frozenset({"openapi", "asyncapi"})

_SPEC_ROOT = re.compile(r"""^\s*["']?(openapi|asyncapi)["']?\s*:\s*["']?\d""", re.MULTILINE)

_MD_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
_ADOC_HEADING = re.compile(r"^(={1,6})\s+(\S.*?)\s*$")
_RST_ADORNMENT = re.compile(r"^([=\-~^*#+\"'`:.])\1{2,}\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")

# Sections that describe what a design rejects: quoting them back as findings is noise.
_DISCUSSES_REJECTED = re.compile(
    r"\b(rejected|alternatives?(?: considered)?|anti-?patterns?|non-goals?|what we avoid|"
    r"pitfalls|prior art|history)\b",
    re.IGNORECASE,
)


def guess_format(path: str, text: str) -> str:
    """The format named by the extension, with YAML/JSON that declare an OpenAPI 3 or
    AsyncAPI version promoted to ``openapi`` / ``asyncapi``."""
    kind = DOCUMENT_FORMATS.get(PurePosixPath(path).suffix.lower(), "text")
    if kind in ("yaml", "json") and (match := _SPEC_ROOT.search(text[:4096])):
        return match.group(1)
    return kind


@dataclass(frozen=True)
class PartView:
    """A document part's lines with original line numbers and heading paths."""

    text: str
    path: str
    start_line: int = 1
    heading_path: tuple[str, ...] = ()
    doc_format: str = "text"
    context: str = ""
    lines: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "lines", tuple(self.text.splitlines()))

    @property
    def is_prose(self) -> bool:
        return self.doc_format in PROSE_FORMATS

    @property
    def is_spec(self) -> bool:
        return self.doc_format in SPEC_FORMATS

    @property
    def holds_document_start(self) -> bool:
        """Whether this part holds line 1: document-wide absence findings anchor there once."""
        return self.start_line == 1

    def line_number(self, index: int) -> int:
        """The 1-based line number in the original file of the part's line ``index``."""
        return self.start_line + index

    @cached_property
    def headings(self) -> tuple[tuple[str, ...], ...]:
        """For each line, the heading path it sits under (a heading line is under itself)."""
        path = list(self.heading_path)
        out: list[tuple[str, ...]] = []
        in_fence = False
        # RST levels follow the order in which adornment characters first appear; a part that
        # starts mid-document starts at the depth its heading path says.
        rst_styles: list[str] = []
        rst_base = max(len(self.heading_path) - 1, 0) if self.start_line > 1 else 0
        for index, line in enumerate(self.lines):
            if _FENCE.match(line):
                in_fence = not in_fence
            heading = None if in_fence else self._heading(index)
            if heading is not None and not out and heading[1] == (path[-1] if path else None):
                heading = None  # the part starts with the heading its heading path already ends in
            if heading is not None:
                level, title = heading
                if self.doc_format == "rst":
                    style = self.lines[index + 1].strip()[0]
                    if style not in rst_styles:
                        rst_styles.append(style)
                    level = rst_base + rst_styles.index(style) + 1
                path = [*path[: level - 1], title]
            out.append(tuple(path))
        return tuple(out)

    def _heading(self, index: int) -> tuple[int, str] | None:
        line = self.lines[index]
        if self.doc_format == "markdown" and (md := _MD_HEADING.match(line)):
            return len(md.group(1)), md.group(2)
        if self.doc_format == "asciidoc" and (adoc := _ADOC_HEADING.match(line)):
            return len(adoc.group(1)), adoc.group(2)
        if self.doc_format == "rst" and index + 1 < len(self.lines):
            under = self.lines[index + 1].strip()
            title = line.strip()
            if title and _RST_ADORNMENT.match(under) and len(under) >= len(title):
                return 1, title
        return None

    def is_heading(self, index: int) -> bool:
        return self._heading(index) is not None

    def heading_of(self, index: int) -> str:
        return " > ".join(self.headings[index])

    def discusses_rejected(self, index: int) -> bool:
        """Whether line ``index`` sits in a section about rejected options or anti-patterns."""
        return any(_DISCUSSES_REJECTED.search(h) for h in self.headings[index])

    def mentions(self, pattern: re.Pattern[str]) -> bool:
        """Whether the part or its context (the outline of the rest) mentions ``pattern``."""
        return bool(pattern.search(self.text) or pattern.search(self.context))

    def title_index(self) -> int:
        """The line to anchor a document-wide finding to: the first heading, else the first
        non-blank line."""
        for index in range(len(self.lines)):
            if self.is_heading(index):
                return index
        return next((i for i, line in enumerate(self.lines) if line.strip()), 0)
