"""Configuration files: read by their extension, and watched for changes (the mtime looked at
from a daemon thread, off every hot path).

``ReloadedFromFile`` is the base of what is read from such a file and reloaded when it
changes, about once a second: the tenants file (``switchboard.core.tenants``) and the keyring
file (``switchboard.core.envelope``).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import yaml

log = logging.getLogger(__name__)

#: How often a reload thread looks at its file's mtime.
RELOAD_EVERY_S: Final = 1.0
#: File extension -> format.
FORMATS: Final = {".json": "json", ".yaml": "yaml", ".yml": "yaml", ".toml": "toml"}


def read_config_file(
    path: Path,
    source: str,
    error: Callable[[str], Exception],
    *,
    formats: tuple[str, ...],
    quote_parse_errors: bool = True,
) -> dict[str, Any]:
    """The mapping in a configuration file, parsed by its extension (one of ``formats``:
    "json", "yaml", "toml"). A file that cannot be read or parsed, or whose top level is not a
    mapping, raises ``error(message)``, the message starting with ``source``; the parser's own
    first line is quoted only with ``quote_parse_errors`` (it may quote the file: a secret)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise error(f"{source}: cannot read it ({exc.strerror})") from exc
    suffix = path.suffix.lower()
    kind = FORMATS.get(suffix)
    if kind not in formats:
        names = [name for name, of in FORMATS.items() if of in formats]
        raise error(
            f"{source}: name it {', '.join(names[:-1])} or {names[-1]} (the extension picks "
            "the format)"
        )
    try:
        if kind == "json":
            data: Any = json.loads(text)
        elif kind == "yaml":
            data = yaml.safe_load(text) or {}
        else:
            data = tomllib.loads(text)
    except (ValueError, yaml.YAMLError) as exc:  # JSON's and TOML's errors are ValueErrors
        if not quote_parse_errors:
            raise error(f"{source}: not valid {suffix[1:]}") from None
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise error(f"{source}: not valid {suffix[1:]}: {first}") from exc
    if not isinstance(data, dict):
        raise error(f"{source}: the top level must be a mapping")
    return data


class FileWatch:
    """Runs ``on_change`` from a daemon thread every ``every_s``; ``moved`` says whether the
    file's mtime moved since the last look."""

    def __init__(self, path: Path, name: str) -> None:
        self.path = path
        self._name = name
        self._mtime = file_mtime(path)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def moved(self) -> bool:
        """Whether the mtime moved since the last look (and remember the new one)."""
        mtime = file_mtime(self.path)
        if mtime == self._mtime:
            return False
        self._mtime = mtime
        return True

    def start(self, on_change: Callable[[], object], every_s: float) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(
            target=self._watch, args=(on_change, every_s), name=self._name, daemon=True
        )
        self._thread.start()

    def _watch(self, on_change: Callable[[], object], every_s: float) -> None:
        while not self._stop.wait(every_s):
            try:
                on_change()
            except Exception:  # a reload must never end the watch: log and try again
                log.exception("%s: reload of %s failed", self._name, self.path)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)


class ReloadedFromFile:
    """A configuration read from a file (or given, without one), reloaded when the file's
    mtime moves. A subclass reads, validates and swaps in the new one in ``_reload``, raising
    ``bad_file`` for a file that does not validate: the last good one (``what``, in the log
    line) is then kept."""

    bad_file: type[Exception] = ValueError
    what: str = "configuration"

    def __init__(self, path: Path | None, thread_name: str) -> None:
        self.path = path
        self.reloads = 0
        self._watch = FileWatch(path, thread_name) if path is not None else None

    def _reload(self, path: Path) -> None:
        raise NotImplementedError

    def reload_if_changed(self) -> bool:
        """Reload when the file's mtime moved; True when a new configuration took effect."""
        if self._watch is None or not self._watch.moved():
            return False
        try:
            self._reload(self._watch.path)
        except self.bad_file as exc:
            log.error("%s; keeping the last good %s", exc, self.what)
            return False
        self.reloads += 1
        return True

    def start(self, every_s: float = RELOAD_EVERY_S) -> None:
        """Watch the file from a daemon thread (nothing to do without a file)."""
        if self._watch is not None:
            self._watch.start(self.reload_if_changed, every_s)

    def stop(self) -> None:
        if self._watch is not None:
            self._watch.stop()


def file_mtime(path: Path) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None
