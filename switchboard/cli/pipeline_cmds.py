"""Pipeline commands: ``demo``, ``submit``, ``router``, ``worker``, ``up``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from switchboard.settings import Settings


def register(sub: Any) -> None:
    demo = sub.add_parser("demo", help="the main job: bring everything up and answer examples")
    demo.set_defaults(handler=demo_cmd)


def demo_cmd(_args: argparse.Namespace, _settings: Settings) -> int:
    print(
        "switchboard demo: the pipeline (router, specialists, client) is not built yet; "
        "only `switchboard kafka start|stop|status|logs` and `switchboard topics` work today.",
        file=sys.stderr,
    )
    return 1
