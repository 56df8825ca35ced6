"""kiln/build/toolchains/oneapi.py without oneAPI: finding icx/icpx, reading and checking their
version against the matrix's pin, the refusals and their hints, and the toolchain file it
writes. which() and the `--version` probe are injected fakes: nothing is started."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest
from ember_project import NAMES

from kiln.build.toolchains import TOOLCHAINS, check_buildable, oneapi, refusal
from kiln.build.toolchains.base import Installed, ToolchainPaths
from kiln.build.toolchains.recipe import load_recipe
from kiln.errors import ConfigError, SelectionError, ToolMissing
from kiln.matrix import Matrix, load_matrix
from kiln.plan import make_job

LINUX_VERSION = ("Intel(R) oneAPI DPC++/C++ Compiler 2025.3.0 (2025.3.0.20251010)\n"
                 "Target: x86_64-unknown-linux-gnu\nThread model: posix\n")
WINDOWS_VERSION = ("Intel(R) oneAPI DPC++/C++ Compiler for applications running on Intel(R) 64, "
                   "Version 2025.3.0 Build 20251010\nCopyright (C) 1985-2025 Intel Corporation.")
SYCL_IDS = ("ubuntu-sycl-fp32-x64", "ubuntu-sycl-fp16-x64", "win-sycl-x64")


def fake_which(present: Mapping[str, str]) -> oneapi.Which:
    def which(name: str, path: str | None) -> str | None:
        assert path == "/opt/intel/bin:/usr/bin", "must search the PATH of the env it is given"
        return present.get(name)
    return which


def fake_probe(text: str, calls: list[str] | None = None) -> oneapi.Probe:
    def probe(compiler: str, env: Mapping[str, str]) -> str:
        if calls is not None:
            calls.append(compiler)
        return text
    return probe


ENV = {"PATH": "/opt/intel/bin:/usr/bin"}
BOTH = {"icx": "/opt/intel/bin/icx", "icpx": "/opt/intel/bin/icpx"}


@pytest.fixture(scope="module")
def matrix(repo_root_module: Path) -> Matrix:
    return load_matrix(repo_root_module / "matrix")


@pytest.fixture(scope="module")
def repo_root_module() -> Path:
    return Path(__file__).resolve().parents[2]


def test_version_is_read_from_linux_and_windows_banners() -> None:
    assert oneapi.parse_version(LINUX_VERSION) == "2025.3.0"
    assert oneapi.parse_version(WINDOWS_VERSION) == "2025.3.0"
    assert oneapi.parse_version("clang version 15.0.6\nTarget: x86_64-pc-linux-gnu") is None
    assert oneapi.parse_version("") is None


def test_release_match_is_by_component_not_by_prefix() -> None:
    assert oneapi.version_matches("2025.3.0", "2025.3")
    assert oneapi.version_matches("2025.3", "2025.3")
    assert not oneapi.version_matches("2025.30.1", "2025.3")
    assert not oneapi.version_matches("2025.2.1", "2025.3")


def test_locate_finds_both_compilers_and_probes_the_cxx_driver() -> None:
    calls: list[str] = []
    found = oneapi.locate(ENV, windows=False, which=fake_which(BOTH),
                          probe=fake_probe(LINUX_VERSION, calls))
    assert found == oneapi.OneApiCompilers(cc=Path("/opt/intel/bin/icx"),
                                           cxx=Path("/opt/intel/bin/icpx"), version="2025.3.0")
    assert calls == ["/opt/intel/bin/icpx"]


@pytest.mark.parametrize("missing", ["icx", "icpx"])
def test_missing_compiler_is_refused_with_the_container_hint(missing: str) -> None:
    present = {k: v for k, v in BOTH.items() if k != missing}
    with pytest.raises(ToolMissing) as err:
        oneapi.locate(ENV, windows=False, which=fake_which(present),
                      probe=fake_probe(LINUX_VERSION))
    assert f"'{missing}' is not on PATH" in err.value.message
    assert "no package registry ships" in err.value.message
    assert oneapi.CONTAINER in (err.value.hint or "")
    assert "setvars.sh" in (err.value.hint or "")


def test_windows_needs_icx_only_and_hints_at_the_installer() -> None:
    found = oneapi.locate(ENV, windows=True, which=fake_which({"icx": r"C:\oneapi\bin\icx.exe"}),
                          probe=fake_probe(WINDOWS_VERSION))
    assert found.cc == found.cxx and found.version == "2025.3.0"
    with pytest.raises(ToolMissing) as err:
        oneapi.locate(ENV, windows=True, which=fake_which({}), probe=fake_probe(""))
    assert "setvars.bat" in (err.value.hint or "")


def test_a_compiler_that_is_not_oneapi_is_refused() -> None:
    with pytest.raises(ToolMissing) as err:
        oneapi.locate(ENV, windows=False, which=fake_which(BOTH),
                      probe=fake_probe("clang version 15.0.6\n"))
    assert "does not identify Intel oneAPI DPC++ (it says: clang version 15.0.6)" in \
        err.value.message


def test_another_release_is_refused_naming_both_versions() -> None:
    other = LINUX_VERSION.replace("2025.3.0", "2024.2.1")
    with pytest.raises(ConfigError) as err:
        oneapi.locate(ENV, windows=False, which=fake_which(BOTH), probe=fake_probe(other))
    assert "oneAPI DPC++ 2024.2.1" in err.value.message
    assert f"oneAPI {oneapi.ONEAPI_VERSION}" in err.value.message
    assert "ONEAPI_VERSION" in (err.value.hint or "")


def test_install_returns_what_it_found_and_installs_nothing(tmp_path: Path) -> None:
    tc = oneapi.OneApiToolchain(host_windows=False, which=fake_which(BOTH),
                                probe=fake_probe(LINUX_VERSION))
    paths = ToolchainPaths(root=tmp_path / "toolchains", zig_cache=tmp_path / "zig")
    got = tc.install(paths, python="python3", env=ENV)
    assert got == Installed(name="oneapi", version="2025.3.0", root=Path("/opt/intel/bin"),
                            executable=Path("/opt/intel/bin/icx"))
    assert not paths.root.exists()


def test_pin_and_container_match_the_matrix(matrix: Matrix) -> None:
    entries = [matrix.get(i) for i in SYCL_IDS]
    assert sorted(e.id for e in matrix.entries if e.backend == "sycl") == sorted(SYCL_IDS)
    for e in entries:
        assert e.backend_version == oneapi.ONEAPI_VERSION, e.id
        assert not e.local, f"{e.id} must be ci-only: no registry ships a SYCL compiler"
    for e in entries[:2]:
        assert e.container == oneapi.CONTAINER
        assert oneapi.CONTAINER.startswith(f"intel/oneapi-basekit:{oneapi.ONEAPI_VERSION}.")
    assert entries[2].container is None and entries[2].runner.startswith("windows-")


def test_recipe_names_the_registered_toolchain(repo_root_module: Path, matrix: Matrix) -> None:
    recipes = repo_root_module / "recipes"
    assert load_recipe(recipes, "sycl").toolchain == "oneapi"
    assert isinstance(TOOLCHAINS["oneapi"], oneapi.OneApiToolchain)
    for i in SYCL_IDS:
        why = refusal(matrix.get(i), recipes)
        assert why is not None and "is ci-only" in why, why
    # on its own runner (the generated workflow passes --on-ci-runner) nothing is refused
    check_buildable([matrix.get(i) for i in SYCL_IDS], recipes, on_ci_runner=True)


def test_configure_writes_the_linux_toolchain_file(tmp_path: Path, repo_root_module: Path,
                                                   matrix: Matrix) -> None:
    recipe = load_recipe(repo_root_module / "recipes", "sycl")
    job = make_job(matrix.get("ubuntu-sycl-fp16-x64"), 7, NAMES)
    tc = oneapi.OneApiToolchain(host_windows=False)
    installed = Installed(name="oneapi", version="2025.3.0", root=Path("/opt/intel/bin"),
                          executable=Path("/opt/intel/bin/icx"))
    paths = ToolchainPaths(root=tmp_path / "tc", zig_cache=tmp_path / "zig")
    src, build = tmp_path / "src", tmp_path / "build"
    conf = tc.configure(installed, job, recipe, recipes=repo_root_module / "recipes",
                        paths=paths, source=src, build=build, work=tmp_path / "work")
    text = conf.toolchain_file.read_text(encoding="utf-8")
    assert 'set(CMAKE_C_COMPILER "/opt/intel/bin/icx")' in text
    assert 'set(CMAKE_CXX_COMPILER "/opt/intel/bin/icpx")' in text
    assert f"-ffile-prefix-map={src}=ember" in text and "-march=x86-64" in text
    assert "CMAKE_SYSTEM_NAME" not in text, "a native build, not a cross build"
    assert f"builds {NAMES.name} natively" in text  # the project's name, from kiln.toml
    options = dict(conf.cmake_options)
    assert options["EMBER_SYCL"] == "ON" and options["EMBER_SYCL_F16"] == "ON"
    ident = tc.identity(job, recipe)
    assert ident.toolchain == "oneapi" and ident.version == oneapi.ONEAPI_VERSION
    assert ("EMBER_SYCL_F16", "ON") in ident.cmake_options
    fp32 = tc.identity(make_job(matrix.get("ubuntu-sycl-fp32-x64"), 7, NAMES), recipe)
    assert "EMBER_SYCL_F16" not in dict(fp32.cmake_options)


def test_configure_on_windows_uses_icx_for_both_and_no_gcc_flags(
        tmp_path: Path, repo_root_module: Path, matrix: Matrix) -> None:
    recipe = load_recipe(repo_root_module / "recipes", "sycl")
    job = make_job(matrix.get("win-sycl-x64"), 7, NAMES)
    icx = Path("C:/Program Files (x86)/Intel/oneAPI/compiler/2025.3/bin/icx.exe")
    installed = Installed(name="oneapi", version="2025.3.0", root=icx.parent, executable=icx)
    paths = ToolchainPaths(root=tmp_path / "tc", zig_cache=tmp_path / "zig")
    conf = oneapi.OneApiToolchain(host_windows=True).configure(
        installed, job, recipe, recipes=repo_root_module / "recipes", paths=paths,
        source=tmp_path / "src", build=tmp_path / "b", work=tmp_path / "work")
    text = conf.toolchain_file.read_text(encoding="utf-8")
    assert f'set(CMAKE_CXX_COMPILER "{icx.as_posix()}")' in text
    assert 'set(CMAKE_C_FLAGS_INIT "")' in text and "-march" not in text
    # a Linux kiln cannot make the Windows build: oneAPI builds natively only
    with pytest.raises(SelectionError, match="builds natively only"):
        oneapi.OneApiToolchain(host_windows=False).configure(
            installed, job, recipe, recipes=repo_root_module / "recipes", paths=paths,
            source=tmp_path / "src", build=tmp_path / "b", work=tmp_path / "w2")


def test_configure_refuses_a_compiler_of_another_release(tmp_path: Path, repo_root_module: Path,
                                                         matrix: Matrix) -> None:
    recipe = load_recipe(repo_root_module / "recipes", "sycl")
    job = make_job(matrix.get("ubuntu-sycl-fp32-x64"), 7, NAMES)
    installed = Installed(name="oneapi", version="2026.0.0", root=Path("/x"),
                          executable=Path("/x/icx"))
    paths = ToolchainPaths(root=tmp_path / "tc", zig_cache=tmp_path / "zig")
    with pytest.raises(ConfigError, match=r"pins oneAPI 2025\.3 .* oneAPI DPC\+\+ 2026\.0\.0"):
        oneapi.OneApiToolchain(host_windows=False).configure(
            installed, job, recipe, recipes=repo_root_module / "recipes", paths=paths,
            source=tmp_path / "s", build=tmp_path / "b", work=tmp_path / "w")
