"""One HTTP server per process: ``/metrics``, ``/healthz`` and ``/readyz`` on the metrics port.

prometheus_client's own ``start_http_server`` serves only the metrics (it cannot add routes),
so this is the standard library's ``http.server`` in a daemon thread plus
``prometheus_client.generate_latest``. The checks are callables passed in by the process that
owns them (``consumers.app.Pipeline``): each returns ``(ok, details)`` and must be cheap and
thread-safe, since it runs on the server's thread, not the event loop (a stuck loop must not
stall the probe that reports it).
"""

from __future__ import annotations

import errno
import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from prometheus_client.registry import CollectorRegistry

from switchboard.core.errors import ConfigError

log = logging.getLogger(__name__)

#: A check: ``(ok, details)``; details become the JSON body.
Check = Callable[[], tuple[bool, dict[str, Any]]]

DEFAULT_ADDR: Final = "127.0.0.1"
#: How often the serving thread checks for ``stop`` (it bounds how long a stop takes).
STOP_POLL_S: Final = 0.05


def _always_ok() -> tuple[bool, dict[str, Any]]:
    return True, {}


class OpsServer:
    """Serves ``/metrics``, ``/healthz`` (``health``) and ``/readyz`` (``ready``)."""

    def __init__(
        self,
        port: int,
        addr: str = DEFAULT_ADDR,
        *,
        health: Check = _always_ok,
        ready: Check = _always_ok,
        registry: CollectorRegistry = REGISTRY,
    ) -> None:
        self.health = health
        self.ready = ready
        self._registry = registry
        handler = _handler_for(self)
        try:
            self._server = ThreadingHTTPServer((addr, port), handler)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(
                    f"metrics port {addr}:{port} is in use; set SWITCHBOARD_METRICS_PORT to a "
                    "free port"
                ) from None
            raise ConfigError(
                f"cannot serve metrics on {addr}:{port} ({exc.strerror}); check "
                "SWITCHBOARD_METRICS_ADDR and SWITCHBOARD_METRICS_PORT"
            ) from None
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = str(self._server.server_address[0])
        return f"http://{host}:{self.port}"

    def start(self) -> OpsServer:
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": STOP_POLL_S},
            name="ops-http",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def metrics(self) -> bytes:
        return generate_latest(self._registry)


def _handler_for(server: OpsServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, server.metrics(), CONTENT_TYPE_LATEST)
            elif path in ("/healthz", "/readyz"):
                check = server.health if path == "/healthz" else server.ready
                try:
                    ok, details = check()
                except Exception as exc:  # a broken check is a failing check, never a 500 loop
                    log.exception("%s check failed", path)
                    ok, details = False, {"error": f"{type(exc).__name__}: {exc}"}
                body = json.dumps({"ok": ok, **details}, sort_keys=True, default=str)
                self._send(200 if ok else 503, body.encode(), "application/json")
            else:
                self._send(404, b"not found: try /metrics, /healthz or /readyz\n", "text/plain")

        def _send(self, code: int, body: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return  # a probe every few seconds would drown the process's own log

    return Handler
