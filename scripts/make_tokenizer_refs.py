#!/usr/bin/env python3
"""Make the tokenizer ground truth in tests/runtime/data/tokenizer/ with llama.cpp.

ember's tokenizer must give llama.cpp's ids token for token. This script asks
llama-cpp-python (which wraps the llama.cpp ember is compared against) for the ids of a
fixed corpus of texts and writes them as data, so the test suite
(tests/runtime/test_tokenizer_ref.py) needs no llama_cpp at run time.

Vocabularies ("variants"), all derived from one real model so nothing is downloaded:
  smollm            the SmolLM2-135M-Instruct GGUF as it is (gpt2 BPE, pre "smollm")
  gpt-2, llama-bpe, qwen2, default, dbrx
                    the same vocabulary with tokenizer.ggml.pre changed, one variant per
                    pre-tokenizer ember implements
  llama-bpe-nobos   pre "llama-bpe" without tokenizer.ggml.add_bos_token (llama.cpp's default)
  spm, spm-noprefix a SentencePiece ("llama") vocabulary synthesised from the SmolLM2
                    one by spm_vocab_from_bpe(): byte tokens, scores, U+2581 for spaces
  tiny:<file>       every GGUF in tests/runtime/data/tiny/ (when present), as it is

Variant GGUFs are written to a temporary directory with metadata only (llama.cpp's
vocab_only load reads no tensors). The test rebuilds the same vocabularies from the
model file with the functions in this module, so keep them deterministic.

Usage (llama-cpp-python==0.3.36 and gguf installed):
    python scripts/make_tokenizer_refs.py --model PATH/SmolLM2-135M-Instruct.Q4_1.gguf
Writes tests/runtime/data/tokenizer/{cases.jsonl.gz,pieces.json.gz}.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import json
import os
import random
import sys
import tempfile
from pathlib import Path

import gguf

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "tests" / "runtime" / "data" / "tokenizer"
TINY_DIR = ROOT / "tests" / "runtime" / "data" / "tiny"

BPE_VARIANTS = {
    # name: (pre, keys to drop)
    "smollm": ("smollm", ()),
    "gpt-2": ("gpt-2", ()),
    "llama-bpe": ("llama-bpe", ()),
    "llama-bpe-nobos": ("llama-bpe", ("tokenizer.ggml.add_bos_token",)),
    "qwen2": ("qwen2", ()),
    "default": ("default", ()),
    "dbrx": ("dbrx", ()),
}
SPM_VARIANTS = {
    "spm": None,
    "spm-noprefix": False,
}  # name: add_space_prefix metadata (None = absent)


# --------------------------------------------------------------------------------------
# vocabularies
# --------------------------------------------------------------------------------------


def read_vocab(path: str | os.PathLike) -> dict:
    """The tokenizer.* metadata of a GGUF as raw Python values (token texts as bytes)."""
    r = gguf.GGUFReader(path)

    def arr_bytes(key):
        f = r.fields.get(key)
        return None if f is None else [bytes(f.parts[i]) for i in f.data]

    def arr_num(key):
        f = r.fields.get(key)
        return None if f is None else [f.parts[i][0].item() for i in f.data]

    def scalar(key):
        f = r.fields.get(key)
        if f is None:
            return None
        v = f.parts[f.data[0]]
        return bytes(v).decode() if f.types[0] == gguf.GGUFValueType.STRING else v[0].item()

    return {
        "model": scalar("tokenizer.ggml.model"),
        "pre": scalar("tokenizer.ggml.pre"),
        "tokens": arr_bytes("tokenizer.ggml.tokens"),
        "scores": arr_num("tokenizer.ggml.scores"),
        "types": arr_num("tokenizer.ggml.token_type"),
        "merges": arr_bytes("tokenizer.ggml.merges"),
        "bos": scalar("tokenizer.ggml.bos_token_id"),
        "eos": scalar("tokenizer.ggml.eos_token_id"),
        "unk": scalar("tokenizer.ggml.unknown_token_id"),
        "pad": scalar("tokenizer.ggml.padding_token_id"),
        "add_bos": scalar("tokenizer.ggml.add_bos_token"),
        "add_eos": scalar("tokenizer.ggml.add_eos_token"),
        "add_space_prefix": scalar("tokenizer.ggml.add_space_prefix"),
    }


def bpe_variant(base: dict, name: str) -> dict:
    pre, drop = BPE_VARIANTS[name]
    v = dict(base, pre=pre)
    if "tokenizer.ggml.add_bos_token" in drop:
        v["add_bos"] = None
    return v


def _gpt2_byte_decoder() -> dict[str, int]:
    bs = list(range(0x21, 0x7F)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs, strict=False)}


def spm_vocab_from_bpe(base: dict, add_space_prefix: bool | None) -> dict:
    """A SentencePiece-style vocabulary from a byte-level BPE one: <unk> <s> </s>, two
    user-defined and one control token, 256 <0xXX> byte tokens, then every normal BPE token
    whose bytes are valid UTF-8, with ' ' written as U+2581 and score -rank."""
    dec = _gpt2_byte_decoder()
    tokens = [b"<unk>", b"<s>", b"</s>", b"<|user|>", b"<sep>", b"<|ctl|>"]
    types = [2, 3, 3, 4, 4, 3]
    scores = [0.0] * len(tokens)
    tokens += [b"<0x%02X>" % i for i in range(256)]
    types += [6] * 256
    scores += [0.0] * 256
    seen = set(tokens)
    for i, (t, ty) in enumerate(zip(base["tokens"], base["types"], strict=False)):
        if ty != 1:
            continue
        try:
            raw = bytes(dec[ch] for ch in t.decode("utf-8"))
            raw.decode("utf-8")
        except (KeyError, UnicodeDecodeError):
            continue
        s = raw.replace(b" ", "\u2581".encode())
        if s in seen:
            continue
        seen.add(s)
        tokens.append(s)
        types.append(1)
        scores.append(-float(i))
    return {
        "model": "llama",
        "pre": None,
        "tokens": tokens,
        "scores": scores,
        "types": types,
        "merges": None,
        "bos": 1,
        "eos": 2,
        "unk": 0,
        "pad": None,
        "add_bos": None,
        "add_eos": None,
        "add_space_prefix": add_space_prefix,
    }


def write_vocab_gguf(path: str, template: str, v: dict) -> None:
    """A metadata-only GGUF: the template's non-tokenizer keys plus vocabulary v."""
    r = gguf.GGUFReader(template)
    w = gguf.GGUFWriter(path, arch=r.fields["general.architecture"].contents())
    for k, f in r.fields.items():
        if k.startswith("GGUF.") or k == "general.architecture" or k.startswith("tokenizer."):
            continue
        t = f.types[0]
        if t == gguf.GGUFValueType.ARRAY:
            w.add_key_value(k, f.contents(), t, f.types[-1])
        else:
            w.add_key_value(k, f.contents(), t)
    T = gguf.GGUFValueType
    w.add_key_value("tokenizer.ggml.model", v["model"], T.STRING)
    if v["pre"] is not None:
        w.add_key_value("tokenizer.ggml.pre", v["pre"], T.STRING)
    w.add_key_value("tokenizer.ggml.tokens", v["tokens"], T.ARRAY, T.STRING)
    if v["scores"] is not None:
        w.add_key_value(
            "tokenizer.ggml.scores", [float(x) for x in v["scores"]], T.ARRAY, T.FLOAT32
        )
    if v["types"] is not None:
        w.add_key_value("tokenizer.ggml.token_type", [int(x) for x in v["types"]], T.ARRAY, T.INT32)
    if v["merges"]:
        w.add_key_value("tokenizer.ggml.merges", v["merges"], T.ARRAY, T.STRING)
    for key, name in (
        ("bos", "bos_token_id"),
        ("eos", "eos_token_id"),
        ("unk", "unknown_token_id"),
        ("pad", "padding_token_id"),
    ):
        if v[key] is not None:
            w.add_key_value("tokenizer.ggml." + name, int(v[key]), T.UINT32)
    for key, name in (
        ("add_bos", "add_bos_token"),
        ("add_eos", "add_eos_token"),
        ("add_space_prefix", "add_space_prefix"),
    ):
        if v[key] is not None:
            w.add_key_value("tokenizer.ggml." + name, bool(v[key]), T.BOOL)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


# --------------------------------------------------------------------------------------
# corpus
# --------------------------------------------------------------------------------------

HANDWRITTEN = [
    "",
    " ",
    "  ",
    "\n",
    "\n\n",
    "\t",
    " \n",
    "\r\n",
    "a",
    "Hello",
    "Hello world",
    " Hello world",
    "Hello world ",
    "Hello  world",
    "Hello   world   ",
    "hello\nworld",
    "hello\n\nworld\n",
    "Hello, world! How are you today?",
    "The quick brown fox jumps over the lazy dog.",
    "THE QUICK BROWN FOX",
    "It's",
    "it's I'm you're we've they'll he'd she's",
    "IT'S I'M YOU'RE WE'VE THEY'LL HE'D",
    "It'S i'M You'Re",
    "'s 't 're 've 'm 'll 'd",
    "''s",
    "'",
    "''",
    "don't can't won't",
    "rock 'n' roll",
    "I'd've",
    "y'all",
    "O'Neil's",
    "'hello'",
    "\"quoted\" 'single'",
    # digits
    "0",
    "12",
    "123",
    "1234",
    "12345",
    "123456",
    "1234567",
    "3.14159",
    "1,000,000",
    "1_000_000",
    "2024-01-15",
    "10:30pm",
    "v1.2.3",
    "abc123def",
    "123abc",
    " 42",
    "  42",
    "x=42;",
    "$100.00",
    "50%",
    "+1 (555) 123-4567",
    "0x1F 0b1010 0o777",
    "1e-10",
    "-273.15°C",
    "¹²³ ½ ¾",
    "①②③",
    "Ⅻ ⅻ Ⅳ",
    "٠١٢٣٤٥٦٧٨٩",
    "१२३",
    "１２３４５",
    "𝟘𝟙𝟚",
    # whitespace
    "a b",
    "a  b",
    "a   b",
    "a\tb",
    "a\t\tb",
    "a \tb",
    "a\t b",
    "a\nb",
    "a\n\nb",
    "a \n b",
    "a\r\nb",
    "a\rb",
    "a\u00a0b",
    "a\u3000b",
    "a\u2009b",
    "a\u0085b",
    "a\u2028b",
    "a\x0bb",
    "a\x0cb",
    "a\x1cb",
    "    indented",
    "\tindented",
    "trailing    ",
    "trailing\t\t",
    "   ",
    "\n\n\n",
    "\t\t\t",
    " \t \n ",
    "line1\nline2\n\nline4\n",
    "x  \n  y",
    "x \n\ny",
    "end.\n",
    "end. \n",
    "\n  \n  \n",
    # code
    "def f(x):\n    return x + 1\n",
    "int main(void) {\n\treturn 0;\n}\n",
    "for (int i = 0; i < n; i++) { sum += a[i]; }",
    "if x == 1 and y != 2:\n        pass",
    "const f = (a, b) => a ** b;",
    'print("Hello, {}!".format(name))',
    "#include <stdio.h>",
    "SELECT * FROM users WHERE id = 42;",
    '<div class="x">text</div>',
    '{"key": [1, 2, 3], "b": null}',
    "x->y->z",
    "a::b::c",
    "i++; j--; k += 2;",
    "/* comment */ // line",
    "$ ls -la | grep foo > out.txt",
    "https://example.com/path?q=1&r=2#frag",
    "user@example.com",
    "C:\\Windows\\System32",
    "~/.bashrc",
    "@decorator\nclass A(B):",
    "lambda x: x**2",
    "`code`",
    "```python\nprint(1)\n```",
    "a=b&&c||d",
    "!!!",
    "???",
    "...",
    "—",
    "–",
    "«guillemets»",
    "„Anführungszeichen“",
    "¿Qué? ¡Sí!",
    "#$%^&*()",
    "_under_score_",
    "__init__",
    "CamelCaseWord",
    "snake_case_word",
    "kebab-case-word",
    # accents / Latin
    "café",
    "naïve",
    "résumé",
    "Ångström",
    "Straße",
    "ÀÉÎÕÜ",
    "àéîõü",
    "ñandú",
    "Øresund",
    "łódź",
    "cafe\u0301",
    "e\u0301\u0301",
    "\u0301",
    "a\u0308o\u0308u\u0308",
    "ﬁ ﬂ",
    "İstanbul",
    "ǅ ǈ",
    "ſ",
    # other scripts
    "日本語のテキスト",
    "東京は日本の首都です。",
    "中文文本测试",
    "我爱你",
    "한국어 텍스트",
    "안녕하세요",
    "Привет, мир!",
    "Ελληνικά",
    "مرحبا بالعالم",
    "שלום עולם",
    "नमस्ते दुनिया",
    "สวัสดีครับ",
    "ქართული",
    "Հայերեն",
    "ᚠᚢᚦ",
    "𐍈𐌰𐌹",
    "ｆｕｌｌｗｉｄｔｈ",
    "ﾊﾝｶｸ",
    "ㄱㄴㄷ",
    "かなカナ",
    # emoji / symbols
    "😀",
    "emoji 😀👍🏽",
    "👨‍👩‍👧‍👦",
    "🇺🇸🇯🇵",
    "❤️",
    "✨🔥💯",
    "🦀🐍",
    "🫠🫡",
    "🛜",
    "🪿",
    "→ ← ↑ ↓",
    "∑∫∂√∞",
    "≤≥≠≈",
    "©®™",
    "€£¥₹",
    "°±×÷",
    "♠♣♥♦",
    "☃",
    "\u200b",
    "a\u200bb",
    "\u200d",
    "\ufeffBOM",
    "\ufffd",
    "\U0001f600\U0001f600",
    "\ue000",
    "\U000f0000",
    "\u0378",
    "\U0001fae9",
    "\U0002ebf0",
    # chat template / specials
    "<|im_start|>",
    "<|im_end|>",
    "<|endoftext|>",
    "<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
    "<|im_end|>\n"
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|><|im_end|>",
    "<|im_start|> <|im_end|>",
    " <|im_start|>",
    "<|im_start|> ",
    "a<|im_end|>b",
    "<|im_start",
    "im_start|>",
    "<|im_start|<|im_end|>>",
    "<<|im_end|>>",
    "<|endoftext|><|endoftext|>",
    "<|im_end|>\n\n",
    "text<|endoftext|>more text",
    "<filename>main.py<file_sep>",
    "<repo_name>x<reponame>y",
    "<jupyter_code>print(1)<jupyter_output>1<empty_output>",
    "<s>",
    "</s>",
    "<unk>",
    "<|user|>hi<sep>there",
    "<|ctl|> control",
    "<0x41>",
    "<|user|>",
    " <|user|> ",
    "<sep><sep>",
    # mixed
    "Hello 世界 🌍 123 !!!",
    "naïve café 42€",
    "x² + y² = z²",
    "E = mc²",
    "H₂O",
    "a\u0300\u0301\u0302b",
    "Ünïcödé 🎉\ttabs\nand  spaces",
    "mixed日本English한국어",
    "123日本456",
    "😀123abc!!",
    "'😀",
    "test'S",
    "'S",
    " 's",
    "x'\n",
    "\n'",
    "a'b'c'd",
    "'''",
    "a'll",
    "'LL",
    "'Ll",
    "'lL",
    "'Re'VE",
]

INVALID_BYTES = [
    b"\xff",
    b"\xfe\xff",
    b"abc\xffdef",
    b"\xc3",
    b"\xc3(",
    b"\xe2\x82",
    b"\xe2\x82(",
    b"\xf0\x9f\x98",
    b"\xf0\x9f\x98 x",
    b"\x80",
    b"\x80\x80\x80",
    b"\xbf",
    b"\xc0\x80",
    b"\xc1\xbf",
    b"\xe0\x80\x80",
    b"\xed\xa0\x80",
    b"\xed\xbf\xbf",
    b"\xf8\x88\x80\x80\x80",
    b"\xfc",
    b"a\x00b",
    b"\x00",
    b"\x01\x02\x03",
    b"\x7f",
    b"caf\xe9",
    b"\xe9t\xe9",
    b"hello \xc3\xa9\xc3 world",
    b"\xef\xbb\xbf",
    b" \xff ",
    b"\xff\xff\xff",
    b"<|im_start|>\xff<|im_end|>",
    b"\xe6\x97\xa5\xe6\x9c",
    b"\xa0\xa1",
    b"'\xff",
    b"1\xff2",
]

CHUNKS = [
    "a",
    "b",
    "Z",
    "é",
    "ß",
    "ñ",
    "日",
    "本",
    "语",
    "한",
    "ж",
    "λ",
    "ع",
    "ש",
    "न",
    "ि",
    "\u0301",
    "\u0308",
    "0",
    "1",
    "9",
    "٣",
    "²",
    "½",
    "Ⅻ",
    "１",
    " ",
    " ",
    " ",
    "  ",
    "\t",
    "\n",
    "\r",
    "\r\n",
    "\u00a0",
    "\u3000",
    "\u2009",
    "'",
    "'s",
    "'S",
    "'ll",
    "'LL",
    "'re",
    "'ve",
    "'d",
    "'m",
    "'t",
    ".",
    ",",
    "!",
    "?",
    "-",
    "_",
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    "<",
    ">",
    "=",
    "+",
    "*",
    "/",
    "\\",
    "|",
    "~",
    "^",
    "`",
    "$",
    "%",
    "#",
    "@",
    "&",
    ";",
    ":",
    '"',
    "😀",
    "👍🏽",
    "🇯🇵",
    "❤️",
    "€",
    "©",
    "→",
    "\u200b",
    "\ufffd",
    "\ue000",
    "<|im_start|>",
    "<|im_end|>",
    "<|endoftext|>",
    "<|user|>",
    "<sep>",
    "<s>",
    "</s>",
    "<unk>",
    "hello",
    "world",
    "The",
    "tokenizer",
    "llama",
    "123",
    "4567",
    "   ",
    "\n\n",
    "  \n",
]

WORDS = [
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "you",
    "that",
    "it",
    "he",
    "was",
    "for",
    "on",
    "are",
    "as",
    "with",
    "his",
    "they",
    "at",
    "be",
    "this",
    "have",
    "from",
    "or",
    "one",
    "had",
    "by",
    "word",
    "but",
    "not",
    "what",
    "all",
    "were",
    "we",
    "when",
    "your",
    "can",
    "said",
    "there",
    "use",
    "an",
    "each",
    "which",
    "she",
    "do",
    "how",
    "their",
    "if",
    "will",
    "up",
    "other",
    "about",
    "out",
    "many",
    "then",
    "them",
    "these",
    "so",
    "some",
    "her",
    "would",
    "make",
    "like",
    "him",
    "into",
    "time",
    "has",
    "look",
    "two",
    "more",
    "write",
    "go",
    "see",
    "number",
    "no",
    "way",
    "could",
    "people",
    "my",
    "than",
    "first",
    "water",
    "been",
    "call",
    "who",
    "oil",
    "its",
    "now",
    "find",
]


def _lenient_ok(b: bytes) -> bool:
    """False when llama.cpp would decode a code point above U+10FFFF (it then throws)."""
    i = 0
    while i < len(b):
        c = b[i]
        if c < 0x80:
            i += 1
        elif (c & 0xE0) == 0xC0 and i + 1 < len(b) and (b[i + 1] & 0xC0) == 0x80:
            i += 2
        elif (
            (c & 0xF0) == 0xE0
            and i + 2 < len(b)
            and all((x & 0xC0) == 0x80 for x in b[i + 1 : i + 3])
        ):
            i += 3
        elif (
            (c & 0xF8) == 0xF0
            and i + 3 < len(b)
            and all((x & 0xC0) == 0x80 for x in b[i + 1 : i + 4])
        ):
            cp = (
                ((c & 7) << 18)
                | ((b[i + 1] & 0x3F) << 12)
                | ((b[i + 2] & 0x3F) << 6)
                | (b[i + 3] & 0x3F)
            )
            if cp > 0x10FFFF:
                return False
            i += 4
        else:
            i += 1
    return True


def corpus() -> list[bytes]:
    rng = random.Random(20240601)
    texts: list[bytes] = [t.encode() for t in HANDWRITTEN] + INVALID_BYTES
    for _ in range(300):  # random mixes of interesting pieces
        n = rng.randint(1, 30)
        texts.append("".join(rng.choice(CHUNKS) for _ in range(n)).encode())
    for _ in range(60):  # prose-like
        n = rng.randint(3, 40)
        ws = [rng.choice(WORDS) for _ in range(n)]
        s = ""
        for w in ws:
            s += rng.choice(
                [" ", " ", " ", "  ", "\n", ", ", ". ", "\t", " '", "'s "]
            ) + rng.choice([w, w.capitalize(), w.upper()])
        texts.append(s.encode())
    while sum(1 for t in texts if not _is_utf8(t)) < len(INVALID_BYTES) + 60:  # random bytes
        b = bytes(rng.randrange(256) for _ in range(rng.randint(1, 24)))
        if _lenient_ok(b):
            texts.append(b)
    for _ in range(40):  # random code points from the whole BMP and beyond
        cps = [
            rng.choice(
                [
                    rng.randrange(0x20, 0x3000),
                    rng.randrange(0x3000, 0xD800),
                    rng.randrange(0xE000, 0x10000),
                    rng.randrange(0x10000, 0x30000),
                ]
            )
            for _ in range(rng.randint(1, 12))
        ]
        texts.append("".join(chr(c) for c in cps).encode())
    # one long text (~40 kB)
    long = "".join(rng.choice(CHUNKS) + rng.choice(WORDS) for _ in range(6000)).encode()
    texts.append(long)
    texts.append(("word " * 3000).encode())
    texts.append(((" " * 5000) + "x").encode())
    texts.append(("9" * 2000).encode())
    out, seen = [], set()
    for t in texts:
        if t not in seen:
            seen.add(t)
            out.append(t)
    return out


def _is_utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def text_field(b: bytes) -> dict:
    return (
        {"text": b.decode("utf-8")} if _is_utf8(b) else {"text_b64": base64.b64encode(b).decode()}
    )


# --------------------------------------------------------------------------------------
# ground truth
# --------------------------------------------------------------------------------------


def llama_ids(llm, text: bytes, add_special: bool, parse_special: bool) -> list[int]:
    return list(llm.tokenize(text, add_bos=add_special, special=parse_special))


def llama_pieces(llm, n_vocab: int) -> dict:
    import ctypes

    import llama_cpp

    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    buf = ctypes.create_string_buffer(4096)
    # "plain" (special=false) only where it differs from the special=true piece
    out = {"special": [], "plain": {}, "eog": []}
    for i in range(n_vocab):
        got = []
        for sp in (True, False):
            n = llama_cpp.llama_token_to_piece(vocab, i, buf, 4096, 0, sp)
            assert n >= 0
            got.append(buf.raw[:n].hex())
        out["special"].append(got[0])
        if got[1] != got[0]:
            out["plain"][str(i)] = got[1]
        if llama_cpp.llama_vocab_is_eog(vocab, i):
            out["eog"].append(i)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="SmolLM2-135M-Instruct GGUF")
    ap.add_argument("--out", default=str(OUT_DIR))
    ap.add_argument("--tiny-dir", default=str(TINY_DIR))
    args = ap.parse_args(argv)

    import llama_cpp

    texts = corpus()
    base = read_vocab(args.model)
    variants: dict[str, tuple[dict, str | None]] = {}
    for name in BPE_VARIANTS:
        variants[name] = (bpe_variant(base, name), None)
    for name, prefix in SPM_VARIANTS.items():
        variants[name] = (spm_vocab_from_bpe(base, prefix), None)
    tiny = sorted(Path(args.tiny_dir).glob("*.gguf")) if Path(args.tiny_dir).is_dir() else []
    for p in tiny:
        variants["tiny:" + p.name] = (read_vocab(p), str(p))

    cases, pieces = [], {}
    rng = random.Random(7)
    with tempfile.TemporaryDirectory() as tmp:
        for name, (v, path) in variants.items():
            if path is None:
                path = os.path.join(tmp, "v.gguf")
                write_vocab_gguf(path, args.model, v)
            llm = llama_cpp.Llama(model_path=path, vocab_only=True, verbose=False)
            flags = [(False, True)]
            sub = set(rng.sample(range(len(texts)), min(80, len(texts))))
            for i, t in enumerate(texts):
                combos = flags + (
                    [(True, True), (False, False), (True, False)]
                    if (i in sub or name == "smollm")
                    else []
                )
                for add, parse in combos:
                    cases.append(
                        {
                            "variant": name,
                            **text_field(t),
                            "add_special": add,
                            "parse_special": parse,
                            "ids": llama_ids(llm, t, add, parse),
                        }
                    )
            if name in ("smollm", "spm") or name.startswith("tiny:"):
                pieces[name] = llama_pieces(llm, len(v["tokens"]))
            print(f"{name}: done", file=sys.stderr)
            del llm

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"llama_cpp_python": llama_cpp.__version__, "n_texts": len(texts)}
    with gzip.GzipFile(out / "cases.jsonl.gz", "wb", mtime=0) as f:
        f.write((json.dumps({"meta": meta}) + "\n").encode())
        for c in cases:
            f.write((json.dumps(c, ensure_ascii=False) + "\n").encode())
    with gzip.GzipFile(out / "pieces.json.gz", "wb", mtime=0) as f:
        f.write(json.dumps(pieces).encode())
    print(
        f"{len(cases)} cases over {len(texts)} texts, {len(variants)} vocabularies -> {out}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
