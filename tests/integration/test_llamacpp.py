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
import shutil
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


def test_the_builds_are_released_signed_and_installed_as_llama(built: dict[str, Any],
                                                              tmp_path: Path) -> None:
    """`kiln -C examples/llamacpp release` on the two real archives (the other eight allowed
    missing), in a clone of this commit: signed sums, llama.cpp's notes and SBOM; then the
    release's own install.sh picks ubuntu-x64 for this machine and installs a llama-completion
    that runs."""
    if shutil.which("minisign") is None:
        pytest.skip("minisign is not installed (scripts/apt-packages.txt)")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", "--shared", str(REPO), str(clone)], check=True,
                   capture_output=True)
    head = subprocess.run(["git", "-C", str(clone), "rev-parse", "HEAD"], check=True,
                          capture_output=True, text=True).stdout.strip()
    if read_record(built["out"] / "llama-b7-bin-ubuntu-x64.tar.gz.json").commit != head:
        pytest.skip("the builds are of another commit than HEAD (a work tree with commits "
                    "made after the build): nothing to release")
    key = tmp_path / "release.key"
    subprocess.run(["minisign", "-G", "-f", "-W", "-s", str(key), "-p",
                    str(tmp_path / "release.pub")], check=True, capture_output=True)
    out = tmp_path / "release"
    env = {**os.environ, "KILN_CACHE": str(_cache())}
    done = subprocess.run([sys.executable, "-m", "kiln", "-C",
                           str(clone / "examples" / "llamacpp"), "release", "--artifacts",
                           str(built["out"]), "--out", str(out), "--tag", "b7",
                           "--allow-missing", "*", "--no-git-tag", "--signing-key", str(key)],
                          cwd=clone, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    subprocess.run(["minisign", "-V", "-p", "minisign.pub", "-m", "SHA256SUMS"], cwd=out,
                   check=True, capture_output=True)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["project"] == "llama"
    assert sorted(a["entry_id"] for a in manifest["assets"]) == sorted(ENTRIES)
    notes = (out / "RELEASE_NOTES.md").read_text()
    assert notes.startswith("# llama.cpp b7") and "llama-cpp-python==0.3.36" in notes
    assert "qemu: passed" in notes and "native: passed" in notes
    sbom = json.loads((out / "sbom.cdx.json").read_text())
    assert any(c.get("purl") == "pkg:pypi/llama-cpp-python@0.3.36" for c in sbom["components"])

    prefix = tmp_path / "prefix"
    home = tmp_path / "home"
    home.mkdir()
    inst = subprocess.run(["sh", str(out / "install.sh"), "--from", str(out), "--prefix",
                           str(prefix)], env={"PATH": os.environ["PATH"], "HOME": str(home)},
                          capture_output=True, text=True, check=False, timeout=300)
    assert inst.returncode == 0, inst.stdout[-2000:] + inst.stderr[-2000:]
    assert "installed llama b7 (ubuntu-x64)" in inst.stdout + inst.stderr
    record = json.loads((prefix / ".llama-install.json").read_text())
    assert record["tag"] == "b7"
    model = Path(load_verify_spec(PROJECT / "recipes").run.models[0]).expanduser()
    ran = subprocess.run([str(prefix / "bin" / "llama-completion"), "-m", str(model), "-p",
                          "1, 2, 3,", "-n", "4", "--temp", "0", "-t", "1", "-no-cnv",
                          "--no-warmup"], capture_output=True, text=True, check=False,
                         timeout=300)
    assert ran.returncode == 0 and ran.stdout.startswith("1, 2, 3,"), ran.stderr[-2000:]
