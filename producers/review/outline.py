"""Headings of a document in any review format, and the outline that parts carry as context.

Markdown ``#`` headings (outside fenced code), RST titles (underlined, optionally overlined;
levels in the order adornment styles first appear, as docutils does), AsciiDoc ``=`` titles
(outside listing blocks), and for YAML/JSON the top-level keys (level 1) and the keys one level
below them (level 2: each path of ``paths``, each scheme of ``components``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

#: The outline is context, not content: past this it keeps shallower headings, then stops
#: with a count of what it left out (the document itself is never cut).
OUTLINE_MAX_BYTES = 2_000

_MD = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
_MD_FENCE = re.compile(r"^\s*(```|~~~)")
_ADOC = re.compile(r"^(={1,6})\s+(\S.*?)\s*$")
_ADOC_BLOCK = re.compile(r"^(----|\.\.\.\.)\s*$")
_RST_ADORNMENT = re.compile(r"^([=\-~^*#+\"'`:.])\1{2,}\s*$")
_YAML_KEY = re.compile(r"""^(\s*)(?!-|#)("[^"]+"|'[^']+'|[^\s:#][^:#]*?)\s*:(?:\s|$)""")
_JSON_KEY = re.compile(r'^(\s*)"([^"]+)"\s*:')


@dataclass(frozen=True)
class Heading:
    """A heading: the line index where its section starts, its level, title and full path."""

    index: int
    level: int
    title: str
    path: tuple[str, ...]


def _with_paths(raw: list[tuple[int, int, str]]) -> list[Heading]:
    stack: list[str] = []
    out = []
    for index, level, title in raw:
        stack = [*stack[: level - 1], title]
        out.append(Heading(index, level, title, tuple(stack)))
    return out


def _marked(
    lines: Sequence[str], heading_re: re.Pattern[str], block_re: re.Pattern[str]
) -> list[tuple[int, int, str]]:
    """Headings whose marker's length is the level (``##``, ``==``), outside the blocks that
    ``block_re``'s lines open and close (Markdown fences, AsciiDoc listing blocks)."""
    found, inside = [], False
    for index, line in enumerate(lines):
        if block_re.match(line):
            inside = not inside
        elif not inside and (m := heading_re.match(line.rstrip("\r\n"))):
            found.append((index, len(m.group(1)), m.group(2)))
    return found


def _rst(lines: Sequence[str]) -> list[tuple[int, int, str]]:
    found: list[tuple[int, int, str]] = []
    styles: list[tuple[str, bool]] = []
    for index in range(len(lines) - 1):
        title, under = lines[index].strip(), lines[index + 1].strip()
        if not title or _RST_ADORNMENT.match(title) or not _RST_ADORNMENT.match(under):
            continue
        if len(under) < len(title):
            continue
        over = index > 0 and lines[index - 1].strip() == under
        style = (under[0], over)
        if style not in styles:
            styles.append(style)
        found.append((index - 1 if over else index, styles.index(style) + 1, title))
    return found


def _structured(lines: Sequence[str], key_re: re.Pattern[str]) -> list[tuple[int, int, str]]:
    keys = [
        (i, len(m.group(1)), m.group(2).strip("\"'"))
        for i, line in enumerate(lines)
        if (m := key_re.match(line))
    ]
    if not keys:
        return []
    top = min(indent for _, indent, _ in keys)
    found: list[tuple[int, int, str]] = []
    child_indent: int | None = None
    for index, indent, key in keys:
        if indent == top:
            found.append((index, 1, key))
            child_indent = None
        elif found:
            child_indent = indent if child_indent is None else child_indent
            if indent == child_indent:
                found.append((index, 2, key))
    return found


def find_headings(doc_format: str, lines: Sequence[str]) -> list[Heading]:
    """The document's headings in line order, with their heading paths."""
    if doc_format == "markdown":
        raw = _marked(lines, _MD, _MD_FENCE)
    elif doc_format == "asciidoc":
        raw = _marked(lines, _ADOC, _ADOC_BLOCK)
    elif doc_format == "rst":
        raw = _rst(lines)
    elif doc_format in ("yaml", "openapi", "asyncapi"):
        raw = _structured(lines, _YAML_KEY)
        if not raw:  # a JSON-looking file with a YAML extension, or the reverse
            raw = _structured(lines, _JSON_KEY)
    elif doc_format == "json":
        raw = _structured(lines, _JSON_KEY)
    else:
        raw = []
    return _with_paths(raw)


def render_outline(headings: Sequence[Heading], marked: range) -> str:
    """Headings as an indented list with line numbers; those in ``marked`` (line indices)
    start with ``>``. Within ``OUTLINE_MAX_BYTES``: deeper levels go first, then a count."""
    for depth in (6, 3, 2, 1):
        shown = [h for h in headings if h.level <= depth]
        text = "\n".join(
            f"{'>' if h.index in marked else ' '} {'  ' * (h.level - 1)}{h.title} (line {h.index + 1})"
            for h in shown
        )
        if len(text.encode()) <= OUTLINE_MAX_BYTES:
            left_out = len(headings) - len(shown)
            return text + (f"\n  ... {left_out} deeper headings not shown" if left_out else "")
    kept: list[str] = []
    for line in text.splitlines():
        if len("\n".join([*kept, line]).encode()) > OUTLINE_MAX_BYTES - 80:
            break
        kept.append(line)
    return "\n".join(kept) + f"\n  ... {len(shown) - len(kept)} more headings not shown"
