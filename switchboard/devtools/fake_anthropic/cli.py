"""``fake-anthropic`` as a process: ``main(argv)``, which ``switchboard fake-anthropic`` calls."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from switchboard.devtools.fake_anthropic.fake import FakeAnthropic
from switchboard.devtools.fake_anthropic.faults import Fault, FaultSpecError
from switchboard.devtools.fake_anthropic.state import Latency, parse_latency

PROG = "fake-anthropic"


class _UsageError(Exception):
    """Raised when the command line is wrong; the message says what to change."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(message)


def _checked(convert: Callable[[str], Any], advice: str) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            return convert(text)
        except (ValueError, FaultSpecError) as exc:
            raise argparse.ArgumentTypeError(
                f"{text!r}: {advice}" if advice else str(exc)
            ) from None

    return parse


def _port(text: str) -> int:
    port = int(text)
    if not 0 <= port <= 65535:
        raise ValueError(text)
    return port


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


def _latency(text: str) -> Latency:
    return parse_latency(text)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="A loopback fake of the Anthropic Messages and Batches API.",
        epilog="Fault spec: HEAD[:OPTION]..., e.g. 429:retry-after-ms=200:count=3, 529:sticky, "
        "400:match=POISON, spend-limit, timeout:seconds=5, drop, refusal. Control API: "
        "GET /_fake/stats, POST /_fake/script, /_fake/reset, /_fake/latency, /_fake/limits, "
        "/_fake/batch-items.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--port", type=_checked(_port, "give 0 (any free port) or 1-65535"), default=0
    )
    parser.add_argument(
        "--latency-ms",
        type=_checked(_latency, "give MS or LO-HI, e.g. --latency-ms 200 or 1000-5000"),
        default=0.0,
    )
    parser.add_argument(
        "--fault", type=_checked(Fault.parse, ""), action="append", default=[], metavar="SPEC"
    )
    positive = _checked(_positive, "give a whole number of 1 or more")
    parser.add_argument("--rpm", type=positive, help="requests a minute per API key")
    parser.add_argument("--tpm", type=positive, help="input tokens a minute per API key")
    parser.add_argument(
        "--api-key", action="append", dest="api_keys", metavar="KEY", help="accept only these"
    )
    parser.add_argument("--model", action="append", dest="models", metavar="ID")
    parser.add_argument(
        "--batch-seconds",
        type=_checked(float, "give seconds, e.g. 0.5"),
        default=0.5,
        help="how long a batch stays in progress",
    )
    parser.add_argument("--cache-min-tokens", type=int, default=0)
    parser.add_argument("--no-inline-faults", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGINT or SIGTERM, then 0; 2 with one line on stderr for a bad argument."""
    try:
        args = build_parser().parse_args(argv)
    except _UsageError as exc:
        print(f"{PROG}: {exc} (see {PROG} --help)", file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else 0
    fake = FakeAnthropic(
        host=args.host,
        port=args.port,
        latency_ms=args.latency_ms,
        faults=args.fault,
        api_keys=args.api_keys,
        models=args.models,
        rpm=args.rpm,
        tpm=args.tpm,
        batch_seconds=args.batch_seconds,
        cache_min_tokens=args.cache_min_tokens,
        inline_faults=not args.no_inline_faults,
        seed=args.seed,
    )
    try:
        asyncio.run(_serve_until_signalled(fake))
    except OSError as exc:
        print(
            f"{PROG}: cannot listen on {args.host}:{args.port} ({exc.strerror}); "
            "pass another --port, or --port 0 for any free one",
            file=sys.stderr,
        )
        return 2
    return 0


async def _serve_until_signalled(fake: FakeAnthropic) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await fake.serve(stop, ready=lambda url: print(f"{PROG} listening on {url}", flush=True))
