#!/usr/bin/env python3
"""Write the seed corpus of the GGUF fuzzer (runtime/fuzz/corpus/).

Small files, valid and invalid, that between them reach every branch of the reader: an empty
header, one metadata value of every type, arrays, a complete micro llama model (F32, F16 and
Q8_0 tensors, GPT-2 style vocabulary) in GGUF v2 and v3, and a few broken variants. Written byte
by byte with the runtime tests' encoder (tests/runtime/micro_gguf.py), so the seeds do not depend
on any GGUF library. Deterministic: running it again gives the same bytes.

    python runtime/fuzz/make_corpus.py [OUT_DIR]
"""

from __future__ import annotations

import random
import struct
import sys
from pathlib import Path

# The byte-level GGUF writer is the runtime tests' (tests/runtime/micro_gguf.py: standard
# library only at import), so the seeds and the tests share one encoder.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests" / "runtime"))
import micro_gguf as mg

kv = mg.gguf_kv
U8, I8, U16, I16, U32, I32, F32 = (mg.GGUF_U8, mg.GGUF_I8, mg.GGUF_U16, mg.GGUF_I16,
                                   mg.GGUF_U32, mg.GGUF_I32, mg.GGUF_F32)
BOOL, STR, ARR, U64, I64, F64 = (mg.GGUF_BOOL, mg.GGUF_STRING, mg.GGUF_ARRAY, mg.GGUF_U64,
                                 mg.GGUF_I64, mg.GGUF_F64)
ALIGN = 32


def fp16(x: float) -> bytes:
    return struct.pack("<e", x)


def q8_0_row(xs: list[float]) -> bytes:
    out = b""
    for i in range(0, len(xs), 32):
        blk = xs[i : i + 32]
        amax = max(abs(v) for v in blk)
        d = amax / 127 if amax else 0.0
        qs = [0 if d == 0 else max(-127, min(127, round(v / d))) for v in blk]
        out += fp16(d) + struct.pack("<32b", *qs)
    return out


def gguf(
    kvs: list[bytes], tensors: list[tuple[str, list[int], int, bytes]], version: int = 3
) -> bytes:
    infos, data = [], b""
    for name, dims, ttype, raw in tensors:
        infos.append(mg.gguf_tensor_info(name, dims, ttype, len(data)))
        data += raw + b"\0" * ((-len(raw)) % ALIGN)
    return mg.raw_gguf(kvs, infos, data, version=version, alignment=ALIGN)


def micro_model(rng: random.Random, version: int = 3, quant: bool = True) -> bytes:
    vocab = mg.default_vocab()
    tokens = vocab["tokenizer.ggml.tokens"]
    assert isinstance(tokens, list)
    E, H, KV, F, V = 32, 2, 1, 32, len(tokens)
    hd = E // H
    kvs = [
        kv("general.architecture", STR, "llama"),
        kv("llama.context_length", U32, 64),
        kv("llama.embedding_length", U32, E),
        kv("llama.block_count", U32, 1),
        kv("llama.feed_forward_length", U32, F),
        kv("llama.attention.head_count", U32, H),
        kv("llama.attention.head_count_kv", U32, KV),
        kv("llama.rope.freq_base", F32, 10000.0),
        kv("llama.attention.layer_norm_rms_epsilon", F32, 1e-5),
        *mg.gguf_vocab_kvs(vocab),
    ]

    def mat(rows: int, cols: int) -> list[float]:
        return [rng.gauss(0, 0.1) for _ in range(rows * cols)]

    def f32(xs: list[float]) -> bytes:
        return struct.pack(f"<{len(xs)}f", *xs)

    def f16(xs: list[float]) -> bytes:
        return b"".join(fp16(x) for x in xs)

    emb = mat(V, E)
    tensors = [
        ("token_embd.weight", [E, V], 8 if quant else 0, q8_0_row(emb) if quant else f32(emb))
    ]
    tensors += [
        ("blk.0.attn_norm.weight", [E], 0, f32([1.0] * E)),
        (
            "blk.0.attn_q.weight",
            [E, H * hd],
            1 if quant else 0,
            (f16 if quant else f32)(mat(H * hd, E)),
        ),
        ("blk.0.attn_k.weight", [E, KV * hd], 0, f32(mat(KV * hd, E))),
        ("blk.0.attn_v.weight", [E, KV * hd], 0, f32(mat(KV * hd, E))),
        ("blk.0.attn_output.weight", [H * hd, E], 0, f32(mat(E, H * hd))),
        ("blk.0.ffn_norm.weight", [E], 0, f32([1.0] * E)),
        ("blk.0.ffn_gate.weight", [E, F], 0, f32(mat(F, E))),
        ("blk.0.ffn_up.weight", [E, F], 0, f32(mat(F, E))),
        ("blk.0.ffn_down.weight", [F, E], 0, f32(mat(E, F))),
        ("output_norm.weight", [E], 0, f32([1.0] * E)),
    ]
    return gguf(kvs, tensors, version)


def seeds() -> dict[str, bytes]:
    rng = random.Random(20250207)
    all_types = [
        kv("u8", U8, 200),
        kv("i8", I8, -3),
        kv("u16", U16, 65000),
        kv("i16", I16, -300),
        kv("u32", U32, 4_000_000_000),
        kv("i32", I32, -7),
        kv("f32", F32, 0.5),
        kv("bool", BOOL, True),
        kv("str", STR, "h\u00e9llo"),
        kv("u64", U64, 2**40),
        kv("i64", I64, -(2**40)),
        kv("f64", F64, 2.5),
        kv("arr.i32", ARR, (I32, [1, 2, 3])),
        kv("arr.str", ARR, (STR, ["x", "", "yz"])),
        kv("arr.f32", ARR, (F32, [0.25])),
        kv("arr.bool", ARR, (BOOL, [True, False])),
        kv("general.alignment", U32, 64),
    ]
    model = micro_model(rng)
    out = {
        "empty_header.gguf": gguf([], []),
        "all_value_types.gguf": gguf(all_types, []),
        "one_tensor.gguf": gguf(
            [kv("general.architecture", STR, "llama")],
            [("t", [4, 2], 0, struct.pack("<8f", *range(8)))],
        ),
        "micro_llama_v3.gguf": model,
        "micro_llama_v2.gguf": micro_model(random.Random(1), version=2),
        "micro_llama_f32.gguf": micro_model(random.Random(2), quant=False),
        "bad_magic.gguf": b"GGUX" + model[4:200],
        "version1.gguf": b"GGUF" + struct.pack("<IQQ", 1, 0, 0),
        "truncated_header.gguf": model[:150],
        "truncated_data.gguf": model[: len(model) - 40],
        "unknown_type.gguf": gguf([], [("t", [32], 77, b"\0" * 32)]),
    }
    return out


def main(argv: list[str]) -> int:
    out = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parent / "corpus"
    out.mkdir(parents=True, exist_ok=True)
    for name, data in seeds().items():
        (out / name).write_bytes(data)
    print(f"wrote {len(seeds())} seeds to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
