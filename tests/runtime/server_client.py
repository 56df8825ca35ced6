"""A running ember-server for the tests (tests/runtime/test_server.py): start it, find its port in
the listening line, talk raw HTTP to it, read its metrics, stop it.

docs/server.md is the contract: the server prints exactly one line when it listens,

    ember-server: listening on http://127.0.0.1:PORT (N slots, draft: FILE|none, template: NAME)

and every failure before that prints one ``ember-server: error: ...`` line and exits with the
status of its kind.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LISTEN_RE = re.compile(
    r"^ember-server: listening on http://(?P<host>[^\s:]+):(?P<port>\d+) "
    r"\((?P<slots>\d+) slots, draft: (?P<draft>.+), template: (?P<template>[^)\s]+)\)$"
)
ERROR_PREFIX = "ember-server: error:"


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8"))

    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


@dataclass
class Server:
    """One ember-server process; ``start`` waits for its listening line (or its exit)."""

    argv: list[str]
    proc: subprocess.Popen[bytes]
    stderr_lines: list[str] = field(default_factory=list)
    listen: re.Match[str] | None = None
    _event: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _reader: threading.Thread | None = None

    @classmethod
    def start(
        cls,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        preexec_fn: Callable[[], None] | None = None,
        timeout: float = 120,
    ) -> Server:
        proc = subprocess.Popen(
            [str(a) for a in argv],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=dict(env) if env is not None else None,
            preexec_fn=preexec_fn,
        )
        s = cls([str(a) for a in argv], proc)
        s._reader = threading.Thread(target=s._read_stderr, daemon=True)
        s._reader.start()
        t0 = time.monotonic()
        s._event.wait(timeout)
        if s.listen is None:
            # stderr closed: the process is exiting (its status may not be there yet)
            try:
                proc.wait(max(5.0, timeout - (time.monotonic() - t0)))
            except subprocess.TimeoutExpired:
                s.kill()
                raise TimeoutError(f"ember-server neither listened nor exited in {timeout} s:\n"
                                   + s.stderr_text()) from None
        return s

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            with self._lock:
                self.stderr_lines.append(line)
            if self.listen is None:
                m = LISTEN_RE.match(line)
                if m:
                    self.listen = m
                    self._event.set()
        self._event.set()

    # ---------------------------------------------------------------------------------------
    @property
    def listening(self) -> bool:
        return self.listen is not None

    @property
    def port(self) -> int:
        assert self.listen is not None, "the server is not listening:\n" + self.stderr_text()
        return int(self.listen["port"])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stderr_text(self) -> str:
        with self._lock:
            return "\n".join(self.stderr_lines)

    def error_lines(self) -> list[str]:
        with self._lock:
            return [ln for ln in self.stderr_lines if ln.startswith(ERROR_PREFIX)]

    def wait_exit(self, timeout: float = 60) -> int:
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        if self._reader is not None:
            self._reader.join(10)
        return rc

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        """Send ``sig`` and wait for the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.wait_exit(timeout)

    def kill(self) -> None:
        """The fixture finalizer's stop: SIGKILL (the graceful stop on SIGTERM/SIGINT, which
        takes a second or two, is a test of its own)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
        if self._reader is not None:
            self._reader.join(5)

    # ---------------------------------------------------------------------------------------
    def request(
        self,
        method: str,
        path: str,
        body: bytes | str | dict[str, Any] | list[Any] | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float = 120,
    ) -> Response:
        return http_request(self.port, method, path, body, headers=headers, timeout=timeout)

    def post(self, path: str, body: Any, **kw: Any) -> Response:
        return self.request("POST", path, body, **kw)

    def get(self, path: str, **kw: Any) -> Response:
        return self.request("GET", path, **kw)

    def metrics(self) -> dict[str, float]:
        r = self.get("/metrics", timeout=30)
        assert r.status == 200, (r.status, r.text())
        return parse_metrics(r.text())

    def stream(
        self, path: str, body: dict[str, Any], *, headers: Mapping[str, str] | None = None,
        timeout: float = 120,
    ) -> Iterator[str]:
        """The ``data:`` payloads of a server-sent-event response, in order (``[DONE]`` too)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request("POST", path, body=json.dumps(body).encode(),
                         headers={"Content-Type": "application/json", **(headers or {})})
            resp = conn.getresponse()
            if resp.status != 200:
                raise AssertionError(f"{path}: {resp.status} {resp.read()[:2000]!r}")
            ctype = resp.getheader("Content-Type") or ""
            assert ctype.startswith("text/event-stream"), f"{path}: Content-Type {ctype!r}"
            yield from sse_payloads(resp)
        finally:
            conn.close()


def http_request(
    port: int,
    method: str,
    path: str,
    body: bytes | str | dict[str, Any] | list[Any] | None = None,
    *,
    headers: Mapping[str, str] | None = None,
    timeout: float = 120,
) -> Response:
    """One request on a fresh connection; a dict or list body is sent as JSON."""
    if isinstance(body, dict | list):
        data: bytes | None = json.dumps(body).encode()
    elif isinstance(body, str):
        data = body.encode()
    else:
        data = body
    hdrs = dict(headers or {})
    if data is not None:
        hdrs.setdefault("Content-Type", "application/json")
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        # the server may answer (413) before it has read all of a large body
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()


def sse_payloads(resp: http.client.HTTPResponse) -> Iterator[str]:
    """``data:`` payloads of an event stream; each must be valid UTF-8 on its own."""
    while True:
        raw = resp.readline()
        if not raw:
            return
        line = raw.decode("utf-8").rstrip("\r\n")  # strict: a piece never splits a character
        if line.startswith("data:"):
            payload = line[5:].lstrip(" ")
            yield payload
            if payload == "[DONE]":
                return


_METRIC_RE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?)\s+(?P<value>\S+)")


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text format: ``name`` or ``name{labels}`` -> value (labels as written)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        m = _METRIC_RE.match(line)
        assert m, f"not a Prometheus sample line: {line!r}"
        name = re.sub(r"\s+", "", m["name"])
        out[name] = float(m["value"])
    return out


def wait_until(pred: Callable[[], bool], timeout: float, step: float = 0.05) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(step)
    return pred()


def proc_status_kib(pid: int, key: str) -> int:
    """A ``/proc/PID/status`` value in KiB (VmPeak, VmSize, ...)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)
