"""The server check of the run-based verifiers (kiln/verify/server.py) against fake servers:
each fake writes its output lines into a pipe and answers HTTP from a thread of this process on
127.0.0.1 (unit tests start no programs), so what is tested is the check's logic: waiting for
the listening line, /health, comparing the tokens with ember-cli's, stopping, and the
failures (an exit before listening, no line before the timeout, other tokens, /health 503).
Also: the verifiers hand the check the right executable, prefix and ids, and inspection
requires bin/ember-server through kiln.package.archive.required_files."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import threading
from collections.abc import Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any

import pytest
from ember_project import EMBER, EMBER_LAYOUT, NAMES

import kiln.verify.inspect
import kiln.verify.native
import kiln.verify.qemu
import kiln.verify.wine
from kiln.build.toolchains.recipe import load_verify_spec
from kiln.matrix import load_matrix
from kiln.package.archive import required_files
from kiln.plan import make_job
from kiln.project import ServerSmoke
from kiln.verify import Check, VerifyContext
from kiln.verify.inspect import check_required
from kiln.verify.server import LISTENING_RE, server_check

IDS = (213, 120, 294, 305, 23, 213, 408, 321, 407, 460, 419, 352, 528, 272, 367, 607)
EMBER_LISTENING = "ember-server: listening on {url} (1 slots, draft: none, template: chatml)"
LLAMA_LISTENING = "main: server is listening on {url} - starting the main loop"


class FakeServer:
    """A ``ServerProcess`` that is a thread: ``listen`` False never prints the line,
    ``exit_before`` exits with that status before listening; ``health`` and ``tokens`` are what
    it answers; ``term_status`` is its exit status on SIGTERM (None: it ignores SIGTERM)."""

    def __init__(self, *, listen: bool = True, exit_before: int | None = None,
                 health: tuple[int, dict[str, Any]] = (200, {"status": "ok"}),
                 tokens: Sequence[int] = IDS, finish_reason: str = "length",
                 term_status: int | None = 0, completion_status: int = 200,
                 listening: str = EMBER_LISTENING) -> None:
        r, w = os.pipe()
        self._out = os.fdopen(r, "rb")
        self._w: IO[bytes] | None = os.fdopen(w, "wb", buffering=0)
        self.returncode: int | None = None
        self._done = threading.Event()
        self.requests: list[tuple[str, str, Any]] = []
        self.signals: list[str] = []
        self.term_status = term_status
        self._http: ThreadingHTTPServer | None = None
        self._print("ember-server: loading model")
        if exit_before is not None:
            self._print("ember-server: error: cannot load the model: truncated file")
            self._exit(exit_before)
            return
        if not listen:
            return
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _reply(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                fake.requests.append(("GET", self.path, None))
                if self.path == "/health":
                    self._reply(*health)
                else:
                    self._reply(404, {"error": {"message": "no such route"}})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.requests.append(("POST", self.path, body))
                if completion_status != 200:
                    self._reply(completion_status, {"error": {"message": "queue is full",
                                                              "type": "server_error"}})
                    return
                self._reply(200, {"object": "text_completion", "choices": [
                    {"index": 0, "text": "...", "finish_reason": finish_reason,
                     "tokens": list(tokens)}]})

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._http.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()
        port = self._http.server_address[1]
        self._print(listening.format(url=f"http://127.0.0.1:{port}"))

    def _print(self, line: str) -> None:
        assert self._w is not None
        self._w.write(line.encode() + b"\n")

    def _exit(self, status: int) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
        if self._w is not None:
            self._w.close()
            self._w = None
        self.returncode = status
        self._done.set()

    @property
    def output(self) -> IO[bytes]:
        return self._out

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float) -> int:
        if not self._done.wait(timeout):
            raise subprocess.TimeoutExpired("ember-server", timeout)
        assert self.returncode is not None
        return self.returncode

    def terminate(self) -> None:
        self.signals.append("TERM")
        if self.term_status is not None and self.returncode is None:
            self._print("ember-server: stopping")
            self._exit(self.term_status)

    def kill(self) -> None:
        self.signals.append("KILL")
        if self.returncode is None:
            self._exit(-9)

    def alive_in_group(self) -> bool:
        return self.returncode is None


class Spawner:
    """A ``Spawn`` that hands out one fake server and keeps the command line."""

    def __init__(self, **kw: Any) -> None:
        self.kw = kw
        self.server: FakeServer | None = None
        self.argv: list[str] = []

    def __call__(self, argv: Sequence[str], env: Mapping[str, str],
                 cwd: Path | None) -> FakeServer:
        self.argv = list(argv)
        self.server = FakeServer(**self.kw)
        return self.server


@pytest.fixture
def ctx(repo_root: Path, tmp_path: Path) -> VerifyContext:
    spec = load_verify_spec(repo_root / "recipes")
    job = make_job(load_matrix(repo_root / "matrix").get("ubuntu-x64"), 1, NAMES)
    return VerifyContext(job=job, stage=tmp_path / "stage", spec=spec, env={},
                         layout=EMBER_LAYOUT, smoke=EMBER.smoke,
                         log_file=tmp_path / "verify.log", model=tmp_path / "m.gguf",
                         reference_ids=None)


@pytest.fixture
def exe(tmp_path: Path) -> Path:
    path = tmp_path / "stage" / "bin" / "ember-server"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\x7fELF fake")
    return path


def check(ctx: VerifyContext, exe: Path, spawner: Spawner, **kw: Any) -> Check:
    args: dict[str, Any] = {"how": "ran natively", "prefix": (), "exe": exe,
                            "model_arg": "/models/m.gguf", "env": {}, "cli_ids": IDS,
                            "spawn": spawner, "start_timeout": 5.0, "request_timeout": 5.0,
                            "stop_grace": 2.0}
    args.update(kw)
    return server_check(ctx, **args)


def test_a_server_that_gives_ember_cli_tokens_passes(ctx: VerifyContext, exe: Path) -> None:
    spawner = Spawner()
    got = check(ctx, exe, spawner, prefix=["qemu-s390x", "-L", "/usr/s390x-linux-gnu"])
    assert got.ok, got.detail
    assert got.name == "ember-server ran natively"
    assert "listening on 127.0.0.1, /health ok" in got.detail
    # no port, no time: the record of a rebuild is the same bytes
    assert not re.search(r"127\.0\.0\.1:\d|after \d", got.detail), got.detail
    assert f"{len(IDS)} greedy tokens identical to ember-cli's" in got.detail
    assert "stopped by SIGTERM (exit 0)" in got.detail
    r = ctx.spec.run
    # behind the same emulator prefix, the contract's options, ember-cli's threads
    assert spawner.argv == ["qemu-s390x", "-L", "/usr/s390x-linux-gnu", str(exe), "-m",
                            "/models/m.gguf", "--host", "127.0.0.1", "--port", "0", "-c", "512",
                            "-t", str(r.threads)]
    server = spawner.server
    assert server is not None and server.signals == ["TERM"]
    methods = [(m, p) for m, p, _ in server.requests]
    assert methods == [("GET", "/health"), ("POST", "/v1/completions")]
    body = server.requests[1][2]
    assert body["prompt"] == r.prompt and body["max_tokens"] == r.n_predict
    assert body["temperature"] == 0 and body["return_tokens"] is True
    log = ctx.log_file.read_text()
    assert "+ qemu-s390x -L /usr/s390x-linux-gnu" in log and "ember-server: listening" in log


def test_an_exit_before_listening_fails_with_its_output(ctx: VerifyContext, exe: Path) -> None:
    spawner = Spawner(exit_before=2)
    got = check(ctx, exe, spawner)
    assert not got.ok
    assert "exited with status 2 before listening" in got.detail
    assert "cannot load the model: truncated file" in got.detail


def test_no_listening_line_times_out_and_the_server_is_stopped(ctx: VerifyContext,
                                                                exe: Path) -> None:
    spawner = Spawner(listen=False)
    got = check(ctx, exe, spawner, start_timeout=0.5)
    assert not got.ok
    assert "printed no 'ember-server: listening on' line within 0.5s" in got.detail
    assert "ember-server: loading model" in got.detail
    assert spawner.server is not None and spawner.server.signals[0] == "TERM"
    assert spawner.server.returncode is not None


def test_other_tokens_fail_with_the_first_difference(ctx: VerifyContext, exe: Path) -> None:
    wrong = (*IDS[:5], 999, *IDS[6:])
    got = check(ctx, exe, Spawner(tokens=wrong))
    assert not got.ok
    assert "tokens differ from ember-cli's at step 5" in got.detail
    assert "999" in got.detail and "(listening on 127.0.0.1" in got.detail


def test_a_server_that_stops_early_says_so(ctx: VerifyContext, exe: Path) -> None:
    got = check(ctx, exe, Spawner(tokens=IDS[:7], finish_reason="stop"))
    assert not got.ok
    assert "generated 7 tokens (finish_reason 'stop')" in got.detail
    assert f"stopped before {IDS[7]}" in got.detail


def test_health_503_fails(ctx: VerifyContext, exe: Path) -> None:
    spawner = Spawner(health=(503, {"status": "error", "error": "a forward pass failed"}))
    got = check(ctx, exe, spawner)
    assert not got.ok
    assert "GET /health answered 503" in got.detail
    assert "a forward pass failed" in got.detail
    assert spawner.server is not None
    assert [p for _, p, _ in spawner.server.requests] == ["/health"]  # no completion asked


def test_an_error_reply_to_the_completion_fails(ctx: VerifyContext, exe: Path) -> None:
    got = check(ctx, exe, Spawner(completion_status=503))
    assert not got.ok and "POST /v1/completions answered 503: queue is full" in got.detail


def test_sigterm_must_stop_it_with_status_0(ctx: VerifyContext, exe: Path) -> None:
    got = check(ctx, exe, Spawner(term_status=3))
    assert not got.ok and "stopped by SIGTERM (exit 3)" in got.detail
    ignored = Spawner(term_status=None)
    got = check(ctx, exe, ignored, stop_grace=0.3)
    assert not got.ok and "killed (still running 0.3s after SIGTERM)" in got.detail
    assert ignored.server is not None and ignored.server.signals == ["TERM", "KILL"]
    # under wine the exit status is only recorded
    assert check(ctx, exe, Spawner(term_status=3), exit_zero=False).ok


def test_without_ember_cli_ids_the_host_builds_are_used(ctx: VerifyContext, exe: Path) -> None:
    with_ref = VerifyContext(**{**ctx.__dict__, "reference_ids": IDS})
    got = check(with_ref, exe, Spawner(), cli_ids=None)
    assert got.ok and "identical to the host build's (ember-cli failed here)" in got.detail
    got = check(ctx, exe, Spawner(), cli_ids=None)
    assert not got.ok and "nothing to compare them with" in got.detail


def test_a_missing_server_binary_fails_without_starting(ctx: VerifyContext,
                                                        tmp_path: Path) -> None:
    spawner = Spawner()
    got = check(ctx, tmp_path / "nope" / "ember-server", spawner)
    assert not got.ok and "ember-server is missing from bin/" in got.detail
    assert spawner.server is None


def test_the_listening_line_and_the_arguments(ctx: VerifyContext) -> None:
    m = LISTENING_RE.search("ember-server: listening on http://127.0.0.1:40123 (4 slots, "
                            "draft: none, template: chatml)\r")
    assert m is not None and m.group(1) == "http://127.0.0.1:40123" and m.group(2) == "40123"
    assert LISTENING_RE.search("ember-server: error: cannot listen on 127.0.0.1:8080") is None
    # llama.cpp's llama-server
    m = LISTENING_RE.search("main: server is listening on http://127.0.0.1:8080 - starting the "
                            "main loop")
    assert m is not None and m.group(1) == "http://127.0.0.1:8080" and m.group(2) == "8080"
    assert ctx.smoke.server is not None
    assert ctx.smoke.server.argv(model="Z:\\m.gguf", threads=2) == [
        "-m", "Z:\\m.gguf", "--host", "127.0.0.1", "--port", "0", "-c", "512", "-t", "2"]


def _other_project(ctx: VerifyContext) -> VerifyContext:
    """ctx with another project's smoke program and server (other names, other flags)."""
    server = ServerSmoke(program="demo-server",
                         args=("--model", "{model}", "--port", "0", "--threads", "{threads}"))
    smoke = dataclasses.replace(ctx.smoke, program="demo-cli", server=server)
    return VerifyContext(**{**ctx.__dict__, "smoke": smoke})


def test_another_projects_server_is_run_as_its_kiln_toml_says(ctx: VerifyContext,
                                                              tmp_path: Path) -> None:
    other = _other_project(ctx)
    exe = tmp_path / "stage" / "bin" / "demo-server"
    exe.parent.mkdir(parents=True)
    exe.write_bytes(b"\x7fELF fake")
    spawner = Spawner(listening=LLAMA_LISTENING)
    got = check(other, exe, spawner)
    assert got.ok, got.detail
    assert got.name == "demo-server ran natively"
    assert spawner.argv == [str(exe), "--model", "/models/m.gguf", "--port", "0", "--threads",
                            str(ctx.spec.run.threads)]
    assert f"{len(IDS)} greedy tokens identical to demo-cli's" in got.detail
    assert "ember" not in got.detail
    assert "demo-server: stopped by SIGTERM (exit 0)" in other.log_file.read_text()
    got = check(other, exe, Spawner(listening=LLAMA_LISTENING, tokens=IDS[:3]))
    assert not got.ok and "demo-cli's 16" in got.detail
    with_ref = VerifyContext(**{**other.__dict__, "reference_ids": IDS})
    got = check(with_ref, exe, Spawner(listening=LLAMA_LISTENING), cli_ids=None)
    assert got.ok and "identical to the host build's (demo-cli failed here)" in got.detail
    got = check(other, exe, Spawner(listen=False), start_timeout=0.3)
    assert not got.ok and "printed no 'demo-server: listening on' line" in got.detail


def test_a_project_without_a_server_fails_the_check(ctx: VerifyContext, exe: Path) -> None:
    smoke = dataclasses.replace(ctx.smoke, server=None)
    spawner = Spawner()
    got = check(VerifyContext(**{**ctx.__dict__, "smoke": smoke}), exe, spawner)
    assert not got.ok and "kiln.toml has no [smoke.server]" in got.detail
    assert spawner.server is None


def test_the_verifiers_run_the_server_kiln_toml_names(ctx: VerifyContext,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}
    _stub_runs(monkeypatch, kiln.verify.native, seen)
    report = kiln.verify.native.NativeVerifier().verify(_other_project(ctx))
    assert report.ok and seen["exe"] == ctx.stage / "bin" / "demo-server"
    # no [smoke.server]: no server check
    seen.clear()
    smoke = dataclasses.replace(ctx.smoke, server=None)
    report = kiln.verify.native.NativeVerifier().verify(
        VerifyContext(**{**ctx.__dict__, "smoke": smoke}))
    assert report.ok and seen == {}


# --------------------------------------------------------------------------------------------
# The verifiers call it


def _stub_runs(monkeypatch: pytest.MonkeyPatch, module: Any, seen: dict[str, Any]) -> None:
    ok = Check(name="x", ok=True, detail="ok")
    monkeypatch.setattr(module, "inspect_first", lambda ctx: [])
    monkeypatch.setattr(module, "run_and_compare", lambda ctx, **kw: (ok, IDS))
    monkeypatch.setattr(module, "unicode_check", lambda ctx, **kw: ok)

    def fake_server_check(ctx: VerifyContext, **kw: Any) -> Check:
        seen.update(kw)
        return Check(name="ember-server", ok=True, detail="fake")

    monkeypatch.setattr(module, "server_check", fake_server_check)


def test_native_verification_runs_the_server_check(ctx: VerifyContext,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}
    _stub_runs(monkeypatch, kiln.verify.native, seen)
    report = kiln.verify.native.NativeVerifier().verify(ctx)
    assert report.ok and [c.name for c in report.checks][-1] == "ember-server"
    assert seen["exe"] == ctx.stage / "bin" / "ember-server"
    assert seen["cli_ids"] == IDS and tuple(seen["prefix"]) == ()


def test_qemu_verification_runs_it_under_the_same_qemu(repo_root: Path, ctx: VerifyContext,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}
    _stub_runs(monkeypatch, kiln.verify.qemu, seen)
    monkeypatch.setattr(kiln.verify.qemu, "require_tool", lambda name, path=None: f"/q/{name}")
    # android-arm64 is a static build: no -L
    job = make_job(load_matrix(repo_root / "matrix").get("android-arm64"), 1, NAMES)
    report = kiln.verify.qemu.QemuVerifier().verify(VerifyContext(**{**ctx.__dict__,
                                                                     "job": job}))
    assert report.ok
    assert seen["prefix"] == ["/q/qemu-aarch64"] and seen["cli_ids"] == IDS
    assert seen["exe"] == ctx.stage / "bin" / "ember-server"
    assert seen.get("cleanup") is None and seen.get("exit_zero", True) is True


def test_wine_verification_stops_the_prefix(repo_root: Path, ctx: VerifyContext,
                                            tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}
    _stub_runs(monkeypatch, kiln.verify.wine, seen)
    monkeypatch.setattr(kiln.verify.wine, "require_tool", lambda name, path=None: f"/w/{name}")
    job = make_job(load_matrix(repo_root / "matrix").get("win-cpu-x64"), 1, NAMES)
    wctx = VerifyContext(**{**ctx.__dict__, "job": job, "wine_root": tmp_path / "wine"})
    report = kiln.verify.wine.WineVerifier().verify(wctx)
    assert report.ok
    assert seen["exe"] == wctx.stage / "bin" / "ember-server.exe"
    assert seen["prefix"] == ["/w/wine"] and seen["cleanup"] == ["/w/wineserver", "-k"]
    assert seen["exit_zero"] is False and seen["model_arg"].startswith("Z:\\")
    assert seen["env"]["WINEPREFIX"] == str(tmp_path / "wine" / "x86_64")


# --------------------------------------------------------------------------------------------
# Inspection requires it


def test_inspection_requires_ember_server(repo_root: Path, tmp_path: Path) -> None:
    matrix = load_matrix(repo_root / "matrix")
    for entry_id, exe_suffix in (("ubuntu-x64", ""), ("win-cpu-arm64", ".exe"),
                                 ("macos-arm64", "")):
        groups = required_files(make_job(matrix.get(entry_id), 1, NAMES), EMBER_LAYOUT)
        assert (f"bin/ember-server{exe_suffix}",) in groups, entry_id
    groups = required_files(make_job(matrix.get("ubuntu-x64"), 1, NAMES), EMBER_LAYOUT)
    stage = tmp_path / "stage"
    for g in groups:
        (stage / g[0]).parent.mkdir(parents=True, exist_ok=True)
        (stage / g[0]).write_bytes(b"x")
    assert check_required(stage, groups).ok
    (stage / "bin" / "ember-server").unlink()
    got = check_required(stage, groups)
    assert not got.ok and "lacks bin/ember-server" in got.detail


def test_inspect_stage_checks_the_required_files(ctx: VerifyContext) -> None:
    (ctx.stage / "bin").mkdir(parents=True)
    (ctx.stage / "bin" / "ember-cli").write_bytes(b"#!/bin/sh\n")
    checks = kiln.verify.inspect.inspect_stage(ctx)
    required = next(c for c in checks if c.name == "required files")
    assert not required.ok and "bin/ember-bench" in required.detail
    assert "include/ember.h" in required.detail and "bin/ember-cli" not in required.detail


def test_the_inspect_summary_names_the_tools(repo_root: Path, tmp_path: Path) -> None:
    job = make_job(load_matrix(repo_root / "matrix").get("ubuntu-x64"), 1, NAMES)
    groups = required_files(job, EMBER_LAYOUT)
    stage = tmp_path / "stage"
    for g in groups:
        (stage / g[0]).parent.mkdir(parents=True, exist_ok=True)
        (stage / g[0]).write_bytes(b"x")
    text = kiln.verify.inspect.summarize([check_required(stage, groups)], job.entry).detail
    assert f"has bin/ember-cli, bin/ember-bench, bin/ember-server and the {len(groups) - 3} " \
           "other required files" in text
