"""Stage processes: each stage of a measured pipeline is its own OS process, as in production.

Processes come from a fork server that imported Switchboard once (the anthropic SDK alone takes
about 4 s to import on this machine), so a run starts in well under a second and the import is
never inside a measurement. The fork server itself holds no Kafka client and no thread, so
forking it is safe.

Protocol over a pipe: the child builds its clients and says ``("ready", info)``; the parent says
``go``; later ``stop``; the child stops, drains, and answers ``("result", dict)``.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import psutil

_CTX = mp.get_context("forkserver")
_CTX.set_forkserver_preload(
    ["consumers.app", "confluent_kafka", "fastavro", "anthropic", "benchmarks.stages"]
)


@dataclass
class Stage:
    """A running stage process."""

    name: str
    proc: Any
    conn: Connection
    info: dict[str, Any] = field(default_factory=dict)
    result: dict[str, Any] | None = None
    ps: psutil.Process | None = None
    _cpu0: float = 0.0

    def cpu_s(self) -> float:
        """User + system CPU seconds of the process so far (threads included)."""
        assert self.ps is not None
        try:
            t = self.ps.cpu_times()
        except psutil.NoSuchProcess:
            return self._cpu0
        return float(t.user + t.system)

    def threads_cpu(self) -> dict[str, float]:
        """CPU seconds by thread name (librdkafka names its threads ``rdk:*``; Python's show
        as the process name), summed over threads of the same name."""
        assert self.ps is not None
        out: dict[str, float] = {}
        try:
            for t in self.ps.threads():
                try:
                    with open(f"/proc/{self.ps.pid}/task/{t.id}/comm") as f:
                        name = f.read().strip()
                except OSError:
                    name = "?"
                if t.id == self.ps.pid:
                    name = "main"
                out[name] = round(out.get(name, 0.0) + t.user_time + t.system_time, 2)
        except psutil.NoSuchProcess:
            pass
        return out

    def rss_mb(self) -> float:
        assert self.ps is not None
        try:
            return float(self.ps.memory_info().rss) / 2**20
        except psutil.NoSuchProcess:
            return 0.0


def start(
    name: str,
    kind: str,
    spec: dict[str, Any],
    *,
    python: PeerPython | None = None,
    ready_timeout_s: float = 60.0,
) -> Stage:
    """Start stage ``kind`` and wait until it is ready.

    ``kind`` is a function name in ``benchmarks.stages`` or ``module:function``. Without
    ``python`` the stage forks from the fork server; with it, it runs as
    ``python -m benchmarks.peers`` in that interpreter (a peer framework's own virtual
    environment, ``benchmarks.venvs``), talking over a socket pair it inherits.
    """
    parent, child = _CTX.Pipe()
    proc: Any
    if python is None:
        from benchmarks import stages

        proc = _CTX.Process(target=stages.entry, args=(kind, spec, child), name=name, daemon=True)
        proc.start()
    else:
        proc = ExternalProcess.spawn(python, name, kind, child.fileno())
    child.close()
    if python is not None:
        parent.send(spec)
    stage = Stage(name, proc, parent, ps=psutil.Process(proc.pid))
    try:
        if not parent.poll(ready_timeout_s):
            raise RuntimeError(f"stage {name} ({kind}) was not ready within {ready_timeout_s:.0f}s")
        message = parent.recv()
    except (EOFError, OSError, RuntimeError) as exc:
        stop_all([stage], timeout_s=1)
        raise RuntimeError(f"stage {name} ({kind}) failed to start: {exc}{_output(proc)}") from exc
    if message[0] == "error":
        proc.join(5)
        raise RuntimeError(f"stage {name} ({kind}) failed to start: {message[1]}{_output(proc)}")
    stage.info = message[1]
    return stage


def _output(proc: Any) -> str:
    tail = proc.output_tail() if isinstance(proc, ExternalProcess) else ""
    return f"\n--- its output (last lines) ---\n{tail}" if tail else ""


@dataclass(frozen=True)
class PeerPython:
    """An interpreter to run a stage in, and the environment to run it with."""

    executable: str
    env: dict[str, str]


class ExternalProcess:
    """A stage process of another interpreter, behind the part of ``multiprocessing.Process``
    that ``Stage`` and ``stop_all`` use (``pid``, ``is_alive``, ``join``, ``kill``)."""

    def __init__(self, popen: subprocess.Popen[bytes], log_path: Path) -> None:
        self.popen = popen
        self.pid = popen.pid
        self.log_path = log_path

    @classmethod
    def spawn(cls, python: PeerPython, name: str, kind: str, fd: int) -> ExternalProcess:
        with tempfile.NamedTemporaryFile(
            prefix=f"bench-{name}-", suffix=".log", delete=False
        ) as log:
            popen = subprocess.Popen(
                [python.executable, "-m", "benchmarks.peers", kind, str(fd)],
                pass_fds=(fd,),
                env=python.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return cls(popen, Path(log.name))

    def is_alive(self) -> bool:
        return self.popen.poll() is None

    def join(self, timeout: float | None = None) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout)

    def kill(self) -> None:
        self.popen.kill()  # our own child, by its handle

    def output_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def all_alive(stages: list[Stage]) -> bool:
    """False as soon as any stage process has ended (crashed: none ends before "stop")."""
    return all(s.proc.is_alive() for s in stages)


def go(*stages: Stage) -> None:
    for stage in stages:
        stage._cpu0 = stage.cpu_s()
        stage.conn.send("go")


def cpu_since_go(stage: Stage) -> float:
    return stage.cpu_s() - stage._cpu0


def stop_all(stages: list[Stage], timeout_s: float = 60.0) -> dict[str, dict[str, Any]]:
    """Ask every stage to stop, collect their results, and make sure every process ended."""
    for stage in stages:
        with contextlib.suppress(BrokenPipeError, OSError):
            stage.conn.send("stop")
    deadline = time.monotonic() + timeout_s
    results: dict[str, dict[str, Any]] = {}
    for stage in stages:
        remaining = max(0.1, deadline - time.monotonic())
        try:
            while stage.result is None and stage.conn.poll(remaining):
                message = stage.conn.recv()
                if message[0] in ("result", "error"):
                    stage.result = message[1] if message[0] == "result" else {"error": message[1]}
        except (EOFError, OSError):
            pass
        stage.proc.join(max(0.1, deadline - time.monotonic()))
        if stage.proc.is_alive():
            stage.proc.kill()  # our own child, by its handle
            stage.proc.join(5)
        if stage.result is None:
            stage.result = {"error": "no result (killed or crashed)" + _output(stage.proc)}
        if isinstance(stage.proc, ExternalProcess):
            stage.proc.log_path.unlink(missing_ok=True)
        results[stage.name] = stage.result
    return results
