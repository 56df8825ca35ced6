"""ember's quantization kernels (runtime/src/cpu/quants.c) against gguf-py and real GGUF files.

runtime/src/cpu/quants.c is compiled into a shared object with the system C compiler ($CC, else
cc/gcc/clang) and driven through ctypes: one build per session, numpy buffers passed
straight in, nothing to parse. The `gguf` package (gguf-py, the reference implementation
that ships with llama.cpp) supplies the expected values. Every comparison is bit for bit.

- random data: every type gguf-py dequantizes (F32 F16 BF16 Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q2_K
  Q3_K Q4_K Q5_K Q6_K), from gguf-py's own quantizers where it has one and from random
  bits with sane scales otherwise; and ember's reference quantizers against gguf-py's.
- real tensors: every tensor of every model in tests/runtime/data/tiny/, and of every
  *.gguf in $EMBER_TEST_MODEL_DIR (skipped with a reason when unset); large tensors there
  are checked on a sample of rows unless EMBER_QUANTS_FULL=1.
- optional: with $EMBER_GGML_LIB_DIR naming a llama.cpp build's library folder
  (libggml-base.so and libggml-cpu.so), ember's dequantize, activation quantizers and
  vec_dot are compared with ggml's own kernels. Only meaningful for a build made for the
  CPU the tests run on (its SIMD path decides the summation order that ember reproduces).
"""
from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
from gguf import GGMLQuantizationType as QT  # noqa: E402
from gguf import GGUFReader  # noqa: E402
from gguf.quants import dequantize as gguf_dequantize  # noqa: E402
from gguf.quants import quantize as gguf_quantize  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "runtime" / "src" / "cpu"
TINY = ROOT / "tests" / "runtime" / "data" / "tiny"

# ember's types (ids are ggml's) that gguf-py can dequantize
DEQUANT_TYPES = [QT.F32, QT.F16, QT.BF16, QT.Q4_0, QT.Q4_1, QT.Q5_0, QT.Q5_1, QT.Q8_0,
                 QT.Q2_K, QT.Q3_K, QT.Q4_K, QT.Q5_K, QT.Q6_K]
# types for which both ember (em_quantize_row_ref) and gguf-py have a reference quantizer
QUANT_TYPES = [QT.F16, QT.BF16, QT.Q4_0, QT.Q4_1, QT.Q5_0, QT.Q5_1, QT.Q8_0]
# byte offsets of the fp16 scale fields in one block (to give random bits sane scales)
FP16_FIELDS = {QT.Q4_0: [0], QT.Q4_1: [0, 2], QT.Q5_0: [0], QT.Q5_1: [0, 2], QT.Q8_0: [0],
               QT.Q2_K: [80, 82], QT.Q3_K: [108], QT.Q4_K: [0, 2], QT.Q5_K: [0, 2], QT.Q6_K: [208]}


# --------------------------------------------------------------------------------------
# the C library
# --------------------------------------------------------------------------------------

def _find_cc() -> str | None:
    for c in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if c and shutil.which(c.split()[0]):
            return c
    return None


class Ember:
    """ctypes view of quants.h."""

    def __init__(self, path: Path) -> None:
        lib = ctypes.CDLL(str(path))
        vp, i64 = ctypes.c_void_p, ctypes.c_int64
        lib.em_dequantize_row.argtypes = [ctypes.c_int, vp, vp, i64]
        lib.em_quantize_row.argtypes = [ctypes.c_int, vp, vp, i64]
        lib.em_quantize_row_ref.argtypes = [ctypes.c_int, vp, vp, i64]
        lib.em_quantize_row_ref.restype = ctypes.c_int
        lib.em_vec_dot.argtypes = [ctypes.c_int, i64, vp, vp, vp]
        lib.em_row_size.argtypes = [ctypes.c_int, i64]
        lib.em_row_size.restype = ctypes.c_size_t
        lib.em_type_traits_get.argtypes = [ctypes.c_uint32]
        lib.em_type_traits_get.restype = vp
        self.lib = lib

    def supports(self, t: int) -> bool:
        return bool(self.lib.em_type_traits_get(int(t)))

    def row_size(self, t: int, n: int) -> int:
        return int(self.lib.em_row_size(int(t), n))

    def dequantize(self, t: int, raw: np.ndarray, n: int) -> np.ndarray:
        raw = np.ascontiguousarray(raw).view(np.uint8)
        assert raw.nbytes == self.row_size(t, n)
        out = np.empty(n, np.float32)
        self.lib.em_dequantize_row(int(t), raw.ctypes.data, out.ctypes.data, n)
        return out

    def quantize(self, t: int, x: np.ndarray, ref: bool) -> np.ndarray:
        x = np.ascontiguousarray(x, np.float32).ravel()
        out = np.zeros(self.row_size(t, x.size), np.uint8)
        if ref:
            assert self.lib.em_quantize_row_ref(int(t), x.ctypes.data, out.ctypes.data, x.size) == 0
        else:
            self.lib.em_quantize_row(int(t), x.ctypes.data, out.ctypes.data, x.size)
        return out

    def vec_dot(self, t: int, n: int, w: np.ndarray, a: np.ndarray) -> np.ndarray:
        s = np.zeros(1, np.float32)
        self.lib.em_vec_dot(int(t), n, s.ctypes.data, np.ascontiguousarray(w).ctypes.data,
                            np.ascontiguousarray(a).ctypes.data)
        return s


@pytest.fixture(scope="session")
def ember(tmp_path_factory: pytest.TempPathFactory) -> Ember:
    cc = _find_cc()
    if cc is None:
        pytest.skip("no C compiler found ($CC, cc, gcc or clang) to build "
                    "runtime/src/cpu/quants.c")
    out = tmp_path_factory.mktemp("ember_quants") / "libember_quants.so"
    cmd = [*cc.split(), "-std=c11", "-O2", "-shared", "-fPIC", "-Wall", "-Wextra", "-Werror",
           "-ffp-contract=off", f"-I{SRC}", str(SRC / "quants.c"), "-o", str(out), "-lm"]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, f"building quants.c failed:\n{' '.join(cmd)}\n{res.stderr}"
    return Ember(out)


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------

def _block(t: QT) -> tuple[int, int]:
    return gguf.GGML_QUANT_SIZES[t]


def _random_blocks(rng: np.random.Generator, t: QT, n: int) -> np.ndarray:
    """Random quant bits with small finite fp16 scales (and non-negative mins)."""
    bs, ts = _block(t)
    raw = rng.integers(0, 256, size=(n // bs, ts), dtype=np.uint8)
    for k, off in enumerate(FP16_FIELDS[t]):
        v = rng.standard_normal(n // bs).astype(np.float32) * 0.02
        if k == 1:
            v = np.abs(v)
        raw[:, off:off + 2] = v.astype(np.float16).view(np.uint8).reshape(-1, 2)
    return raw.reshape(-1)


def _assert_bits_equal(got: np.ndarray, want: np.ndarray, what: str) -> None:
    got = np.ascontiguousarray(got, np.float32)
    want = np.ascontiguousarray(want, np.float32).reshape(got.shape)
    gb, wb = got.view(np.uint32), want.view(np.uint32)
    same = (gb == wb) | (np.isnan(got) & np.isnan(want))
    if not same.all():
        i = int(np.flatnonzero(~same)[0])
        pytest.fail(f"{what}: {int((~same).sum())} of {got.size} values differ; first at {i}: "
                    f"ember {got[i]!r} ({gb[i]:#010x}) vs reference {want[i]!r} ({wb[i]:#010x})")


def _check_rows(ember: Ember, t: QT, data: np.ndarray, n_per_row: int, what: str,
                rows: np.ndarray | None = None) -> None:
    """Dequantize rows of raw tensor bytes with ember and gguf-py and compare."""
    raw = np.ascontiguousarray(data).view(np.uint8)
    row_bytes = ember.row_size(t, n_per_row)
    raw = raw.reshape(-1, row_bytes)
    if rows is not None:
        raw = raw[rows]
    want = gguf_dequantize(raw, t).astype(np.float32, copy=False).reshape(raw.shape[0], -1)
    got = np.stack([ember.dequantize(t, r, n_per_row) for r in raw])
    _assert_bits_equal(got, want, what)


# --------------------------------------------------------------------------------------
# random data
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("qtype", DEQUANT_TYPES, ids=lambda t: t.name)
def test_dequantize_random_matches_gguf(ember: Ember, qtype: QT) -> None:
    rng = np.random.default_rng(1000 + int(qtype))
    n = 256 * 8
    for trial in range(6):
        scale = [1.0, 1e-3, 30.0][trial % 3]
        x = (rng.standard_normal((4, n)) * scale).astype(np.float32)
        if qtype in (QT.F32, QT.F16, QT.BF16) or qtype in QUANT_TYPES:
            raw = gguf_quantize(x, qtype)  # gguf-py's own quantizer
        else:
            raw = np.stack([_random_blocks(rng, qtype, n) for _ in range(4)])
        _check_rows(ember, qtype, raw, n, f"{qtype.name} trial {trial}")


@pytest.mark.parametrize("qtype", QUANT_TYPES, ids=lambda t: t.name)
def test_reference_quantizers_match_gguf(ember: Ember, qtype: QT) -> None:
    rng = np.random.default_rng(2000 + int(qtype))
    n = 1024
    for trial in range(8):
        x = (rng.standard_normal(n) * [1.0, 1e-4, 50.0, 1e-7][trial % 4]).astype(np.float32)
        if trial == 5:
            x[:64] = 0.0                                  # all-zero blocks
        if trial == 6:
            x = (rng.integers(-100, 100, n) + 0.5).astype(np.float32)   # rounding ties
        want = gguf_quantize(x.reshape(1, n), qtype).reshape(-1).view(np.uint8)
        got = ember.quantize(qtype, x, ref=True)
        if not np.array_equal(got, want):
            i = int(np.flatnonzero(got != want)[0])
            pytest.fail(f"{qtype.name} trial {trial}: quantized bytes differ from gguf-py "
                        f"from byte {i} (block {i // _block(qtype)[1]})")


# --------------------------------------------------------------------------------------
# real tensors
# --------------------------------------------------------------------------------------

def _check_model(ember: Ember, path: Path, sample_rows: int | None) -> None:
    reader = GGUFReader(path)
    rng = np.random.default_rng(0)
    checked: dict[str, int] = {}
    unsupported: dict[str, int] = {}
    for tensor in reader.tensors:
        t = QT(tensor.tensor_type)
        if t not in DEQUANT_TYPES or not ember.supports(t):
            unsupported[t.name] = unsupported.get(t.name, 0) + 1
            continue
        n_per_row = int(tensor.shape[0])   # GGUF shapes are innermost first
        n_rows = int(tensor.n_elements) // n_per_row
        rows = None
        if sample_rows is not None and n_rows > sample_rows:
            pick = rng.choice(n_rows, size=sample_rows - 2, replace=False)
            rows = np.unique(np.concatenate([[0, n_rows - 1], pick]))
        what = f"{path.name}: {tensor.name} ({t.name})"
        _check_rows(ember, t, tensor.data, n_per_row, what, rows)
        checked[t.name] = checked.get(t.name, 0) + 1
    assert checked, f"{path.name}: no tensor of a type ember supports"
    print(f"{path.name}: checked {checked}", file=sys.stderr)
    # Not a failure: a tiny model may carry types ember does not implement (yet).
    if unsupported:
        print(f"{path.name}: types ember cannot dequantize, skipped: {unsupported}",
              file=sys.stderr)


TINY_MODELS = sorted(TINY.glob("*.gguf")) if TINY.is_dir() else []


@pytest.mark.parametrize("model", TINY_MODELS, ids=lambda p: p.name)
def test_tiny_models_dequantize_like_gguf(ember: Ember, model: Path) -> None:
    _check_model(ember, model, sample_rows=None)


def _model_dir_files() -> list[Path]:
    d = os.environ.get("EMBER_TEST_MODEL_DIR")
    return sorted(Path(d).glob("*.gguf")) if d and Path(d).is_dir() else []


@pytest.mark.skipif(not os.environ.get("EMBER_TEST_MODEL_DIR"),
                    reason="EMBER_TEST_MODEL_DIR is not set (folder with real GGUF models)")
@pytest.mark.parametrize("model", _model_dir_files() or [None],
                         ids=lambda p: p.name if p else "none")
def test_real_models_dequantize_like_gguf(ember: Ember, model: Path | None) -> None:
    if model is None:
        pytest.skip(f"no *.gguf in EMBER_TEST_MODEL_DIR={os.environ.get('EMBER_TEST_MODEL_DIR')}")
    full = os.environ.get("EMBER_QUANTS_FULL") == "1"
    _check_model(ember, model, sample_rows=None if full else 48)


# --------------------------------------------------------------------------------------
# optional: ggml's own kernels
# --------------------------------------------------------------------------------------

class _CpuTraits(ctypes.Structure):
    _fields_ = [("from_float", ctypes.c_void_p), ("vec_dot", ctypes.c_void_p),
                ("vec_dot_type", ctypes.c_int), ("nrows", ctypes.c_int64)]


class _BaseTraits(ctypes.Structure):
    _fields_ = [("type_name", ctypes.c_char_p), ("blck_size", ctypes.c_int64),
                ("blck_size_interleave", ctypes.c_int64), ("type_size", ctypes.c_size_t),
                ("is_quantized", ctypes.c_bool), ("to_float", ctypes.c_void_p),
                ("from_float_ref", ctypes.c_void_p)]


_ROW = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)
_DOT = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p,
                        ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)


@pytest.mark.skipif(not os.environ.get("EMBER_GGML_LIB_DIR"),
                    reason="EMBER_GGML_LIB_DIR is not set (llama.cpp build's library folder)")
@pytest.mark.parametrize("qtype", DEQUANT_TYPES, ids=lambda t: t.name)
def test_bit_exact_with_ggml_kernels(ember: Ember, qtype: QT) -> None:
    libdir = Path(os.environ["EMBER_GGML_LIB_DIR"])
    base = ctypes.CDLL(str(libdir / "libggml-base.so"), mode=ctypes.RTLD_GLOBAL)
    cpu = ctypes.CDLL(str(libdir / "libggml-cpu.so"), mode=ctypes.RTLD_GLOBAL)
    cpu.ggml_cpu_init()
    cpu.ggml_get_type_traits_cpu.restype = ctypes.POINTER(_CpuTraits)
    base.ggml_get_type_traits.restype = ctypes.POINTER(_BaseTraits)
    wt = cpu.ggml_get_type_traits_cpu(int(qtype)).contents
    bt = base.ggml_get_type_traits(int(qtype)).contents
    vt = wt.vec_dot_type
    from_float = _ROW(cpu.ggml_get_type_traits_cpu(vt).contents.from_float)
    rng = np.random.default_rng(3000 + int(qtype))
    sizes = {1: [1, 7, 64, 100, 1000, 4096], 32: [32, 576, 1536, 4096]}.get(
        bt.blck_size, [256, 512, 1536, 4096])
    for trial in range(60):
        n = sizes[trial % len(sizes)]
        if qtype == QT.F32:
            w = rng.standard_normal(n).astype(np.float32)
        elif qtype in (QT.F16, QT.BF16):
            v = rng.standard_normal((1, n)).astype(np.float32) * 0.1
            w = gguf_quantize(v, qtype).reshape(-1)
        else:
            w = _random_blocks(rng, qtype, n)
        w = np.ascontiguousarray(w).view(np.uint8)
        if bt.to_float:
            want = np.empty(n, np.float32)
            _ROW(bt.to_float)(w.ctypes.data, want.ctypes.data, n)
            _assert_bits_equal(ember.dequantize(qtype, w, n), want, f"{qtype.name} to_float n={n}")
        x = (rng.standard_normal(n) * rng.uniform(0.01, 10)).astype(np.float32)
        if trial % 5 == 1:
            x = (rng.integers(-126, 126, n) + 0.5).astype(np.float32)
            x[::32] = 127.0   # inverse scale exactly 1: every value a rounding tie
        act = np.zeros(ember.row_size(vt, n), np.uint8)
        from_float(x.ctypes.data, act.ctypes.data, n)
        mine = ember.quantize(vt, x, ref=False)
        assert np.array_equal(mine, act), f"{qtype.name} n={n}: activation (type {vt}) differs"
        want_s = np.zeros(1, np.float32)
        _DOT(wt.vec_dot)(n, want_s.ctypes.data, 0, w.ctypes.data, 0, act.ctypes.data, 0, 1)
        _assert_bits_equal(ember.vec_dot(qtype, n, w, act), want_s, f"{qtype.name} vec_dot n={n}")


# --------------------------------------------------------------------------------------
# optional: whole matmuls through ggml's CPU backend, one per kernel family
# --------------------------------------------------------------------------------------

K_VEC_DOT, K_SGEMM, K_REPACK_GEMV, K_REPACK_GEMM, K_AMX, K_TILED = range(6)
KQUANTS = (QT.Q2_K, QT.Q3_K, QT.Q4_K, QT.Q5_K, QT.Q6_K)


def expected_kernel(qtype: QT, buft: str, n_act_rows: int, row: int) -> int:
    """Which llama.cpp kernel computes output row `row` of a matmul with n_act_rows
    activation rows (x86 AVX-512 build without AMX), as em_kernel."""
    if buft == "CPU_REPACK":   # Q4_0 / Q4_K weights with a row count divisible by 8
        return K_REPACK_GEMM if row < n_act_rows - n_act_rows % 4 else K_REPACK_GEMV
    if buft == "AMX":
        return K_AMX
    if n_act_rows >= 8 and qtype in KQUANTS:
        return K_TILED
    return K_SGEMM if n_act_rows >= 2 else K_VEC_DOT


class _InitParams(ctypes.Structure):
    _fields_ = [("mem_size", ctypes.c_size_t), ("mem_buffer", ctypes.c_void_p),
                ("no_alloc", ctypes.c_bool)]


def _ggml_matmul(libdir: Path, qtype: QT, buft_name: str, w: np.ndarray, x: np.ndarray,
                 k: int, n: int, m: int) -> np.ndarray | None:
    """y[m][n] = sum_k w[n][k] * x[m][k] by ggml_mul_mat with the weight in buffer type
    buft_name ("CPU", "CPU_REPACK", "AMX"); None when the build has no such buffer type."""
    vp = ctypes.c_void_p
    base = ctypes.CDLL(str(libdir / "libggml-base.so"), mode=ctypes.RTLD_GLOBAL)
    cpu = ctypes.CDLL(str(libdir / "libggml-cpu.so"), mode=ctypes.RTLD_GLOBAL)
    for f, res, args in [
        (base.ggml_init, vp, [_InitParams]), (base.ggml_free, None, [vp]),
        (base.ggml_new_tensor_2d, vp, [vp, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]),
        (base.ggml_mul_mat, vp, [vp, vp, vp]), (base.ggml_new_graph, vp, [vp]),
        (base.ggml_build_forward_expand, None, [vp, vp]),
        (base.ggml_backend_get_device, vp, [vp]), (base.ggml_backend_dev_backend_reg, vp, [vp]),
        (base.ggml_backend_reg_get_proc_address, vp, [vp, ctypes.c_char_p]),
        (base.ggml_backend_buft_name, ctypes.c_char_p, [vp]),
        (base.ggml_backend_alloc_ctx_tensors_from_buft, vp, [vp, vp]),
        (base.ggml_backend_alloc_ctx_tensors, vp, [vp, vp]),
        (base.ggml_backend_tensor_set, None, [vp, vp, ctypes.c_size_t, ctypes.c_size_t]),
        (base.ggml_backend_tensor_get, None, [vp, vp, ctypes.c_size_t, ctypes.c_size_t]),
        (base.ggml_backend_graph_compute, ctypes.c_int, [vp, vp]),
        (base.ggml_backend_buffer_free, None, [vp]), (base.ggml_backend_free, None, [vp]),
        (cpu.ggml_backend_cpu_init, vp, []), (cpu.ggml_backend_cpu_buffer_type, vp, []),
        (cpu.ggml_backend_cpu_set_n_threads, None, [vp, ctypes.c_int]),
    ]:
        f.restype, f.argtypes = res, args
    be = cpu.ggml_backend_cpu_init()
    cpu.ggml_backend_cpu_set_n_threads(be, 1)
    buft = None
    if buft_name == "CPU":
        buft = cpu.ggml_backend_cpu_buffer_type()
    else:
        dev = base.ggml_backend_get_device(be)
        get_extra = ctypes.CFUNCTYPE(ctypes.POINTER(vp), vp)(
            base.ggml_backend_reg_get_proc_address(base.ggml_backend_dev_backend_reg(dev),
                                                   b"ggml_backend_dev_get_extra_bufts"))
        arr, i = get_extra(dev), 0
        while arr[i]:
            if base.ggml_backend_buft_name(arr[i]).decode() == buft_name:
                buft = arr[i]
            i += 1
    if buft is None:
        base.ggml_backend_free(be)
        return None
    params = _InitParams(64 << 20, None, True)
    cw, cx = base.ggml_init(params), base.ggml_init(params)
    wt = base.ggml_new_tensor_2d(cw, int(qtype), k, n)
    xt = base.ggml_new_tensor_2d(cx, int(QT.F32), k, m)
    yt = base.ggml_mul_mat(cx, wt, xt)
    bw = base.ggml_backend_alloc_ctx_tensors_from_buft(cw, buft)
    bx = base.ggml_backend_alloc_ctx_tensors(cx, be)
    base.ggml_backend_tensor_set(wt, w.ctypes.data, 0, w.nbytes)
    base.ggml_backend_tensor_set(xt, x.ctypes.data, 0, x.nbytes)
    graph = base.ggml_new_graph(cx)
    base.ggml_build_forward_expand(graph, yt)
    assert base.ggml_backend_graph_compute(be, graph) == 0
    y = np.empty((m, n), np.float32)
    base.ggml_backend_tensor_get(yt, y.ctypes.data, 0, y.nbytes)
    for b in (bw, bx):
        base.ggml_backend_buffer_free(b)
    base.ggml_free(cw)
    base.ggml_free(cx)
    base.ggml_backend_free(be)
    return y


MATMUL_CASES = (
    [(t, "CPU", rows) for t in DEQUANT_TYPES for rows in (1, 2, 5, 9)]
    + [(t, "CPU_REPACK", rows) for t in (QT.Q4_0, QT.Q4_K) for rows in (1, 3, 4, 6, 13)]
)


@pytest.mark.skipif(not os.environ.get("EMBER_GGML_LIB_DIR"),
                    reason="EMBER_GGML_LIB_DIR is not set (llama.cpp build's library folder)")
@pytest.mark.parametrize(("qtype", "buft", "m"), MATMUL_CASES,
                         ids=lambda v: v.name if isinstance(v, QT) else str(v))
def test_matmul_kernels_bit_exact_with_ggml(ember: Ember, qtype: QT, buft: str, m: int) -> None:
    libdir = Path(os.environ["EMBER_GGML_LIB_DIR"])
    rng = np.random.default_rng(4000 + int(qtype) * 16 + m)
    bs, _ = _block(qtype)
    k = 1536 if bs == 256 else 544    # 544: not a multiple of 32, so sgemm BF16 falls back
    n = 72                            # a multiple of 8 (repack) but not of 16
    if qtype == QT.F32:
        w = rng.standard_normal((n, k)).astype(np.float32) * 0.1
    elif qtype in (QT.F16, QT.BF16):
        w = gguf_quantize(rng.standard_normal((n, k)).astype(np.float32) * 0.1, qtype)
    else:
        w = np.stack([_random_blocks(rng, qtype, k) for _ in range(n)])
    w = np.ascontiguousarray(w).view(np.uint8).reshape(n, -1)
    x = (rng.standard_normal((m, k)) * 2).astype(np.float32)
    y = _ggml_matmul(libdir, qtype, buft, w, x, k, n, m)
    if y is None:
        pytest.skip(f"this llama.cpp build has no {buft} buffer type")
    lib = ember.lib
    lib.em_vec_dot_kernel.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_void_p,
                                      ctypes.c_void_p, ctypes.c_void_p]
    vdt = {QT.Q4_1: QT.Q8_1, QT.Q5_1: QT.Q8_1, QT.Q4_0: QT.Q8_0, QT.Q5_0: QT.Q8_0,
           QT.Q8_0: QT.Q8_0}.get(qtype, QT.Q8_K if qtype in KQUANTS else qtype)
    want = np.empty((m, n), np.float32)
    for r in range(m):
        act = ember.quantize(vdt, x[r], ref=False)
        kern = expected_kernel(qtype, buft, m, r)
        for c in range(n):
            s = np.zeros(1, np.float32)
            assert lib.em_vec_dot_kernel(kern, int(qtype), k, s.ctypes.data, w[c].ctypes.data,
                                         act.ctypes.data) == 0
            want[r, c] = s[0]
    _assert_bits_equal(want, y, f"{qtype.name} {buft} rows={m}")
