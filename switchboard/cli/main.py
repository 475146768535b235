"""``switchboard``: entry point, argument parsing and dispatch to one module per command group."""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import json
import logging
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Any, NoReturn

from pydantic import ValidationError

from switchboard.core import logs, tracing
from switchboard.core.errors import SwitchboardError
from switchboard.core.kafka_clients import LIBRDKAFKA_LOGGER
from switchboard.core.settings import Settings

#: What ``switchboard --help`` opens with.
SUMMARY = (
    "Switchboard: a Kafka pipeline that routes engineering requests to specialist workers\n"
    "(backend, api, data, perf, security) that answer with Claude, or an offline rulebook."
)

#: The commands as ``--help`` lists them, by what a user wants to do. A command missing here
#: is still listed, under "other commands".
COMMAND_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("run the pipeline", ("demo", "up", "router", "relay", "worker")),
    ("see the pipeline", ("status", "console")),
    ("send requests, wait for answers", ("submit", "result")),
    ("batch review", ("review",)),
    ("topics", ("topics",)),
    ("local Kafka broker", ("kafka",)),
    ("dead-letter queue", ("dlq",)),
    ("configuration", ("settings",)),
    ("development tools", ("fake-anthropic",)),
)

EPILOG = (
    "`switchboard COMMAND --help` shows a command's options. Kafka is KAFKA_BOOTSTRAP_SERVERS,\n"
    "else the local broker (`switchboard kafka start`); `switchboard settings` shows every\n"
    "setting."
)

#: The level of librdkafka's own log (``switchboard.librdkafka``) by the count of -v: its
#: errors only, then what it logs by default (warnings, notices), then debug.
LIBRDKAFKA_LEVELS = (logging.ERROR, logging.INFO, logging.DEBUG)
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line that says what to change."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


Handler = Callable[[argparse.Namespace, Settings], int]


def build_parser() -> OneLineParser:
    from switchboard.cli import dlq, kafka_cmds, pipeline_cmds, review_cmds, status_cmds
    from switchboard.console import command as console_command

    parser = OneLineParser(
        prog="switchboard",
        usage="switchboard [-h] [--version] [-v] COMMAND ...",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"switchboard {package_version()}")
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="log more, the Kafka client's own log included (-vv: debug)",
    )
    # The commands are listed by COMMAND_GROUPS in the description, not as argparse's flat list.
    sub = parser.add_subparsers(
        # The subcommands' usage and error lines start "switchboard COMMAND", not with the custom
        # top-level usage line.
        prog="switchboard",
        dest="command",
        required=True,
        parser_class=OneLineParser,
        metavar="COMMAND",
        help=argparse.SUPPRESS,
    )

    settings_cmd = sub.add_parser("settings", help="print the effective settings, secrets masked")
    settings_cmd.set_defaults(handler=_print_settings)

    kafka_cmds.register(sub)
    pipeline_cmds.register(sub)
    dlq.register(sub)
    status_cmds.register(sub)
    review_cmds.register(sub)
    console_command.register(sub)
    parser.description = f"{SUMMARY}\n\n{command_overview(sub)}"
    return parser


def package_version() -> str:
    """The installed distribution's version, from its metadata."""
    try:
        return version("switchboard")
    except PackageNotFoundError:  # a source tree that was never installed
        return "unknown (not installed)"


def command_overview(sub: Any) -> str:
    """Every registered command with its one-line help, grouped as in COMMAND_GROUPS."""
    # argparse keeps a subcommand's one-line help only on these pseudo-actions.
    helps: dict[str, str] = {action.dest: action.help or "" for action in sub._choices_actions}
    width = max(map(len, helps)) + 2
    grouped = {name for _title, names in COMMAND_GROUPS for name in names}
    others = tuple(name for name in helps if name not in grouped)
    blocks = []
    for title, names in (*COMMAND_GROUPS, ("other commands", others)):
        lines = [f"  {name:<{width}}{helps[name]}" for name in names if name in helps]
        if lines:
            blocks.append("\n".join([f"{title}:", *lines]))
    return "\n\n".join(blocks)


def configure_logging(verbosity: int, settings: Settings | None = None) -> None:
    """Quiet by default (librdkafka's warnings and notices hidden); -v shows them, -vv debug.

    One root handler (``switchboard.core.logs``) for every logger, librdkafka's included:
    readable lines, or JSON lines with ``SWITCHBOARD_LOG_FORMAT=json``; the settings' secrets
    are masked in both. A serving command lowers the level to INFO for its own lines.
    """
    level = LIBRDKAFKA_LEVELS[min(verbosity, len(LIBRDKAFKA_LEVELS) - 1)]
    logging.getLogger(LIBRDKAFKA_LOGGER).setLevel(level)
    logs.configure(
        fmt=settings.log_format if settings is not None else "text",
        level=level if verbosity else logging.WARNING,
        secrets=logs.secrets_of(settings) if settings is not None else (),
    )


def service_name(args: argparse.Namespace) -> str:
    """The tracing service name of this process's role (``OTEL_SERVICE_NAME`` wins)."""
    command = str(getattr(args, "command", "") or "")
    if command == "worker":
        return f"switchboard-worker-{args.name}"
    if command in ("up", "demo"):
        return "switchboard"
    return f"switchboard-{command}" if command else "switchboard"


def _print_settings(_args: argparse.Namespace, settings: Settings) -> int:
    print(json.dumps(settings.masked(), indent=2, sort_keys=True))
    return 0


def _fake_anthropic(argv: list[str]) -> int:
    try:
        from switchboard.devtools.fake_anthropic import main as fake_main
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] != "aiohttp":
            raise
        print(
            "switchboard: error: fake-anthropic needs aiohttp: pip install 'switchboard[fake]'",
            file=sys.stderr,
        )
        return 2
    return int(fake_main(argv))


def main(argv: Sequence[str] | None = None) -> int:
    # A crash in native code (librdkafka, RocksDB) prints every thread's Python stack on
    # stderr instead of dying silently: the operator's (and CI's) only clue to where it was.
    if not faulthandler.is_enabled():
        with contextlib.suppress(AttributeError, ValueError, OSError):  # no real stderr file
            faulthandler.enable()
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["fake-anthropic"]:
        # The fake server parses its own options (--port, --fault, ...): hand them over whole.
        return _fake_anthropic(args_list[1:])
    parser = build_parser()
    args = parser.parse_args(args_list)
    configure_logging(args.verbose)
    try:
        settings = Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "settings"
        print(f"switchboard: error: invalid setting {where}: {first['msg']}", file=sys.stderr)
        return 2
    configure_logging(args.verbose, settings)
    # Spans are exported only when OTEL_EXPORTER_OTLP_ENDPOINT is set; else nothing is loaded.
    tracing.setup(
        service_name(args),
        endpoint=settings.otel_exporter_otlp_endpoint,
        content=settings.trace_content,
    )
    handler: Handler = args.handler
    try:
        return handler(args, settings)
    except SwitchboardError as exc:
        print(f"switchboard: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def run() -> NoReturn:
    sys.exit(main())


if __name__ == "__main__":
    run()
