"""Small helpers that unit and integration tests share: polling until a condition holds, a
JSON GET that returns the status of an HTTP error instead of raising it, the most holders an
async gate (a cap, a limiter) let in at once, ``switchboard`` run as a user runs it, and a
clock a test moves by hand."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar

T = TypeVar("T")

#: The pause between two checks of a condition being waited for.
POLL_PAUSE_S = 0.05
#: The timeout of one HTTP request of ``get_json``.
HTTP_TIMEOUT_S = 5.0
#: How long one ``run_cli`` may take.
CLI_TIMEOUT_S = 60.0
#: The real ``asyncio.sleep``, kept for ``FakeClock.sleep``: a test may patch its clock's
#: ``sleep`` in as ``asyncio.sleep``.
_asyncio_sleep = asyncio.sleep


def wait_for(condition: Callable[[], T], timeout_s: float, what: str) -> T:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out after {timeout_s:g}s waiting for {what}"
        time.sleep(POLL_PAUSE_S)
    return value


def get_json(url: str) -> tuple[int, dict[str, Any]]:
    """The status and JSON body of a GET of ``url``, error statuses (4xx, 5xx) included."""
    try:
        with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_S) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


async def most_at_once(
    gate: AbstractAsyncContextManager[Any],
    calls: int,
    *,
    hold_s: float = 0.0,
    inside: Callable[[int], object] | None = None,
) -> int:
    """Run ``calls`` tasks at once that each hold ``gate`` for ``hold_s`` (``inside(i)`` runs as
    task ``i`` gets in); the most that held it at the same time."""
    holding = most = 0

    async def call(i: int) -> None:
        nonlocal holding, most
        async with gate:
            holding += 1
            most = max(most, holding)
            if inside is not None:
                inside(i)
            await asyncio.sleep(hold_s)
            holding -= 1

    await asyncio.gather(*(call(i) for i in range(calls)))
    return most


def run_cli(*argv: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``switchboard ARGV`` in a fresh interpreter (with ``env``, or this one's), its output
    captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "switchboard.cli.main", *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=CLI_TIMEOUT_S,
    )


def one_error_line(proc: subprocess.CompletedProcess[str], returncode: int) -> str:
    """The one line a failed command wrote on stderr; fails unless it exited ``returncode``
    with exactly one line there."""
    assert proc.returncode == returncode, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


class FakeClock:
    """A clock a test moves by hand: calling it (or ``monotonic``) reads ``now``; ``advance``
    moves it; ``sleep`` records the pause, lets other tasks run, then moves the clock that far
    (never back, if a task moved it meanwhile)."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        target = self.now + seconds
        await _asyncio_sleep(0)
        self.now = max(self.now, target)
