#!/usr/bin/env python3
"""Write the seed corpus of the GGUF fuzzer (runtime/fuzz/corpus/).

Small files, valid and invalid, that between them reach every branch of the reader: an empty
header, one metadata value of every type, arrays, a complete micro llama model (F32, F16 and
Q8_0 tensors, GPT-2 style vocabulary) in GGUF v2 and v3, and a few broken variants. Written by
hand with struct so the seeds do not depend on any GGUF library. Deterministic: running it again
gives the same bytes.

    python runtime/fuzz/make_corpus.py [OUT_DIR]
"""

from __future__ import annotations

import random
import struct
import sys
from pathlib import Path

U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)
FMT = {
    U8: "<B",
    I8: "<b",
    U16: "<H",
    I16: "<h",
    U32: "<I",
    I32: "<i",
    F32: "<f",
    BOOL: "<?",
    U64: "<Q",
    I64: "<q",
    F64: "<d",
}
ALIGN = 32


def s(text: str) -> bytes:
    b = text.encode()
    return struct.pack("<Q", len(b)) + b


def value(t: int, v: object) -> bytes:
    if t == STR:
        return s(str(v))
    if t == ARR:
        et, items = v  # type: ignore[misc]
        body = b"".join(value(et, x) for x in items)
        return struct.pack("<IQ", et, len(items)) + body
    return struct.pack(FMT[t], v)


def kv(key: str, t: int, v: object) -> bytes:
    return s(key) + struct.pack("<I", t) + value(t, v)


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
    head = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kvs)) + b"".join(kvs)
    infos, data = b"", b""
    for name, dims, ttype, raw in tensors:
        infos += (
            s(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        )
        infos += struct.pack("<IQ", ttype, len(data))
        data += raw + b"\0" * ((-len(raw)) % ALIGN)
    out = head + infos
    out += b"\0" * ((-len(out)) % ALIGN)
    return out + data


def micro_model(rng: random.Random, version: int = 3, quant: bool = True) -> bytes:
    tokens = [
        "<|endoftext|>",
        "a",
        "b",
        "c",
        "d",
        "e",
        "\u0120",
        "ab",
        "\u0120a",
        "cd",
        "de",
        "abc",
        "!",
        "?",
        ".",
        "x",
    ]
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
        kv("tokenizer.ggml.model", STR, "gpt2"),
        kv("tokenizer.ggml.pre", STR, "default"),
        kv("tokenizer.ggml.tokens", ARR, (STR, tokens)),
        kv("tokenizer.ggml.token_type", ARR, (I32, [3] + [1] * (V - 1))),
        kv("tokenizer.ggml.merges", ARR, (STR, ["a b", "\u0120 a", "c d", "d e", "ab c"])),
        kv("tokenizer.ggml.bos_token_id", U32, 0),
        kv("tokenizer.ggml.eos_token_id", U32, 0),
        kv("tokenizer.ggml.add_bos_token", BOOL, False),
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
