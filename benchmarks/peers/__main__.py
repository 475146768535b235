"""``python -m benchmarks.peers MODULE:FUNCTION FD``: one peer stage, in the peer's own venv.

The harness (``procs.start(..., python=...)``) runs this with the python of the peer's virtual
environment (``benchmarks.venvs``) and hands it one end of a socket pair as file descriptor
``FD``; the stage's spec is the first message on it, then the usual control protocol follows.
Only the standard library, ``benchmarks.control`` and the peer's own module are imported.
"""

from __future__ import annotations

import sys
from multiprocessing.connection import Connection

from benchmarks.control import run_stage


def main(argv: list[str]) -> None:
    kind, fd = argv[0], int(argv[1])
    conn = Connection(fd)
    spec = conn.recv()
    run_stage(kind, spec, conn)


if __name__ == "__main__":
    main(sys.argv[1:])
