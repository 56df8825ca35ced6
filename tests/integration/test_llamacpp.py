"""kiln builds a project that is not ember: llama.cpp, from the sources vendored in the pinned
llama-cpp-python 0.3.36 sdist, described by ``examples/llamacpp/kiln.toml``.

Two entries, built and verified for real: ``ubuntu-x64`` runs natively and is the reference,
``ubuntu-s390x`` runs under qemu on a copy of the model byte-swapped by llama.cpp's own
``gguf_convert_endian.py`` and must print the host build's text. The builds use kiln's own
cache (``$KILN_CACHE`` or ``~/.cache/kiln``, shared with ``scripts/setup.sh``), so after the
first run (about 15 minutes on two cores: zig's C++ runtime, then llama.cpp twice) they are
cache hits; ``$KILN_LLAMACPP_CACHE`` points them elsewhere.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

from kiln.build.cache import default_cache_dir
from kiln.build.toolchains.recipe import load_verify_spec
from kiln.package.records import read_record

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("kiln-llamacpp")]

REPO = Path(__file__).resolve().parents[2]
PROJECT = REPO / "examples" / "llamacpp"
WORK = REPO / "build" / "kiln-llamacpp"
ENTRIES = ["ubuntu-x64", "ubuntu-s390x"]


def _cache() -> Path:
    given = os.environ.get("KILN_LLAMACPP_CACHE")
    return Path(given) if given else default_cache_dir(os.environ)


def _kiln(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KILN_CACHE": str(_cache())}
    env.pop("GITHUB_ACTIONS", None)
    return subprocess.run([sys.executable, "-m", "kiln", "-C", str(PROJECT), *args], cwd=REPO,
                          env=env, capture_output=True, text=True, check=False)


@pytest.fixture(scope="module")
def built() -> dict[str, Any]:
    model = Path(load_verify_spec(PROJECT / "recipes").run.models[0]).expanduser()
    if not model.is_file():
        pytest.skip(f"{model} is missing: `python scripts/models.py quantize` makes it "
                    "(scripts/test.sh runs it; it needs the peer, scripts/peer.sh)")
    out = WORK / "out"
    done = _kiln("build", *ENTRIES, "--out", str(out), "--json", "--build-number", "7")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    data: dict[str, Any] = json.loads(done.stdout)
    data["by_id"] = {r["entry_id"]: r for r in data["results"]}
    data["out"] = out
    return data


def test_both_entries_build_and_print_the_host_builds_text(built: dict[str, Any]) -> None:
    x64, s390x = built["by_id"]["ubuntu-x64"], built["by_id"]["ubuntu-s390x"]
    assert x64["ok"] and s390x["ok"], (x64["error"], s390x["error"])
    assert x64["verification"]["method"] == "native"
    assert "ran natively: llama-completion printed" in x64["verification"]["detail"]
    assert s390x["verification"]["method"] == "qemu"
    detail = s390x["verification"]["detail"]
    assert "ran under qemu-s390x: llama-completion's output" in detail, detail
    assert "identical to the host build's" in detail
    assert "ELF s390x" in detail


def test_the_big_endian_run_used_a_converted_model(built: dict[str, Any]) -> None:
    log = Path(built["by_id"]["ubuntu-s390x"]["log"]).read_text(encoding="utf-8")
    assert "big-endian model:" in log
    converted = Path(log.split("big-endian model:", 1)[1].split()[0])
    original = Path(load_verify_spec(PROJECT / "recipes").run.models[0]).expanduser()
    assert converted.is_file() and converted != original
    # GGUF's version field reads 3 in its own byte order: little-endian here, big there
    assert original.read_bytes()[4:8] == (3).to_bytes(4, "little")
    assert converted.read_bytes()[4:8] == (3).to_bytes(4, "big")


def test_the_archives_carry_llamas_names_programs_and_licence(built: dict[str, Any]) -> None:
    out: Path = built["out"]
    for entry in ENTRIES:
        name = f"llama-b7-bin-{entry}.tar.gz"
        asset = out / name
        assert Path(built["by_id"][entry]["asset"]) == asset
        with tarfile.open(asset) as tar:
            names = set(tar.getnames())
            top = name.removesuffix(".tar.gz")
            for program in ("llama-completion", "llama-simple", "llama-bench",
                            "llama-quantize"):
                assert f"{top}/bin/{program}" in names, sorted(names)
            licence = tar.extractfile(f"{top}/LICENSE")
            assert licence is not None and b"ggml authors" in licence.read()
            info = tar.extractfile(f"{top}/BUILD-INFO.json")
            assert info is not None
            assert "GGML_NATIVE" in json.loads(info.read())["cmake_options"]
        record = read_record(out / f"{name}.json")
        assert record.entry_id == entry and record.sha256 == built["by_id"][entry]["sha256"]
    # no wheel: kiln.toml names no Python binding
    assert not list(out.glob("*.whl"))


def test_a_second_build_is_all_cache_hits(built: dict[str, Any]) -> None:
    done = _kiln("build", *ENTRIES, "--out", str(WORK / "again"), "--json", "--build-number",
                 "7")
    assert done.returncode == 0, done.stderr[-3000:]
    data = json.loads(done.stdout)
    assert all(r["cached"] for r in data["results"]), data
    assert {r["sha256"] for r in data["results"]} == {
        r["sha256"] for r in built["results"]}
