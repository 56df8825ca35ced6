"""ember's tokenizer against llama.cpp's ids, token for token.

The expected ids were made by scripts/make_tokenizer_refs.py with llama-cpp-python
0.3.36 and are stored in tests/runtime/data/tokenizer/, so no llama_cpp is needed here.
The C tokenizer (runtime/src/tokenizer/: tokenizer.c + unicode_tables.c) is compiled into
a shared object and driven through ctypes with vocabularies read from GGUF files by the `gguf`
package, exactly as the reference script built them.

Needs a C compiler ($CC, else cc/gcc/clang) and, for the SmolLM2 cases, the model file in
$EMBER_TEST_MODEL_DIR (default ~/.cache/ember/models; SmolLM2-135M-Instruct.Q4_1.gguf or
smollm2-135m-q4_1.gguf); those cases are skipped, with the reason, without it. The
tiny-model cases run from the GGUFs committed under tests/runtime/data/tiny/.
"""

from __future__ import annotations

import base64
import ctypes
import gzip
import importlib.util
import json
import os
import shutil
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "runtime" / "data" / "tokenizer"
TINY = ROOT / "tests" / "runtime" / "data" / "tiny"
MODEL_NAMES = ("SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2-135m-q4_1.gguf")


pytest.importorskip("gguf")


def _load_refs_module():
    spec = importlib.util.spec_from_file_location(
        "make_tokenizer_refs", ROOT / "scripts" / "make_tokenizer_refs.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


refs = _load_refs_module()


# --------------------------------------------------------------------------------------
# the C library through ctypes
# --------------------------------------------------------------------------------------


class _Config(ctypes.Structure):
    _fields_ = [
        ("model", ctypes.c_char_p),
        ("pre", ctypes.c_char_p),
        ("n_vocab", ctypes.c_uint32),
        ("tokens", ctypes.POINTER(ctypes.c_char_p)),
        ("token_lens", ctypes.POINTER(ctypes.c_uint64)),
        ("scores", ctypes.POINTER(ctypes.c_float)),
        ("token_types", ctypes.POINTER(ctypes.c_int32)),
        ("n_merges", ctypes.c_uint32),
        ("merges", ctypes.POINTER(ctypes.c_char_p)),
        ("merge_lens", ctypes.POINTER(ctypes.c_uint64)),
        ("bos_id", ctypes.c_int32),
        ("eos_id", ctypes.c_int32),
        ("unk_id", ctypes.c_int32),
        ("pad_id", ctypes.c_int32),
        ("add_bos", ctypes.c_int),
        ("add_eos", ctypes.c_int),
        ("add_space_prefix", ctypes.c_int),
    ]


def _find_cc() -> str | None:
    for c in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if c and shutil.which(c.split()[0]):
            return c
    return None


@pytest.fixture(scope="session")
def lib(tmp_path_factory):
    cc = _find_cc()
    if cc is None:
        pytest.skip("no C compiler found ($CC, cc, gcc or clang) to build "
                    "runtime/src/tokenizer/tokenizer.c")
    so = tmp_path_factory.mktemp("embertok") / "libembertok.so"
    src = ROOT / "runtime" / "src" / "tokenizer"
    flags = ["-std=c11", "-O2", "-shared", "-fPIC", "-Wall", "-Wextra", "-Werror", f"-I{src}"]
    sources = [str(src / "tokenizer.c"), str(src / "unicode_tables.c")]
    cmd = [*cc.split(), *flags, *sources, "-o", str(so)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, f"compiling the tokenizer failed:\n{' '.join(cmd)}\n{res.stderr}"
    L = ctypes.CDLL(str(so))
    L.em_tokenizer_create.argtypes = [
        ctypes.POINTER(_Config),
        ctypes.POINTER(ctypes.c_void_p),
        ctypes.c_char_p,
        ctypes.c_size_t,
    ]
    L.em_tokenizer_free.argtypes = [ctypes.c_void_p]
    L.em_tokenize.argtypes = [
        ctypes.c_void_p,
        ctypes.c_char_p,
        ctypes.c_size_t,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.POINTER(ctypes.c_int32),
        ctypes.c_size_t,
        ctypes.POINTER(ctypes.c_size_t),
    ]
    L.em_token_to_piece.argtypes = [
        ctypes.c_void_p,
        ctypes.c_int32,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_size_t,
    ]
    L.em_tokenizer_is_eog.argtypes = [ctypes.c_void_p, ctypes.c_int32]
    L.em_tokenizer_n_vocab.argtypes = [ctypes.c_void_p]
    L.em_tokenizer_n_vocab.restype = ctypes.c_uint32
    return L


class Tokenizer:
    """An em_tokenizer made from a vocabulary dict as refs.read_vocab returns it."""

    def __init__(self, lib, v: dict):
        self.lib = lib
        self.h = ctypes.c_void_p()
        keep = []
        n = len(v["tokens"])

        def strings(lst):
            a = (ctypes.c_char_p * len(lst))(*lst)
            lens = (ctypes.c_uint64 * len(lst))(*[len(x) for x in lst])
            keep.extend([a, lens])
            return a, lens

        def opt(x):
            return -1 if x is None else int(x)

        c = _Config()
        c.model = v["model"].encode()
        c.pre = v["pre"].encode() if v["pre"] is not None else None
        c.n_vocab = n
        c.tokens, c.token_lens = strings(v["tokens"])
        if v["scores"] is not None:
            c.scores = (ctypes.c_float * n)(*v["scores"])
        if v["types"] is not None:
            c.token_types = (ctypes.c_int32 * n)(*v["types"])
        if v["merges"]:
            c.merges, c.merge_lens = strings(v["merges"])
            c.n_merges = len(v["merges"])
        c.bos_id, c.eos_id, c.unk_id, c.pad_id = (
            opt(v["bos"]),
            opt(v["eos"]),
            opt(v["unk"]),
            opt(v["pad"]),
        )
        c.add_bos, c.add_eos, c.add_space_prefix = (
            opt(v["add_bos"]),
            opt(v["add_eos"]),
            opt(v["add_space_prefix"]),
        )
        err = ctypes.create_string_buffer(512)
        rc = lib.em_tokenizer_create(ctypes.byref(c), ctypes.byref(self.h), err, len(err))
        if rc != 0:
            raise RuntimeError(f"em_tokenizer_create: {err.value.decode()}")
        # the config (and `keep`) may go now: the tokenizer copied what it needs

    def tokenize(self, text: bytes, add_special: bool, parse_special: bool) -> list[int]:
        n = ctypes.c_size_t()
        cap = 8
        out = (ctypes.c_int32 * cap)()
        rc = self.lib.em_tokenize(
            self.h, text, len(text), int(add_special), int(parse_special), out, cap, ctypes.byref(n)
        )
        assert rc == 0
        if n.value > cap:  # the documented retry with a larger buffer
            cap = n.value
            out = (ctypes.c_int32 * cap)()
            rc = self.lib.em_tokenize(
                self.h,
                text,
                len(text),
                int(add_special),
                int(parse_special),
                out,
                cap,
                ctypes.byref(n),
            )
            assert rc == 0 and n.value == cap
        return list(out[: n.value])

    def piece(self, tid: int, special: bool) -> bytes:
        buf = ctypes.create_string_buffer(16)
        r = self.lib.em_token_to_piece(self.h, tid, int(special), buf, 16)
        if r > 16:
            buf = ctypes.create_string_buffer(r)
            r2 = self.lib.em_token_to_piece(self.h, tid, int(special), buf, r)
            assert r2 == r
        assert r >= 0
        return buf.raw[:r]

    def close(self):
        if self.h:
            self.lib.em_tokenizer_free(self.h)
            self.h = ctypes.c_void_p()


# --------------------------------------------------------------------------------------
# reference data and vocabularies
# --------------------------------------------------------------------------------------


def _model_path() -> Path | None:
    d = os.environ.get("EMBER_TEST_MODEL_DIR", str(Path.home() / ".cache" / "ember" / "models"))
    for name in MODEL_NAMES:
        p = Path(d) / name
        if p.is_file():
            return p
    return None


def _cases() -> dict[str, list[dict]]:
    by_variant = defaultdict(list)
    with gzip.open(DATA / "cases.jsonl.gz", "rt", encoding="utf-8") as f:
        for line in f:
            c = json.loads(line)
            if "meta" in c:
                continue
            by_variant[c["variant"]].append(c)
    return by_variant


CASES = _cases()
with gzip.open(DATA / "pieces.json.gz", "rt", encoding="utf-8") as _f:
    PIECES = json.load(_f)


def _text(c: dict) -> bytes:
    return c["text"].encode("utf-8") if "text" in c else base64.b64decode(c["text_b64"])


@pytest.fixture(scope="session")
def smollm_vocab():
    p = _model_path()
    if p is None:
        pytest.skip(
            "SmolLM2 model not found: set EMBER_TEST_MODEL_DIR (default ~/.cache/ember/models)"
            " to a folder holding " + " or ".join(MODEL_NAMES)
        )
    return refs.read_vocab(p)


def _vocab_for(variant: str, request) -> dict:
    if variant.startswith("tiny:"):
        p = TINY / variant[len("tiny:") :]
        if not p.is_file():
            pytest.skip(f"{p.relative_to(ROOT)} is not there")
        return refs.read_vocab(p)
    base = request.getfixturevalue("smollm_vocab")
    if variant in refs.BPE_VARIANTS:
        return refs.bpe_variant(base, variant)
    return refs.spm_vocab_from_bpe(base, refs.SPM_VARIANTS[variant])


def _show(b: bytes) -> str:
    s = repr(b)
    return s if len(s) < 120 else s[:117] + "..."


@pytest.mark.parametrize("variant", sorted(CASES))
def test_tokenize_matches_llama_cpp(lib, variant, request):
    tok = Tokenizer(lib, _vocab_for(variant, request))
    try:
        bad = []
        for c in CASES[variant]:
            got = tok.tokenize(_text(c), c["add_special"], c["parse_special"])
            if got != c["ids"]:
                bad.append((c, got))
        total = len(CASES[variant])
        print(f"{variant}: {total - len(bad)}/{total} tokenizations match llama.cpp")
        if bad:
            lines = [
                f"{len(bad)}/{total} tokenizations differ from llama.cpp (vocabulary {variant!r}):"
            ]
            for c, got in bad[:10]:
                lines.append(
                    f"  text={_show(_text(c))} add_special={c['add_special']} "
                    f"parse_special={c['parse_special']}\n"
                    f"    llama.cpp={c['ids'][:40]}\n    ember    ={got[:40]}"
                )
            pytest.fail("\n".join(lines))
    finally:
        tok.close()


@pytest.mark.parametrize("variant", sorted(PIECES))
def test_token_to_piece_and_eog_match_llama_cpp(lib, variant, request):
    tok = Tokenizer(lib, _vocab_for(variant, request))
    try:
        ref = PIECES[variant]
        n = len(ref["special"])
        assert lib.em_tokenizer_n_vocab(tok.h) == n
        bad = []
        for i in range(n):
            sp = bytes.fromhex(ref["special"][i])
            plain = bytes.fromhex(ref["plain"].get(str(i), ref["special"][i]))
            got_sp, got_plain = tok.piece(i, True), tok.piece(i, False)
            if got_sp != sp or got_plain != plain:
                bad.append(f"  id {i}: llama.cpp {sp!r}/{plain!r}, ember {got_sp!r}/{got_plain!r}")
        eog = [i for i in range(n) if lib.em_tokenizer_is_eog(tok.h, i)]
        assert not bad, f"{len(bad)}/{n} pieces differ:\n" + "\n".join(bad[:20])
        assert eog == ref["eog"]
        assert lib.em_token_to_piece(tok.h, n, 1, None, 0) < 0
        assert lib.em_token_to_piece(tok.h, -1, 1, None, 0) < 0
    finally:
        tok.close()


def test_unicode_tables_are_generated_output():
    """runtime/src/tokenizer/unicode_tables.c is what scripts/gen_unicode_tables.py writes."""
    tables = ROOT / "runtime" / "src" / "tokenizer" / "unicode_tables.c"
    committed = tables.read_text(encoding="utf-8")
    version = committed.split('em_unicode_version[] = "', 1)[1].split('"', 1)[0]
    try:
        import unicodedata2
    except ImportError:
        unicodedata2 = None
    import sys
    import unicodedata

    if unicodedata2 is not None and unicodedata2.unidata_version == version:
        args = ["--unicodedata2"]
    elif unicodedata.unidata_version == version:
        args = []
    else:
        pytest.skip(f"needs Unicode {version} data: pip install unicodedata2=={version}")
    res = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_unicode_tables.py"), *args],
        capture_output=True,
        text=True,
        check=True,
    )

    def body(s):
        return s.split('#include "unicode_tables.h"', 1)[1]  # the header names the source

    assert body(res.stdout) == body(committed), (
        "regenerate runtime/src/tokenizer/unicode_tables.c (see its header)"
    )
