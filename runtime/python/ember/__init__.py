"""Python binding of ember, the C11 GGUF inference runtime, through ctypes.

No compiler is needed: the package loads the shared library (``libember.so``,
``libember.so.0``, ``libember.dylib``, ``libember.0.dylib`` or ``ember.dll``) from, in order,

1. the file named by the ``EMBER_LIBRARY`` environment variable,
2. ``ember/lib/`` next to this file (where wheels put it on Linux and macOS),
3. ``ember/bin/`` (where wheels put ``ember.dll``, beside ``ember-server.exe``),
4. the directory of this file.

Example::

    import ember
    m = ember.Model("model.gguf")
    ids = m.tokenize("Hello")
    out = m.generate("Hello", 16, temperature=0)   # -> Generation(ids, text)

Every call that fails raises :class:`EmberError` with the library's message. Arguments are
checked before they reach the C library, whose integer and float parameters are fixed-width
(a ctypes field silently keeps the low bits of a large int, and a C string ends at its first
NUL): a value of the wrong type raises TypeError, one outside its range (the ranges ember-cli
accepts) or with a NUL byte raises ValueError, both naming the argument. Models and contexts
are independent objects in the C library, so several models can be used in one process; a
Model is not safe to use from two threads at once.
"""

from __future__ import annotations

import ctypes
import math
import numbers
import operator
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["EmberError", "Generation", "Model", "library_path", "version"]

_HERE = Path(__file__).resolve().parent


class EmberError(RuntimeError):
    """A failure reported by the ember library; ``status`` is the ember_status code."""

    def __init__(self, message: str, status: int = -1) -> None:
        super().__init__(message)
        self.status = status


def _library_names() -> list[str]:
    if sys.platform == "win32":
        return ["ember.dll", "libember.dll"]
    if sys.platform == "darwin":
        return ["libember.dylib", "libember.0.dylib"]
    return ["libember.so", "libember.so.0"]


def library_path() -> Path:
    """The shared library this package would load (raises EmberError if none is found)."""
    env = os.environ.get("EMBER_LIBRARY")
    if env:
        p = Path(env)
        if not p.is_file():
            raise EmberError(f"EMBER_LIBRARY={env} does not name a file")
        return p
    for folder in (_HERE / "lib", _HERE / "bin", _HERE):
        for name in _library_names():
            if (folder / name).is_file():
                return folder / name
    raise EmberError(
        f"cannot find the ember shared library ({' or '.join(_library_names())}) "
        f"in {_HERE / 'lib'}; "
        "set EMBER_LIBRARY to its path"
    )


# Ranges of the arguments, as ember-cli accepts them (runtime/tools/ember-cli.c) and the C
# library's fields hold them.
_N_CTX_MAX = 1 << 24
_N_THREADS_MAX = 1024  # ember_context_create's limit
_N_TOKENS_MAX = 1 << 24  # no generation outlives the largest context
_INT32_MAX = 2**31 - 1
_UINT64_MAX = 2**64 - 1
_REPEAT_LAST_N_MAX = 1 << 20


def _int_arg(name: str, value: object, lo: int, hi: int) -> int:
    """value as an int in [lo, hi]; TypeError for a non-integer (a bool included: it is
    almost always a misplaced flag), ValueError naming name and the range otherwise."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an integer in [{lo}, {hi}], got a bool ({value!r})")
    try:
        v = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(
            f"{name} must be an integer in [{lo}, {hi}], got {type(value).__name__} ({value!r})"
        ) from None
    if not lo <= v <= hi:
        raise ValueError(f"{name} must be an integer in [{lo}, {hi}], got {v}")
    return int(v)


def _float_arg(name: str, value: object, lo: float, hi: float) -> float:
    """value as a finite float in [lo, hi] (the C library keeps it as a float32)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"{name} must be a number in [{lo:g}, {hi:g}], got {type(value).__name__} ({value!r})"
        )
    try:
        v = float(value)
    except OverflowError:  # an int too large for a double
        raise ValueError(f"{name} must be a number in [{lo:g}, {hi:g}], got {value}") from None
    if not math.isfinite(v) or not lo <= v <= hi:
        raise ValueError(f"{name} must be a finite number in [{lo:g}, {hi:g}], got {v!r}")
    return v


def _c_string(name: str, value: str | bytes) -> bytes:
    """value as the bytes of a C string: a NUL byte would silently end it early."""
    data = value.encode() if isinstance(value, str) else bytes(value)
    if b"\0" in data:
        raise ValueError(f"{name} must not contain a NUL byte, got {value!r}")
    return data


def _opt_c_string(name: str, value: object) -> bytes | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str or None, got {type(value).__name__} ({value!r})")
    return _c_string(name, value)


class _SamplerParams(ctypes.Structure):
    _fields_ = [
        ("temperature", ctypes.c_float),
        ("top_k", ctypes.c_int32),
        ("top_p", ctypes.c_float),
        ("min_p", ctypes.c_float),
        ("repeat_penalty", ctypes.c_float),
        ("repeat_last_n", ctypes.c_int32),
        ("seed", ctypes.c_uint64),
    ]


class _ContextParams(ctypes.Structure):
    _fields_ = [
        ("n_ctx", ctypes.c_uint32),
        ("n_batch", ctypes.c_uint32),
        ("n_threads", ctypes.c_int32),
        ("kernel", ctypes.c_char_p),
        ("backend", ctypes.c_char_p),
    ]


_lib: ctypes.CDLL | None = None


def _load() -> ctypes.CDLL:
    global _lib
    if _lib is not None:
        return _lib
    lib = ctypes.CDLL(str(library_path()))
    p, i32, u32, sz = ctypes.c_void_p, ctypes.c_int32, ctypes.c_uint32, ctypes.c_size_t
    i32p = ctypes.POINTER(ctypes.c_int32)
    sigs = {
        "ember_version": ([], ctypes.c_char_p),
        "ember_strerror": ([ctypes.c_int], ctypes.c_char_p),
        "ember_kernel_name": ([], ctypes.c_char_p),
        "ember_model_load": (
            [ctypes.c_char_p, p, ctypes.POINTER(p), ctypes.c_char_p, sz],
            ctypes.c_int,
        ),
        "ember_model_free": ([p], None),
        "ember_model_last_error": ([p], ctypes.c_char_p),
        "ember_model_n_vocab": ([p], i32),
        "ember_model_n_ctx_train": ([p], i32),
        "ember_model_meta_str": ([p, ctypes.c_char_p], ctypes.c_char_p),
        "ember_tokenize": (
            [p, ctypes.c_char_p, sz, ctypes.c_int, ctypes.c_int, i32p, sz, ctypes.POINTER(sz)],
            ctypes.c_int,
        ),
        "ember_token_to_piece": ([p, i32, ctypes.c_int, ctypes.c_char_p, sz], i32),
        "ember_token_is_eog": ([p, i32], ctypes.c_int),
        "ember_context_default_params": ([], _ContextParams),
        "ember_context_create": (
            [p, ctypes.POINTER(_ContextParams), ctypes.POINTER(p)],
            ctypes.c_int,
        ),
        "ember_context_free": ([p], None),
        "ember_context_last_error": ([p], ctypes.c_char_p),
        "ember_context_reset": ([p], None),
        "ember_context_n_ctx": ([p], u32),
        "ember_context_backend": ([p], ctypes.c_char_p),
        "ember_context_device": ([p], ctypes.c_char_p),
        "ember_decode": ([p, i32p, sz], ctypes.c_int),
        "ember_get_logits": ([p], ctypes.POINTER(ctypes.c_float)),
        "ember_sampler_default_params": ([], _SamplerParams),
        "ember_sampler_create": ([ctypes.POINTER(_SamplerParams), ctypes.POINTER(p)], ctypes.c_int),
        "ember_sampler_free": ([p], None),
        "ember_generate": (
            [p, p, i32p, sz, sz, ctypes.c_int, i32p, ctypes.POINTER(sz)],
            ctypes.c_int,
        ),
    }
    for name, (args, res) in sigs.items():
        fn = getattr(lib, name)
        fn.argtypes = args
        fn.restype = res
    _lib = lib
    return lib


def version() -> str:
    """Version string of the loaded library."""
    return str(_load().ember_version().decode())


@dataclass(frozen=True)
class Generation:
    """Result of :meth:`Model.generate`: the prompt's ids, the generated ids and their text."""

    prompt_ids: list[int]
    ids: list[int]
    text: str


class Model:
    """A loaded GGUF model with its own context (KV cache) of ``n_ctx`` tokens.

    ``kernel`` picks the SIMD level ("scalar", "avx2", ...; default: the best this CPU runs);
    every level gives the same results. ``backend`` is "auto" (default: a GPU backend of this
    build when one starts, else the CPU), "cpu", "cuda" or "hip"."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        n_ctx: int = 512,
        n_threads: int = 0,
        kernel: str | None = None,
        backend: str | None = None,
    ) -> None:
        # every argument is checked before the library loads anything
        c_path = _c_string("path", os.fsencode(os.fspath(path)))
        c_n_ctx = _int_arg("n_ctx", n_ctx, 1, _N_CTX_MAX)
        c_n_threads = _int_arg("n_threads", n_threads, 0, _N_THREADS_MAX)
        c_kernel = _opt_c_string("kernel", kernel)
        c_backend = _opt_c_string("backend", backend)
        lib = _load()
        self._lib = lib
        self._model = ctypes.c_void_p()
        self._ctx = ctypes.c_void_p()
        err = ctypes.create_string_buffer(1024)
        st = lib.ember_model_load(c_path, None, ctypes.byref(self._model), err, len(err))
        if st != 0:
            raise EmberError(
                err.value.decode(errors="replace") or lib.ember_strerror(st).decode(), st
            )
        self._n_vocab = int(lib.ember_model_n_vocab(self._model))
        cp = lib.ember_context_default_params()
        cp.n_ctx = c_n_ctx
        cp.n_threads = c_n_threads
        cp.kernel = c_kernel
        cp.backend = c_backend
        st = lib.ember_context_create(self._model, ctypes.byref(cp), ctypes.byref(self._ctx))
        if st != 0:
            msg = lib.ember_model_last_error(self._model).decode(errors="replace")
            lib.ember_model_free(self._model)
            self._model = ctypes.c_void_p()
            raise EmberError(msg or lib.ember_strerror(st).decode(), st)

    def close(self) -> None:
        """Free the context and the model (also done when the object is collected)."""
        lib = getattr(self, "_lib", None)
        if lib is None:
            return
        if getattr(self, "_ctx", None):
            lib.ember_context_free(self._ctx)
            self._ctx = ctypes.c_void_p()
        if getattr(self, "_model", None):
            lib.ember_model_free(self._model)
            self._model = ctypes.c_void_p()

    def __del__(self) -> None:
        self.close()

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check(self) -> None:
        if not self._model:
            raise EmberError("the model is closed")

    def _token_ids(self, name: str, ids: object) -> list[int]:
        """ids as a list of token ids of this model (checked before they reach C)."""
        if isinstance(ids, (str, bytes)) or not isinstance(ids, Iterable):
            raise TypeError(
                f"{name} must be a sequence of token ids, got {type(ids).__name__} ({ids!r:.80})"
            )
        return [_int_arg(f"{name}[{i}]", t, 0, self._n_vocab - 1) for i, t in enumerate(ids)]

    @property
    def backend(self) -> str:
        """The backend the context computes with ("cpu", "cuda", "hip")."""
        self._check()
        return str(self._lib.ember_context_backend(self._ctx).decode())

    @property
    def device(self) -> str:
        """The device actually used ("cpu" or the GPU's name)."""
        self._check()
        return str(self._lib.ember_context_device(self._ctx).decode(errors="replace"))

    @property
    def n_vocab(self) -> int:
        self._check()
        return self._n_vocab

    def meta(self, key: str) -> str | None:
        """A string metadata value of the GGUF file, or None."""
        self._check()
        if not isinstance(key, str):
            raise TypeError(f"key must be a str, got {type(key).__name__} ({key!r})")
        c_key = _c_string("key", key)
        v = self._lib.ember_model_meta_str(self._model, c_key)
        return None if v is None else v.decode(errors="replace")

    def tokenize(
        self, text: str | bytes, *, add_special: bool = True, parse_special: bool = True
    ) -> list[int]:
        """Token ids of text, as llama.cpp's llama_tokenize gives them."""
        self._check()
        if not isinstance(text, (str, bytes, bytearray, memoryview)):
            # bytes(5) would be five NUL bytes, tokenized without complaint
            raise TypeError(f"text must be str or bytes, got {type(text).__name__} ({text!r:.80})")
        data = text.encode() if isinstance(text, str) else bytes(text)
        n = ctypes.c_size_t()
        cap = len(data) + 16
        while True:
            buf = (ctypes.c_int32 * cap)()
            st = self._lib.ember_tokenize(
                self._model,
                data,
                len(data),
                int(add_special),
                int(parse_special),
                buf,
                cap,
                ctypes.byref(n),
            )
            if st != 0:
                raise EmberError(
                    self._lib.ember_model_last_error(self._model).decode(errors="replace"), st
                )
            if n.value <= cap:
                return list(buf[: n.value])
            cap = n.value

    def token_bytes(self, token: int) -> bytes:
        """The bytes of one token (special tokens render as empty)."""
        self._check()
        token = _int_arg("token", token, 0, self._n_vocab - 1)
        buf = ctypes.create_string_buffer(256)
        k = self._lib.ember_token_to_piece(self._model, token, 0, buf, len(buf))
        if k < 0:
            raise EmberError(
                self._lib.ember_model_last_error(self._model).decode(errors="replace")
                or f"invalid token id {token}"
            )
        if k > len(buf):
            buf = ctypes.create_string_buffer(k)
            k = self._lib.ember_token_to_piece(self._model, token, 0, buf, len(buf))
        return buf.raw[:k]

    def detokenize(self, ids: Sequence[int]) -> str:
        self._check()
        return b"".join(self.token_bytes(i) for i in self._token_ids("ids", ids)).decode(
            errors="replace"
        )

    def logits(self, ids: Sequence[int]) -> list[float]:
        """Evaluate ids (at least one) from an empty cache and return the last token's logits."""
        self._check()
        checked = self._token_ids("ids", ids)
        if not checked:
            raise ValueError("ids is empty: logits needs at least one token id to evaluate")
        self._lib.ember_context_reset(self._ctx)
        arr = (ctypes.c_int32 * len(checked))(*checked)
        st = self._lib.ember_decode(self._ctx, arr, len(checked))
        if st != 0:
            raise EmberError(
                self._lib.ember_context_last_error(self._ctx).decode(errors="replace"), st
            )
        ptr = self._lib.ember_get_logits(self._ctx)
        if not ptr:  # never after a successful decode; slicing NULL would crash the process
            raise EmberError("the library returned no logits after a successful decode")
        return list(ptr[: self._n_vocab])

    def generate(
        self,
        prompt: str | Sequence[int],
        n_tokens: int,
        *,
        temperature: float = 0.0,
        seed: int = 0,
        top_k: int = 40,
        top_p: float = 0.95,
        min_p: float = 0.05,
        repeat_penalty: float = 1.0,
        repeat_last_n: int = 64,
        ignore_eos: bool = False,
    ) -> Generation:
        """Generate up to n_tokens after prompt (text, or token ids; not empty) from an empty
        cache. temperature 0 is greedy; top_k 0, top_p 1, min_p 0 and repeat_penalty 1 are off."""
        self._check()
        c_n_tokens = _int_arg("n_tokens", n_tokens, 0, _N_TOKENS_MAX)
        c_temperature = _float_arg("temperature", temperature, 0.0, 100.0)
        c_seed = _int_arg("seed", seed, 0, _UINT64_MAX)
        c_top_k = _int_arg("top_k", top_k, 0, _INT32_MAX)
        c_top_p = _float_arg("top_p", top_p, 0.0, 1.0)
        c_min_p = _float_arg("min_p", min_p, 0.0, 1.0)
        c_repeat_penalty = _float_arg("repeat_penalty", repeat_penalty, 0.0, 100.0)
        c_repeat_last_n = _int_arg("repeat_last_n", repeat_last_n, 0, _REPEAT_LAST_N_MAX)
        if isinstance(prompt, str):
            prompt_ids = self.tokenize(prompt)
            if not prompt_ids:
                raise ValueError(f"prompt {prompt!r} has no tokens: generate needs at least one")
        else:
            prompt_ids = self._token_ids("prompt", prompt)
            if not prompt_ids:
                raise ValueError("prompt is empty: generate needs at least one token id")
        sp = self._lib.ember_sampler_default_params()
        sp.temperature = c_temperature
        sp.seed = c_seed
        sp.top_k = c_top_k
        sp.top_p = c_top_p
        sp.min_p = c_min_p
        sp.repeat_penalty = c_repeat_penalty
        sp.repeat_last_n = c_repeat_last_n
        sampler = ctypes.c_void_p()
        st = self._lib.ember_sampler_create(ctypes.byref(sp), ctypes.byref(sampler))
        if st != 0:
            raise EmberError("cannot create a sampler", st)
        try:
            self._lib.ember_context_reset(self._ctx)
            parr = (ctypes.c_int32 * len(prompt_ids))(*prompt_ids)
            out = (ctypes.c_int32 * max(1, c_n_tokens))()
            n = ctypes.c_size_t()
            st = self._lib.ember_generate(
                self._ctx,
                sampler,
                parr,
                len(prompt_ids),
                c_n_tokens,
                int(ignore_eos),
                out,
                ctypes.byref(n),
            )
            if st != 0:
                raise EmberError(
                    self._lib.ember_context_last_error(self._ctx).decode(errors="replace"), st
                )
            ids = list(out[: n.value])
        finally:
            self._lib.ember_sampler_free(sampler)
        return Generation(prompt_ids=prompt_ids, ids=ids, text=self.detokenize(ids))
