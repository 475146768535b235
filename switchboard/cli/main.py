"""``switchboard``: entry point, argument parsing and dispatch to one module per command group."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from pydantic import ValidationError

from switchboard.core.errors import SwitchboardError
from switchboard.core.settings import Settings


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line that says what to change."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


Handler = Callable[[argparse.Namespace, Settings], int]


def build_parser() -> OneLineParser:
    from switchboard.cli import dlq, kafka_cmds, pipeline_cmds

    parser = OneLineParser(prog="switchboard", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    settings_cmd = sub.add_parser("settings", help="print the effective settings, secrets masked")
    settings_cmd.set_defaults(handler=_print_settings)

    kafka_cmds.register(sub)
    pipeline_cmds.register(sub)
    dlq.register(sub)
    return parser


def _print_settings(_args: argparse.Namespace, settings: Settings) -> int:
    print(json.dumps(settings.masked(), indent=2, sort_keys=True))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["fake-anthropic"]:
        # The fake server parses its own options (--port, --fault, ...): hand them over whole.
        from switchboard.devtools.fake_anthropic import main as fake_main

        return int(fake_main(args_list[1:]))
    parser = build_parser()
    args = parser.parse_args(args_list)
    try:
        settings = Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "settings"
        print(f"switchboard: error: invalid setting {where}: {first['msg']}", file=sys.stderr)
        return 2
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
