"""Write very small llama GGUF files (a few KB to a few hundred KB) for corruption, load-time
and hostile-input tests and the fuzzer's seed corpus: the one GGUF writer of the runtime tests
(runtime/fuzz/make_corpus.py writes its seeds with the byte-level part below).

``write_micro_model``: the vocabulary is either a handful of byte-level BPE tokens or copied,
with its merges and special-token ids, from an existing GGUF file; the weights are random F32
from a fixed seed. The files go through the ``gguf`` package's writer, so they are valid by
construction.

``raw_gguf`` and the ``gguf_*`` encoders: a file written byte by byte, with the standard library
only, for layouts the ``gguf`` package will not write (many tensors sharing one data block for
the load-time test, every value type and broken files for the fuzzer's seeds).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from pathlib import Path

TOKENIZER_KEYS = (
    "tokenizer.ggml.model",
    "tokenizer.ggml.pre",
    "tokenizer.ggml.tokens",
    "tokenizer.ggml.token_type",
    "tokenizer.ggml.scores",
    "tokenizer.ggml.merges",
    "tokenizer.ggml.bos_token_id",
    "tokenizer.ggml.eos_token_id",
    "tokenizer.ggml.unknown_token_id",
    "tokenizer.ggml.padding_token_id",
    "tokenizer.ggml.add_bos_token",
    "tokenizer.ggml.add_space_prefix",
)


def _vocab_from(path: Path) -> dict[str, object]:
    import gguf

    r = gguf.GGUFReader(str(path))
    out: dict[str, object] = {}
    for key in TOKENIZER_KEYS:
        f = r.fields.get(key)
        if f is not None:
            out[key] = f.contents()
    return out


def default_vocab() -> dict[str, object]:
    # GPT-2 byte-level symbols for printable ASCII map to themselves; 'Ġ' is the space byte.
    tokens = [
        "<|endoftext|>",
        "a",
        "b",
        "c",
        "d",
        "e",
        "Ġ",
        "ab",
        "Ġa",
        "cd",
        "de",
        "abc",
        "!",
        "?",
        ".",
        "x",
    ]
    return {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": "default",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": [3] + [1] * (len(tokens) - 1),
        "tokenizer.ggml.merges": ["a b", "Ġ a", "c d", "d e", "ab c"],
        "tokenizer.ggml.bos_token_id": 0,
        "tokenizer.ggml.eos_token_id": 0,
        "tokenizer.ggml.add_bos_token": False,
    }


def write_micro_model(
    path: Path,
    *,
    vocab_from: Path | None = None,
    n_embd: int = 32,
    n_layer: int = 1,
    n_head: int = 2,
    n_head_kv: int = 1,
    n_ff: int = 64,
    n_ctx: int = 64,
    tied: bool = True,
    seed: int = 7,
) -> Path:
    import gguf
    import numpy as np

    vocab = _vocab_from(vocab_from) if vocab_from else default_vocab()
    tokens = vocab["tokenizer.ggml.tokens"]
    assert isinstance(tokens, list)
    n_vocab = len(tokens)
    rng = np.random.default_rng(seed)

    def mat(rows: int, cols: int) -> np.ndarray:
        return (rng.standard_normal((rows, cols)) * 0.1).astype(np.float32)

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("micro")
    w.add_context_length(n_ctx)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(n_embd // n_head)
    w.add_vocab_size(n_vocab)
    for key, value in vocab.items():
        if key == "tokenizer.ggml.model":
            w.add_tokenizer_model(str(value))
        elif key == "tokenizer.ggml.pre":
            w.add_tokenizer_pre(str(value))
        elif key == "tokenizer.ggml.tokens":
            w.add_token_list(value)  # type: ignore[arg-type]
        elif key == "tokenizer.ggml.token_type":
            w.add_token_types(value)  # type: ignore[arg-type]
        elif key == "tokenizer.ggml.scores":
            w.add_token_scores(value)  # type: ignore[arg-type]
        elif key == "tokenizer.ggml.merges":
            w.add_token_merges(value)  # type: ignore[arg-type]
        elif key == "tokenizer.ggml.bos_token_id":
            w.add_bos_token_id(int(value))  # type: ignore[arg-type]
        elif key == "tokenizer.ggml.eos_token_id":
            w.add_eos_token_id(int(value))  # type: ignore[arg-type]
        elif key == "tokenizer.ggml.unknown_token_id":
            w.add_unk_token_id(int(value))  # type: ignore[arg-type]
        elif key == "tokenizer.ggml.padding_token_id":
            w.add_pad_token_id(int(value))  # type: ignore[arg-type]
        elif key == "tokenizer.ggml.add_bos_token":
            w.add_add_bos_token(bool(value))
        elif key == "tokenizer.ggml.add_space_prefix":
            w.add_add_space_prefix(bool(value))

    hd = n_embd // n_head
    w.add_tensor("token_embd.weight", mat(n_vocab, n_embd))
    for il in range(n_layer):
        p = f"blk.{il}."
        w.add_tensor(
            p + "attn_norm.weight", (1 + 0.1 * rng.standard_normal(n_embd)).astype(np.float32)
        )
        w.add_tensor(p + "attn_q.weight", mat(n_head * hd, n_embd))
        w.add_tensor(p + "attn_k.weight", mat(n_head_kv * hd, n_embd))
        w.add_tensor(p + "attn_v.weight", mat(n_head_kv * hd, n_embd))
        w.add_tensor(p + "attn_output.weight", mat(n_embd, n_head * hd))
        w.add_tensor(
            p + "ffn_norm.weight", (1 + 0.1 * rng.standard_normal(n_embd)).astype(np.float32)
        )
        w.add_tensor(p + "ffn_gate.weight", mat(n_ff, n_embd))
        w.add_tensor(p + "ffn_up.weight", mat(n_ff, n_embd))
        w.add_tensor(p + "ffn_down.weight", mat(n_embd, n_ff))
    w.add_tensor("output_norm.weight", np.ones(n_embd, dtype=np.float32))
    if not tied:
        w.add_tensor("output.weight", mat(n_vocab, n_embd))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


# --------------------------------------------------------------------------------------------
# GGUF written byte by byte (little-endian, v3)

# gguf.GGUFValueType and gguf.GGMLQuantizationType values
(GGUF_U8, GGUF_I8, GGUF_U16, GGUF_I16, GGUF_U32, GGUF_I32, GGUF_F32, GGUF_BOOL, GGUF_STRING,
 GGUF_ARRAY, GGUF_U64, GGUF_I64, GGUF_F64) = range(13)
GGML_F32 = 0
_SCALAR = {GGUF_U8: "<B", GGUF_I8: "<b", GGUF_U16: "<H", GGUF_I16: "<h", GGUF_U32: "<I",
           GGUF_I32: "<i", GGUF_F32: "<f", GGUF_BOOL: "<B", GGUF_U64: "<Q", GGUF_I64: "<q",
           GGUF_F64: "<d"}


def gguf_string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw


def gguf_value(vtype: int, value: object) -> bytes:
    """One value of any GGUF type; an array's value is ``(element type, items)``."""
    if vtype == GGUF_STRING:
        assert isinstance(value, str)
        return gguf_string(value)
    if vtype == GGUF_ARRAY:
        etype, items = value  # type: ignore[misc]
        return struct.pack("<IQ", etype, len(items)) + b"".join(
            gguf_value(etype, v) for v in items)
    if vtype == GGUF_BOOL:
        value = 1 if value else 0
    return struct.pack(_SCALAR[vtype], value)


def gguf_kv(key: str, vtype: int, value: object) -> bytes:
    """One metadata pair of any type (``gguf_value``)."""
    return gguf_string(key) + struct.pack("<I", vtype) + gguf_value(vtype, value)


def gguf_array(key: str, etype: int, values: Sequence[object]) -> bytes:
    """One metadata array."""
    return gguf_kv(key, GGUF_ARRAY, (etype, list(values)))


def gguf_tensor_info(name: str, dims: Sequence[int], ggml_type: int, offset: int) -> bytes:
    """One tensor's entry: name, dimensions (innermost first), type, offset in the data."""
    out = gguf_string(name) + struct.pack("<I", len(dims))
    out += b"".join(struct.pack("<Q", d) for d in dims)
    return out + struct.pack("<IQ", ggml_type, offset)


def gguf_vocab_kvs(vocab: dict[str, object]) -> list[bytes]:
    """The metadata pairs of a ``default_vocab()``-shaped vocabulary."""
    return [
        gguf_kv("tokenizer.ggml.model", GGUF_STRING, str(vocab["tokenizer.ggml.model"])),
        gguf_kv("tokenizer.ggml.pre", GGUF_STRING, str(vocab["tokenizer.ggml.pre"])),
        gguf_array("tokenizer.ggml.tokens", GGUF_STRING,
                   list(vocab["tokenizer.ggml.tokens"])),  # type: ignore[call-overload]
        gguf_array("tokenizer.ggml.token_type", GGUF_I32,
                   list(vocab["tokenizer.ggml.token_type"])),  # type: ignore[call-overload]
        gguf_array("tokenizer.ggml.merges", GGUF_STRING,
                   list(vocab["tokenizer.ggml.merges"])),  # type: ignore[call-overload]
        gguf_kv("tokenizer.ggml.bos_token_id", GGUF_U32, vocab["tokenizer.ggml.bos_token_id"]),
        gguf_kv("tokenizer.ggml.eos_token_id", GGUF_U32, vocab["tokenizer.ggml.eos_token_id"]),
        gguf_kv("tokenizer.ggml.add_bos_token", GGUF_BOOL,
                vocab["tokenizer.ggml.add_bos_token"]),
    ]


def raw_gguf(kvs: Sequence[bytes], infos: Sequence[bytes], data: bytes, *,
             version: int = 3, alignment: int = 32) -> bytes:
    """A whole file: header, metadata, tensor entries, padding to ``alignment``, data."""
    head = b"GGUF" + struct.pack("<IQQ", version, len(infos), len(kvs)) + b"".join(kvs)
    head += b"".join(infos)
    head += b"\0" * (-len(head) % alignment)
    return head + data
