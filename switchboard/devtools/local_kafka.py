"""A real, single-node Apache Kafka (KRaft) on loopback, from Maven Central's jars.

The broker's jars are resolved once with Maven (``infra/kafka/pom.xml``) into the state
directory; storage is formatted once; the broker runs as a detached ``java`` process whose pid
is kept in a file, so ``stop`` ends exactly that process and nothing else.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from switchboard.core.errors import ConfigError
from switchboard.core.resources import package_data_path

MIN_JAVA = 17
#: ``infra/kafka/pom.xml``, shipped as package data (``switchboard/devtools/kafka`` links to it).
DEFAULT_POM = package_data_path("switchboard.devtools", "kafka", "pom.xml")

_LOG4J2 = """\
Configuration:
  Appenders:
    Console:
      name: STDOUT
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Logger:
      - name: kafka
        level: INFO
      - name: org.apache.kafka
        level: WARN
    Root:
      level: INFO
      AppenderRef:
        - ref: STDOUT
"""


class BrokerError(ConfigError):
    """Raised when the local broker cannot be set up or started; the message says what to do."""

    code = "local_kafka"


@dataclass(frozen=True)
class BrokerStatus:
    """What ``status`` reports: whether our broker runs, its pid and its bootstrap address."""

    running: bool
    pid: int | None
    bootstrap: str | None


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when nothing listens on ``host:port`` and we may bind it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS says is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


#: The JVM options Kafka's own ``kafka-run-class.sh`` starts a broker with
#: (``KAFKA_JVM_PERFORMANCE_OPTS``). Without ``MaxGCPauseMillis=20`` G1 aims at 200 ms, and the
#: young collections here took ~40 ms each instead of 16-19: pauses that long hold ~1% of the
#: requests at 100 req/s, a latency p99 (benchmarks/README.md, "Why targets are still missed").
JVM_PERFORMANCE_OPTS: Final = (
    "-server",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-XX:MaxInlineLevel=15",
    "-Djava.awt.headless=true",
)


def java_major(java: str) -> int | None:
    """The major version ``java -version`` reports, or None when it cannot be run."""
    try:
        proc = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', proc.stderr + proc.stdout)
    if not match:
        return None
    major = int(match.group(1))
    # Java 8 and older report "1.8.0_..."
    return int(match.group(2) or 0) if major == 1 else major


def find_java(minimum: int = MIN_JAVA, jvm_root: Path = Path("/usr/lib/jvm")) -> tuple[str, int]:
    """A ``java`` of at least ``minimum``: JAVA_HOME, then PATH, then the newest under jvm_root."""
    candidates: list[str] = []
    if java_home := os.environ.get("JAVA_HOME"):
        candidates.append(str(Path(java_home) / "bin" / "java"))
    if on_path := shutil.which("java"):
        candidates.append(on_path)
    found_old: list[str] = []
    for java in candidates:
        major = java_major(java)
        if major is not None and major >= minimum:
            return java, major
        if major is not None:
            found_old.append(f"{java} is Java {major}")
    if candidates and jvm_root.is_dir():
        # Only when some Java exists: a newer JDK beside the default one (e.g. a Temurin).
        best: tuple[int, str] | None = None
        for home in sorted(jvm_root.iterdir()):
            candidate = home / "bin" / "java"
            major = java_major(str(candidate)) if candidate.is_file() else None
            if major is not None and major >= minimum and (best is None or major > best[0]):
                best = (major, str(candidate))
        if best:
            return best[1], best[0]
    if found_old:
        raise BrokerError(
            f"Kafka needs Java {minimum}+ but {'; '.join(found_old)}: install OpenJDK {minimum} "
            "or set JAVA_HOME to a newer JDK"
        )
    raise BrokerError(
        f"no Java found: install OpenJDK {minimum}+ (e.g. apt-get install "
        f"openjdk-{minimum}-jre-headless) or set JAVA_HOME"
    )


def new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding (22 characters),
    never starting with "-" (kafka-storage's argument parser reads such an id as an option;
    Kafka's own Uuid.randomUuid draws again likewise: a CI run failed on one, 1 in 64)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def wait_for_broker(bootstrap: str, timeout_s: float, config: dict[str, str] | None = None) -> bool:
    """Poll until the broker answers a metadata request, or ``timeout_s`` passes; ``config``:
    the client settings to ask with (a secured listener's), besides the bootstrap."""
    from switchboard.core.kafka_clients import make_admin  # heavy import, only when waiting

    host, _, port = bootstrap.rpartition(":")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        # A cheap TCP probe first keeps librdkafka from logging connection-refused storms.
        try:
            with socket.create_connection((host, int(port)), timeout=0.5):
                pass
        except OSError:
            time.sleep(0.2)
            continue
        admin = make_admin({**(config or {}), "bootstrap.servers": bootstrap, "log_level": 0})
        try:
            metadata = admin.list_topics(timeout=2)
            if metadata.brokers:
                return True
        except Exception:  # KafkaException while the broker finishes starting: keep waiting
            time.sleep(0.2)
    return False


class LocalKafka:
    """Manages one local broker whose files live under ``state_dir`` (jars, data, pid, log)."""

    def __init__(
        self,
        state_dir: Path,
        *,
        port: int = 9092,
        heap: str = "1g",
        start_timeout_s: float = 60.0,
        pom: Path = DEFAULT_POM,
        jars: Path | None = None,
    ) -> None:
        self.root = state_dir
        self.port = port
        self.heap = heap
        self.start_timeout_s = start_timeout_s
        self.pom = pom
        #: The jar cache; another broker's may be shared (the secure broker uses the plain one's).
        self.jars = jars or state_dir / "jars"
        self.data = state_dir / "data"
        self.pid_file = state_dir / "broker.pid"
        self.log_file = state_dir / "broker.log"
        #: The JVM's garbage-collection log (rotated: four files of 20 MB at most).
        self.gc_log_file = state_dir / "broker-gc.log"
        self.bootstrap_file = state_dir / "bootstrap"
        self.cluster_id_file = state_dir / "cluster.id"

    # --- status ------------------------------------------------------------------------
    def pid(self) -> int | None:
        """The pid of our running broker, or None (a stale pid file is ignored)."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return None
        # The pid may have been reused by another process since: check it is our broker.
        return pid if b"kafka.Kafka" in cmdline and str(self.root).encode() in cmdline else None

    def status(self) -> BrokerStatus:
        pid = self.pid()
        bootstrap = self.bootstrap_file.read_text().strip() if pid else None
        return BrokerStatus(running=pid is not None, pid=pid, bootstrap=bootstrap)

    # --- jars --------------------------------------------------------------------------
    def _pom_version(self) -> str:
        match = re.search(r"<kafka\.version>([^<]+)<", self.pom.read_text())
        return match.group(1) if match else "unknown"

    def ensure_jars(self) -> Path:
        """Resolve the broker jars with Maven once; later calls reuse the cache."""
        marker = self.jars / ".resolved"
        version = self._pom_version()
        if marker.is_file() and marker.read_text().strip() == version:
            return self.jars
        mvn = shutil.which("mvn")
        if mvn is None:
            raise BrokerError(
                "no Maven and no cached Kafka jars: install Maven (apt-get install maven) "
                "or set KAFKA_BOOTSTRAP_SERVERS to an existing cluster"
            )
        if self.jars.exists():
            shutil.rmtree(self.jars)
        self.jars.mkdir(parents=True)
        cmd = [
            mvn,
            "-q",
            "-B",
            "-f",
            str(self.pom),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={self.jars}",
            "-DincludeScope=runtime",
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            tail = " | ".join((proc.stdout + proc.stderr).strip().splitlines()[-3:])
            raise BrokerError(f"Maven could not resolve Kafka {version}: {tail}")
        marker.write_text(version)
        return self.jars

    # --- config and storage --------------------------------------------------------------
    def _listener_config(self, port: int, controller_port: int) -> list[str]:
        """The listener lines of ``server.properties`` (a secured broker writes its own)."""
        return [
            f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name=PLAINTEXT",
        ]

    def _format_args(self) -> list[str]:
        """Extra ``kafka-storage format`` arguments (a secured broker's SCRAM users)."""
        return []

    def probe_config(self) -> dict[str, str]:
        """Client settings, besides the bootstrap, that this broker's clients need (none)."""
        return {}

    def _after_start(self, bootstrap: str) -> None:
        """Runs once the broker answers (a secured broker creates its ACLs here)."""

    def _write_config(self, port: int, controller_port: int) -> Path:
        props = self.root / "server.properties"
        props.write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.voters=1@127.0.0.1:{controller_port}",
                    *self._listener_config(port, controller_port),
                    "controller.listener.names=CONTROLLER",
                    f"log.dirs={self.data}",
                    "num.partitions=1",
                    "offsets.topic.replication.factor=1",
                    "offsets.topic.num.partitions=10",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "share.coordinator.state.topic.replication.factor=1",
                    "share.coordinator.state.topic.min.isr=1",
                    # A single local node: no reason to wait for more members before rebalancing.
                    "group.initial.rebalance.delay.ms=0",
                    "",
                ]
            )
        )
        (self.root / "log4j2.yaml").write_text(_LOG4J2)
        return props

    def _cluster_id_on_disk(self) -> str | None:
        meta = self.data / "meta.properties"
        if not meta.is_file():
            return None
        match = re.search(r"^cluster\.id=(\S+)", meta.read_text(), re.MULTILINE)
        return match.group(1) if match else None

    def _ensure_formatted(self, java: str, props: Path) -> None:
        expected = (
            self.cluster_id_file.read_text().strip() if self.cluster_id_file.is_file() else None
        )
        on_disk = self._cluster_id_on_disk()
        if on_disk is not None:
            if expected is not None and on_disk != expected:
                raise BrokerError(
                    f"data directory {self.data} belongs to cluster {on_disk}, not {expected}: "
                    "run `switchboard kafka start --reset` to wipe it and start afresh"
                )
            self.cluster_id_file.write_text(on_disk)
            return
        if self.data.exists() and any(self.data.iterdir()):
            raise BrokerError(
                f"data directory {self.data} is not empty but has no meta.properties: "
                "run `switchboard kafka start --reset`"
            )
        cluster_id = expected or new_cluster_id()
        self.data.mkdir(parents=True, exist_ok=True)
        cmd = [
            java,
            "-cp",
            f"{self.jars}/*",
            "kafka.tools.StorageTool",
            "format",
            "-t",
            cluster_id,
            "-c",
            str(props),
            "--ignore-formatted",
            *self._format_args(),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            tail = " | ".join((proc.stdout + proc.stderr).strip().splitlines()[-3:])
            raise BrokerError(f"formatting KRaft storage failed: {tail}")
        self.cluster_id_file.write_text(cluster_id)

    # --- lifecycle -----------------------------------------------------------------------
    def reset(self) -> None:
        """Stop the broker and delete its data (the jar cache is kept)."""
        self.stop()
        shutil.rmtree(self.data, ignore_errors=True)
        self.cluster_id_file.unlink(missing_ok=True)

    def start(self) -> tuple[str, bool, str | None]:
        """Start the broker unless it runs; returns (bootstrap, started_now, note)."""
        current = self.status()
        if current.running and current.bootstrap:
            return current.bootstrap, False, None
        self.root.mkdir(parents=True, exist_ok=True)
        java, _major = find_java()
        self.ensure_jars()
        note = None
        port = self.port
        if not port_is_free(port):
            port = free_port()
            note = f"port {self.port} is taken; using {port}"
        controller_port = free_port()
        while controller_port == port:
            controller_port = free_port()
        props = self._write_config(port, controller_port)
        self._ensure_formatted(java, props)
        cmd = [
            java,
            f"-Xmx{self.heap}",
            f"-Xms{self.heap}",
            *JVM_PERFORMANCE_OPTS,
            # As kafka-server-start.sh's -loggc (KAFKA_GC_LOG_OPTS): every pause with its
            # wall-clock time, beside the broker's log, to set against a latency outlier.
            f"-Xlog:gc*:file={self.gc_log_file}:time,tags:filecount=4,filesize=20M",
            f"-Dlog4j2.configurationFile={self.root / 'log4j2.yaml'}",
            f"-Dswitchboard.state={self.root}",
            "-cp",
            f"{self.jars}/*",
            "kafka.Kafka",
            str(props),
        ]
        with open(self.log_file, "ab") as log:
            proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=self.root,
            )
        self.pid_file.write_text(str(proc.pid))
        bootstrap = f"127.0.0.1:{port}"
        self.bootstrap_file.write_text(bootstrap)
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                self.pid_file.unlink(missing_ok=True)
                raise BrokerError(
                    f"the broker exited with code {proc.returncode}; last log lines: "
                    + self.last_log_lines(5)
                )
            if wait_for_broker(bootstrap, timeout_s=1.0, config=self.probe_config()):
                self._after_start(bootstrap)
                return bootstrap, True, note
        self.stop()
        raise BrokerError(
            f"the broker did not answer within {self.start_timeout_s:.0f}s; last log lines: "
            + self.last_log_lines(5)
        )

    def stop(self, timeout_s: float = 30.0) -> bool:
        """Stop our broker by its pid; returns False when it was not running."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.pid() == pid:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)  # reap it when it is our own child
            time.sleep(0.1)
        if self.pid() == pid:
            os.kill(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)
        return True

    def last_log_lines(self, n: int = 20) -> str:
        try:
            with open(self.log_file, errors="replace") as log:
                return " | ".join(line.rstrip() for line in deque(log, maxlen=n))
        except OSError:
            return "(no log)"
