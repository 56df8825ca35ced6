"""The server check of the run-based verifiers (native, qemu, wine): the build's server
(kiln.toml's ``[smoke.server]``), behind the same emulator as the smoke program's run, must
start, answer ``GET /health`` and give, for the same prompt and token count, the same greedy
tokens as the smoke program.

What one check does (``server_check``):

1. start the server with ``[smoke.server]``'s ``args`` (``{model}``, ``{threads}`` filled in;
   the args ask for port 0: the server picks a free port, so parallel verifications never
   collide) in a session of its own, with stdout and stderr in one pipe;
2. wait for a line that holds ``listening on http://HOST:PORT`` (docs/server.md; llama.cpp's
   llama-server prints "main: server is listening on http://127.0.0.1:8080 - starting the
   main loop"), at most ``start_timeout`` seconds (the run spec's ``timeout_s``: qemu and wine
   load a model slowly); a server that exits first, or never prints the line, fails the check
   with its last output lines;
3. ``GET /health`` must answer 200 ``{"status":"ok"}``;
4. one ``POST /v1/completions`` of the smoke run's prompt with ``max_tokens`` = its token
   count, ``temperature`` 0 and ``return_tokens``: ``choices[0].tokens`` must equal the smoke
   program's ``generated_ids`` (the HTTP client is ``kiln.verify.server_api``);
5. stop it: SIGTERM to its process group, then SIGKILL after ``STOP_GRACE_S``; natively and
   under qemu-user the contract is exit status 0 on SIGTERM, and anything else fails the check.
   Under wine SIGTERM ends the Unix processes without the program seeing a console event, so the
   exit status is only recorded; the ``cleanup`` command (``wineserver -k`` on the verifier's
   own prefix, which it holds the lock of) then ends whatever the prefix still runs, and the
   process group must be empty.

The server runs alongside kiln, which ``kiln.run.run`` (programs run to completion) does not
cover, so this module starts it itself with ``subprocess.Popen`` behind the small ``Spawn``
signature; it logs ``+ <command>`` and the server's output to the entry's log as ``run`` does,
and unit tests hand in a fake server instead of a process.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Protocol

from kiln.errors import KilnError, ToolMissing
from kiln.project import FILE
from kiln.run import install_hint, run
from kiln.verify import server_api
from kiln.verify.base import Check, VerifyContext, log_line

__all__ = [
    "LISTENING_RE",
    "STOP_GRACE_S",
    "ServerProcess",
    "Spawn",
    "popen_spawn",
    "server_check",
]

STOP_GRACE_S = 15.0
# the line a server prints once it accepts connections: group 1 its base URL, group 2 the port
LISTENING_RE = re.compile(r"listening on (http://[^\s/]+:(\d+))")
TAIL_LINES = 12


class ServerProcess(Protocol):
    """A started server: its combined output as a byte stream, and its lifecycle."""

    @property
    def output(self) -> IO[bytes]: ...

    def poll(self) -> int | None: ...

    def wait(self, timeout: float) -> int:
        """The exit status; raises ``subprocess.TimeoutExpired`` after ``timeout``."""
        ...

    def terminate(self) -> None:
        """SIGTERM to the server and everything it started."""
        ...

    def kill(self) -> None:
        """SIGKILL to the server and everything it started."""
        ...

    def alive_in_group(self) -> bool:
        """Whether any process the server started still exists."""
        ...


Spawn = Callable[[Sequence[str], Mapping[str, str], Path | None], ServerProcess]


class _PopenServer:
    """``ServerProcess`` over ``subprocess.Popen``, leader of a process group of its own."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str], cwd: Path | None) -> None:
        try:
            self._proc = subprocess.Popen(list(argv), env=dict(env), cwd=cwd,
                                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                          stderr=subprocess.STDOUT, start_new_session=True)
        except FileNotFoundError as exc:
            raise ToolMissing(f"required program '{argv[0]}' was not found",
                              hint=install_hint(argv[0])) from exc
        self._pgid = self._proc.pid  # start_new_session: the leader's pid is the group's id
        assert self._proc.stdout is not None
        self._output: IO[bytes] = self._proc.stdout

    @property
    def output(self) -> IO[bytes]:
        return self._output

    def poll(self) -> int | None:
        return self._proc.poll()

    def wait(self, timeout: float) -> int:
        return self._proc.wait(timeout=timeout)

    def _signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._pgid, sig)

    def terminate(self) -> None:
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def alive_in_group(self) -> bool:
        try:
            os.killpg(self._pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def popen_spawn(argv: Sequence[str], env: Mapping[str, str], cwd: Path | None) -> ServerProcess:
    return _PopenServer(argv, env, cwd)


class _Output:
    """Reads the server's output in a thread: every line kept, the listening line signalled."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self.events: queue.Queue[str | None] = queue.Queue()  # a base URL, or None at EOF
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[bytes]) -> None:
        found = False
        try:
            for raw in iter(stream.readline, b""):
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                with self._lock:
                    self.lines.append(line)
                m = LISTENING_RE.search(line)
                if m and not found:
                    found = True
                    self.events.put(m.group(1))
        except (OSError, ValueError):  # the stream was closed under us
            pass
        self.events.put(None)

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def tail(self, n: int = TAIL_LINES) -> str:
        with self._lock:
            lines = [ln for ln in self.lines if ln.strip()]
        return " | ".join(lines[-n:]) or "(no output)"

    def text(self) -> str:
        with self._lock:
            return "\n".join(self.lines)


def _wait_listening(proc: ServerProcess, out: _Output, timeout: float,
                    program: str) -> tuple[str | None, str]:
    """(the base URL, "") once listening; (None, why) when it exits first or time runs out."""
    deadline = time.monotonic() + timeout
    eof = False
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None, (f"printed no '{program}: listening on' line within {timeout:g}s; "
                          f"its output: {out.tail()}")
        try:
            event = out.events.get(timeout=min(left, 0.25))
        except queue.Empty:
            event = ""
        if event:
            return event, ""
        eof = eof or event is None
        code = proc.poll()
        if code is not None or eof:
            # the output ended: the process exited (or is about to)
            try:
                code = proc.wait(timeout=5) if code is None else code
            except subprocess.TimeoutExpired:
                return None, f"closed its output without listening; its output: {out.tail()}"
            out.join(2)
            return None, f"exited with status {code} before listening; its output: {out.tail()}"


def _stop(proc: ServerProcess, grace: float) -> tuple[int | None, bool]:
    """(exit status, whether it needed SIGKILL)."""
    if proc.poll() is not None:
        return proc.poll(), False
    proc.terminate()
    try:
        return proc.wait(timeout=grace), False
    except subprocess.TimeoutExpired:
        proc.kill()
        try:
            return proc.wait(timeout=grace), True
        except subprocess.TimeoutExpired:
            return None, True


def _group_gone(proc: ServerProcess, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while proc.alive_in_group():
        if time.monotonic() >= deadline:
            return False
        proc.kill()
        time.sleep(0.1)
    return True


def _compare(got: server_api.Completion, expected: Sequence[int], against: str) -> str | None:
    """None when the tokens match; else why not."""
    want = tuple(expected)
    if got.tokens == want:
        return None
    if len(got.tokens) < len(want) and got.tokens == want[: len(got.tokens)]:
        return (f"generated {len(got.tokens)} tokens (finish_reason {got.finish_reason!r}), "
                f"{against} {len(want)}; the first {len(got.tokens)} agree, the server stopped "
                f"before {want[len(got.tokens)]}")
    diff = next((i for i, (a, b) in enumerate(zip(got.tokens, want, strict=False)) if a != b),
                min(len(got.tokens), len(want)))
    return (f"tokens differ from {against} at step {diff}: {list(got.tokens)} vs "
            f"{list(want)}")


def server_check(ctx: VerifyContext, *, how: str, prefix: Sequence[str], exe: Path,
                 model_arg: str, env: Mapping[str, str], cli_ids: Sequence[int] | None,
                 cwd: Path | None = None, cleanup: Sequence[str] | None = None,
                 exit_zero: bool = True, spawn: Spawn = popen_spawn,
                 start_timeout: float | None = None,
                 request_timeout: float | None = None,
                 stop_grace: float = STOP_GRACE_S) -> Check:
    """Start the server (``[smoke.server]``) behind ``prefix``, ask it, compare with the smoke
    program, stop it.

    ``cli_ids``: what this entry's smoke program generated (None when that run failed: the host
    build's ids are used instead, when there are any). ``cleanup``: a command run after the
    server stopped, with ``env`` (wine: ``wineserver -k``). ``exit_zero``: whether SIGTERM must
    end it with status 0 (not under wine). Never raises for a failed server."""
    server, cli = ctx.smoke.server, ctx.smoke.program
    if server is None:
        return Check(name=f"server {how}", ok=False, detail=f"{FILE} has no [smoke.server]")
    program = server.program
    name = f"{program} {how}"
    r = ctx.spec.run
    start_timeout = r.timeout_s if start_timeout is None else start_timeout
    request_timeout = r.timeout_s if request_timeout is None else request_timeout
    if not exe.is_file():
        return Check(name=name, ok=False, detail=f"{exe.name} is missing from bin/")
    if cli_ids is not None:
        expected, against = tuple(cli_ids), f"{cli}'s"
    elif ctx.reference_ids is not None:
        expected, against = ctx.reference_ids, f"the host build's ({cli} failed here)"
    else:
        expected, against = None, ""
    argv = [*prefix, str(exe), *server.argv(model=model_arg, threads=r.threads)]
    log_line(ctx, "+ " + " ".join(shlex.quote(a) for a in argv))
    try:
        proc = spawn(argv, env, cwd)
    except ToolMissing:
        raise
    except (KilnError, OSError) as exc:
        return Check(name=name, ok=False, detail=f"could not start: {exc}")
    out = _Output(proc.output)
    problem: str | None = None
    facts: list[str] = []
    started = time.monotonic()
    try:
        base, why = _wait_listening(proc, out, start_timeout, program)
        if base is None:
            problem = why
        else:
            # the port (a free one, picked per run) and the start-up time go to the log, not
            # into the detail: the asset's record must be the same bytes on every rebuild
            address = base.removeprefix("http://")
            log_line(ctx, f"the server is listening on {address} after "
                          f"{time.monotonic() - started:.1f}s")
            facts.append(f"listening on {address.rsplit(':', 1)[0]}")
            problem = _ask(base, r.prompt, r.n_predict, expected, against, request_timeout,
                           facts, cli)
    finally:
        code, killed = _stop(proc, stop_grace)
        cleaned = ""
        if cleanup:
            try:
                done = run(cleanup, env=env, check=False, timeout=60, what="server cleanup")
                cleaned = (f", then {Path(cleanup[0]).name} {' '.join(cleanup[1:])} "
                           f"(exit {done.returncode})")
            except KilnError as exc:
                cleaned = f", then the cleanup failed: {exc.message}"
        gone = _group_gone(proc, 10.0)
        out.join(5)
        log_line(ctx, out.text())
    if killed:
        stop_note = f"killed (still running {stop_grace:g}s after SIGTERM)"
    else:
        stop_note = f"stopped by SIGTERM (exit {code})"
    log_line(ctx, f"{program}: {stop_note}{cleaned}")
    if problem is None and not gone:
        problem = f"{stop_note}{cleaned}, but processes it started were still running"
    if problem is None and exit_zero and (killed or code != 0):
        problem = f"{stop_note}; docs/server.md: SIGTERM stops it with exit status 0"
    if problem is not None:
        if facts:  # what went right before it failed
            problem = f"{problem} ({', '.join(facts)})"
        return Check(name=name, ok=False, detail=problem)
    facts.append(stop_note + cleaned)
    return Check(name=name, ok=True, detail=", ".join(facts))


def _ask(base: str, prompt: str, n: int, expected: Sequence[int] | None, against: str,
         timeout: float, facts: list[str], cli: str) -> str | None:
    """/health, then the completion; None when both are right, else why not."""
    try:
        h = server_api.health(base, timeout=timeout)
        if not h.ok:
            return f"GET /health answered {h.status} ({h.detail}), expected 200 status 'ok'"
        facts.append("/health ok")
        got = server_api.complete(base, prompt, n, timeout=timeout)
    except KilnError as exc:
        return exc.message
    if expected is None:
        return (f"generated {list(got.tokens)}, but there is nothing to compare them with "
                f"({cli} failed and there are no host-build ids)")
    mismatch = _compare(got, expected, against)
    if mismatch is not None:
        return mismatch
    facts.append(f"{len(got.tokens)} greedy tokens identical to {against}")
    return None
