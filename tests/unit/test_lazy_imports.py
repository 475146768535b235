"""Routers and relays never import ``anthropic`` (about 4 s of start-up); workers with a key do.

Each case builds, in a fresh interpreter, what ``switchboard router`` / ``relay`` / ``worker``
build (the CLI parser, then the Pipeline and its consumers, not run), and reports whether
``anthropic`` got imported. Only the answered index is stubbed (an in-memory ledger): it is the
one part that talks to a broker while being built. The producer connects lazily (to a closed port here).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

BUILD = """
import json, os, sys

import consumers.app
from consumers.answered import AnsweredLedger

# The answered index reads the topics' metadata at construction: no broker in unit tests.
consumers.app.Pipeline._open_index = lambda self: AnsweredLedger(3600)

from switchboard.cli.main import build_parser
from switchboard.core.settings import Settings

build_parser()
from consumers.app import Pipeline, install_signal_handlers  # what _serve imports

pipeline = Pipeline(Settings(), {{"bootstrap.servers": "127.0.0.1:1"}})
{adds}
print(json.dumps({{"anthropic": "anthropic" in sys.modules, "runtimes": sorted(pipeline.runtimes)}}))
sys.stdout.flush()
os._exit(0)  # not a clean close: the producer would wait on the closed port
"""


def _build(adds: str, *, api_key: str | None) -> dict[str, object]:
    env = {
        "PATH": "/usr/bin:/bin",
        "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
        "SWITCHBOARD_GIL_SWITCH_INTERVAL_MS": "0",
    }
    if api_key is not None:
        env["ANTHROPIC_API_KEY"] = api_key
    proc = subprocess.run(
        [sys.executable, "-c", BUILD.format(adds=adds)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize("api_key", [None, "sk-test"])
@pytest.mark.parametrize(
    ("adds", "runtimes"),
    [
        ("pipeline.add_router()", ["router"]),
        ("pipeline.add_relay()", ["relay"]),
        ("pipeline.add_router(); pipeline.add_relay()", ["relay", "router"]),
    ],
)
def test_router_and_relay_never_import_anthropic(
    adds: str, runtimes: list[str], api_key: str | None
) -> None:
    assert _build(adds, api_key=api_key) == {"anthropic": False, "runtimes": runtimes}


def test_control_a_worker_with_a_key_imports_anthropic() -> None:
    """Without this, the test above could pass with a probe that never sees the import."""
    built = _build("pipeline.add_worker('backend')", api_key="sk-test")
    assert built == {"anthropic": True, "runtimes": ["worker.backend"]}
