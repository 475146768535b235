"""A review job's progress: a live bar on a terminal, plain periodic lines otherwise.

Both show done, failed, total, rate, ETA and the spend so far (the responses' own
``cost_micro_usd``: zero for offline answers). Lines go to stderr, so a job's stdout stays the
one summary line scripts read.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from producers.client import Response
from producers.review.job import ReviewItem
from switchboard.core.status import ResponseStatus

#: How often the plain (not a terminal) progress prints a line.
PLAIN_INTERVAL_S = 5.0


class _Counts:
    def __init__(self) -> None:
        self.total = 0
        self.done = 0
        self.failed = 0
        self.reused = 0
        self.spend_micro_usd = 0
        self.began = time.monotonic()
        self._settled_new = 0

    def settle(self, response: Response | None, *, reused: bool) -> None:
        self.done += 1
        if response is None or response.status != ResponseStatus.ANSWERED:
            self.failed += 1
        if response is not None:
            self.spend_micro_usd += int(response.record.get("cost_micro_usd") or 0)
        if not reused:
            self._settled_new += 1

    def rate(self) -> float:
        elapsed = time.monotonic() - self.began
        return self._settled_new / elapsed if elapsed > 0 else 0.0

    def eta_s(self) -> float | None:
        rate = self.rate()
        return (self.total - self.done) / rate if rate > 0 else None

    def line(self) -> str:
        eta = self.eta_s()
        return (
            f"review: {self.done}/{self.total} done, {self.failed} failed"
            f" ({self.reused} answered before), {self.rate():.1f}/s, "
            f"ETA {'-' if eta is None else f'{eta:.0f}s'}, "
            f"spent ${self.spend_micro_usd / 1_000_000:.4f}"
        )


class PlainProgress:
    """A line every ``interval_s`` and one at the end, for logs and CI."""

    def __init__(self, stream: TextIO | None = None, interval_s: float = PLAIN_INTERVAL_S) -> None:
        self._stream = stream or sys.stderr
        self._interval_s = interval_s
        self._counts = _Counts()
        self._last = 0.0
        self._reusing = True

    def start(self, total: int, already_answered: int, to_send: int) -> None:
        self._counts.total = total
        self._counts.reused = already_answered
        print(
            f"review: {total} requests, {already_answered} answered before, {to_send} to send",
            file=self._stream,
            flush=True,
        )
        self._last = time.monotonic()

    def settled(self, item: ReviewItem, response: Response | None) -> None:
        reused = self._counts.done < self._counts.reused
        self._counts.settle(response, reused=reused)
        now = time.monotonic()
        if now - self._last >= self._interval_s:
            self._last = now
            print(self._counts.line(), file=self._stream, flush=True)

    def stop(self) -> None:
        print(self._counts.line(), file=self._stream, flush=True)


class LiveProgress:
    """A rich progress bar with the same counts, redrawn in place on a terminal."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self._counts = _Counts()
        self._bar = Progress(
            TextColumn("review"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            console=Console(stderr=True),
            transient=False,
        )
        self._task = self._bar.add_task("review", total=None, status="")

    def start(self, total: int, already_answered: int, to_send: int) -> None:
        self._counts.total = total
        self._counts.reused = already_answered
        self._bar.update(self._task, total=total, status=self._status())
        self._bar.start()

    def _status(self) -> str:
        c = self._counts
        eta = c.eta_s()
        return (
            f"{c.failed} failed, {c.reused} answered before, {c.rate():.1f}/s, "
            f"ETA {'-' if eta is None else f'{eta:.0f}s'}, "
            f"${c.spend_micro_usd / 1_000_000:.4f}"
        )

    def settled(self, item: ReviewItem, response: Response | None) -> None:
        reused = self._counts.done < self._counts.reused
        self._counts.settle(response, reused=reused)
        self._bar.update(self._task, completed=self._counts.done, status=self._status())

    def stop(self) -> None:
        self._bar.stop()


def progress_for(stream: TextIO | None = None) -> PlainProgress | LiveProgress:
    """A live bar when ``stream`` (stderr) is a terminal, else plain lines."""
    stream = stream or sys.stderr
    return LiveProgress() if stream.isatty() else PlainProgress(stream)
