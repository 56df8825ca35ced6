"""The pure parts of bench/bench_cpu.py: the bars, ratios, option parsing and the table."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_cpu.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_cpu", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_cpu"] = module
    spec.loader.exec_module(module)
    return module


bench = _load()


def test_judge_passes_at_the_bars() -> None:
    assert bench.judge(0.8, 1.0, 1.1) == []


@pytest.mark.parametrize(
    ("pp", "tg", "rss", "word"),
    [(0.79, 1.0, 1.0, "pp ratio"), (0.9, 0.99, 1.0, "tg ratio"), (0.9, 1.2, 1.11, "RSS ratio")],
)
def test_judge_names_the_missed_bar(pp: float, tg: float, rss: float, word: str) -> None:
    failed = bench.judge(pp, tg, rss)
    assert len(failed) == 1 and failed[0].startswith(word)


def test_ratio_of_a_side_that_did_not_run_is_zero() -> None:
    assert bench.ratio(5.0, 0.0) == 0.0
    assert bench.ratio(3.0, 2.0) == 1.5


def test_parse_list() -> None:
    assert bench.parse_list("q4_1, q8_0", "--models") == ["q4_1", "q8_0"]
    with pytest.raises(ValueError, match="--threads"):
        bench.parse_list("1,,2", "--threads")


def test_row_takes_medians_and_ratios() -> None:
    ember, peer = bench.Cell(), bench.Cell()
    for pp, tg in ((100.0, 30.0), (90.0, 10.0), (110.0, 20.0)):
        ember.runs.append(bench.Run(pp, tg, 130.0, {"kernel": "avx2"}))
        peer.runs.append(bench.Run(pp / 2, tg * 2, 100.0))
    row = bench.row_of("q4_1", 2, ember, peer)
    assert row["ember_pp_tok_s"] == 100.0 and row["llama_pp_tok_s"] == 50.0
    assert row["pp_ratio"] == 2.0 and row["tg_ratio"] == 0.5 and row["rss_ratio"] == 1.3
    assert row["ember_kernel"] == "avx2" and row["reps"] == 3
    text = bench.table([row])
    assert text.splitlines()[0].startswith("| model | threads |")
    assert "| q4_1 | 2 | 100.0 | 50.0 | 2.00 |" in text
