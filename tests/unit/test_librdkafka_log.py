"""librdkafka's own log goes through Python logging (``switchboard.librdkafka``), never raw
to stderr: quiet by default (its warnings hidden), shown with ``-v``.

A fresh interpreter sets logging up as ``switchboard [-v]`` does, then builds a producer from
the kernel's factory with an experimental property (librdkafka warns: CONFWARN) against a
closed port (librdkafka logs an error: FAIL ... Connection refused), and polls until both were
logged. No broker needed.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys

import pytest

CLIENT = """
import logging, sys, time

from confluent_kafka import Producer

from switchboard.cli.main import configure_logging
from switchboard.core.kafka_clients import LIBRDKAFKA_LOGGER, producer_config

configure_logging(int(sys.argv[1]))
seen = set()
logger = logging.getLogger(LIBRDKAFKA_LOGGER)
forward = logger.log


def log(level, msg, *args, **kwargs):  # what confluent-kafka calls, before any level check
    seen.add((msg % args).split()[0])
    forward(level, msg, *args, **kwargs)


logger.log = log
# An experimental property: librdkafka warns (CONFWARN) whenever it is set. (A consumer-only
# one no longer reaches a producer: the factory leaves it out.)
producer = Producer(producer_config({"bootstrap.servers": sys.argv[2], "enable.gapless.guarantee": False}))
producer.produce("t", b"v")
deadline = time.monotonic() + float(sys.argv[3])
while time.monotonic() < deadline and not {"CONFWARN", "FAIL"} <= seen:
    producer.poll(0.1)
print(sorted(seen))
"""

RAW_LINE = re.compile(r"^%\d\|", re.MULTILINE)


def _closed_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


def _run(verbosity: int) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-c", CLIENT, str(verbosity), _closed_port(), "20"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "CONFWARN" in proc.stdout and "FAIL" in proc.stdout, proc.stdout  # both happened
    return proc


def test_by_default_no_raw_line_and_warnings_hidden() -> None:
    proc = _run(0)
    assert not RAW_LINE.search(proc.stderr), proc.stderr
    assert "CONFWARN" not in proc.stderr  # a warning: hidden on a terminal
    assert "Connection refused" in proc.stderr  # an error still says so, as a Python log line


@pytest.mark.parametrize("verbosity", [1, 2])
def test_with_v_the_same_events_are_logged_through_python_logging(verbosity: int) -> None:
    proc = _run(verbosity)
    assert not RAW_LINE.search(proc.stderr), proc.stderr
    assert re.search(r"WARNING switchboard\.librdkafka: CONFWARN \[rdkafka#producer", proc.stderr)
    assert re.search(r"ERROR switchboard\.librdkafka: FAIL .*Connection refused", proc.stderr)


def test_control_without_the_logger_librdkafka_writes_raw_lines() -> None:
    """The test above can fail: a client built without the factory's ``logger`` writes raw."""
    code = CLIENT.replace("producer_config({", "{k: v for k, v in producer_config({").replace(
        '": False}))', '": False}).items() if k != "logger"})'
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, "0", _closed_port(), "2"],  # nothing is seen: wait 2 s
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert RAW_LINE.search(proc.stderr), proc.stderr
