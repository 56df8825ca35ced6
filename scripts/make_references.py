#!/usr/bin/env python3
"""Produce the llama.cpp reference outputs that ember's runtime tests compare against.

For every model file (the SmolLM2-135M variants in the model cache and every tiny model under
``tests/runtime/data/tiny``) and every prompt in ``PROMPTS`` this runs llama.cpp through
llama-cpp-python's low-level ``llama_cpp`` API, the way llama.cpp's own CLI does:

* ``prompt_ids``: ``llama_tokenize(add_special=True, parse_special=True)``; add_special lets
  the model's own metadata decide on BOS/EOS, parse_special turns ``<|im_start|>`` into
  its control token;
* ``generated_ids``: 48 greedy steps, the prompt decoded as ONE batch and then one token per
  ``llama_decode``, argmax of ``llama_get_logits_ith(ctx, -1)`` (lowest id wins a tie),
  never stopping at end-of-generation tokens, so every run has the same length;
* the first step's logits: top-40 (id, logit), mean and standard deviation of the full vector,
  and for the tiny models the full vector;
* ``step_margins``: top-1 minus top-2 logit at every step, so a test can tell a real mismatch
  from a near-tie that any change in summation order could flip.

It writes ``tests/runtime/data/references/<model stem>.json``. Each prompt is generated twice
in the same context (memory cleared between) and must give identical ids and bit-identical
logits; with ``--determinism`` it also compares, for a few models, 1 vs 2 threads, mmap vs
plain reads and repacked vs plain weights (``use_extra_bufts``), and writes
``tests/runtime/data/determinism.json``.

``--no-repack`` makes the same files with ``use_extra_bufts=false`` (plain ggml kernels, no
Q4_0/Q4_K repacking) under ``references/no_repack/`` for the models where that changes the
numbers: a runtime that implements ggml's plain vec_dot kernels but not the repacked layouts
is tested against those.

Usage::

    python scripts/make_references.py [--cache DIR] [--only STEM ...] [--determinism]
    python scripts/make_references.py --no-repack
"""

from __future__ import annotations

import argparse
import ctypes
import json
import platform
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parent))
import models  # sibling script: cache location, hashes, atomic writes

REF_DIR = models.REPO_ROOT / "tests" / "runtime" / "data" / "references"
TINY_DIR = models.REPO_ROOT / "tests" / "runtime" / "data" / "tiny"
DETERMINISM_JSON = models.REPO_ROOT / "tests" / "runtime" / "data" / "determinism.json"

# The sdist of llama-cpp-python carries no .git, so its build-info says commit "unknown" and
# build number 0; the commit comes from the sdist's CHANGELOG ("update llama.cpp to
# ggml-org/llama.cpp@0c1e57098") and the versions from vendor/llama.cpp's CMakeLists.
PEER = {
    "package": "llama-cpp-python",
    "version": "0.3.36",
    "llama_cpp_commit": "ggml-org/llama.cpp@0c1e57098",
    "llama_cpp_version": "0.5.0-dev",
    "llama_cpp_build_number": None,
    "ggml_version": "0.25.3",
    "build": (
        "CMAKE_ARGS='-DGGML_NATIVE=ON \"-DCMAKE_C_FLAGS=-mno-amx-tile -mno-amx-int8 "
        '-mno-amx-bf16" "-DCMAKE_CXX_FLAGS=-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"\' '
        "pip wheel --no-deps llama-cpp-python==0.3.36 (from the sdist; gcc 12.2, "
        "-march=native, OpenMP)"
    ),
    "build_note": (
        "AMX is compiled out: on the Sapphire-Rapids-class build host the AMX extra "
        "buffer type of this llama.cpp segfaults in ggml_backend_amx_mul_mat "
        "(ldtilecfg on an OpenMP worker thread; upstream llama.cpp issue #20824, "
        "PR #26954), and AMX kernels exist on few machines anyway."
    ),
}

# What the CPU backend of this llama.cpp does with each weight type on x86-64 with AVX2/AVX512
# (read from ggml-cpu/repack.cpp and llamafile/sgemm.cpp; the load log in "kernels" confirms
# which tensors were repacked). It decides the rounding an exact runtime has to reproduce.
KERNELS_NOTE = (
    "CPU_REPACK (use_extra_bufts): Q4_0 -> q4_0_8x8 and Q4_K -> q4_K_8x8 (rows % 8 == 0), "
    "used for every matmul with those weights (gemv for 1 token, gemm for batches). "
    "llamafile sgemm (LLAMAFILE=1) only when the batch has >= 2 tokens (the prompt) and the "
    "weight is F32, F16, BF16, Q8_0, Q4_0 (if not repacked), Q5_0 or IQ4_NL; otherwise, and "
    "for every single-token decode, ggml's vec_dot kernels with the activations quantized to "
    "the weight type's vec_dot_type (Q8_0, Q8_1 or Q8_K; F16/BF16 for half types)."
)

REGENERATE = (
    "python scripts/models.py fetch && python scripts/models.py quantize && "
    "python scripts/make_tiny_model.py && python scripts/make_references.py"
)

N_PREDICT = 48

# Models with tensors this llama.cpp repacks on x86-64 (Q4_0 -> q4_0_8x8, Q4_K -> q4_K_8x8):
# the only ones whose numbers change with use_extra_bufts, hence the --no-repack set.
REPACKED_STEMS = (
    "smollm2-135m-q4_0",
    "smollm2-135m-q4_k_m",
    "tiny-gpt2-q4_0",
    "tiny-gpt2-q4_k_m",
    "tiny-spm-q4_0",
    "tiny-spm-q4_k_m",
)
TOP_K = 40

# Each prompt stresses one part of the tokenizer or the model; keep names stable, tests key
# on them.
PROMPTS: dict[str, str] = {
    "english": "The quick brown fox jumps over the lazy dog.",
    "code": (
        "def fibonacci(n: int) -> int:\n"
        '    """Return the n-th Fibonacci number."""\n'
        "    a, b = 0, 1\n"
        "    for _ in range(n):\n"
        "        a, b = b, a + b\n"
        "    return a\n"
    ),
    "unicode": (
        "Grüße aus Köln! Ça va? 日本語のテキストと中文句子。Emoji: 🚀🔥👍🏽 naïve café — “quoted” …"
    ),
    "digits": (
        "Call 555-0123 or 1234567890; pi is 3.14159265358979 and the year 2025 "
        "had 365 days, 8760 hours and 1,000,000 visitors."
    ),
    "chat": (
        "<|im_start|>system\nYou are a helpful AI assistant.<|im_end|>\n"
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
        "<|im_start|>assistant\n"
    ),
    "whitespace": (
        "  two leading spaces\n\n\ttab\tseparated\tvalues\n    indented   runs   \n\n\nend "
    ),
    "punctuation": (
        "Wait... what?! (Yes; no.) [a/b] {c: d} <e> @f #g $h %i ^j &k *l ~m "
        "`n` 'o' \"p\" -- q_r+s=t|u\\v"
    ),
    "mixed_case": (
        "HTTPServer parses camelCase, PascalCase, snake_case and SCREAMING_CASE; "
        "McDonald's iPhone XML-RPC eBay."
    ),
    "paragraph": (
        "Once upon a time, in a small village by the sea, there lived an old fisherman who "
        "went out every morning before sunrise. He knew the winds and the tides better than "
        "anyone, and the younger fishermen often asked him where the fish would be. One day a "
        "storm came without warning, and he had to decide whether to turn back or to wait it "
        "out behind the rocks. He chose to wait, and when the sky cleared"
    ),
}
# The SentencePiece tiny model has no ChatML tokens: the chat prompt would only test byte
# fallback on "<|im_start|>", which "unicode" and "punctuation" already cover.
SPM_SKIP = frozenset({"chat"})

GGML_TYPE_NAMES = {0: "f32", 1: "f16", 8: "q8_0", 30: "bf16"}
FLASH_ATTN_NAMES = {-1: "auto", 0: "disabled", 1: "enabled"}
VOCAB_TYPE_NAMES = {1: "spm", 2: "bpe"}
GGML_LOG_DEBUG = 4


@dataclass(frozen=True)
class Settings:
    """Everything that could change llama.cpp's numbers; recorded in every JSON."""

    n_ctx: int = 512
    n_batch: int = 512
    n_ubatch: int = 512
    n_threads: int = 2
    n_threads_batch: int = 2
    flash_attn: str = "disabled"
    type_k: str = "f16"
    type_v: str = "f16"
    load_mode: str = "mmap"
    lazy_mode: str = "off"
    use_extra_bufts: bool = True
    n_gpu_layers: int = 0
    n_predict: int = N_PREDICT
    add_special: bool = True
    parse_special: bool = True
    sampling: str = "greedy: argmax of llama_get_logits_ith(ctx, -1), lowest id on ties, no RNG"
    prompt_decode: str = "whole prompt in one llama_decode, logits for its last token only"
    stop_at_eog: bool = False


FloatArray = npt.NDArray[np.float32]


class LogCapture:
    """Route llama.cpp/ggml logging (all levels, debug included) into a list.

    The repack and AMX loaders only report which tensors they converted at debug level, and
    that decides which kernels, hence which rounding, the references come from.
    """

    def __init__(self) -> None:
        import llama_cpp

        self.lines: list[str] = []
        self._partial = ""

        @llama_cpp.llama_log_callback  # type: ignore[untyped-decorator]
        def callback(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
            del level, user_data
            self._partial += text.decode("utf-8", errors="replace")
            *done, self._partial = self._partial.split("\n")
            self.lines.extend(done)

        self._callback = callback  # keep the ctypes thunk alive
        llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))

    @contextmanager
    def capture(self) -> Iterator[list[str]]:
        """Collect the lines logged inside the block."""
        start = len(self.lines)
        out: list[str] = []
        try:
            yield out
        finally:
            out.extend(self.lines[start:])
            del self.lines[start:]


def kernel_summary(lines: list[str]) -> dict[str, Any]:
    """Condense the load log into what matters for numerics: which buffers and repacks."""
    keys = ("model buffer size", "KV buffer size", "compute buffer size")
    buffers = [ln.split(":", 1)[1].strip() for ln in lines if any(k in ln for k in keys)]
    repacks: Counter[str] = Counter()
    for ln in lines:
        if "repack tensor" in ln:
            repacks[ln.rsplit(" ", 1)[-1].strip()] += 1
    return {"buffers": buffers, "repacked_tensors": dict(sorted(repacks.items()))}


class Peer:
    """One loaded model and context in llama.cpp."""

    def __init__(self, path: Path, settings: Settings, logs: LogCapture) -> None:
        import llama_cpp

        self.lib = llama_cpp
        self.settings = settings
        mparams = llama_cpp.llama_model_default_params()
        mparams.n_gpu_layers = settings.n_gpu_layers
        mparams.load_mode = {
            "mmap": llama_cpp.LLAMA_LOAD_MODE_MMAP,
            "none": llama_cpp.LLAMA_LOAD_MODE_NONE,
        }[settings.load_mode]
        mparams.lazy_mode = llama_cpp.LLAMA_LAZY_MODE_OFF
        mparams.use_extra_bufts = settings.use_extra_bufts
        with logs.capture() as load_log:
            self.model = llama_cpp.llama_model_load_from_file(str(path).encode(), mparams)
            if not self.model:
                raise RuntimeError(f"llama.cpp could not load {path.name}")
            cparams = llama_cpp.llama_context_default_params()
            cparams.n_ctx = settings.n_ctx
            cparams.n_batch = settings.n_batch
            cparams.n_ubatch = settings.n_ubatch
            cparams.n_threads = settings.n_threads
            cparams.n_threads_batch = settings.n_threads_batch
            cparams.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
            cparams.no_perf = True
            if (
                GGML_TYPE_NAMES[cparams.type_k] != settings.type_k
                or GGML_TYPE_NAMES[cparams.type_v] != settings.type_v
            ):
                raise RuntimeError("llama.cpp's default KV cache type is no longer F16")
            self.ctx = llama_cpp.llama_init_from_model(self.model, cparams)
            if not self.ctx:
                raise RuntimeError(f"llama.cpp could not create a context for {path.name}")
        self.load_log = load_log
        self.vocab = llama_cpp.llama_model_get_vocab(self.model)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self.vocab)

    def close(self) -> None:
        """Free the context and model (a long run loads 33 models)."""
        self.lib.llama_free(self.ctx)
        self.lib.llama_model_free(self.model)

    def meta(self, key: str) -> str | None:
        """One GGUF metadata value as a string, or None."""
        buf = ctypes.create_string_buffer(4096)
        n = self.lib.llama_model_meta_val_str(self.model, key.encode(), buf, len(buf))
        return buf.value.decode() if n >= 0 else None

    def tokenize(self, text: str) -> list[int]:
        """Tokenize like llama.cpp's CLI (common_tokenize)."""
        raw = text.encode("utf-8")
        cap = len(raw) + 16
        arr = (self.lib.llama_token * cap)()
        n = self.lib.llama_tokenize(
            self.vocab,
            raw,
            len(raw),
            arr,
            cap,
            self.settings.add_special,
            self.settings.parse_special,
        )
        if n < 0:
            raise RuntimeError(f"tokenize needs {-n} slots")
        return list(arr[:n])

    def piece(self, token: int) -> bytes:
        """The bytes one token stands for, special tokens rendered."""
        buf = ctypes.create_string_buffer(256)
        n = self.lib.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, True)
        if n < 0:
            raise RuntimeError(f"piece of {token} needs {-n} bytes")
        return buf.raw[:n]

    def detokenize(self, ids: list[int]) -> bytes:
        """llama_detokenize(remove_special=False, unparse_special=True)."""
        arr = (self.lib.llama_token * max(1, len(ids)))(*ids)
        cap = 64 + 32 * len(ids)
        buf = ctypes.create_string_buffer(cap)
        n = self.lib.llama_detokenize(self.vocab, arr, len(ids), buf, cap, False, True)
        if n < 0:
            raise RuntimeError(f"detokenize needs {-n} bytes")
        return buf.raw[:n]

    def _decode(self, ids: list[int]) -> FloatArray:
        arr = (self.lib.llama_token * len(ids))(*ids)
        batch = self.lib.llama_batch_get_one(arr, len(ids))
        rc = self.lib.llama_decode(self.ctx, batch)
        if rc != 0:
            raise RuntimeError(f"llama_decode returned {rc}")
        ptr = self.lib.llama_get_logits_ith(self.ctx, -1)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).astype(np.float32, copy=True)

    def generate(self, prompt: list[int], n: int) -> tuple[list[int], FloatArray, list[float]]:
        """Greedy decode n tokens from an empty KV cache; return ids, first logits, margins."""
        self.lib.llama_memory_clear(self.lib.llama_get_memory(self.ctx), True)
        logits = self._decode(prompt)
        first = logits
        out: list[int] = []
        margins: list[float] = []
        for step in range(n):
            top2 = np.argsort(-logits, kind="stable")[:2]
            token = int(top2[0])
            margins.append(float(logits[top2[0]]) - float(logits[top2[1]]))
            out.append(token)
            if step + 1 < n:
                logits = self._decode([token])
        return out, first, margins


def first_step_summary(logits: FloatArray, *, full: bool) -> dict[str, Any]:
    """Top-40 and moments of the first step's logits (all of them for tiny models)."""
    order = np.argsort(-logits, kind="stable")[:TOP_K]
    wide = logits.astype(np.float64)
    out: dict[str, Any] = {
        "top": [[int(i), float(logits[i])] for i in order],
        "mean": float(wide.mean()),
        "std": float(wide.std()),
        "std_ddof": 0,
    }
    if full:
        out["logits"] = [float(x) for x in logits]
    return out


def run_prompt(peer: Peer, name: str, text: str, *, full_logits: bool) -> dict[str, Any]:
    """One prompt: tokenize, generate twice, check the repeat, summarize."""
    ids = peer.tokenize(text)
    gen, first, margins = peer.generate(ids, peer.settings.n_predict)
    gen2, first2, _ = peer.generate(ids, peer.settings.n_predict)
    repeat_ok = gen == gen2 and first.tobytes() == first2.tobytes()
    if not repeat_ok:
        print(f"  WARNING {name}: second run differs", file=sys.stderr)
    text_bytes = peer.detokenize(gen)
    eog = [i for i, t in enumerate(gen) if peer.lib.llama_vocab_is_eog(peer.vocab, t)]
    return {
        "name": name,
        "text": text,
        "prompt_ids": ids,
        "n_prompt": len(ids),
        "prompt_pieces_hex": [peer.piece(t).hex() for t in ids],
        "prompt_detokenized": peer.detokenize(ids).decode("utf-8", errors="replace"),
        "generated_ids": gen,
        "generated_text": text_bytes.decode("utf-8", errors="replace"),
        "generated_text_hex": text_bytes.hex(),
        "generated_eog_steps": eog,
        "first_step": first_step_summary(first, full=full_logits),
        "step_margins": margins,
        "repeat_identical": repeat_ok,
    }


def cpu_description() -> dict[str, Any]:
    """The host CPU and the features the native build compiled in."""
    import llama_cpp

    model_name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model_name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = llama_cpp.llama_print_system_info().decode()
    features = [
        part.split("=")[0].strip() for part in info.split("|") if part.strip().endswith("= 1")
    ]
    features = [f.removeprefix("CPU :").strip() for f in features]
    return {"cpu": model_name, "system_info": info.strip(), "compiled_features": features}


@dataclass(frozen=True)
class ModelFile:
    """A model to reference, and whether it is a tiny one (full logits, maybe no chat)."""

    path: Path
    key: str  # its key in models.json
    tiny: bool


def discover(cache: Path, only: list[str]) -> list[ModelFile]:
    """All SmolLM2 variants in the cache plus every tiny model, optionally filtered by stem."""
    found = [
        ModelFile(
            cache / models.variant_name(models.BASE_NAME, t),
            models.variant_name(models.BASE_NAME, t),
            tiny=False,
        )
        for t in models.FTYPES
    ]
    found += [ModelFile(p, f"tiny/{p.name}", tiny=True) for p in sorted(TINY_DIR.glob("*.gguf"))]
    if only:
        found = [m for m in found if m.path.stem in only]
    missing = [str(m.path) for m in found if not m.path.exists()]
    if missing:
        raise SystemExit(
            "missing model files (run scripts/models.py fetch/quantize and "
            "scripts/make_tiny_model.py):\n  " + "\n  ".join(missing)
        )
    return found


def reference_for(
    model: ModelFile,
    settings: Settings,
    logs: LogCapture,
    records: dict[str, dict[str, object]],
    cpu: dict[str, Any],
) -> dict[str, Any]:
    """Build the whole JSON document for one model file."""
    sha = models.sha256_file(model.path)
    recorded = records.get(model.key, {})
    if recorded.get("sha256") != sha:
        raise SystemExit(f"{model.path.name}: sha256 {sha} does not match models.json")
    peer = Peer(model.path, settings, logs)
    try:
        spm = peer.lib.llama_vocab_type(peer.vocab) == 1
        prompts = [
            run_prompt(peer, name, text, full_logits=model.tiny)
            for name, text in PROMPTS.items()
            if not (spm and name in SPM_SKIP)
        ]
        header_model = {
            "file": model.path.name,
            "sha256": sha,
            "size": model.path.stat().st_size,
            "ftype": recorded.get("ftype"),
            "tensor_types": recorded.get("tensor_types"),
            "n_vocab": peer.n_vocab,
            "vocab_type": VOCAB_TYPE_NAMES.get(peer.lib.llama_vocab_type(peer.vocab)),
            "add_bos": bool(peer.lib.llama_vocab_get_add_bos(peer.vocab)),
            "add_eos": bool(peer.lib.llama_vocab_get_add_eos(peer.vocab)),
            "tokenizer_pre": peer.meta("tokenizer.ggml.pre"),
        }
        return {
            "format": 1,
            "generator": "scripts/make_references.py",
            "regenerate": REGENERATE,
            "peer": {**PEER, **cpu},
            "settings": asdict(settings),
            "model": header_model,
            "kernels": {**kernel_summary(peer.load_log), "note": KERNELS_NOTE},
            "prompts": prompts,
        }
    finally:
        peer.close()


def write_json(path: Path, doc: dict[str, Any]) -> None:
    """Atomic, stable JSON (no timestamps, sorted where order carries no meaning)."""
    with models.atomic_path(path) as tmp:
        tmp.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def run_all(peer: Peer) -> dict[str, tuple[list[int], FloatArray]]:
    """Generated ids and first-step logits for every prompt."""
    out: dict[str, tuple[list[int], FloatArray]] = {}
    for name, text in PROMPTS.items():
        gen, first, _ = peer.generate(peer.tokenize(text), peer.settings.n_predict)
        out[name] = (gen, first)
    return out


def compare(
    a: dict[str, tuple[list[int], FloatArray]], b: dict[str, tuple[list[int], FloatArray]]
) -> dict[str, Any]:
    """Per prompt: same ids? where do they part? how far apart are the first logits?"""
    out: dict[str, Any] = {}
    for name, (ga, fa) in a.items():
        gb, fb = b[name]
        first_diff = next((i for i, (x, y) in enumerate(zip(ga, gb, strict=True)) if x != y), None)
        out[name] = {
            "ids_identical": ga == gb,
            "first_divergent_step": first_diff,
            "first_logits_bit_identical": fa.tobytes() == fb.tobytes(),
            "first_logits_max_abs_diff": float(np.max(np.abs(fa - fb))),
        }
    return out


def determinism(cache: Path, logs: LogCapture, stems: list[str]) -> dict[str, Any]:
    """Compare the baseline with 1 thread, plain reads instead of mmap, and no repacking."""
    base = Settings()
    variants = {
        "n_threads=1": replace(base, n_threads=1, n_threads_batch=1),
        "load_mode=none": replace(base, load_mode="none"),
        "use_extra_bufts=false": replace(base, use_extra_bufts=False),
    }
    result: dict[str, Any] = {"baseline": asdict(base), "models": {}}
    for model in discover(cache, stems):
        print(f"determinism {model.path.name}", flush=True)
        ref = Peer(model.path, base, logs)
        try:
            ref_runs = run_all(ref)
        finally:
            ref.close()
        per: dict[str, Any] = {}
        for label, settings in variants.items():
            other = Peer(model.path, settings, logs)
            try:
                per[label] = compare(ref_runs, run_all(other))
            finally:
                other.close()
            agree = sum(v["ids_identical"] for v in per[label].values())
            print(f"  {label}: ids identical for {agree}/{len(per[label])} prompts", flush=True)
        result["models"][model.path.name] = per
    return result


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="SmolLM2 model directory (default: $EMBER_MODELS or ~/.cache/ember/models)",
    )
    parser.add_argument(
        "--only",
        nargs="*",
        default=[],
        metavar="STEM",
        help="only these model stems, e.g. smollm2-135m-q4_0 tiny-gpt2-f32",
    )
    parser.add_argument(
        "--determinism",
        nargs="*",
        metavar="STEM",
        default=None,
        help="also compare threads/mmap/repacking on these stems "
        "(default: smollm2-135m-q4_0 smollm2-135m-q4_k_m "
        "smollm2-135m-q8_0 tiny-gpt2-q4_0 tiny-spm-f32)",
    )
    parser.add_argument(
        "--determinism-only",
        action="store_true",
        help="skip the reference files, only run --determinism",
    )
    parser.add_argument(
        "--no-repack",
        action="store_true",
        help="use_extra_bufts=false, written to references/no_repack/ "
        f"(default models: {' '.join(REPACKED_STEMS)})",
    )
    args = parser.parse_args(argv)
    cache: Path = args.cache or models.default_cache_dir()

    import llama_cpp

    llama_cpp.llama_backend_init()
    logs = LogCapture()
    cpu = cpu_description()
    settings = Settings(use_extra_bufts=not args.no_repack)
    out_dir = REF_DIR / "no_repack" if args.no_repack else REF_DIR
    regenerate = REGENERATE + (" --no-repack" if args.no_repack else "")
    only = args.only or (list(REPACKED_STEMS) if args.no_repack else [])
    records = models.load_records()
    for model in [] if args.determinism_only else discover(cache, only):
        t0 = time.monotonic()
        doc = reference_for(model, settings, logs, records, cpu)
        doc["regenerate"] = regenerate
        write_json(out_dir / f"{model.path.stem}.json", doc)
        repeats = all(p["repeat_identical"] for p in doc["prompts"])
        print(
            f"{model.path.name}: {len(doc['prompts'])} prompts, repeat identical={repeats}, "
            f"{time.monotonic() - t0:.1f}s, kernels={doc['kernels']['repacked_tensors']}",
            flush=True,
        )
    if args.determinism is not None or args.determinism_only:
        stems = args.determinism or [
            "smollm2-135m-q4_0",
            "smollm2-135m-q4_k_m",
            "smollm2-135m-q8_0",
            "tiny-gpt2-q4_0",
            "tiny-spm-f32",
        ]
        doc = {"peer": {**PEER, **cpu}, **determinism(cache, logs, stems)}
        # not under references/: every JSON there is read as one model's reference
        write_json(DETERMINISM_JSON, doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
