"""Loading a model takes time linear in its tensor count.

Tensor lookup by name was a linear scan, called about 16 times per layer, so a file with many
layers and many tensors loaded in quadratic time (a 10 MB GGUF with 200,000 tensors: 45 s).
gguf.c now indexes the names in a hash table at load.

The files here are built for the measurement: ``N`` layers of tiny f32 tensors that all point
at the same data block, padded with unused tensors up to ``TENSORS_PER_LAYER`` per layer, and
the last layer lacks ``ffn_down.weight``: the loader looks up every tensor of every layer,
then rejects the file naming the missing tensor. One file has 10x the layers and tensors of
the other; linear loading takes about 10x as long, quadratic about 100x. Only the ratio is
asserted, never an absolute time.
"""

from __future__ import annotations

import time
from pathlib import Path

from conftest import EmberBuild, run_cli
from micro_gguf import (
    GGML_F32,
    GGUF_F32,
    GGUF_STRING,
    GGUF_U32,
    default_vocab,
    gguf_kv,
    gguf_string,
    gguf_tensor_info,
    gguf_vocab_kvs,
    raw_gguf,
)

E = 8  # embedding length; one head of 8, feed-forward 8
TENSORS_PER_LAYER = 50  # the model's 9 per layer plus unused ones
SMALL_LAYERS = 200  # 10,000 tensors
LARGE_LAYERS = 2000  # 100,000 tensors (the model allows 4096 layers)


def write_many_tensors(path: Path, n_layer: int) -> tuple[int, str]:
    """The file described in the module docstring; returns its tensor count and the name of
    the missing tensor."""
    vocab = default_vocab()
    tokens = vocab["tokenizer.ggml.tokens"]
    assert isinstance(tokens, list)
    kvs = [
        gguf_kv("general.architecture", GGUF_STRING, "llama"),
        gguf_kv("llama.context_length", GGUF_U32, 64),
        gguf_kv("llama.embedding_length", GGUF_U32, E),
        gguf_kv("llama.block_count", GGUF_U32, n_layer),
        gguf_kv("llama.feed_forward_length", GGUF_U32, E),
        gguf_kv("llama.attention.head_count", GGUF_U32, 1),
        gguf_kv("llama.attention.head_count_kv", GGUF_U32, 1),
        gguf_kv("llama.attention.layer_norm_rms_epsilon", GGUF_F32, 1e-5),
        gguf_kv("llama.rope.freq_base", GGUF_F32, 10000.0),
        *gguf_vocab_kvs(vocab),
    ]

    def info(name: str, *dims: int) -> bytes:
        # every tensor's data is the same block at offset 0 (the format does not forbid it)
        return gguf_tensor_info(name, dims, GGML_F32, 0)

    infos = [info("token_embd.weight", E, len(tokens)), info("output_norm.weight", E)]
    missing = f"blk.{n_layer - 1}.ffn_down.weight"
    for il in range(n_layer):
        p = f"blk.{il}."
        layer = [info(p + n, E) for n in ("attn_norm.weight", "ffn_norm.weight")]
        for n in ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"):
            if p + n + ".weight" != missing:
                layer.append(info(p + n + ".weight", E, E))
        layer += [info(f"{p}unused.{k}", E) for k in range(TENSORS_PER_LAYER - len(layer))]
        infos += layer
    data = b"\0" * (4 * E * len(tokens))  # the largest tensor, token_embd
    path.write_bytes(raw_gguf(kvs, infos, data))
    return len(infos), missing


def _load_seconds(build: EmberBuild, model: Path, missing: str, runs: int) -> float:
    """The fastest of ``runs`` loads; each must fail naming the missing tensor."""
    best = float("inf")
    for _ in range(runs):
        t0 = time.perf_counter()
        r = run_cli(build, ["-m", str(model), "-p", "a", "-n", "1"], timeout=900)
        best = min(best, time.perf_counter() - t0)
        err = r.stderr.decode(errors="replace")
        assert r.returncode == 2, err
        assert f"missing tensor '{missing}'" in err, err
    return best


def test_load_time_is_linear_in_the_tensor_count(ember_build: EmberBuild, tmp_path: Path) -> None:
    small, large = tmp_path / "small.gguf", tmp_path / "large.gguf"
    n_small, miss_small = write_many_tensors(small, SMALL_LAYERS)
    n_large, miss_large = write_many_tensors(large, LARGE_LAYERS)
    assert n_large >= 9 * n_small
    t_small = _load_seconds(ember_build, small, miss_small, runs=5)
    t_large = _load_seconds(ember_build, large, miss_large, runs=2)
    ratio = t_large / t_small
    # linear: ~10 (less: process start-up is a fixed cost); the old linear scan: ~100
    assert ratio < 30, (
        f"{n_small} tensors load in {t_small:.3f} s, {n_large} in {t_large:.3f} s: "
        f"{ratio:.0f}x for 10x the tensors (quadratic?)"
    )


def test_duplicate_tensor_name_is_still_an_error(ember_build: EmberBuild, tmp_path: Path) -> None:
    model = tmp_path / "dup.gguf"
    write_many_tensors(model, 3)
    data = model.read_bytes()
    # rename blk.2.unused.1 to blk.0.unused.1 (same length): the file then names it twice
    old, new = gguf_string("blk.2.unused.1"), gguf_string("blk.0.unused.1")
    assert data.count(old) == 1
    model.write_bytes(data.replace(old, new))
    r = run_cli(ember_build, ["-m", str(model), "-p", "a", "-n", "1"], timeout=60)
    assert r.returncode == 2
    assert "duplicate tensor name 'blk.0.unused.1'" in r.stderr.decode()
