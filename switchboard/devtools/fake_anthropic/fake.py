"""``FakeAnthropic``: the fake server's lifecycle, in a background thread or on your loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Final, TypedDict, Unpack

from aiohttp import web

from switchboard.devtools.fake_anthropic.faults import Fault
from switchboard.devtools.fake_anthropic.server import build_app
from switchboard.devtools.fake_anthropic.state import FakeState, FakeStats, Latency

START_TIMEOUT_S: Final = 10.0
STOP_TIMEOUT_S: Final = 10.0
# In-flight handlers get this long to finish at stop before they are cancelled: stalled
# "timeout" faults would otherwise hold shutdown for their whole stall.
SHUTDOWN_GRACE_S: Final = 0.5
# Benchmarks open 1,000+ connections at once; the default backlog of 128 would drop SYNs.
LISTEN_BACKLOG: Final = 4096


class FakeOptions(TypedDict, total=False):
    """Keyword options of ``FakeAnthropic`` (described there), handed to ``FakeState``."""

    latency_ms: Latency
    faults: Iterable[Fault | str]
    api_keys: Collection[str] | None
    models: Collection[str] | None
    rpm: int | None
    tpm: int | None
    batch_seconds: float
    cache_min_tokens: int
    inline_faults: bool
    seed: int
    log_limit: int


class FakeAnthropic:
    """A loopback Anthropic API that the real SDK talks to over HTTP.

    ``with FakeAnthropic(latency_ms=50) as fake:`` (or ``async with``) serves on
    ``fake.base_url`` from a background thread with its own event loop, so sync tests and
    other event loops can call it. ``await fake.serve(stop)`` serves on the running loop
    instead (the CLI's way).

    Options: ``latency_ms`` (ms, or (lo, hi) drawn uniformly per call); ``faults`` (specs, see
    ``faults``); ``api_keys`` (accepted keys, None for any non-empty key); ``models`` (known
    model ids, others get 404, None for any); ``rpm``/``tpm`` (per-key limits a minute, None
    for none); ``batch_seconds`` (how long a batch stays in progress); ``cache_min_tokens``
    (the smallest cacheable prefix: the real API's is 1,024 or more tokens by model, 0 here
    by default so short test personas cache); ``inline_faults`` (obey ``FAULT:<spec>`` markers
    in prompts); ``seed`` (for the latency draw); ``log_limit`` (call records kept).
    """

    def __init__(
        self, *, host: str = "127.0.0.1", port: int = 0, **options: Unpack[FakeOptions]
    ) -> None:
        self.host = host
        self.state = FakeState(**options)
        self._requested_port = port
        self._port: int | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``, for ``anthropic.Anthropic(base_url=...)``."""
        if self._port is None:
            raise RuntimeError("FakeAnthropic is not serving: start() it first")
        return f"http://{self.host}:{self._port}"

    # Scripting and reading, from any thread.

    def stats(self) -> FakeStats:
        return self.state.stats()

    def script(self, *faults: Fault | str) -> None:
        """Queue, make sticky, or add as prompt rules, by each fault's own options."""
        self.state.script(*faults)

    def clear_faults(self) -> None:
        self.state.clear_faults()

    def set_latency(self, latency_ms: Latency) -> None:
        self.state.set_latency(latency_ms)

    def set_rate_limits(self, rpm: int | None = None, tpm: int | None = None) -> None:
        self.state.set_rate_limits(rpm, tpm)

    def reset(self) -> None:
        self.state.reset()

    def script_batch_items(self, outcomes: Mapping[str, str | Sequence[str]]) -> None:
        """Give the next results of these batch items (by ``custom_id``) these outcomes."""
        self.state.script_batch_items(outcomes)

    def set_batch_seconds(self, seconds: float) -> None:
        self.state.set_batch_seconds(seconds)

    # Serving.

    async def serve(
        self, stop: asyncio.Event, *, ready: Callable[[str], None] | None = None
    ) -> None:
        """Serve on the running loop until ``stop`` is set; ``ready(base_url)`` once bound."""
        runner = web.AppRunner(
            build_app(self.state),
            handle_signals=False,
            access_log=None,
            handler_cancellation=True,  # a client that hangs up stops its handler's sleep
            shutdown_timeout=SHUTDOWN_GRACE_S,
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self._requested_port, backlog=LISTEN_BACKLOG)
            await site.start()
            self._port = runner.addresses[0][1]
            if ready is not None:
                ready(self.base_url)
            await stop.wait()
        finally:
            self._port = None
            await runner.cleanup()

    def start(self) -> FakeAnthropic:
        """Serve from a background thread; returns once the port is bound."""
        if self._thread is not None:
            raise RuntimeError("FakeAnthropic is already serving: stop() it first")
        bound = threading.Event()
        failures: list[BaseException] = []

        def run() -> None:
            try:
                with asyncio.Runner() as runner:
                    self._loop = runner.get_loop()
                    self._stop = asyncio.Event()
                    runner.run(self.serve(self._stop, ready=lambda _url: bound.set()))
            except BaseException as exc:  # handed to the starting thread, which raises it
                failures.append(exc)
            finally:
                bound.set()

        thread = threading.Thread(target=run, name="fake-anthropic", daemon=True)
        thread.start()
        if not bound.wait(START_TIMEOUT_S) or failures or self._port is None:
            if self._loop is not None and self._stop is not None:
                self._loop.call_soon_threadsafe(self._stop.set)
            thread.join(STOP_TIMEOUT_S)
            raise RuntimeError(f"fake-anthropic did not start on {self.host}") from (
                failures[0] if failures else None
            )
        self._thread = thread
        return self

    def stop(self) -> None:
        """Stop the background server and join its thread; a no-op when not serving."""
        thread, loop, stop = self._thread, self._loop, self._stop
        if thread is None or loop is None or stop is None:
            return
        loop.call_soon_threadsafe(stop.set)
        thread.join(STOP_TIMEOUT_S)
        if thread.is_alive():
            raise RuntimeError(f"fake-anthropic did not stop within {STOP_TIMEOUT_S:g} s")
        self._thread = self._loop = self._stop = None

    async def astart(self) -> FakeAnthropic:
        """``start()`` without blocking the caller's event loop."""
        return await asyncio.to_thread(self.start)

    async def astop(self) -> None:
        await asyncio.to_thread(self.stop)

    def __enter__(self) -> FakeAnthropic:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> FakeAnthropic:
        return await self.astart()

    async def __aexit__(self, *_exc: object) -> None:
        await self.astop()
