"""The documents a review job reads: what each is, its stable id and its content hash.

A document id names *which* document (its path, or the id a manifest gave), so it stays the
same when the text changes; the content hash names *which version*, so the job can tell an
unchanged document from an edited one and derive request ids that a rerun reuses.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from dataclasses import dataclass
from pathlib import PurePosixPath

from switchboard.core.findings import DOCUMENT_FORMATS

_SPEC_ROOT = re.compile(r"""^\s*["']?(openapi|asyncapi)["']?\s*:\s*["']?(\d)""", re.MULTILINE)
_MD_TITLE = re.compile(r"^#\s+(.+?)\s*#*\s*$", re.MULTILINE)
_ADOC_TITLE = re.compile(r"^=\s+(\S.*?)\s*$", re.MULTILINE)
_SPEC_TITLE = re.compile(r"""^\s*["']?title["']?\s*:\s*["']?([^"'\n]+?)["']?,?\s*$""", re.MULTILINE)


def detect_format(path: str, text: str) -> str:
    """markdown, rst, asciidoc, text, yaml or json by extension; YAML/JSON declaring OpenAPI 3
    or AsyncAPI become ``openapi`` / ``asyncapi`` (the detectors' spec checks key on it)."""
    kind = DOCUMENT_FORMATS.get(PurePosixPath(path).suffix.lower(), "text")
    match = _SPEC_ROOT.search(text[:4096]) if kind in ("yaml", "json") else None
    if match and (match.group(1) == "asyncapi" or match.group(2) == "3"):
        return match.group(1)
    return kind


def document_id(name: str) -> str:
    """A short stable id from the document's path or manifest id."""
    return hashlib.sha256(name.encode()).hexdigest()[:16]


def content_hash(text: str) -> str:
    """sha256 of the UTF-8 text, hex: changes exactly when the document does."""
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Document:
    """One input of a review: its text and where it came from.

    ``path`` is what findings and reports name (POSIX, relative to the job's root where it
    has one); ``specialists`` and ``tenant`` are a manifest's per-document overrides.
    """

    path: str
    text: str
    format: str
    doc_id: str
    specialists: tuple[str, ...] = ()
    tenant: str | None = None

    @classmethod
    def from_text(
        cls,
        path: str,
        text: str,
        *,
        doc_id: str | None = None,
        specialists: tuple[str, ...] = (),
        tenant: str | None = None,
    ) -> Document:
        return cls(
            path=path,
            text=text,
            format=detect_format(path, text),
            doc_id=doc_id or document_id(path),
            specialists=specialists,
            tenant=tenant,
        )

    @property
    def content_hash(self) -> str:
        return content_hash(self.text)

    @property
    def size_bytes(self) -> int:
        return len(self.text.encode())

    @property
    def title(self) -> str:
        """The document's own title: its first top-level heading, the spec's ``info.title``,
        an RST title, else the file name."""
        pattern = {"markdown": _MD_TITLE, "asciidoc": _ADOC_TITLE}.get(self.format)
        if pattern is None and self.format in ("openapi", "asyncapi"):
            pattern = _SPEC_TITLE
        if pattern is not None and (match := pattern.search(self.text)):
            return match.group(1).strip()
        if self.format == "rst":
            lines = self.text.splitlines()
            for above, below in itertools.pairwise(lines):
                if above.strip() and re.fullmatch(r"([=\-~^*#+])\1{2,}", below.strip()):
                    return above.strip()
        return PurePosixPath(self.path).name
