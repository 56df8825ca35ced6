"""Truncated, corrupt and hostile GGUF files make ember-cli fail cleanly.

From a small valid model (its vocabulary copied from the committed tiny model, so the
header has every kind of field), the tests derive hundreds of broken files: the file cut at
every header field boundary and inside the data section; each count, string length, array
length, dimension, type and data offset overwritten with huge or invalid values; the magic
and version broken. For each, ember-cli must exit with a non-zero status (not a signal) and an
error message on stderr, or succeed when the change happens to leave a valid model; never
crash. The same files run under an AddressSanitizer + UBSan build in the integration suite.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import TINY, EmberBuild
from gguf_layout import Field, fields, patch
from micro_gguf import write_micro_model

EXIT_LOAD = 2
HUGE = (2**64 - 1, 2**63, 2**63 - 1, 2**40 + 3, 2**32 + 1)
HOSTILE = {
    "magic": (int.from_bytes(b"GGUX", "little"), 0),
    "version": (0, 1, 4, 0x03000000, 2**32 - 1),
    "count": HUGE,
    "arrcount": HUGE,
    "strlen": (*HUGE, 2**16),
    "dim": (*HUGE, 0, 3),
    "type": (13, 9, 2**32 - 1, 8),
    "ttype": (4, 5, 41, 2**32 - 1, 14),
    "ndims": (0, 5, 2**32 - 1),
    "toffset": (*HUGE, 1, 2**20),
    "value": (2**64 - 1, 0),
}


@dataclass(frozen=True)
class Case:
    name: str
    data: bytes
    must_fail: bool


@pytest.fixture(scope="module")
def base_model(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("micro") / "micro.gguf"
    write_micro_model(
        path, vocab_from=TINY / "tiny-gpt2-f32.gguf", n_embd=16, n_ff=32, n_head=2, n_head_kv=1
    )
    return path.read_bytes()


def corrupt_cases(data: bytes) -> Iterator[Case]:
    flds, header_end = fields(data)
    for f in flds:
        yield Case(f"truncate at {f.what} (offset {f.offset})", data[: f.offset], True)
        if f.width > 1:
            yield Case(f"truncate inside {f.what}", data[: f.offset + f.width // 2], True)
        for value in HOSTILE[f.kind]:
            # a new value in a plain metadata value or a dimension may still be a valid file
            must_fail = f.kind not in ("value", "type", "dim", "strlen", "ttype") or (
                value >= 2**32 and f.kind != "value"
            )
            if f.kind == "type" and value in (13, 2**32 - 1):
                must_fail = True
            yield Case(f"{f.what} = {value:#x}", patch(data, f, value), must_fail)
    yield Case("empty file", b"", True)
    yield Case("truncate at end of tensor infos", data[:header_end], True)
    for frac in (0.25, 0.5, 0.9):
        cut = header_end + int((len(data) - header_end) * frac)
        yield Case(f"truncate in data section at {cut}", data[:cut], True)
    yield Case("last byte missing", data[:-1], True)
    yield Case("garbage appended", data + b"\xff" * 100, False)


def _check(build: EmberBuild, path: Path, case: Case) -> str | None:
    """None when ember-cli behaved; else a description of what went wrong."""
    try:
        r = subprocess.run(
            [str(build.cli), "-m", str(path), "-p", "Hello", "-n", "2", "-t", "1"],
            capture_output=True,
            timeout=120,
            env=build.env(),
        )
    except subprocess.TimeoutExpired:
        return f"{case.name}: timed out"
    err = r.stderr.decode(errors="replace")
    if r.returncode < 0:
        return f"{case.name}: killed by signal {-r.returncode}\n{err[-2000:]}"
    if "Sanitizer" in err or "runtime error" in err:
        return f"{case.name}: sanitizer report\n{err[-3000:]}"
    if r.returncode == 0:
        return f"{case.name}: accepted a file that must be rejected" if case.must_fail else None
    if r.returncode != EXIT_LOAD:
        return f"{case.name}: exit status {r.returncode}, expected {EXIT_LOAD}\n{err[-1000:]}"
    if "error:" not in err or len(err.strip()) < 20:
        return f"{case.name}: no clear error message: {err!r}"
    return None


def _run_all(build: EmberBuild, base: bytes, tmp: Path) -> list[str]:
    cases = list(corrupt_cases(base))
    assert len(cases) > 200
    paths = []
    for i, c in enumerate(cases):
        p = tmp / f"case{i:04d}.gguf"
        p.write_bytes(c.data)
        paths.append(p)
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(
            pool.map(lambda pc: _check(build, pc[0], pc[1]), zip(paths, cases, strict=True))
        )
    return [r for r in results if r]


def test_base_model_loads(ember_build: EmberBuild, base_model: bytes, tmp_path: Path) -> None:
    p = tmp_path / "ok.gguf"
    p.write_bytes(base_model)
    r = subprocess.run(
        [str(ember_build.cli), "-m", str(p), "-p", "Hello", "-n", "2"], capture_output=True
    )
    assert r.returncode == 0, r.stderr.decode()


def test_corrupt_files_fail_cleanly(
    ember_build: EmberBuild, base_model: bytes, tmp_path: Path
) -> None:
    problems = _run_all(ember_build, base_model, tmp_path)
    assert not problems, f"{len(problems)} bad outcomes:\n" + "\n".join(problems[:20])


def test_error_names_the_tensor_and_range(
    ember_build: EmberBuild, base_model: bytes, tmp_path: Path
) -> None:
    flds, _ = fields(base_model)
    off = next(f for f in flds if f.kind == "toffset" and "attn_q" in f.what)
    p = tmp_path / "bad.gguf"
    p.write_bytes(patch(base_model, off, 2**20))
    r = subprocess.run([str(ember_build.cli), "-m", str(p), "-p", "Hello"], capture_output=True)
    err = r.stderr.decode()
    assert r.returncode == EXIT_LOAD
    assert "tensor 'blk.0.attn_q.weight': data range [" in err and "exceeds file size" in err, err


def test_truncated_file_names_the_field(
    ember_build: EmberBuild, base_model: bytes, tmp_path: Path
) -> None:
    p = tmp_path / "short.gguf"
    p.write_bytes(base_model[:30])
    r = subprocess.run([str(ember_build.cli), "-m", str(p), "-p", "Hello"], capture_output=True)
    assert r.returncode == EXIT_LOAD
    assert "truncated" in r.stderr.decode(), r.stderr.decode()


@pytest.mark.integration
def test_corrupt_files_fail_cleanly_under_asan(
    ember_asan_build: EmberBuild, base_model: bytes, tmp_path: Path
) -> None:
    problems = _run_all(ember_asan_build, base_model, tmp_path)
    assert not problems, f"{len(problems)} bad outcomes:\n" + "\n".join(problems[:20])


def _field_kinds() -> list[str]:
    return sorted(HOSTILE)


@pytest.mark.parametrize("kind", _field_kinds())
def test_every_field_kind_is_exercised(base_model: bytes, kind: str) -> None:
    flds: list[Field] = fields(base_model)[0]
    assert any(f.kind == kind for f in flds), f"the base model has no {kind} field"
