"""One virtual environment per G10 peer framework, with that framework's own dependencies.

Quix Streams pins an older confluent-kafka than the project's, and FastStream and Faust bring
aiokafka and their own stacks: none of them is installed beside the project. Each peer has a
requirements file under ``benchmarks/peers/`` (``requirements-<peer>.txt``, exact pins, the
versions tested). Its venv lives under ``<state dir>/bench-venvs/<peer>-<hash>``, the hash
taken over the requirements (included files too) and the interpreter's version, so a changed
pin builds a new venv and an unchanged one is reused. The peer runs with the venv's python and
the checkout on ``PYTHONPATH``: the peer apps import ``benchmarks.control``, their own module
and ``benchmarks.peers.logic`` (fastavro, pydantic-settings and the command parser), none of
which imports confluent-kafka or anything else of the project's own environment.

A peer whose venv cannot be built or whose app cannot be imported raises ``PeerEnvError``
naming the peer and carrying pip's (or Python's) own message: G10 is never judged without it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from benchmarks.procs import PeerPython

#: The checkout (or installed tree) that holds ``benchmarks``, ``consumers`` and ``switchboard``.
SOURCE_ROOT = Path(__file__).resolve().parent.parent
PEERS_DIR = Path(__file__).resolve().parent / "peers"
#: What "ready" records: the venv's ``pip freeze`` once it imported its peer app.
_READY = "bench-ready.txt"
_INSTALL_TIMEOUT_S = 1200
_IMPORT_TIMEOUT_S = 120


class PeerEnvError(RuntimeError):
    """Raised when a peer's virtual environment cannot be built or cannot import its app."""


def requirements_file(peer: str) -> Path:
    return PEERS_DIR / f"requirements-{peer}.txt"


def _requirement_texts(path: Path) -> Iterator[str]:
    """``path``'s text, then that of every file it includes with ``-r``, depth first."""
    text = path.read_text(encoding="utf-8")
    yield text
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] in ("-r", "--requirement"):
            yield from _requirement_texts(path.parent / parts[1])


def env_dir(peer: str, root: Path) -> Path:
    """``root/<peer>-<hash of its requirements and the interpreter version>``."""
    digest = hashlib.sha256(f"{sys.version}\n{sys.platform}\n".encode())
    for text in _requirement_texts(requirements_file(peer)):
        digest.update(text.encode())
    return root / f"{peer}-{digest.hexdigest()[:12]}"


def run_env(peer: str) -> dict[str, str]:
    """The environment a peer's process runs with: the checkout on the path, nothing of the
    harness's own interpreter (no inherited ``PYTHONPATH``, ``PYTHONHOME``, user site)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")
    }
    env["PYTHONPATH"] = str(SOURCE_ROOT)
    env["PYTHONNOUSERSITE"] = "1"
    return env


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Held while a venv is checked or built: two harness runs never build the same one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _run(peer: str, what: str, argv: list[str], timeout_s: float, **kwargs: object) -> str:
    try:
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout_s, check=False, **kwargs
        )  # type: ignore[call-overload]
    except subprocess.TimeoutExpired as exc:
        raise PeerEnvError(f"G10 peer {peer!r}: {what} took over {timeout_s:.0f}s") from exc
    if proc.returncode != 0:
        output = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-30:])
        raise PeerEnvError(f"G10 peer {peer!r}: {what} failed (exit {proc.returncode}):\n{output}")
    return str(proc.stdout)


def ensure(peer: str, root: Path, log: Callable[[str], None] = print) -> PeerPython:
    """The interpreter to run ``peer`` with, building its venv first if there is none."""
    requirements = requirements_file(peer)
    if not requirements.is_file():
        raise PeerEnvError(f"G10 peer {peer!r}: no requirements file {requirements}")
    target = env_dir(peer, root.resolve())
    python = target / "bin" / "python"
    env = run_env(peer)
    with _locked(target.with_name(target.name + ".lock")):
        if not (target / _READY).is_file():
            shutil.rmtree(target, ignore_errors=True)
            log(f"building the {peer} venv in {target} from {requirements.name} (once)")
            _run(peer, "python -m venv", [sys.executable, "-m", "venv", str(target)], 300)
            _run(
                peer,
                f"pip install -r {requirements}",
                [
                    str(python),
                    "-m",
                    "pip",
                    "install",
                    "--disable-pip-version-check",
                    "--no-input",
                    "-r",
                    str(requirements),
                ],
                _INSTALL_TIMEOUT_S,
                env=env,
            )
        # Every run, not only after a build: a checkout change that makes the peer app import
        # something its venv lacks fails here, by name, before anything is measured.
        _run(
            peer,
            f"importing benchmarks.peers.{peer}_app with {python}",
            [str(python), "-c", f"import benchmarks.peers.{peer}_app"],
            _IMPORT_TIMEOUT_S,
            env=env,
            cwd=str(target),
        )
        if not (target / _READY).is_file():
            freeze = _run(peer, "pip freeze", [str(python), "-m", "pip", "freeze"], 120, env=env)
            (target / _READY).write_text(freeze, encoding="utf-8")
    return PeerPython(str(python), env)


def installed(python: PeerPython) -> str:
    """The venv's ``pip freeze``, as recorded when it was built."""
    return (Path(python.executable).parent.parent / _READY).read_text(encoding="utf-8")
