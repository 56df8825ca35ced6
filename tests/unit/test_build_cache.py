"""kiln/build/cache.py: keys, the cache directory, atomic stores, the source tree hash; and the
recipe data that goes into every key."""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from ember_project import NAMES

import kiln.build.cache
from kiln.build.cache import BuildCache, CacheLayout, default_cache_dir, key_of, source_tree_hash
from kiln.build.toolchains import check_buildable
from kiln.build.toolchains.recipe import load_recipe, load_verify_spec
from kiln.build.toolchains.zig import ZigToolchain
from kiln.errors import ConfigError
from kiln.matrix import load_matrix
from kiln.plan import make_job
from kiln.run import Completed


def test_key_is_canonical() -> None:
    assert key_of({"a": 1, "b": [1, 2]}) == key_of({"b": [1, 2], "a": 1})
    assert key_of({"a": 1}) != key_of({"a": 2})
    assert len(key_of({})) == 64


def test_cache_dir_order() -> None:
    assert default_cache_dir({"KILN_CACHE": "/k", "HOME": "/h"}) == Path("/k")
    assert default_cache_dir({"XDG_CACHE_HOME": "/x", "HOME": "/h"}) == Path("/x/kiln")
    assert default_cache_dir({"HOME": "/h"}) == Path("/h/.cache/kiln")
    with pytest.raises(ConfigError, match="KILN_CACHE"):
        default_cache_dir({})


def test_fresh_layout_shares_toolchains_only(tmp_path: Path) -> None:
    a = CacheLayout.at(tmp_path / "a")
    b = a.fresh(tmp_path / "b")
    assert b.toolchains == a.toolchains and b.zig == a.zig and b.wine == a.wine
    assert b.builds != a.builds and b.ccache != a.ccache and b.work != a.work


def test_store_is_atomic_and_cleans_leftovers(tmp_path: Path) -> None:
    cache = BuildCache(CacheLayout.at(tmp_path / "c"))
    stage = tmp_path / "stage"
    (stage / "bin").mkdir(parents=True)
    (stage / "bin" / "ember-cli").write_text("x")
    key = "k" * 64
    leftover = cache.layout.builds / f".tmp-{key}-12345-1"
    leftover.mkdir()
    with cache.lock(key):
        assert cache.lookup(key) is None
        stored = cache.store(key, stage, {"entry": "e"})
    assert stored == cache.entry_dir(key) / "stage"
    assert (stored / "bin" / "ember-cli").read_text() == "x"
    assert not leftover.exists()
    assert cache.lookup(key) == stored
    # an entry without COMPLETE (say, half deleted) is no hit
    (cache.entry_dir(key) / "COMPLETE").unlink()
    assert cache.lookup(key) is None


def test_verify_reports_round_trip(tmp_path: Path) -> None:
    cache = BuildCache(CacheLayout.at(tmp_path / "c"))
    key = "k" * 64
    cache.entry_dir(key).mkdir(parents=True)
    assert cache.read_verify(key, "v") is None
    cache.write_verify(key, "v", {"ok": True})
    assert cache.read_verify(key, "v") == {"ok": True}


def test_source_tree_hash_follows_content_and_exec_bit(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    repo = tmp_path / "repo"
    (repo / "runtime" / "src").mkdir(parents=True)
    (repo / "runtime" / "src" / "a.c").write_text("int a;\n")
    (repo / "runtime" / "CMakeLists.txt").write_text("project(x)\n")
    listing = "runtime/CMakeLists.txt\0runtime/src/a.c\0runtime/gone.c\0"

    def fake_git(argv: Sequence[str], *, env: Mapping[str, str] | None = None,
                 **kw: Any) -> Completed:
        assert list(argv)[:3] == ["git", "-C", str(repo)] and "--exclude-standard" in argv
        return Completed(argv=tuple(argv), returncode=0, stdout=listing, stderr="")

    monkeypatch.setattr(kiln.build.cache, "run", fake_git)
    first = source_tree_hash(repo, "runtime", {})
    assert source_tree_hash(repo, "runtime", {}) == first
    (repo / "runtime" / "src" / "a.c").write_text("int a = 1;\n")
    second = source_tree_hash(repo, "runtime", {})
    assert second != first
    (repo / "runtime" / "src" / "a.c").chmod(0o755)
    assert source_tree_hash(repo, "runtime", {}) != second
    listing = ""
    with pytest.raises(ConfigError, match="no source files"):
        source_tree_hash(repo, "runtime", {})


def test_recipe_covers_every_buildable_entry(repo_root: Path) -> None:
    """Data in step: every local cpu entry has an -mcpu, the toolchain exists, the verify data
    names the emulators the matrix asks for."""
    matrix = load_matrix(repo_root / "matrix")
    recipes = repo_root / "recipes"
    cpu = [e for e in matrix.enabled if e.local and e.backend == "cpu"]
    assert len(cpu) == 10
    check_buildable(cpu, recipes)
    recipe = load_recipe(recipes, "cpu")
    spec = load_verify_spec(recipes)
    zig = ZigToolchain()
    for e in cpu:
        ident = zig.identity(make_job(e, 1, NAMES), recipe)
        assert ident.mcpu and ident.target == e.zig_target
        if e.verify == "qemu":
            assert spec.qemu_for(e.arch) is not None, e.id
        assert e.os in dict(spec.allowed_libraries), e.id
    assert spec.run.reference in {e.id for e in cpu if e.verify == "native"}
    assert recipe.cmake_for("android")["EMBER_BUILD_SHARED"] == "OFF"
    assert "-static" in recipe.ldflags_for("android") and "-static" not in recipe.ldflags


def test_recipe_typo_suggests_the_key(tmp_path: Path, repo_root: Path) -> None:
    recipes = tmp_path / "recipes"
    shutil.copytree(repo_root / "recipes", recipes)
    text = (recipes / "cpu.yaml").read_text().replace("ldflags_os:", "ldflag_os:")
    (recipes / "cpu.yaml").write_text(text)
    with pytest.raises(ConfigError, match="unknown key 'ldflag_os'") as err:
        load_recipe(recipes, "cpu")
    assert err.value.hint == "did you mean 'ldflags_os'?"


def test_recipe_hash_covers_the_cmake_templates(tmp_path: Path, repo_root: Path) -> None:
    recipes = tmp_path / "recipes"
    shutil.copytree(repo_root / "recipes", recipes)
    before = load_recipe(recipes, "cpu").sha256
    with (recipes / "cmake" / "zig-toolchain.cmake.j2").open("a") as fh:
        fh.write("# changed\n")
    assert load_recipe(recipes, "cpu").sha256 != before
