"""A static HTTP server on 127.0.0.1 that serves mirror directories and misbehaves on request.

Faults are set per URL path (relative to the served root): an HTTP status, an endless body of
zeros without ``Content-Length`` (ended by a FIN after ``ENDLESS_CAP`` bytes, so that a client
that never stops cannot fill the disk of the machine running the tests), a body cut in half
and ended with a FIN while announcing the full length, a body shorter than the file with a
matching length, or a body longer than the file. Range requests are honoured as a mirror's
web server would, so resuming installers behave as they do against a real one.
"""

from __future__ import annotations

import http.server
import re
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

ENDLESS_CAP = 64 << 20


@dataclass(frozen=True)
class Fault:
    """What the server does instead of serving a file. ``kind``: ``status`` (answer with
    ``status``), ``endless``, ``truncate-fin``, ``short`` or ``longer`` (``extra`` bytes)."""

    kind: str
    status: int = 0
    extra: int = 0


class HostileServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    root: Path
    faults: dict[str, Fault]
    log: list[tuple[str, str | None]]

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: HostileServer
    # HTTP/1.0: every response ends the connection, so a body without Content-Length is
    # delimited by the close, as an endless stream from a hostile mirror is.
    protocol_version = "HTTP/1.0"

    def log_message(self, format: str, *args: object) -> None:  # quiet
        return

    def _write(self, data: bytes) -> bool:
        try:
            self.wfile.write(data)
            return True
        except (BrokenPipeError, ConnectionResetError):
            return False

    def do_GET(self) -> None:
        srv = self.server
        rel = urllib.parse.unquote(urllib.parse.urlparse(self.path).path).lstrip("/")
        srv.log.append((rel, self.headers.get("Range")))
        fault = srv.faults.get(rel)
        if fault is not None and fault.kind == "status":
            body = f"hostile mirror: HTTP {fault.status}\n".encode()
            self.send_response(fault.status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self._write(body)
            return
        if fault is not None and fault.kind == "endless":
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()
            zeros, sent = bytes(1 << 16), 0
            while sent < ENDLESS_CAP and self._write(zeros):
                sent += len(zeros)
            self.close_connection = True
            return
        root = srv.root.resolve()
        path = (root / rel).resolve()
        if not path.is_file() or root not in path.parents:
            self.send_error(404)
            return
        data = path.read_bytes()
        if fault is not None and fault.kind == "short":
            data = data[: len(data) // 2]
        elif fault is not None and fault.kind == "longer":
            data = data + bytes(fault.extra)
        start = 0
        m = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if m:
            start = int(m.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        if fault is not None and fault.kind == "truncate-fin":
            self._write(body[: max(1, len(body) // 2)])
            self.wfile.flush()
            # Let the client take the partial body, then a FIN (not a reset, which can drop
            # bytes already sent): the short read a dying server gives.
            time.sleep(0.2)
            with suppress(OSError):
                self.connection.shutdown(socket.SHUT_WR)
            self.close_connection = True
            return
        self._write(body)


@contextmanager
def serve(root: Path) -> Iterator[HostileServer]:
    server = HostileServer(("127.0.0.1", 0), _Handler)
    server.root, server.faults, server.log = root, {}, []
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
