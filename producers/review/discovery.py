"""Finding the documents of a review: files, folders, globs, excludes, .gitignore, manifests.

Rules, in the order they apply:

- a folder is walked recursively for the formats in ``DOCUMENT_FORMATS``; hidden folders
  (``.git``) are skipped;
- a ``.gitignore`` in a walked folder (or above it, up to ``root``) hides what it ignores, with
  git's own pattern semantics (``pathspec``'s ``GitIgnoreSpec``); a file named explicitly is
  read even if ignored, as ``git add -f`` would;
- ``exclude`` patterns (gitignore syntax, relative to ``root``) drop anything, named or found;
- a glob (``docs/**/*.md``) expands relative to the current folder.

Files that are not UTF-8 text are skipped with a reason, never silently dropped.
"""

from __future__ import annotations

import glob
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pathspec

from producers.review.documents import Document
from switchboard.core.findings import DOCUMENT_FORMATS

_GLOB_CHARS = frozenset("*?[")


class ManifestError(ValueError):
    """Raised when a manifest line is not a JSON object with ``path`` or ``text``."""


@dataclass
class LoadResult:
    """The documents found, and the inputs skipped with the reason for each."""

    documents: list[Document] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def _spec(lines: Iterable[str]) -> pathspec.PathSpec:
    return pathspec.GitIgnoreSpec.from_lines(list(lines))


class _Ignores:
    """The .gitignore files seen so far, each applied to paths relative to its own folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._by_folder: dict[Path, pathspec.PathSpec | None] = {}

    def _for(self, folder: Path) -> pathspec.PathSpec | None:
        if folder not in self._by_folder:
            file = folder / ".gitignore"
            self._by_folder[folder] = (
                _spec(file.read_text().splitlines()) if file.is_file() else None
            )
        return self._by_folder[folder]

    def ignored(self, path: Path) -> bool:
        folders = [path.parent, *path.parent.parents]
        for folder in folders:
            spec = self._for(folder)
            relative = path.relative_to(folder).as_posix()
            if spec is not None and spec.match_file(relative + ("/" if path.is_dir() else "")):
                return True
            if folder == self.root or (folder / ".git").exists():
                break
        return False


def _relative_name(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def _read(path: Path, name: str, result: LoadResult, **extra: object) -> None:
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        result.skipped.append((name, "not UTF-8 text"))
        return
    except OSError as exc:
        result.skipped.append((name, f"unreadable: {exc.strerror or exc}"))
        return
    if not text.strip():
        result.skipped.append((name, "empty"))
        return
    result.documents.append(Document.from_text(name, text, **extra))  # type: ignore[arg-type]


def _walk(folder: Path, ignores: _Ignores, honour_gitignore: bool) -> Iterable[Path]:
    for child in sorted(folder.iterdir()):
        if child.name.startswith(".") or (honour_gitignore and ignores.ignored(child)):
            continue
        if child.is_dir():
            yield from _walk(child, ignores, honour_gitignore)
        elif child.suffix.lower() in DOCUMENT_FORMATS:
            yield child


def load_documents(
    inputs: Sequence[str | Path],
    *,
    exclude: Sequence[str] = (),
    root: str | Path | None = None,
    honour_gitignore: bool = True,
) -> LoadResult:
    """The documents named by ``inputs`` (files, folders, globs), each once, in path order.

    Inputs are relative to the current folder, as on a command line; paths in the result are
    relative to ``root`` (default: the current folder) when under it, and ``exclude`` patterns
    match those relative paths.
    """
    base = Path(root or Path.cwd()).resolve()
    excluded = _spec(exclude)
    ignores = _Ignores(base)
    result = LoadResult()
    chosen: dict[Path, bool] = {}  # resolved path -> named explicitly
    for item in map(str, inputs):
        if _GLOB_CHARS & set(item):
            matches = [Path(p) for p in sorted(glob.glob(item, recursive=True))]
            if not matches:
                result.skipped.append((item, "no file matches the glob"))
            for match in matches:
                if match.is_file() and match.suffix.lower() in DOCUMENT_FORMATS:
                    chosen.setdefault(match.resolve(), False)
            continue
        path = Path(item)
        if path.is_dir():
            for found in _walk(path, ignores, honour_gitignore):
                chosen.setdefault(found.resolve(), False)
        elif path.is_file():
            chosen[path.resolve()] = True
        else:
            result.skipped.append((item, "no such file or folder"))
    for path in sorted(chosen):
        name = _relative_name(path, base)
        if excluded.match_file(name):
            continue
        if honour_gitignore and not chosen[path] and ignores.ignored(path):
            continue
        _read(path, name, result)
    return result


def load_manifest(manifest: str | Path, *, root: str | Path | None = None) -> LoadResult:
    """Documents from a JSONL manifest: one ``{id, path | text, specialists, tenant}`` a line.

    A ``path`` is relative to the manifest's folder; a ``text`` item needs an ``id`` (it names
    the document in the report). Blank lines and lines starting with ``#`` are skipped.
    """
    manifest = Path(manifest)
    base = Path(root).resolve() if root else manifest.parent.resolve()
    result = LoadResult()
    for number, line in enumerate(manifest.read_text().splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ManifestError(f"{manifest}:{number}: not JSON: {exc.msg}") from exc
        if not isinstance(item, dict) or ("path" in item) == ("text" in item):
            raise ManifestError(f"{manifest}:{number}: an object with exactly one of path, text")
        specialists = tuple(item.get("specialists") or ())
        extra = {"specialists": specialists, "tenant": item.get("tenant")}
        if "text" in item:
            if not item.get("id"):
                raise ManifestError(f"{manifest}:{number}: a text item needs an id")
            name = str(item["id"])
            result.documents.append(
                Document.from_text(name, str(item["text"]), doc_id=name, **extra)  # type: ignore[arg-type]
            )
            continue
        path = Path(item["path"])
        path = path if path.is_absolute() else manifest.parent / path
        if item.get("id"):
            extra["doc_id"] = str(item["id"])
        _read(path, _relative_name(path, base), result, **extra)
    return result
