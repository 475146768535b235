"""A file watched for changes: its mtime looked at from a daemon thread, off every hot path.

The tenants file (``switchboard.core.tenants``) and the keyring file
(``switchboard.core.envelope``) are reloaded so, about once a second.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)


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


def file_mtime(path: Path) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None
