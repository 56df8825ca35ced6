"""Run ``ember-server``, the OpenAI-compatible HTTP server (docs/server.md), that the wheel
carries in ``ember/bin/``::

    python -m ember.server -m model.gguf --port 8080
    ember-server -m model.gguf --port 8080        # the wheel's console script, the same

Every argument goes to the server unchanged. The program is, in order, the file named by the
``EMBER_SERVER`` environment variable, or ``ember/bin/ember-server`` (``ember-server.exe`` on
Windows) next to this file. It is linked against this package's shared library, which the wheel
puts where the program looks for it (``ember/lib/``, or beside it on Windows); it needs no
ctypes.

On Linux and macOS this process becomes the server (``os.execv``): its signals (SIGINT,
SIGTERM), exit status and output are the server's own. Windows has no exec: the server runs as
a child with the same console, which delivers Ctrl+C to both; this process waits for the
server to stop and exits with its status.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main", "server_path"]

_HERE = Path(__file__).resolve().parent
# exit status when there is no server to run (as a shell's "command not found")
NOT_FOUND = 127


def _server_name() -> str:
    return "ember-server.exe" if sys.platform == "win32" else "ember-server"


def server_path() -> Path:
    """The ember-server program this package runs (FileNotFoundError if there is none)."""
    env = os.environ.get("EMBER_SERVER")
    if env:
        p = Path(env)
        if not p.is_file():
            raise FileNotFoundError(f"EMBER_SERVER={env} does not name a file")
        return p
    p = _HERE / "bin" / _server_name()
    if not p.is_file():
        raise FileNotFoundError(
            f"no {_server_name()} in {p.parent}: this installation of ember has no server "
            "(the release wheels and archives have one); set EMBER_SERVER to its path")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the server with ``argv`` (default: this program's arguments); on POSIX this does
    not return unless the server cannot be started."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        exe = str(server_path())
    except FileNotFoundError as exc:
        print(f"ember-server: error: {exc}", file=sys.stderr)
        return NOT_FOUND
    if sys.platform == "win32":
        child = subprocess.Popen([exe, *args])
        while True:
            try:
                return child.wait()
            except KeyboardInterrupt:
                # the console gave Ctrl+C to the server too: it stops on its own
                continue
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execv(exe, [exe, *args])
    except OSError as exc:
        print(f"ember-server: error: cannot run {exe}: {exc}", file=sys.stderr)
        return NOT_FOUND


if __name__ == "__main__":
    raise SystemExit(main())
