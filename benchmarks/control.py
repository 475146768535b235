"""The stage side of the control protocol, on the standard library alone.

A stage process talks to the harness over one ``multiprocessing`` connection: it says
``("ready", info)``, waits for ``go``, runs until ``stop``, then answers ``("result", dict)``
(or ``("error", traceback)``). The G10 peers import this module inside their own virtual
environments, which have their framework's own Kafka client and not the project's, so nothing
here may import confluent-kafka or the rest of Switchboard.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import threading
import traceback
from collections.abc import Callable, Mapping
from multiprocessing.connection import Connection
from typing import Any

#: A stage: build clients, ``ctl.ready()``, ``ctl.wait_go()``, run, ``ctl.finish(result)``.
StageFn = Callable[[dict[str, Any], "Control"], None]


class Control:
    """The child's end of the control pipe."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._stop = threading.Event()

    def ready(self, info: Mapping[str, Any] | None = None) -> None:
        self.conn.send(("ready", dict(info or {})))

    def wait_go(self) -> None:
        message = self.conn.recv()
        if message == "stop":
            self.finish({"stopped_before_go": True})

    def stopping(self) -> bool:
        if not self._stop.is_set() and self.conn.poll():
            self.conn.recv()
            self._stop.set()
        return self._stop.is_set()

    def watch(self, on_stop: Callable[[], None]) -> None:
        """Call ``on_stop`` (from a thread) when the parent says stop."""

        def wait() -> None:
            with contextlib.suppress(EOFError):
                self.conn.recv()
            self._stop.set()
            on_stop()

        threading.Thread(target=wait, name="bench-ctl", daemon=True).start()

    def finish(self, result: Mapping[str, Any]) -> None:
        self.conn.send(("result", dict(result)))
        self.conn.close()
        os._exit(0)


def run_stage(
    kind: str,
    spec: dict[str, Any],
    conn: Connection,
    local: Mapping[str, StageFn] | None = None,
) -> None:
    """Run the stage ``kind`` (a name in ``local`` or ``module:function``); any exception,
    an import error included, goes to the parent as ``("error", traceback)``."""
    try:
        if ":" in kind:
            module, name = kind.split(":")
            fn = getattr(importlib.import_module(module), name)
        else:
            fn = (local or {})[kind]
        fn(spec, Control(conn))
    except BaseException:
        conn.send(("error", traceback.format_exc()))
        conn.close()
        os._exit(1)
