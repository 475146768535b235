"""The G10 harness runs each peer framework in its own virtual environment.

No broker here: a stage started in another interpreter speaks the control protocol over the
socket pair it inherits; a peer that cannot start, or whose venv cannot be built, fails with
its own message; the peer code imports nothing that needs the project's Kafka client.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import procs, venvs
from benchmarks.capacity import PEERS

STAGE = """
from benchmarks.control import Control

def echo(spec, ctl: Control) -> None:
    ctl.ready({"got": spec["value"]})
    ctl.wait_go()
    ctl.watch(lambda: ctl.finish({"echo": spec["value"] * 2}))
    import time
    while True:
        time.sleep(0.05)
"""


def _python(extra_path: Path | None = None) -> procs.PeerPython:
    env = venvs.run_env("test")
    if extra_path is not None:
        env["PYTHONPATH"] = f"{env['PYTHONPATH']}:{extra_path}"
    return procs.PeerPython(sys.executable, env)


def test_a_stage_in_another_interpreter_speaks_the_control_protocol(tmp_path: Path) -> None:
    (tmp_path / "peer_stage_for_test.py").write_text(STAGE)
    stage = procs.start("echo", "peer_stage_for_test:echo", {"value": 21}, python=_python(tmp_path))
    assert stage.info == {"got": 21}
    procs.go(stage)
    assert stage.cpu_s() >= 0
    results = procs.stop_all([stage], timeout_s=20)
    assert results == {"echo": {"echo": 42}}
    assert not stage.proc.is_alive()


def test_a_peer_that_cannot_start_fails_with_its_own_traceback() -> None:
    with pytest.raises(RuntimeError, match=r"(?s)failed to start.*ModuleNotFoundError"):
        procs.start("ghost", "benchmarks.peers.no_such_app:router", {}, python=_python())


def test_a_peer_whose_interpreter_dies_at_once_fails_with_its_output(tmp_path: Path) -> None:
    broken = procs.PeerPython(sys.executable, {**venvs.run_env("x"), "PYTHONPATH": str(tmp_path)})
    with pytest.raises(RuntimeError, match=r"(?s)failed to start.*No module named"):
        procs.start("lost", "benchmarks.peers.quix_app:router", {}, python=broken)


def test_the_peer_code_imports_no_kafka_client_of_the_project() -> None:
    """What every peer imports from the checkout runs with confluent-kafka unimportable (the
    FastStream and Faust venvs have none; Quix's has an older one)."""
    code = (
        "import sys; sys.modules['confluent_kafka'] = None; sys.modules['anthropic'] = None\n"
        "import benchmarks.control, benchmarks.peers.logic, benchmarks.peers.__main__\n"
        "print('ok')"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=venvs.run_env("test"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_every_peer_has_pinned_requirements_and_a_venv_per_hash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for peer in PEERS:
        lines = [
            line.split("#")[0].strip()
            for text in venvs._requirement_texts(venvs.requirements_file(peer))
            for line in text.splitlines()
        ]
        specs = [line for line in lines if line and not line.startswith("-r")]
        assert specs and all("==" in s for s in specs), (peer, specs)
    (tmp_path / "requirements-logic.txt").write_text("fastavro==1.13.1\n")
    (tmp_path / "requirements-p.txt").write_text("-r requirements-logic.txt\nquixstreams==1\n")
    monkeypatch.setattr(venvs, "PEERS_DIR", tmp_path)
    first = venvs.env_dir("p", tmp_path)
    assert first.name.startswith("p-") and venvs.env_dir("p", tmp_path) == first
    (tmp_path / "requirements-logic.txt").write_text("fastavro==1.13.2\n")
    assert venvs.env_dir("p", tmp_path) != first  # an included file's pin counts too


def test_a_peer_that_cannot_be_installed_fails_naming_it_and_pips_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A requirement pip rejects before it looks at any index: no network needed.
    (tmp_path / "requirements-p.txt").write_text("this is not a requirement ===\n")
    monkeypatch.setattr(venvs, "PEERS_DIR", tmp_path)
    with pytest.raises(venvs.PeerEnvError, match=r"(?s)G10 peer 'p': pip install .* failed.*"):
        venvs.ensure("p", tmp_path / "venvs", log=lambda _line: None)
    with pytest.raises(venvs.PeerEnvError, match="no requirements file"):
        venvs.ensure("nobody", tmp_path / "venvs", log=lambda _line: None)


def test_a_peer_that_cannot_be_installed_ends_the_run_before_anything_is_measured(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from benchmarks import __main__ as cli
    from benchmarks import frameworks

    class NoBroker:
        bootstrap = "127.0.0.1:1"
        started = False

        def stop_if_started(self) -> None:
            pass

    def cannot_install(log: object = print) -> dict[str, procs.PeerPython]:
        raise venvs.PeerEnvError("G10 peer 'quix': pip install -r r.txt failed (exit 1):\nboom")

    measured: list[str] = []
    monkeypatch.setattr(cli.BenchKafka, "connect", classmethod(lambda cls: NoBroker()))
    monkeypatch.setattr(frameworks, "prepare", cannot_install)
    monkeypatch.setattr(frameworks, "run", lambda *args, **kwargs: measured.append("G10"))
    assert cli.main(["--only", "G10", "--quick"]) == 1
    assert "G10 peer 'quix': pip install -r r.txt failed (exit 1):\nboom" in capsys.readouterr().err
    assert measured == []
