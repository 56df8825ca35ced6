"""ember-server against its contract, docs/server.md: exit statuses and the one error line of
every failure before listening (the draft rule above all: no start without the draft asked for),
the routes through a real OpenAI client, errors as OpenAI JSON that leave the server and the
other slots alone, greedy output equal to ember-cli's (with and without a draft), parallel slots
under a bounded load, and a client that disconnects mid-stream.

The SmolLM2 files come from the model directory of the other runtime tests (skipped, with the
path, when absent). Every server listens on 127.0.0.1 with ``--port 0`` (the port is read from
its listening line) and is killed by the fixture that started it. The module is one xdist group:
one worker runs its servers one after another instead of several at once on a small machine.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import http.client
import json
import os
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import openai
import pytest
from conftest import TINY, EmberBuild, find_model, model_dir, run_cli
from micro_gguf import write_micro_model
from server_client import ERROR_PREFIX, Response, Server, proc_status_kib, wait_until

pytestmark = pytest.mark.xdist_group("ember-server")
slow = pytest.mark.integration

Q41 = "smollm2-135m-q4_1.gguf"
F16 = "smollm2-135m-f16.gguf"
# the same thread count for the server and ember-cli, and a bounded load on large machines
THREADS = str(max(1, min(4, os.cpu_count() or 1)))
SMALL_CTX = 64  # the context of the `small` server's slots

# greedy, 64 tokens, float weights: none of these ends at an end-of-generation token
PROMPTS = [
    "def fibonacci(n):",
    "Once upon a time, in a small village,",
    "The three primary colors are",
]
EOG_PROMPT = "The capital of France is"  # ends at <|endoftext|> within 64 tokens


def _model(name: str) -> Path:
    path = find_model(name)
    if path is None:
        pytest.skip(f"{name} is not in {model_dir()}")
    return path


# ------------------------------------------------------------------------------------------
# starting servers


class Launcher:
    """Starts ember-server processes and kills every one of them at teardown."""

    def __init__(self, build: EmberBuild) -> None:
        self.build = build
        self.servers: list[Server] = []

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = self.build.env()
        for var in ("EMBER_API_KEY", "EMBER_SERVER_FAULT"):
            env.pop(var, None)
        env.update(extra or {})
        return env

    def spawn(
        self,
        argv: list[str],
        *,
        env: dict[str, str] | None = None,
        preexec_fn: Callable[[], None] | None = None,
    ) -> Server:
        """ember-server with exactly ``argv``; returns once it listens or has exited."""
        s = Server.start(
            [str(self.build.require_server()), *argv], env=self.env(env), preexec_fn=preexec_fn
        )
        self.servers.append(s)
        return s

    def start(self, *args: str | Path, env: dict[str, str] | None = None,
              preexec_fn: Callable[[], None] | None = None) -> Server:
        """A server that must listen (``--port 0`` and ``-t`` added unless given)."""
        argv = [str(a) for a in args]
        if "--port" not in argv:
            argv += ["--port", "0"]
        if "-t" not in argv and "--threads" not in argv:
            argv += ["-t", THREADS]
        s = self.spawn(argv, env=env, preexec_fn=preexec_fn)
        if not s.listening:
            rc = s.wait_exit(30)
            pytest.fail(f"ember-server {' '.join(argv)} did not start (exit {rc}):\n"
                        + s.stderr_text())
        return s

    def fails(self, argv: list[str], *, env: dict[str, str] | None = None,
              preexec_fn: Callable[[], None] | None = None) -> tuple[int, Server]:
        """A server that must exit before listening: (exit status, server)."""
        s = self.spawn(argv, env=env, preexec_fn=preexec_fn)
        if s.listening:
            s.kill()
            pytest.fail(f"ember-server {' '.join(argv)} started, it should have failed:\n"
                        + s.stderr_text())
        return s.wait_exit(60), s

    def close(self) -> None:
        for s in self.servers:
            s.kill()


@pytest.fixture
def launcher(ember_build: EmberBuild) -> Iterator[Launcher]:
    ember_build.require_server()
    lau = Launcher(ember_build)
    yield lau
    lau.close()


@pytest.fixture(scope="module")
def module_launcher(ember_build: EmberBuild) -> Iterator[Launcher]:
    ember_build.require_server()
    lau = Launcher(ember_build)
    yield lau
    lau.close()


@pytest.fixture(scope="module")
def small(module_launcher: Launcher) -> Server:
    """SmolLM2 Q4_1, 2 slots of 64 tokens: the contract of the routes and of the errors."""
    return module_launcher.start("-m", _model(Q41), "-np", "2", "-c", str(SMALL_CTX))


@pytest.fixture(scope="module")
def f16_server(module_launcher: Launcher) -> Server:
    """SmolLM2 F16, 4 slots: greedy equivalence with ember-cli and the parallel load."""
    return module_launcher.start("-m", _model(F16), "-np", "4", "-c", "256")


class NoDraftTokens:
    """The F16 server's greedy 64 tokens of a prompt, without a draft (memoized)."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.memo: dict[str, list[int]] = {}

    def __call__(self, prompt: str) -> list[int]:
        if prompt not in self.memo:
            self.memo[prompt] = complete(self.server, prompt, 64)["choices"][0]["tokens"]
        return self.memo[prompt]


@pytest.fixture(scope="module")
def no_draft_tokens(f16_server: Server) -> NoDraftTokens:
    return NoDraftTokens(f16_server)


def client(server: Server, key: str = "unused") -> Any:
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key=key, max_retries=0,
                         timeout=120)


def complete(server: Server, prompt: Any, max_tokens: int | None, **fields: Any) -> Any:
    """A greedy /v1/completions with the token ids; the response's JSON (status 200)."""
    body = {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
            "return_tokens": True, **fields}
    r = server.post("/v1/completions", body)
    assert r.status == 200, (body, r.status, r.text())
    return r.json()


def _cli_greedy(build: EmberBuild, model: Path, prompt: str, n: int) -> dict[str, Any]:
    r = run_cli(build, ["-m", str(model), "-p", prompt, "-n", str(n), "--temp", "0", "--json",
                        "-t", THREADS], timeout=300)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    return json.loads(r.stdout)


def _same_tokens_up_to_eog(server_tokens: list[int], cli: dict[str, Any]) -> None:
    """ember-cli lists the end-of-generation token it stopped at; the server may or may not."""
    ids = cli["generated_ids"]
    if cli["stopped_at_eog"]:
        assert server_tokens in (ids, ids[:-1]), (server_tokens, ids)
    else:
        assert server_tokens == ids


@contextmanager
def held_port() -> Iterator[int]:
    """A port of 127.0.0.1 this process listens on: a server that tries to listen there fails
    (exit 5), so exit 3 with it proves the draft was checked before the port was opened."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        yield sock.getsockname()[1]
    finally:
        sock.close()


def open_raw_stream(s: Server, body: dict[str, Any], chunks: int = 2) -> socket.socket:
    """A streaming /v1/completions on a plain socket, read until ``chunks`` events came."""
    data = json.dumps({**body, "stream": True}).encode()
    sock = socket.create_connection(("127.0.0.1", s.port), timeout=60)
    sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 b"Content-Type: application/json\r\n"
                 + f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
    got = b""
    while got.count(b"data:") < chunks:
        chunk = sock.recv(65536)
        assert chunk, f"the server closed the stream: {got!r}"
        got += chunk
    assert got.startswith(b"HTTP/1.1 200"), got[:200]
    return sock


def drop(sock: socket.socket) -> None:
    """Go away mid-stream."""
    sock.shutdown(socket.SHUT_RDWR)
    sock.close()


def one_error_line(s: Server) -> str:
    lines = s.error_lines()
    assert len(lines) == 1, f"expected one '{ERROR_PREFIX}' line, got:\n{s.stderr_text()}"
    assert s.listen is None
    assert "listening on" not in s.stderr_text()
    return lines[0]


def check_error(r: Response, status: int, etype: str) -> dict[str, Any]:
    """An OpenAI-style error: {"error": {"message", "type", "param", "code"}}."""
    assert r.status == status, (r.status, r.text())
    assert r.headers.get("content-type", "").startswith("application/json"), r.headers
    doc = r.json()
    assert isinstance(doc, dict) and isinstance(doc.get("error"), dict), doc
    err = doc["error"]
    assert isinstance(err.get("message"), str) and err["message"], doc
    assert err.get("type") == etype, doc
    assert "param" in err and (err["param"] is None or isinstance(err["param"], str)), doc
    assert "code" in err and (err["code"] is None or isinstance(err["code"], str | int)), doc
    return err


# ------------------------------------------------------------------------------------------
# start, stop and the exit statuses


def test_listening_line(small: Server) -> None:
    assert small.listen is not None
    assert small.listen["host"] == "127.0.0.1"
    assert small.listen["slots"] == "2"
    assert small.listen["draft"] == "none"
    assert small.listen["template"] == "chatml"
    assert sum("listening on" in ln for ln in small.stderr_lines) == 1
    assert small.error_lines() == []


@pytest.mark.parametrize(
    "args",
    [
        ["--no-such-option"],
        [],  # no -m
        ["--port", "not-a-port"],
        ["--port", "70000"],
        ["-np", "many"],
        ["--draft-max", "x"],
        ["-c", "-5"],
        ["-m"],  # an option without its value
    ],
    ids=["unknown-option", "no-model", "port-text", "port-range", "parallel-text",
         "draft-max-text", "ctx-negative", "missing-value"],
)
def test_bad_command_line_exits_1(launcher: Launcher, args: list[str]) -> None:
    argv = (["-m", str(_model(Q41))] if args and args != ["-m"] else []) + args
    rc, s = launcher.fails(argv)
    assert rc == 1, s.stderr_text()
    one_error_line(s)


def test_unknown_fault_value_exits_1(launcher: Launcher) -> None:
    rc, s = launcher.fails(["-m", str(_model(Q41)), "--port", "0"],
                           env={"EMBER_SERVER_FAULT": "no-such-fault"})
    assert rc == 1, s.stderr_text()
    one_error_line(s)


def test_missing_model_exits_2(launcher: Launcher, tmp_path: Path) -> None:
    missing = tmp_path / "absent-model.gguf"
    rc, s = launcher.fails(["-m", str(missing), "--port", "0"])
    assert rc == 2, s.stderr_text()
    assert "absent-model.gguf" in one_error_line(s)


def test_corrupt_model_exits_2(launcher: Launcher, tmp_path: Path) -> None:
    bad = tmp_path / "garbage.gguf"
    bad.write_bytes(b"GGUF" + b"\xff" * 60)
    rc, s = launcher.fails(["-m", str(bad), "--port", "0"])
    assert rc == 2, s.stderr_text()
    assert "garbage.gguf" in one_error_line(s)


def test_cannot_listen_exits_5(launcher: Launcher) -> None:
    with held_port() as port:
        rc, s = launcher.fails(["-m", str(_model(Q41)), "--port", str(port), "-c", "64"])
    assert rc == 5, s.stderr_text()
    assert str(port) in one_error_line(s)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_with_0_and_cancels_running_requests(launcher: Launcher, sig: int) -> None:
    s = launcher.start("-m", _model(Q41), "-np", "1", "-c", "512")
    got: list[str] = []
    errors: list[BaseException] = []
    first = threading.Event()

    def stream() -> None:
        try:
            for payload in s.stream("/v1/completions",
                                    {"prompt": "Once upon a time", "max_tokens": 400,
                                     "temperature": 0, "stream": True}, timeout=60):
                got.append(payload)
                first.set()
        except Exception as e:  # the connection closes when the server stops
            errors.append(e)
        finally:
            first.set()

    t = threading.Thread(target=stream, daemon=True)
    t.start()
    assert first.wait(60), "no stream chunk within 60 s"
    t0 = time.monotonic()
    rc = s.stop(sig, timeout=30)
    assert rc == 0, s.stderr_text()
    t.join(30)
    assert not t.is_alive(), "the stream did not end after the server stopped"
    # cancelled, not run to its 400 tokens
    assert len(got) < 300, f"{len(got)} chunks: the running request was not cancelled"
    assert time.monotonic() - t0 < 30


# ------------------------------------------------------------------------------------------
# the draft: never a start without it


def test_draft_context_fault_exits_3_before_listening(launcher: Launcher) -> None:
    q41 = _model(Q41)
    with held_port() as port:
        rc, s = launcher.fails(
            ["-m", str(q41), "-md", str(q41), "-np", "2", "-c", "128", "--port", str(port),
             "-t", THREADS],
            env={"EMBER_SERVER_FAULT": "draft-context"},
        )
    # 3, not 5: the draft contexts were created (and failed) before the port was tried
    assert rc == 3, s.stderr_text()
    line = one_error_line(s)
    assert "draft" in line.lower(), line
    assert "memory" in line.lower(), f"the reason (memory ran out) is not named: {line}"


def test_draft_load_fault_exits_3_before_listening(launcher: Launcher) -> None:
    q41 = _model(Q41)
    with held_port() as port:
        rc, s = launcher.fails(
            ["-m", str(q41), "-md", str(q41), "-np", "1", "-c", "128", "--port", str(port)],
            env={"EMBER_SERVER_FAULT": "draft-load"},
        )
    assert rc == 3, s.stderr_text()
    line = one_error_line(s)
    assert "draft" in line.lower() or q41.name in line, line


def _rlimits(address_space: int | None) -> Callable[[], None]:
    """preexec_fn: small thread stacks (pthread's default is RLIMIT_STACK: the idle HTTP
    threads then reserve little address space) and, when given, RLIMIT_AS."""

    import resource  # POSIX only

    def apply() -> None:
        _, hard = resource.getrlimit(resource.RLIMIT_STACK)
        stack = 2 << 20
        if hard != resource.RLIM_INFINITY:
            stack = min(stack, hard)
        resource.setrlimit(resource.RLIMIT_STACK, (stack, hard))
        if address_space is not None:
            resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))

    return apply


@slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS and /proc (Linux)")
def test_draft_out_of_memory_exits_3_before_listening(launcher: Launcher) -> None:
    """A real memory limit: the target with its contexts fits, target + draft does not."""
    target = _model(Q41)
    draft = next((p for p in (find_model(n) for n in (
        "smollm2-135m-f32.gguf", "smollm2-135m-f16.gguf", "smollm2-135m-bf16.gguf")) if p), None)
    if draft is None:
        pytest.skip(f"no SmolLM2 f32/f16/bf16 draft in {model_dir()}")
    draft_bytes = draft.stat().st_size
    common = ["-m", str(target), "-np", "1", "-c", "256", "-t", THREADS]
    env = {"MALLOC_ARENA_MAX": "2"}  # fewer malloc arenas: a steadier address space

    # 1. the address space the server reaches without a draft (after it listens)
    s = launcher.start(*common, env=env, preexec_fn=_rlimits(None))
    time.sleep(0.5)
    peak = proc_status_kib(s.proc.pid, "VmPeak") * 1024
    s.kill()
    margin = min(128 << 20, draft_bytes // 4)
    limit = peak + margin  # well below peak + the draft's file, which is mapped whole

    # 2. the target alone starts under the limit
    s = launcher.start(*common, env=env, preexec_fn=_rlimits(limit))
    s.kill()

    # 3. with the draft it fails, with exit 3, before the port is opened
    with held_port() as port:
        rc, s = launcher.fails([*common, "-md", str(draft), "--port", str(port)],
                               env=env, preexec_fn=_rlimits(limit))
    assert rc == 3, (f"VmPeak without draft {peak >> 20} MiB, limit {limit >> 20} MiB, "
                     f"draft {draft_bytes >> 20} MiB:\n{s.stderr_text()}")
    line = one_error_line(s)
    assert "draft" in line.lower() or draft.name in line, line
    low = line.lower()
    assert any(w in low for w in ("memory", "alloc", "map")), f"no reason named: {line}"


def _patch_gguf_string(data: bytearray, key: str, patch: Callable[[bytes], bytes]) -> None:
    """Replace the value of a string metadata key in place (same length: offsets unchanged)."""
    raw = key.encode()
    needle = struct.pack("<Q", len(raw)) + raw
    i = data.find(needle)
    assert i >= 0, key
    j = i + len(needle)
    (vtype,) = struct.unpack_from("<I", data, j)
    assert vtype == 8, (key, vtype)  # string
    (n,) = struct.unpack_from("<Q", data, j + 4)
    start = j + 12
    new = patch(bytes(data[start:start + n]))
    assert len(new) == n
    data[start:start + n] = new


def _patch_token_text(data: bytearray, index: int, new_text: bytes) -> None:
    """Replace token ``index``'s text in tokenizer.ggml.tokens (same byte length)."""
    raw = b"tokenizer.ggml.tokens"
    i = data.find(struct.pack("<Q", len(raw)) + raw)
    assert i >= 0
    j = i + 8 + len(raw)
    vtype, etype, count = struct.unpack_from("<IIQ", data, j)
    assert (vtype, etype) == (9, 8) and index < count
    pos = j + 16
    for _ in range(index):
        (n,) = struct.unpack_from("<Q", data, pos)
        pos += 8 + n
    (n,) = struct.unpack_from("<Q", data, pos)
    assert n == len(new_text), (bytes(data[pos + 8:pos + 8 + n]), new_text)
    data[pos + 8:pos + 8 + n] = new_text


def test_draft_vocabulary_size_differs_exits_3(launcher: Launcher) -> None:
    q41 = _model(Q41)  # 49152 tokens
    other = TINY / "tiny-gpt2-f32.gguf"  # 640 tokens
    with held_port() as port:
        rc, s = launcher.fails(["-m", str(q41), "-md", str(other), "-c", "128",
                                "--port", str(port)])
    assert rc == 3, s.stderr_text()
    line = one_error_line(s)
    assert "vocab" in line.lower(), line


def test_draft_vocabulary_text_differs_exits_3(launcher: Launcher, tmp_path: Path) -> None:
    """Same size, one token's text differs: refused; the file unpatched is taken."""
    q41 = _model(Q41)
    s = launcher.start("-m", q41, "-md", q41, "-c", "128")
    assert s.listen is not None and s.listen["draft"].endswith(q41.name), s.listen.group(0)
    s.kill()

    data = bytearray(q41.read_bytes())
    _patch_token_text(data, 7, b"<gh_starz>")  # <gh_stars>: a control token, in no merge
    changed = tmp_path / "q4_1-one-token-changed.gguf"
    changed.write_bytes(bytes(data))

    with held_port() as port:
        rc, s = launcher.fails(["-m", str(q41), "-md", str(changed), "-c", "128",
                                "--port", str(port)])
    assert rc == 3, s.stderr_text()
    line = one_error_line(s)
    assert "vocab" in line.lower(), line


# ------------------------------------------------------------------------------------------
# chat templates


def _unrecognised_template(tmp_path: Path) -> Path:
    """tiny-gpt2 with a chat template none of the five names recognises."""
    data = bytearray((TINY / "tiny-gpt2-f32.gguf").read_bytes())
    _patch_gguf_string(data, "tokenizer.chat_template",
                       lambda t: t.replace(b"<|im_start|>", b"<|xx_begin|>"))
    out = tmp_path / "tiny-odd-template.gguf"
    out.write_bytes(bytes(data))
    return out


@pytest.mark.parametrize("kind", ["unrecognised", "absent"])
def test_unknown_chat_template_exits_4(launcher: Launcher, tmp_path: Path, kind: str) -> None:
    if kind == "unrecognised":
        model = _unrecognised_template(tmp_path)
    else:
        model = write_micro_model(tmp_path / "micro-no-template.gguf")
    rc, s = launcher.fails(["-m", str(model), "--port", "0", "-c", "64"])
    assert rc == 4, s.stderr_text()
    assert "template" in one_error_line(s).lower()

    s = launcher.start("-m", model, "-c", "64", "--chat-template", "chatml")
    assert s.listen is not None and s.listen["template"] == "chatml"
    if kind == "absent":
        return  # the micro vocabulary has no tokens for the chatml markers
    r = s.post("/v1/chat/completions", {"messages": [{"role": "user", "content": "a"}],
                                        "max_tokens": 2, "temperature": 0})
    assert r.status == 200, r.text()


CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Name a colour."},
    {"role": "assistant", "content": "Blue."},
    {"role": "user", "content": "Another one."},
]
CHAT_NO_SYSTEM = CHAT[1:]
# docs/server.md's renderings; mistral and gemma without a system message (the text joining
# it to the first user turn is not written down)
RENDERINGS = {
    "chatml": (CHAT, "<|im_start|>system\nBe brief.<|im_end|>\n"
                     "<|im_start|>user\nName a colour.<|im_end|>\n"
                     "<|im_start|>assistant\nBlue.<|im_end|>\n"
                     "<|im_start|>user\nAnother one.<|im_end|>\n"
                     "<|im_start|>assistant\n"),
    "llama3": (CHAT, "<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
                     "<|start_header_id|>user<|end_header_id|>\n\nName a colour.<|eot_id|>"
                     "<|start_header_id|>assistant<|end_header_id|>\n\nBlue.<|eot_id|>"
                     "<|start_header_id|>user<|end_header_id|>\n\nAnother one.<|eot_id|>"
                     "<|start_header_id|>assistant<|end_header_id|>\n\n"),
    "mistral": (CHAT_NO_SYSTEM, "[INST] Name a colour. [/INST]Blue.</s>"
                                "[INST] Another one. [/INST]"),
    "gemma": (CHAT_NO_SYSTEM, "<start_of_turn>user\nName a colour.<end_of_turn>\n"
                              "<start_of_turn>model\nBlue.<end_of_turn>\n"
                              "<start_of_turn>user\nAnother one.<end_of_turn>\n"
                              "<start_of_turn>model\n"),
    "phi3": (CHAT, "<|system|>\nBe brief.<|end|>\n<|user|>\nName a colour.<|end|>\n"
                   "<|assistant|>\nBlue.<|end|>\n<|user|>\nAnother one.<|end|>\n"
                   "<|assistant|>\n"),
}


@pytest.mark.parametrize("name", sorted(RENDERINGS))
def test_chat_template_rendering(launcher: Launcher, ember_build: EmberBuild, name: str) -> None:
    """--chat-template NAME renders as docs/server.md says: the chat's prompt tokens and
    greedy answer are ember-cli's on the rendered text (SmolLM2's tokenizer has none of the
    markers but chatml's as special tokens; both sides tokenize them the same way)."""
    messages, rendered = RENDERINGS[name]
    q41 = _model(Q41)
    cli = _cli_greedy(ember_build, q41, rendered, 4)
    s = launcher.start("-m", q41, "-np", "1", "-c", "256", "--chat-template", name)
    assert s.listen is not None and s.listen["template"] == name
    r = s.post("/v1/chat/completions", {"messages": messages, "max_tokens": 4,
                                        "temperature": 0, "return_tokens": True})
    assert r.status == 200, r.text()
    doc = r.json()
    assert doc["usage"]["prompt_tokens"] == len(cli["prompt_ids"]), (doc["usage"], cli)
    _same_tokens_up_to_eog(doc["choices"][0]["tokens"], cli)
    assert doc["choices"][0]["message"]["content"] == cli["text"]


# ------------------------------------------------------------------------------------------
# the routes


def test_health(small: Server) -> None:
    r = small.get("/health")
    assert r.status == 200
    assert r.headers.get("content-type", "").startswith("application/json")
    assert r.json() == {"status": "ok"}


def test_models(small: Server) -> None:
    r = small.get("/v1/models")
    assert r.status == 200, r.text()
    doc = r.json()
    assert doc["object"] == "list" and len(doc["data"]) == 1, doc
    m = doc["data"][0]
    assert m["id"] == Q41, m  # --alias defaults to the model's file name
    assert m["object"] == "model" and m["owned_by"] == "ember" and isinstance(m["created"], int)
    meta = m["meta"]
    assert meta["n_vocab"] == 49152 and meta["n_ctx_train"] == 8192, meta
    assert meta["n_ctx_slot"] == SMALL_CTX, meta
    # docs/server.md writes "n_params_file_bytes"; accept it or the two fields it may mean
    assert "n_params_file_bytes" in meta or {"n_params", "file_bytes"} <= meta.keys(), meta
    # the OpenAI client reads the same list
    assert [x.id for x in client(small).models.list()] == [Q41]


def test_default_context(launcher: Launcher) -> None:
    """-c defaults to 4096 tokens, at most the model's training context (tiny-gpt2: 256)."""
    for model, want in ((TINY / "tiny-gpt2-f32.gguf", 256), (_model(Q41), 4096)):
        s = launcher.start("-m", model, "-np", "1")
        meta = s.get("/v1/models").json()["data"][0]["meta"]
        assert meta["n_ctx_slot"] == want, (model.name, meta)
        s.kill()


def test_completion_fields(small: Server) -> None:
    c = client(small)
    resp = c.completions.create(model="anything", prompt="The capital of Spain is",
                                max_tokens=8, temperature=0, extra_body={"return_tokens": True})
    doc = resp.model_dump()
    assert doc["object"] == "text_completion"
    assert isinstance(doc["id"], str) and doc["id"] and isinstance(doc["created"], int)
    assert isinstance(doc["model"], str)
    ch = doc["choices"][0]
    assert len(doc["choices"]) == 1 and ch["index"] == 0 and ch["logprobs"] is None
    assert ch["finish_reason"] == "length" and isinstance(ch["text"], str) and ch["text"]
    tokens = ch["tokens"]
    assert len(tokens) == 8 and all(isinstance(t, int) for t in tokens)
    u = doc["usage"]
    assert u["completion_tokens"] == 8 and u["prompt_tokens"] > 0
    assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"]
    t = doc["timings"]
    for k in ("prompt_n", "prompt_ms", "predicted_n", "predicted_ms", "draft_n",
              "draft_n_accepted"):
        assert k in t, t
    assert t["predicted_n"] == 8 and t["prompt_n"] == u["prompt_tokens"]
    assert t["draft_n"] == 0 and t["draft_n_accepted"] == 0  # no draft

    # a prompt given as an array of one string is the same request
    again = complete(small, ["The capital of Spain is"], 8)
    assert again["choices"][0]["text"] == ch["text"]
    assert again["choices"][0]["tokens"] == tokens


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "system", "content": "You answer in one word."},
         {"role": "user", "content": "What colour is the sky?"}],
        [{"role": "user", "content": "Say hello."},
         {"role": "assistant", "content": "Hello."},
         {"role": "user", "content": "Again."}],
    ],
    ids=["system-user", "user-assistant-user"],
)
def test_chat_renders_chatml_like_cli(small: Server, ember_build: EmberBuild,
                                      messages: list[dict[str, str]]) -> None:
    """The chat's greedy answer is ember-cli's on the chatml text docs/server.md renders."""
    rendered = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    rendered += "<|im_start|>assistant\n"
    cli = _cli_greedy(ember_build, _model(Q41), rendered, 16)
    resp = client(small).chat.completions.create(
        model="x", messages=messages, max_tokens=16, temperature=0,
        extra_body={"return_tokens": True})
    doc = resp.model_dump()
    assert doc["object"] == "chat.completion"
    ch = doc["choices"][0]
    assert ch["index"] == 0 and ch["message"]["role"] == "assistant"
    assert doc["usage"]["prompt_tokens"] == len(cli["prompt_ids"]), (doc["usage"], cli)
    assert ch["message"]["content"] == cli["text"]
    assert ch["finish_reason"] == ("stop" if cli["stopped_at_eog"] else "length")
    _same_tokens_up_to_eog(ch["tokens"], cli)


def test_chat_stream_equals_non_stream(small: Server) -> None:
    c = client(small)
    messages = [{"role": "user", "content": "Name three fruits."}]
    full = c.chat.completions.create(model="x", messages=messages, max_tokens=24,
                                     temperature=0)
    chunks = list(c.chat.completions.create(model="x", messages=messages, max_tokens=24,
                                            temperature=0, stream=True))
    assert chunks, "no chunks"
    assert all(ch.object == "chat.completion.chunk" for ch in chunks)
    first = chunks[0].choices[0].delta
    assert first.role == "assistant" and first.content == "", chunks[0]
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == full.choices[0].message.content
    last = chunks[-1]
    assert last.choices and last.choices[0].finish_reason == full.choices[0].finish_reason, last
    assert all(not ch.choices or ch.choices[0].finish_reason is None for ch in chunks[:-1])
    assert last.usage is not None, last
    assert last.usage.completion_tokens == full.usage.completion_tokens
    assert last.usage.prompt_tokens == full.usage.prompt_tokens


def test_completion_stream_raw_sse(small: Server) -> None:
    """Raw server-sent events: every piece valid JSON (and UTF-8), [DONE] last."""
    prompt = "Here is a list of animals:"
    full = complete(small, prompt, 24)
    payloads = list(small.stream("/v1/completions", {"prompt": prompt, "max_tokens": 24,
                                                     "temperature": 0, "stream": True}))
    assert payloads and payloads[-1] == "[DONE]", payloads[-3:]
    assert payloads.count("[DONE]") == 1
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert all(c["object"] == "text_completion" for c in chunks), chunks
    text = "".join(c["choices"][0]["text"] for c in chunks if c.get("choices"))
    assert text == full["choices"][0]["text"]
    assert chunks[-1]["choices"][0]["finish_reason"] == full["choices"][0]["finish_reason"]
    assert chunks[-1]["usage"]["completion_tokens"] == full["usage"]["completion_tokens"]


def _stop_text(text: str) -> tuple[str, str]:
    """A stop string taken from the middle of a greedy answer, and the text before it."""
    mid = len(text) // 2
    for k in range(mid, len(text) - 3):
        stop = text[k:k + 3]
        if stop.strip() and "\n" not in stop:
            return stop, text[:text.find(stop)]
    raise AssertionError(f"no stop string in {text!r}")


def test_stop_strings(small: Server) -> None:
    prompt = "List of prime numbers: 2, 3, 5,"
    base = complete(small, prompt, 32)["choices"][0]
    assert base["finish_reason"] == "length" and len(base["text"]) >= 12, base
    stop, before = _stop_text(base["text"])

    c = client(small)
    r = c.completions.create(model="x", prompt=prompt, max_tokens=32, temperature=0, stop=stop)
    assert (r.choices[0].text, r.choices[0].finish_reason) == (before, "stop"), (stop, r)
    assert stop not in r.choices[0].text

    # streamed, with a list of stops: text that could start a stop string is held back
    chunks = list(c.completions.create(model="x", prompt=prompt, max_tokens=32, temperature=0,
                                       stop=["@@never@@", stop], stream=True))
    text = "".join(ch.choices[0].text for ch in chunks if ch.choices)
    assert text == before, (stop, text, before)
    assert chunks[-1].choices[0].finish_reason == "stop"

    # chat too
    msgs = [{"role": "user", "content": "Count from one to twenty in words."}]
    base_chat = c.chat.completions.create(model="x", messages=msgs, max_tokens=24,
                                          temperature=0).choices[0].message.content
    assert base_chat and len(base_chat) >= 12, base_chat
    stop, before = _stop_text(base_chat)
    r2 = c.chat.completions.create(model="x", messages=msgs, max_tokens=24, temperature=0,
                                   stop=[stop])
    assert (r2.choices[0].message.content, r2.choices[0].finish_reason) == (before, "stop")


def test_sampling_is_seeded(small: Server) -> None:
    """temperature 1 (the default): the same request, the same answer (seed 0, or the one
    given)."""
    for extra in ({}, {"seed": 1234, "top_p": 0.9}):
        body = {"prompt": "My favourite animal is", "max_tokens": 12, **extra}
        a, b = (small.post("/v1/completions", body) for _ in range(2))
        assert a.status == b.status == 200, (a.text(), b.text())
        assert a.json()["choices"][0]["text"] == b.json()["choices"][0]["text"], extra


@pytest.mark.parametrize(
    "fields",
    [
        {"temperature": 0, "top_p": 1, "n": 1, "seed": 0, "stream": False},
        {"temperature": 2, "top_p": 0.5, "return_tokens": False},
        {"temperature": 0.7, "stop": []},
        {"stop": ["a1", "b2", "c3", "d4"], "max_tokens": 0},
        {"stop": "\n", "seed": -1},
    ],
    ids=["ints", "upper-bounds", "no-stops", "four-stops", "stop-string"],
)
def test_valid_values_at_the_edges(small: Server, fields: dict[str, Any]) -> None:
    body = {"prompt": "Hello", "max_tokens": 2, **fields}
    r = small.post("/v1/completions", body)
    assert r.status == 200, (body, r.text())
    chat = {"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 2, **fields}
    r = small.post("/v1/chat/completions", chat)
    assert r.status == 200, (chat, r.text())


def test_unknown_fields_are_ignored(small: Server) -> None:
    body = {"prompt": "Hello", "max_tokens": 2, "temperature": 0, "model": "gpt-4o",
            "user": "someone", "logit_bias": {}, "frequency_penalty": 0, "echo": False,
            "stream_options": None, "something_new": {"nested": [1, 2]}}
    r = small.post("/v1/completions", body)
    assert r.status == 200, r.text()


def test_context_limits(small: Server) -> None:
    """prompt + max_tokens may fill the slot's context exactly; one more token is an error;
    max_tokens null generates until the context is full."""
    sentence = "The lighthouse keeper watched the storm. "
    for k in range(1, 12):  # a prompt that leaves 4 to 24 tokens of the context
        prompt = sentence * k
        p = complete(small, prompt, 0)
        assert p["choices"][0]["text"] == "" and p["usage"]["completion_tokens"] == 0, p
        room = SMALL_CTX - p["usage"]["prompt_tokens"]
        if room <= 24:
            break
    assert 4 <= room <= 24, f"no test prompt leaves 4 to 24 tokens: {p['usage']}"

    full = complete(small, prompt, room)
    assert full["usage"]["completion_tokens"] == room, full
    check_error(small.post("/v1/completions", {"prompt": prompt, "max_tokens": room + 1}),
                400, "invalid_request_error")

    for fields in ({"max_tokens": None}, {}):
        body = {"prompt": prompt, "temperature": 0, "return_tokens": True, **fields}
        r = small.post("/v1/completions", body)
        assert r.status == 200, (fields, r.text())
        doc = r.json()
        ch = doc["choices"][0]
        if ch["finish_reason"] == "length":
            assert doc["usage"]["total_tokens"] == SMALL_CTX, (fields, doc)
            assert ch["tokens"] == full["choices"][0]["tokens"]
        else:
            assert ch["finish_reason"] == "stop" and doc["usage"]["total_tokens"] < SMALL_CTX


# ------------------------------------------------------------------------------------------
# errors

LONG_PROMPT = "one two three four five six seven eight nine ten " * 12  # > 64 tokens

ERRORS: list[tuple[str, str, str, Any, int, str]] = [
    # (id, method, path, body, status, type)
    ("malformed-json", "POST", "/v1/chat/completions", b"{not json", 400,
     "invalid_request_error"),
    ("truncated-json", "POST", "/v1/completions", b'{"prompt": "hi", ', 400,
     "invalid_request_error"),
    ("empty-body", "POST", "/v1/completions", b"", 400, "invalid_request_error"),
    ("not-an-object", "POST", "/v1/completions", b"[1, 2]", 400, "invalid_request_error"),
    ("max_tokens-ten", "POST", "/v1/completions", {"prompt": "hi", "max_tokens": "ten"}, 400,
     "invalid_request_error"),
    ("max_tokens-negative", "POST", "/v1/completions", {"prompt": "hi", "max_tokens": -1}, 400,
     "invalid_request_error"),
    ("max_tokens-fraction", "POST", "/v1/completions", {"prompt": "hi", "max_tokens": 1.5},
     400, "invalid_request_error"),
    ("max_tokens-huge", "POST", "/v1/completions", {"prompt": "hi", "max_tokens": 1e20}, 400,
     "invalid_request_error"),
    ("max_tokens-beyond-context", "POST", "/v1/completions",
     {"prompt": "hi", "max_tokens": 1000}, 400, "invalid_request_error"),
    ("temperature-hot", "POST", "/v1/completions", {"prompt": "hi", "temperature": "hot"}, 400,
     "invalid_request_error"),
    ("temperature-range", "POST", "/v1/completions", {"prompt": "hi", "temperature": 2.5},
     400, "invalid_request_error"),
    ("temperature-bool", "POST", "/v1/completions", {"prompt": "hi", "temperature": True},
     400, "invalid_request_error"),
    ("top_p-zero", "POST", "/v1/completions", {"prompt": "hi", "top_p": 0}, 400,
     "invalid_request_error"),
    ("seed-text", "POST", "/v1/completions", {"prompt": "hi", "seed": "s"}, 400,
     "invalid_request_error"),
    ("stream-3", "POST", "/v1/completions", {"prompt": "hi", "stream": 3}, 400,
     "invalid_request_error"),
    ("seed-fraction", "POST", "/v1/completions", {"prompt": "hi", "seed": 1.5}, 400,
     "invalid_request_error"),
    ("stream-text", "POST", "/v1/chat/completions",
     {"messages": [{"role": "user", "content": "hi"}], "stream": "true"}, 400,
     "invalid_request_error"),
    ("stop-number", "POST", "/v1/completions", {"prompt": "hi", "stop": 5}, 400,
     "invalid_request_error"),
    ("stop-five", "POST", "/v1/completions",
     {"prompt": "hi", "stop": ["a", "b", "c", "d", "e"]}, 400, "invalid_request_error"),
    ("n-2", "POST", "/v1/completions", {"prompt": "hi", "n": 2}, 400, "invalid_request_error"),
    ("n-2-chat", "POST", "/v1/chat/completions",
     {"messages": [{"role": "user", "content": "hi"}], "n": 2}, 400, "invalid_request_error"),
    ("return_tokens-text", "POST", "/v1/completions", {"prompt": "hi", "return_tokens": "yes"},
     400, "invalid_request_error"),
    ("prompt-missing", "POST", "/v1/completions", {"max_tokens": 2}, 400,
     "invalid_request_error"),
    ("prompt-empty", "POST", "/v1/completions", {"prompt": ""}, 400, "invalid_request_error"),
    ("prompt-number", "POST", "/v1/completions", {"prompt": 5}, 400, "invalid_request_error"),
    ("prompt-two-strings", "POST", "/v1/completions", {"prompt": ["a", "b"]}, 400,
     "invalid_request_error"),
    ("prompt-beyond-context", "POST", "/v1/completions", {"prompt": LONG_PROMPT}, 400,
     "invalid_request_error"),
    ("messages-not-list", "POST", "/v1/chat/completions", {"messages": "hi"}, 400,
     "invalid_request_error"),
    ("messages-empty", "POST", "/v1/chat/completions", {"messages": []}, 400,
     "invalid_request_error"),
    ("messages-missing", "POST", "/v1/chat/completions", {"max_tokens": 2}, 400,
     "invalid_request_error"),
    ("role-unknown", "POST", "/v1/chat/completions",
     {"messages": [{"role": "wizard", "content": "hi"}]}, 400, "invalid_request_error"),
    ("content-number", "POST", "/v1/chat/completions",
     {"messages": [{"role": "user", "content": 5}]}, 400, "invalid_request_error"),
    ("chat-beyond-context", "POST", "/v1/chat/completions",
     {"messages": [{"role": "user", "content": LONG_PROMPT}]}, 400, "invalid_request_error"),
    ("unknown-route", "GET", "/v1/nothing", None, 404, "not_found_error"),
    ("unknown-route-post", "POST", "/v2/completions", {"prompt": "hi"}, 404, "not_found_error"),
    ("get-completions", "GET", "/v1/completions", None, 405, "invalid_request_error"),
    ("get-chat", "GET", "/v1/chat/completions", None, 405, "invalid_request_error"),
    ("post-health", "POST", "/health", {}, 405, "invalid_request_error"),
    ("post-models", "POST", "/v1/models", {}, 405, "invalid_request_error"),
    ("delete-metrics", "DELETE", "/metrics", None, 405, "invalid_request_error"),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "etype"),
                         [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_error(small: Server, method: str, path: str, body: Any, status: int,
               etype: str) -> None:
    check_error(small.request(method, path, body), status, etype)
    assert small.get("/health").status == 200


def test_body_too_large_is_413(small: Server) -> None:
    body = b'{"prompt": "' + b"a" * (8 * 1024 * 1024 + 1024) + b'"}'
    check_error(small.post("/v1/completions", body), 413, "invalid_request_error")
    assert small.get("/health").status == 200

    # without a Content-Length: chunked transfer encoding
    def pieces() -> Iterator[bytes]:
        for i in range(0, len(body), 1 << 20):
            yield body[i:i + (1 << 20)]

    conn = http.client.HTTPConnection("127.0.0.1", small.port, timeout=120)
    try:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            conn.request("POST", "/v1/completions", body=pieces(), encode_chunked=True,
                         headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        r = Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()
    check_error(r, 413, "invalid_request_error")
    assert small.get("/health").status == 200


def test_errors_leave_the_other_slot_alone(small: Server) -> None:
    """Every error above while the other slot streams: the stream's text is unchanged."""
    prompt = "Here is a recipe for pancakes:"
    want = complete(small, prompt, 40)["choices"][0]["text"]
    before = small.metrics()
    payloads: list[str] = []
    failure: list[BaseException] = []
    started = threading.Event()

    def stream() -> None:
        try:
            for p in small.stream("/v1/completions", {"prompt": prompt, "max_tokens": 40,
                                                      "temperature": 0, "stream": True}):
                payloads.append(p)
                started.set()
        except BaseException as e:
            failure.append(e)
            started.set()

    t = threading.Thread(target=stream, daemon=True)
    t.start()
    assert started.wait(60)
    done_during_stream = 0
    for _, method, path, body, status, etype in ERRORS:
        check_error(small.request(method, path, body), status, etype)
        done_during_stream += t.is_alive()
    t.join(120)
    assert not t.is_alive() and not failure, failure
    assert done_during_stream > len(ERRORS) // 2, "the stream ended before the errors were sent"
    assert payloads[-1] == "[DONE]"
    text = "".join(json.loads(p)["choices"][0]["text"] for p in payloads[:-1]
                   if json.loads(p).get("choices"))
    assert text == want
    r = small.get("/health")
    assert (r.status, r.json()) == (200, {"status": "ok"})
    after = small.metrics()
    assert after["ember_slots_busy"] == 0 and after["ember_queue_length"] == 0
    assert after["ember_requests_failed_total"] >= before["ember_requests_failed_total"]


def test_api_key(launcher: Launcher) -> None:
    q41 = _model(Q41)
    s = launcher.start("-m", q41, "-np", "1", "-c", "64", "--api-key", "sekret",
                       "--alias", "smol")
    body = {"prompt": "Hi", "max_tokens": 2, "temperature": 0}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "sekret"}):
        for method, path, b in (("GET", "/v1/models", None),
                                ("POST", "/v1/completions", body),
                                ("POST", "/v1/chat/completions",
                                 {"messages": [{"role": "user", "content": "Hi"}]})):
            err = check_error(s.request(method, path, b, headers=headers), 401,
                              "authentication_error")
            assert err["code"] == "invalid_api_key", (headers, path, err)
    ok = {"Authorization": "Bearer sekret"}
    r = s.get("/v1/models", headers=ok)
    assert r.status == 200 and r.json()["data"][0]["id"] == "smol", r.text()
    assert s.post("/v1/completions", body, headers=ok).status == 200
    # only /v1/* needs the key
    assert s.get("/health").status == 200
    assert s.get("/metrics").status == 200
    with pytest.raises(openai.AuthenticationError):
        client(s, "wrong").completions.create(model="x", prompt="Hi", max_tokens=2)
    r2 = client(s, "sekret").completions.create(model="x", prompt="Hi", max_tokens=2,
                                                temperature=0)
    assert r2.usage.completion_tokens <= 2
    s.kill()

    # $EMBER_API_KEY when --api-key is not given
    s = launcher.start("-m", q41, "-np", "1", "-c", "64", env={"EMBER_API_KEY": "from-env"})
    check_error(s.get("/v1/models"), 401, "authentication_error")
    assert s.get("/v1/models", headers={"Authorization": "Bearer from-env"}).status == 200


def test_metrics(small: Server) -> None:
    r = small.get("/metrics")
    assert r.status == 200
    assert r.headers.get("content-type", "").startswith("text/plain"), r.headers
    before = small.metrics()
    a = complete(small, "Hello there", 3)
    b = client(small).chat.completions.create(
        model="x", messages=[{"role": "user", "content": "Hi"}], max_tokens=3, temperature=0)
    after = small.metrics()
    for name in ("ember_requests_failed_total", "ember_prompt_tokens_total",
                 "ember_generated_tokens_total", "ember_prompt_tokens_per_second",
                 "ember_generation_tokens_per_second", "ember_draft_tokens_proposed_total",
                 "ember_draft_tokens_accepted_total", "ember_slots_busy", "ember_slots_total",
                 "ember_queue_length"):
        assert name in after, (name, sorted(after))
    comp = 'ember_requests_total{route="completions"}'
    chat = 'ember_requests_total{route="chat_completions"}'
    assert after[comp] - before.get(comp, 0) == 1, after
    assert after[chat] - before.get(chat, 0) == 1, after
    assert after["ember_prompt_tokens_total"] - before["ember_prompt_tokens_total"] == (
        a["usage"]["prompt_tokens"] + b.usage.prompt_tokens)
    assert after["ember_generated_tokens_total"] - before["ember_generated_tokens_total"] == (
        a["usage"]["completion_tokens"] + b.usage.completion_tokens)
    assert after["ember_slots_total"] == 2 and after["ember_slots_busy"] == 0
    assert after["ember_queue_length"] == 0
    assert after["ember_prompt_tokens_per_second"] > 0
    assert after["ember_generation_tokens_per_second"] > 0
    assert after["ember_draft_tokens_proposed_total"] == 0  # no draft


# ------------------------------------------------------------------------------------------
# greedy equivalence: ember-cli, the server, the server with a draft


@slow
@pytest.mark.parametrize("prompt", [*PROMPTS, EOG_PROMPT])
def test_greedy_equals_cli(f16_server: Server, ember_build: EmberBuild,
                           no_draft_tokens: NoDraftTokens, prompt: str) -> None:
    cli = _cli_greedy(ember_build, _model(F16), prompt, 64)
    doc = complete(f16_server, prompt, 64)
    ch = doc["choices"][0]
    assert doc["usage"]["prompt_tokens"] == len(cli["prompt_ids"])
    _same_tokens_up_to_eog(ch["tokens"], cli)
    assert ch["text"] == cli["text"]
    assert ch["finish_reason"] == ("stop" if cli["stopped_at_eog"] else "length")
    if prompt in PROMPTS:
        assert not cli["stopped_at_eog"], "PROMPTS must not end at an end-of-generation token"
        no_draft_tokens.memo[prompt] = ch["tokens"]


@slow
def test_greedy_with_draft_equals_without(launcher: Launcher,
                                          no_draft_tokens: NoDraftTokens) -> None:
    draft = _model(Q41)
    s = launcher.start("-m", _model(F16), "-md", draft, "-np", "2", "-c", "256")
    assert s.listen is not None and s.listen["draft"].endswith(draft.name), s.listen.group(0)
    want = {p: no_draft_tokens(p) for p in PROMPTS}
    before = s.metrics()
    proposed = accepted = 0
    # three requests at once on two slots: drafting in a batch of sequences too
    with concurrent.futures.ThreadPoolExecutor(len(PROMPTS)) as pool:
        docs = list(pool.map(lambda p: complete(s, p, 64), PROMPTS, timeout=300))
    for prompt, doc in zip(PROMPTS, docs, strict=True):
        assert doc["choices"][0]["tokens"] == want[prompt], prompt
        t = doc["timings"]
        assert 0 <= t["draft_n_accepted"] <= t["draft_n"], t
        assert t["predicted_n"] == doc["usage"]["completion_tokens"] == 64, t
        proposed += t["draft_n"]
        accepted += t["draft_n_accepted"]
    after = s.metrics()
    prop_name, acc_name = "ember_draft_tokens_proposed_total", "ember_draft_tokens_accepted_total"
    m_prop = after[prop_name] - before[prop_name]
    m_acc = after[acc_name] - before[acc_name]
    assert m_prop > 0 and m_acc > 0, after
    assert m_acc <= m_prop
    assert (m_prop, m_acc) == (proposed, accepted), "metrics and timings disagree"

    # streamed through the draft: the same text
    want = complete(s, PROMPTS[0], 16)["choices"][0]["text"]
    payloads = list(s.stream("/v1/completions", {"prompt": PROMPTS[0], "max_tokens": 16,
                                                 "temperature": 0, "stream": True}))
    text = "".join(json.loads(p)["choices"][0]["text"] for p in payloads[:-1]
                   if json.loads(p).get("choices"))
    assert text == want


@slow
@pytest.mark.parametrize("max_tokens", [11, 12], ids=["ends-on-a-character", "ends-inside-one"])
def test_stream_pieces_are_whole_utf8(f16_server: Server, max_tokens: int) -> None:
    """Emoji are several tokens each (F0 9F .. ..): no piece ends inside one, and the body is
    valid UTF-8 even when max_tokens cuts a character (12: in the middle of the fifth)."""
    prompt = "Emoji list: \U0001F600 \U0001F603 \U0001F604"
    want = complete(f16_server, prompt, max_tokens)["choices"][0]["text"]  # strict UTF-8
    assert "\U0001F469" in want, want  # the greedy answer has a few, made of 3 tokens each
    # sse_payloads decodes every line strictly: a piece ending inside a character fails
    payloads = list(f16_server.stream("/v1/completions", {
        "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True}))
    pieces = [json.loads(p)["choices"][0]["text"] for p in payloads[:-1]
              if json.loads(p).get("choices")]
    assert "".join(pieces) == want, pieces


# ------------------------------------------------------------------------------------------
# parallel slots

LOAD_PROMPTS = [
    "The best way to learn a language is",
    "import os\nimport sys\n",
    "My favourite food is",
    "The weather today is",
    "In 1969, astronauts",
    "A haiku about autumn:",
    "SELECT name FROM",
    "The square root of 16 is",
]


@slow
def test_parallel_load(f16_server: Server) -> None:
    """4 then 16 concurrent clients, 64 requests in all, on 4 slots: every answer is the
    single-client answer, token for token, and the slot counters add up."""
    max_tokens = 12
    single = {p: complete(f16_server, p, max_tokens) for p in LOAD_PROMPTS}
    before = f16_server.metrics()
    assert before["ember_slots_total"] == 4

    busy: list[float] = []
    queued: list[float] = []
    stop_sampling = threading.Event()

    def sample() -> None:
        while not stop_sampling.is_set():
            m = f16_server.metrics()
            busy.append(m["ember_slots_busy"])
            queued.append(m["ember_queue_length"])
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    results: list[tuple[str, Any]] = []
    try:
        for clients in (4, 16):
            jobs = [LOAD_PROMPTS[i % len(LOAD_PROMPTS)] for i in range(32)]
            with concurrent.futures.ThreadPoolExecutor(clients) as pool:
                futs = [(p, pool.submit(complete, f16_server, p, max_tokens)) for p in jobs]
                for p, fut in futs:
                    results.append((p, fut.result(timeout=300)))
    finally:
        stop_sampling.set()
        sampler.join(10)

    assert len(results) == 64
    mismatches = []
    for p, doc in results:
        got, want = doc["choices"][0]["tokens"], single[p]["choices"][0]["tokens"]
        if got != want:
            at = next((i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b),
                      min(len(got), len(want)))
            mismatches.append(f"{p!r}: first difference at token {at}: {got} != {want}")
    assert not mismatches, "batched greedy answers differ from single-client ones:\n" + \
        "\n".join(mismatches)

    after = f16_server.metrics()
    route = 'ember_requests_total{route="completions"}'
    assert after[route] - before[route] == 64
    assert after["ember_generated_tokens_total"] - before["ember_generated_tokens_total"] == sum(
        d["usage"]["completion_tokens"] for _, d in results)
    assert after["ember_prompt_tokens_total"] - before["ember_prompt_tokens_total"] == sum(
        d["usage"]["prompt_tokens"] for _, d in results)
    assert after["ember_requests_failed_total"] == before["ember_requests_failed_total"]
    assert after["ember_slots_busy"] == 0 and after["ember_queue_length"] == 0
    assert busy and max(busy) <= 4 and min(busy) >= 0, busy
    assert max(busy) >= 2, f"never more than one slot busy under 16 clients: {busy}"
    assert max(queued) <= 64


# ------------------------------------------------------------------------------------------
# a client that goes away


def test_disconnect_frees_the_slot(launcher: Launcher) -> None:
    s = launcher.start("-m", _model(Q41), "-np", "1", "-c", "1024")
    sock = open_raw_stream(s, {"prompt": "Once upon a time", "max_tokens": 900,
                               "temperature": 0}, chunks=3)
    assert s.metrics()["ember_slots_busy"] == 1
    generated = s.metrics()["ember_generated_tokens_total"]
    drop(sock)
    t0 = time.monotonic()
    freed = wait_until(lambda: s.metrics()["ember_slots_busy"] == 0, timeout=5)
    assert freed, f"slot still busy {time.monotonic() - t0:.1f} s after the client went away"
    m = s.metrics()
    # dropped, not run on to its 900 tokens
    assert m["ember_generated_tokens_total"] - generated < 200, m
    r = s.post("/v1/completions", {"prompt": "Hello", "max_tokens": 4, "temperature": 0},
               timeout=30)
    assert r.status == 200, r.text()
    assert r.json()["usage"]["completion_tokens"] == 4


def test_queue_full_is_503(launcher: Launcher) -> None:
    """--max-queue 1 on one slot: one request runs, one waits, the next is answered 503."""
    s = launcher.start("-m", _model(Q41), "-np", "1", "--max-queue", "1", "-c", "1024")
    running = open_raw_stream(s, {"prompt": "Once upon a time", "max_tokens": 900,
                                  "temperature": 0})
    waiting: list[Any] = []
    body = {"prompt": "Hello", "max_tokens": 3, "temperature": 0}
    t = threading.Thread(target=lambda: waiting.append(s.post("/v1/completions", body)),
                         daemon=True)
    t.start()
    try:
        assert wait_until(lambda: s.metrics()["ember_queue_length"] == 1, timeout=10), \
            s.metrics()
        check_error(s.post("/v1/completions", body), 503, "server_error")
        check_error(s.post("/v1/chat/completions",
                           {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3}),
                    503, "server_error")
        assert s.get("/health").status == 200
    finally:
        drop(running)
    t.join(60)
    assert waiting and waiting[0].status == 200, waiting and waiting[0].text()
    assert waiting[0].json()["usage"]["completion_tokens"] == 3
