"""The parts of bench/bench_server.py that need no server binary: the figures, the command
lines of both sides, the ratio table, and the three measurements against a fake
OpenAI-compatible server answered from a thread of this process (unit tests start no
programs)."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_server.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_server", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_server"] = module
    spec.loader.exec_module(module)
    return module


bench = _load()


def test_percentile_interpolates_between_ranks() -> None:
    values = [float(v) for v in range(1, 101)]
    assert bench.percentile(values, 50) == pytest.approx(50.5)
    assert bench.percentile(values, 99) == pytest.approx(99.01)
    assert bench.percentile([3.0], 99) == 3.0 and bench.percentile([], 50) == 0.0


def test_both_sides_get_the_same_settings() -> None:
    cfg = bench.Config(model=Path("/m/t.gguf"), threads=2, ctx=1024, parallel=4,
                       draft=Path("/m/d.gguf"), draft_max=8)
    ember = bench.server_argv("ember", "ember-server", cfg)
    llama = bench.server_argv("llama", "llama-server", cfg)
    assert ember == ["ember-server", "-m", "/m/t.gguf", "--host", "127.0.0.1", "--port", "0",
                     "-t", "2", "-c", "1024", "--parallel", "4", "-md", "/m/d.gguf",
                     "--draft-max", "8"]
    # llama-server splits -c between its slots; the draft through draft-simple
    assert llama == ["llama-server", "-m", "/m/t.gguf", "--host", "127.0.0.1", "--port", "0",
                     "-t", "2", "-tb", "2", "-c", "4096", "--parallel", "4", "--cache-ram", "0",
                     "-md", "/m/d.gguf", "--spec-type", "draft-simple", "--spec-draft-n-max",
                     "8"]
    plain = bench.Config(model=Path("/m/t.gguf"), threads=1, ctx=512)
    assert "-md" not in bench.server_argv("ember", "e", plain)


def test_the_listening_line_of_both_servers() -> None:
    ember = "ember-server: listening on http://127.0.0.1:41234 (4 slots, draft: none, ...)"
    llama = "main: listening on http://127.0.0.1:39999"
    assert bench.LISTENING_RE.search(ember).group(1) == "http://127.0.0.1:41234"
    assert bench.LISTENING_RE.search(llama).group(1) == "http://127.0.0.1:39999"
    assert bench.LISTENING_RE.search("listening on http://0.0.0.0:8080") is None


def test_ratios_are_oriented_so_that_above_1_is_ember_ahead() -> None:
    results = {
        "single": {"ember": {"tok_s": 30.0}, "llama": {"tok_s": 20.0}},
        "concurrency": [{"clients": 4, "ember": {"tok_s": 80.0, "p50_s": 1.0, "p99_s": 2.0},
                         "llama": {"tok_s": 100.0, "p50_s": 2.0, "p99_s": 2.0}}],
        "memory": {"requests": 1000, "checkpoint": 100,
                   "ember": {"rss_checkpoint_mib": 100.0, "rss_end_mib": 110.0,
                             "growth": 1.1},
                   "llama": {"rss_checkpoint_mib": 200.0, "rss_end_mib": 200.0,
                             "growth": 1.0}},
    }
    rows = {r[0]: r for r in bench.ratio_rows(results)}
    assert rows["tok/s, 1 client"][3] == "1.50"
    assert rows["tok/s total, 4 clients"][3] == "0.80"
    assert rows["p50 latency s, 4 clients"][3] == "2.00"
    assert rows["RSS 1000/100"][1:] == ("1.100", "1.000", "0.91")
    only_llama = bench.ratio_rows({"single": {"llama": {"tok_s": 20.0}}})
    assert only_llama == [("tok/s, 1 client", "-", "20.0", "-")]
    assert "| tok/s, 1 client | - | 20.0 | - |" in bench.table(only_llama)


def test_options_are_checked(tmp_path: Path) -> None:
    assert bench.parse_sides("llama") == ["llama"]
    for bad in ("", "ember,ember", "peer"):
        with pytest.raises(ValueError):
            bench.parse_sides(bad)
    assert bench.resolve_model("q4_1", tmp_path) == tmp_path / "smollm2-135m-q4_1.gguf"
    assert bench.resolve_model("/x/y.gguf", tmp_path) == Path("/x/y.gguf")
    assert bench.main(["--sides", "ember", "--ember-server", str(tmp_path / "no")]) == 2
    assert bench.main(["--sides", "both"]) == 2
    assert bench.main(["--mem-checkpoint", "5", "--mem-requests", "5"]) == 2


class _Fake(BaseHTTPRequestHandler):
    seen: ClassVar[list[dict[str, Any]]] = []

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Fake.seen.append(body)
        n = int(body["max_tokens"])
        data = json.dumps({"choices": [{"text": "x", "finish_reason": "length"}],
                           "usage": {"completion_tokens": n},
                           "timings": {"predicted_n": n, "predicted_ms": 10.0 * n,
                                       "draft_n": 10, "draft_n_accepted": 7}}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def fake_server() -> Iterator[str]:
    _Fake.seen = []
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Fake)
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def test_the_measurements_against_a_fake_server(fake_server: str) -> None:
    single = bench.measure_single(fake_server, 32, os.getpid())
    assert single["tokens"] == 32 and single["server_tok_s"] == pytest.approx(100.0)
    assert single["acceptance"] == pytest.approx(0.7)
    first = _Fake.seen[-1]
    assert first["temperature"] == 0 and first["ignore_eos"] is True
    assert first["cache_prompt"] is False and first["max_tokens"] == 32
    conc = bench.measure_concurrency(fake_server, 4, 12, 5, os.getpid())
    assert conc["tokens"] == 60 and conc["p99_s"] >= conc["p50_s"] > 0
    prompts = [b["prompt"] for b in _Fake.seen[-12:]]
    assert len(set(prompts)) == 12  # every request a prompt of its own
    mem = bench.measure_memory(fake_server, 6, 2, 1, os.getpid())
    assert mem["rss_end_mib"] > 0 and mem["rss_checkpoint_mib"] > 0 and mem["growth"] > 0


def test_uneven_work_is_noted() -> None:
    same = {"single": {"ember": {"tokens": 256.0}, "llama": {"tokens": 256.0}}}
    assert bench.uneven_work(same) == []
    short = {"single": {"ember": {"tokens": 120.0}, "llama": {"tokens": 256.0}},
             "concurrency": [{"clients": 4, "ember": {"tokens": 4096.0},
                              "llama": {"tokens": 4096.0}}]}
    assert bench.uneven_work(short) == ["single: ember-server generated 120 tokens, "
                                        "llama-server 256"]
