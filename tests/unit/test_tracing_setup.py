"""Tracing set-up, each in a fresh interpreter (it sets the process's global tracer provider):
nothing is exported nor even imported without ``OTEL_EXPORTER_OTLP_ENDPOINT``; with it, spans
reach an OTLP/HTTP endpoint (a loopback server here) under the role's service name."""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

PROBE = """
import sys
from switchboard.cli.main import main
from switchboard.core import tracing
code = main(["settings"])
tracer = tracing.tracer()
print("EXPORTER_LOADED" if "opentelemetry.exporter.otlp.proto.http" in sys.modules else "NO_EXPORTER")
if tracer is not None:
    with tracer.start_as_current_span("probe-span"):
        pass
    from opentelemetry import trace
    trace.get_tracer_provider().shutdown()  # flushes the batch
sys.exit(code)
"""


class _Collector(http.server.BaseHTTPRequestHandler):
    bodies: list[tuple[str, bytes]] = []

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        _Collector.bodies.append((self.path, self.rfile.read(length)))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[str]:
    _Collector.bodies = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def _probe(**env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    return subprocess.run(
        [sys.executable, "-c", PROBE],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_without_an_endpoint_no_exporter_is_loaded_and_tracing_is_off() -> None:
    done = _probe()
    assert done.returncode == 0, done.stderr
    assert "NO_EXPORTER" in done.stdout


def test_with_an_endpoint_spans_reach_it_over_otlp_http(collector: str) -> None:
    done = _probe(OTEL_EXPORTER_OTLP_ENDPOINT=collector)
    assert done.returncode == 0, done.stderr
    assert "EXPORTER_LOADED" in done.stdout
    paths = [path for path, _body in _Collector.bodies]
    assert paths == ["/v1/traces"]
    body = _Collector.bodies[0][1]
    assert b"probe-span" in body and b"switchboard-settings" in body  # span and service name
