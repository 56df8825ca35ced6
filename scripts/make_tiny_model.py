#!/usr/bin/env python3
"""Write the tiny random llama models that ember's fast runtime tests load.

A 135M model takes seconds per test; these take milliseconds and still exercise every code
path a llama model uses: GQA attention, RoPE, RMSNorm, SwiGLU, tied and untied output, both
tokenizer families llama.cpp supports for llama models (GPT-2 byte-level BPE and SentencePiece
with byte fallback), and every tensor type the references cover.

Shapes: width 256, 2 layers, 4 query heads and 2 KV heads of dim 64, FFN 512, context 256.
256 and 512 are multiples of the 256-element K-quant super-block, so the ``*_K`` variants
really hold Q4_K/Q5_K/Q6_K tensors (SmolLM2's width 576 is not, and falls back).

Two models, both F32, written with the ``gguf`` package from a fixed numpy seed:

* ``tiny-gpt2-f32.gguf``: byte-level BPE (``tokenizer.ggml.model = gpt2``, pre-tokenizer
  ``smollm`` as SmolLM2 uses), ChatML special tokens as CONTROL tokens, add_bos false,
  embeddings tied (no ``output.weight``), like SmolLM2.
* ``tiny-spm-f32.gguf``: SentencePiece (``tokenizer.ggml.model = llama``) with scores,
  byte-fallback tokens ``<0x00>``..``<0xFF>``, ``<unk>``/``<s>``/``</s>``, add_bos true,
  add_space_prefix true, untied ``output.weight``, like Llama 2 / TinyLlama.

Size: the shapes above are about 1.4M parameters (1.18M in the two blocks alone), so the F32
files are 5.4 and 6.0 MB and all 22 files together about 39 MB; shrinking them means a width
below 256 (no real K-quant tensors) or fewer/narrower blocks, so N_LAYER and N_FF are the knobs
if the repository should carry less.

Both vocabularies are learned here by a small BPE trainer from the text in ``CORPUS``, so no
tokenizer file has to be downloaded. Then llama.cpp's quantizer (through llama-cpp-python)
makes the other types next to them; their sha256s go into ``tests/runtime/data/models.json``.

Usage::

    python scripts/make_tiny_model.py [--out DIR] [--no-quantize] [--record]

Without ``--record``, files already listed in models.json are checked against it, so a
second run proves the whole pipeline (trainer, writer, quantizer) is deterministic.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parent))
import models  # sibling script: shares the quantize and record helpers

OUT_DIR = models.REPO_ROOT / "tests" / "runtime" / "data" / "tiny"

SEED = 20250207
N_EMBD = 256
N_LAYER = 2
N_HEAD = 4
N_HEAD_KV = 2
HEAD_DIM = N_EMBD // N_HEAD
N_FF = 512
N_CTX = 256
ROPE_BASE = 10000.0
RMS_EPS = 1e-5
N_VOCAB = 640

# llama_token_type values (llama.h / gguf.TokenType).
TT_NORMAL = 1
TT_UNKNOWN = 2
TT_CONTROL = 3
TT_BYTE = 6

GPT2_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
SPM_SPECIALS = ["<unk>", "<s>", "</s>"]
SPM_SPACE = "\u2581"  # the "lower one eighth block" SentencePiece uses for a space

CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Training text for the tokenizers: plain English, code with indentation, numbers and a few
# non-ASCII words, so the learned merges cover what the reference prompts contain.
CORPUS = """\
The quick brown fox jumps over the lazy dog. The dog did not mind; it was asleep in the sun.
A small model is not a smart model, but it is a fast one, and fast tests are tests that run.
When the kettle boils, pour the water over the leaves and wait three or four minutes.
In the morning the market opens at seven, and the first customers are always the bakers.
She said that the train would leave at 10:45 from platform 2, and that it was never late.
Numbers like 3.14159, 2.71828, 1,000,000 and 42 appear in text more often than you think.
The weather today is cloudy with a chance of rain in the afternoon and clear skies at night.
We tested the program on three machines, and it gave the same answer on every one of them.
There is a difference between what a function returns and what it prints to the screen.
Hello world! How are you today? I am fine, thank you. What are you working on these days?
The release notes list every change, every fix, and every build that was disabled, with links.
People who write compilers think about registers; people who write tests think about edges.
It is easier to read a short function than a long one, and easier to test it, too.
Once upon a time there was a little town by the river, where everyone knew everyone else.
The children played in the garden while their parents talked about the harvest and the rain.
Café, naïve, über, señor: words borrowed from other languages keep their accents in English.
Reading a good book on a rainy evening is one of the simplest pleasures there is.
The engineers met every Monday to review the build results and decide what to fix first.
If the tests pass on every platform, the release is tagged, signed and published at once.
Water freezes at 0 degrees and boils at 100 degrees, at least at the level of the sea.
My grandmother kept a garden with tomatoes, beans, potatoes, onions and many flowers.
The library was quiet except for the sound of pages turning and the clock on the wall.
Mountains rise above the valley, and in winter their peaks are covered with snow and ice.
Please remember to save your work often, because computers sometimes crash without warning.
Every language has its own rules, but all of them have words for water, bread and home.
The museum opened a new exhibition about the history of printing and the first newspapers.
After dinner they walked along the beach and watched the ships sailing into the harbour.
A good teacher explains the idea first, then the details, and then asks questions about both.
The model reads the prompt, predicts the next token, appends it, and repeats until done.
Tokens are pieces of words; common words are one token, rare words are split into several.

def fibonacci(n: int) -> int:
    \"\"\"Return the n-th Fibonacci number.\"\"\"
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


def main() -> None:
    values = [fibonacci(i) for i in range(10)]
    print("values:", values)
    if len(values) > 5:
        print("the list is long")
    else:
        print("the list is short")


class Counter:
    def __init__(self, start: int = 0) -> None:
        self.count = start

    def increment(self) -> int:
        self.count += 1
        return self.count


for (int i = 0; i < n; i++) {
    sum += data[i] * weights[i];
}
return sum / (float) n;

static int add(int a, int b) {
    return a + b;
}

int main(int argc, char **argv) {
    printf("hello, world\\n");
    return 0;
}

def load_config(path: str) -> dict[str, str]:
    result: dict[str, str] = {}
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            key, _, value = line.partition("=")
            result[key.strip()] = value.strip()
    return result


struct buffer {
    size_t size;
    size_t capacity;
    unsigned char *data;
};

static int buffer_push(struct buffer *buf, unsigned char value) {
    if (buf->size == buf->capacity) {
        size_t capacity = buf->capacity ? buf->capacity * 2 : 16;
        unsigned char *data = realloc(buf->data, capacity);
        if (data == NULL) {
            return -1;
        }
        buf->data = data;
        buf->capacity = capacity;
    }
    buf->data[buf->size++] = value;
    return 0;
}

{"name": "ember", "version": "1.2.3", "files": ["model.gguf", "README.md"]}
x = [1, 2, 3, 4, 5]; y = {"key": "value", "other": None}; z = (x, y)
The year 2024 had 366 days; the year 2025 has 365. Call 555-0123 or email info@example.com.
"""

Tokens = list[str]


def gpt2_byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte-to-printable-character map used by byte-level BPE.

    Printable Latin-1 bytes map to themselves; the other 68 bytes (controls, space, ...) map
    to U+0100 onwards in byte order, so every byte string has a whitespace-free spelling.
    """
    keep = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("\u00a1"), ord("\u00ac") + 1),
        *range(ord("\u00ae"), ord("\u00ff") + 1),
    ]
    table: dict[int, str] = {}
    extra = 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


# An approximation of the smollm pre-tokenizer (digits split one by one, then the GPT-2
# pattern) in Python's ``re``, which lacks \p{L}: good enough to decide what may be merged.
_PRETOKENIZE = re.compile(r"\d|'s|'t|'re|'ve|'m|'ll|'d| ?[^\W\d_]+| ?(?:[^\s\w]|_)+|\s+(?!\S)|\s+")


@dataclass
class BpeResult:
    """Learned merges and the tokens they create, in merge order."""

    merges: list[tuple[str, str]] = field(default_factory=list)
    new_tokens: Tokens = field(default_factory=list)


def train_bpe(words: Iterable[tuple[str, ...]], known: set[str], n_new_tokens: int) -> BpeResult:
    """Greedy BPE: repeatedly merge the most frequent adjacent pair until enough new tokens.

    Ties go to the lexicographically smallest pair, so the result does not depend on dict
    order. A merge whose result is already a token is kept (the tokenizer needs it to reach
    that spelling) but adds no token, so ids stay unique.
    """
    vocab = collections.Counter(words)
    known = set(known)
    result = BpeResult()
    while len(result.new_tokens) < n_new_tokens:
        pairs: collections.Counter[tuple[str, str]] = collections.Counter()
        for word, freq in vocab.items():
            for pair in itertools.pairwise(word):
                pairs[pair] += freq
        if not pairs:
            break
        best, count = min(pairs.items(), key=lambda kv: (-kv[1], kv[0]))
        if count < 2:
            break
        merged = best[0] + best[1]
        result.merges.append(best)
        if merged not in known:
            known.add(merged)
            result.new_tokens.append(merged)
        new_vocab: collections.Counter[tuple[str, ...]] = collections.Counter()
        for word, freq in vocab.items():
            out: list[str] = []
            i = 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                    out.append(merged)
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            new_vocab[tuple(out)] += freq
        vocab = new_vocab
    if len(result.new_tokens) < n_new_tokens:
        raise SystemExit(f"corpus too small: only {len(result.new_tokens)} merges learned")
    return result


@dataclass(frozen=True)
class Vocab:
    """Everything the GGUF tokenizer keys need."""

    tokens: Tokens
    types: list[int]
    scores: list[float] | None
    merges: list[str] | None


def gpt2_vocab() -> Vocab:
    """Specials first (ids 0-2, as in SmolLM2), then the 256 byte tokens, then merges."""
    b2u = gpt2_byte_to_unicode()
    byte_tokens = [b2u[b] for b in range(256)]
    words = [tuple(b2u[b] for b in piece.encode("utf-8")) for piece in _PRETOKENIZE.findall(CORPUS)]
    n_new = N_VOCAB - len(GPT2_SPECIALS) - len(byte_tokens)
    bpe = train_bpe(words, set(byte_tokens), n_new)
    tokens = GPT2_SPECIALS + byte_tokens + bpe.new_tokens
    types = [TT_CONTROL] * len(GPT2_SPECIALS) + [TT_NORMAL] * (len(tokens) - len(GPT2_SPECIALS))
    return Vocab(tokens, types, None, [f"{a} {b}" for a, b in bpe.merges])


def spm_vocab() -> Vocab:
    """Llama-2 layout: <unk> <s> </s>, <0x00>..<0xFF>, merged pieces, then single characters.

    Scores follow SentencePiece BPE: a piece learned earlier scores higher, which is the order
    llama.cpp's SPM tokenizer merges bigrams in. Tabs, newlines and characters seen fewer than
    three times get no piece of their own, so the byte-fallback path is exercised.
    """
    text = CORPUS.replace(" ", SPM_SPACE)
    char_counts = collections.Counter(ch for ch in text if ch not in "\n\t")
    alphabet = sorted(ch for ch, n in char_counts.items() if n >= 3)
    allowed = set(alphabet)
    words: list[tuple[str, ...]] = []
    for line in text.split("\n"):
        for piece in re.findall(f"{SPM_SPACE}+[^{SPM_SPACE}]*|[^{SPM_SPACE}]+", SPM_SPACE + line):
            # characters outside the alphabet split a word: they are bytes to the tokenizer
            for run in re.split("[^" + re.escape("".join(alphabet)) + "]+", piece):
                if run and all(ch in allowed for ch in run):
                    words.append(tuple(run))
    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]
    n_new = N_VOCAB - len(SPM_SPECIALS) - len(byte_tokens) - len(alphabet)
    bpe = train_bpe(words, set(alphabet), n_new)
    tokens = SPM_SPECIALS + byte_tokens + bpe.new_tokens + alphabet
    types = (
        [TT_UNKNOWN, TT_CONTROL, TT_CONTROL]
        + [TT_BYTE] * 256
        + [TT_NORMAL] * (len(bpe.new_tokens) + len(alphabet))
    )
    scores = (
        [0.0] * (len(SPM_SPECIALS) + 256)
        + [-float(i) for i in range(len(bpe.new_tokens))]
        + [-float(len(bpe.new_tokens) + i) for i in range(len(alphabet))]
    )
    return Vocab(tokens, types, scores, None)


FloatArray = npt.NDArray[np.float32]


def random_weights(rng: np.random.Generator, n_vocab: int, *, tied: bool) -> dict[str, FloatArray]:
    """Random weights in GGUF tensor naming; numpy shapes are (rows, cols) = (ne1, ne0).

    The standard deviations are chosen so hidden states, attention scores and logits all have
    a spread of order one: flat logits would make greedy decoding a coin toss that a runtime
    could not be tested against, and embeddings that dominate the residual would make a tied
    model just echo its input: the block outputs (attn_output, ffn_down) are scaled up so
    the residual stream is mostly computed, not copied (measured with llama.cpp: with 0.06 /
    0.05 the tied model repeated one token up to 21 times in 48 steps, now at most 4).
    """

    def normal(std: float, *shape: int) -> FloatArray:
        return rng.normal(0.0, std, size=shape).astype(np.float32)

    def norm_weight() -> FloatArray:
        return (1.0 + rng.normal(0.0, 0.1, size=N_EMBD)).astype(np.float32)

    kv_dim = N_HEAD_KV * HEAD_DIM
    w: dict[str, FloatArray] = {"token_embd.weight": normal(0.1, n_vocab, N_EMBD)}
    for i in range(N_LAYER):
        p = f"blk.{i}."
        w[p + "attn_norm.weight"] = norm_weight()
        w[p + "attn_q.weight"] = normal(0.08, N_EMBD, N_EMBD)
        w[p + "attn_k.weight"] = normal(0.08, kv_dim, N_EMBD)
        w[p + "attn_v.weight"] = normal(0.06, kv_dim, N_EMBD)
        w[p + "attn_output.weight"] = normal(0.15, N_EMBD, N_EMBD)
        w[p + "ffn_norm.weight"] = norm_weight()
        w[p + "ffn_gate.weight"] = normal(0.06, N_FF, N_EMBD)
        w[p + "ffn_up.weight"] = normal(0.06, N_FF, N_EMBD)
        w[p + "ffn_down.weight"] = normal(0.12, N_EMBD, N_FF)
    w["output_norm.weight"] = norm_weight()
    if not tied:
        w["output.weight"] = normal(0.1, n_vocab, N_EMBD)
    return w


def write_model(
    path: Path, name: str, vocab: Vocab, weights: dict[str, FloatArray], *, spm: bool
) -> None:
    """Write one F32 GGUF atomically with llama-architecture metadata."""
    import gguf  # keep `--help` fast

    with models.atomic_path(path) as tmp:
        writer = gguf.GGUFWriter(str(tmp), "llama")
        writer.add_name(name)
        writer.add_context_length(N_CTX)
        writer.add_embedding_length(N_EMBD)
        writer.add_block_count(N_LAYER)
        writer.add_feed_forward_length(N_FF)
        writer.add_head_count(N_HEAD)
        writer.add_head_count_kv(N_HEAD_KV)
        writer.add_rope_freq_base(ROPE_BASE)
        writer.add_layer_norm_rms_eps(RMS_EPS)
        writer.add_rope_dimension_count(HEAD_DIM)
        writer.add_vocab_size(len(vocab.tokens))
        writer.add_file_type(gguf.LlamaFileType.ALL_F32)
        writer.add_token_list(vocab.tokens)
        writer.add_token_types(vocab.types)
        if spm:
            writer.add_tokenizer_model("llama")
            assert vocab.scores is not None
            writer.add_token_scores(vocab.scores)
            writer.add_bos_token_id(1)
            writer.add_eos_token_id(2)
            writer.add_unk_token_id(0)
            writer.add_add_bos_token(True)
            writer.add_add_eos_token(False)
            writer.add_add_space_prefix(True)
        else:
            writer.add_tokenizer_model("gpt2")
            writer.add_tokenizer_pre("smollm")
            assert vocab.merges is not None
            writer.add_token_merges(vocab.merges)
            writer.add_bos_token_id(1)
            writer.add_eos_token_id(2)
            writer.add_unk_token_id(0)
            writer.add_pad_token_id(2)
            writer.add_add_bos_token(False)
            writer.add_add_space_prefix(False)
            writer.add_chat_template(CHATML_TEMPLATE)
        for tensor_name, data in weights.items():
            writer.add_tensor(tensor_name, data)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()


def build(out_dir: Path) -> list[tuple[str, Path]]:
    """Write both F32 models; return (stem prefix, path) pairs."""
    rng = np.random.default_rng(SEED)
    made: list[tuple[str, Path]] = []
    gpt2 = gpt2_vocab()
    path = out_dir / "tiny-gpt2-f32.gguf"
    write_model(
        path, "tiny-gpt2", gpt2, random_weights(rng, len(gpt2.tokens), tied=True), spm=False
    )
    made.append(("tiny-gpt2", path))
    spm = spm_vocab()
    path = out_dir / "tiny-spm-f32.gguf"
    write_model(path, "tiny-spm", spm, random_weights(rng, len(spm.tokens), tied=False), spm=True)
    made.append(("tiny-spm", path))
    return made


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="output folder")
    parser.add_argument(
        "--no-quantize", action="store_true", help="only write the F32 models (no llama_cpp needed)"
    )
    parser.add_argument(
        "--record",
        action="store_true",
        help="record sha256s and tensor types in tests/runtime/data/models.json",
    )
    args = parser.parse_args(argv)
    out_dir: Path = args.out
    made = build(out_dir)
    records = models.load_records()
    problems: list[str] = []
    types = [t for t in models.FTYPES if t != "F32"]
    for base, f32 in made:
        name = f32.name
        got = models.describe(f32, "F32")
        if args.record:
            records[f"tiny/{name}"] = got.to_json()
        elif records.get(f"tiny/{name}", {}).get("sha256") != got.sha256:
            problems.append(f"{name}: sha256 {got.sha256} differs from models.json")
        if args.no_quantize:
            continue
        sub = {k.removeprefix("tiny/"): v for k, v in records.items() if k.startswith("tiny/")}
        problems += models.make_variants(
            f32, out_dir, base, None, types, sub, record=args.record, force=True
        )
        for key, value in sub.items():
            records[f"tiny/{key}"] = value
    if args.record:
        models.save_records(records)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
