"""kiln.matrix.catalogue: the one list of backends and CPU levels, and the modules that read it."""

from __future__ import annotations

import ast
import dataclasses
import importlib
from pathlib import Path
from types import SimpleNamespace

import pytest

from kiln import project as project_module
from kiln.errors import ConfigError, MatrixError
from kiln.install import installer
from kiln.install.host import Cpu, Host
from kiln.matrix import BACKENDS as MATRIX_BACKENDS
from kiln.matrix import FIELD_BY_NAME, VERIFY_METHODS, catalogue, load_matrix
from kiln.matrix.catalogue import (
    BACKENDS,
    CPU_ARCHES,
    CPU_BASELINES,
    CPU_LEVELS,
    FLOORS,
    wheel_variant,
)
from kiln.package import conan, wheel
from kiln.release import install_scripts
from kiln.verify import VERIFIERS

KILN = Path(__file__).resolve().parents[2] / "kiln"
# (kiln.install.host re-exports the function probe under the module's name)
probe_module = importlib.import_module("kiln.install.host.probe")
NAMES = [b.name for b in BACKENDS]


# --------------------------------------------------------------------------------------------
# the catalogue against the matrix, the recipes and the verifiers


def test_every_matrix_backend_is_in_the_catalogue(repo_root: Path) -> None:
    m = load_matrix(repo_root / "matrix")
    assert {e.backend for e in m.entries} <= set(NAMES)
    assert tuple(NAMES) == MATRIX_BACKENDS
    assert FIELD_BY_NAME["backend"].choices == tuple(NAMES)


def test_every_backend_that_builds_has_a_recipe(repo_root: Path) -> None:
    recipes = repo_root / "recipes"
    m = load_matrix(repo_root / "matrix")
    for b in BACKENDS:
        if b.recipe is not None:
            assert (recipes / b.recipe).is_file(), f"{b.name}: recipes/{b.recipe} is missing"
            assert b.recipe == f"{b.name}.yaml"
        else:
            assert not (recipes / f"{b.name}.yaml").exists(), f"{b.name}: say recipe= in it"
            # Without a recipe kiln build refuses the backend: no entry may ask it to.
            assert all(not e.enabled for e in m.entries if e.backend == b.name), b.name
    backend_files = {p.name for p in recipes.glob("*.yaml")} - {"verify.yaml"}
    assert backend_files == {b.recipe for b in BACKENDS if b.recipe}


def test_verify_methods_are_the_registered_verifiers(repo_root: Path) -> None:
    assert set(VERIFY_METHODS) == set(VERIFIERS)
    assert FIELD_BY_NAME["verify"].choices == VERIFY_METHODS
    m = load_matrix(repo_root / "matrix")
    assert {e.verify for e in m.entries} <= set(VERIFIERS)


def test_a_verify_method_without_a_verifier_is_refused(matrix_copy: Path) -> None:
    assert "pocl" not in VERIFIERS
    text = (matrix_copy / "ubuntu.yaml").read_text()
    (matrix_copy / "ubuntu.yaml").write_text(text.replace("verify: native", "verify: pocl", 1))
    with pytest.raises(MatrixError) as info:
        load_matrix(matrix_copy)
    assert any("pocl" in p and "verify" in p for p in info.value.problems), info.value.problems


def test_records_are_consistent() -> None:
    assert len(set(NAMES)) == len(NAMES)
    host_fields = {f.name for f in dataclasses.fields(Host)}
    for b in BACKENDS:
        assert (b.cmake_option is None) == (b.name == "cpu"), b.name
        if b.runtime is not None:
            assert b.runtime.check in installer.RUNTIME_CHECKS, b.name
            assert set(b.runtime.host_fields) <= host_fields, b.name
            assert b.runtime.floor in FLOORS, b.name
    # Only the CPU goes to the default index; every other variant is a valid label.
    assert [b.name for b in BACKENDS if b.variant is None] == ["cpu"]
    levels = [lv.name for lv in CPU_LEVELS]
    assert len(set(levels)) == len(levels)
    for a in CPU_ARCHES:
        assert all(lv.arch == a.arch for lv in a.levels)


def test_unknown_names_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="unknown backend 'metal'"):
        catalogue.backend("metal")
    with pytest.raises(ConfigError, match="unknown CPU level 'z12'"):
        catalogue.level("z12")


# --------------------------------------------------------------------------------------------
# the readers take their values from the catalogue


def _host(level: str | None) -> Host:
    return Host(os="linux", os_name="Ubuntu 24.04", os_version=None, distro="ubuntu",
                distro_like=(), kernel=None, arch="x86_64", process_arch="x86_64",
                emulation=None, can_emulate_x86_64=False, libc="glibc", libc_version="2.39",
                cpu=Cpu(vendor=None, model=None, level=level, features=frozenset()))


def _record(**kw: object) -> SimpleNamespace:
    base: dict[str, object] = {"cpu_baseline": "x86-64", "cpu_dispatch": (), "backend": "cpu",
                               "backend_version": None, "entry_id": "x"}
    return SimpleNamespace(**{**base, **kw})


def test_installer_reads_tiers_levels_and_runtimes_from_the_catalogue(
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert dict(installer.TIERS) == {b.name: b.tier for b in BACKENDS}
    r = _record(cpu_baseline="x86-64-v3")
    with pytest.raises(Exception, match=r"needs a x86-64-v3 CPU; this CPU is x86-64-v2 "
                                        r"\(no AVX2/FMA\)"):
        installer._check_cpu(r, _host("x86-64-v2"), False, [])  # type: ignore[arg-type]
    # Changed in the catalogue, changed in the ranking: the installer keeps no copy.
    v3 = catalogue.level("x86-64-v3")
    monkeypatch.setitem(catalogue._LEVEL_BY_NAME, "x86-64-v3",
                        dataclasses.replace(v3, missing="the v3 set"))
    with pytest.raises(Exception, match=r"\(no the v3 set\)"):
        installer._check_cpu(r, _host("x86-64-v2"), False, [])  # type: ignore[arg-type]
    cann = catalogue.backend("cann")
    assert cann.runtime is not None
    monkeypatch.setitem(catalogue.BACKEND_BY_NAME, "cann",  # type: ignore[arg-type]
                        dataclasses.replace(cann, runtime=dataclasses.replace(
                            cann.runtime, missing="no NPU driver")))
    with pytest.raises(Exception, match="no NPU driver"):
        installer._check_runtime(_record(backend="cann"), _host(None), [])  # type: ignore[arg-type]


def test_wheel_and_conan_variants_come_from_the_catalogue(repo_root: Path) -> None:
    m = load_matrix(repo_root / "matrix")
    for e in m.entries:
        want = wheel_variant(e.backend, e.backend_version, e.cmake)
        assert wheel.variant(e) == want
        assert conan.backend_option(e) == (want or e.backend)
    by_id = {e.id: wheel.variant(e) for e in m.entries}
    assert by_id["ubuntu-cuda-12.4-x64"] == "cu124"
    assert by_id["ubuntu-rocm-7.2-x64"] == "rocm7.2"
    assert by_id["ubuntu-sycl-fp16-x64"] == "syclfp16"
    assert by_id["ubuntu-sycl-fp32-x64"] == "sycl"
    assert by_id["ubuntu-x64"] is None


def test_variant_options_are_suffixes_after_the_projects_prefix() -> None:
    """The catalogue names kiln's options by suffix (``SYCL_F16``); an entry's cmake has the
    project's full names, so a variant option counts after the project's prefix (any prefix
    kiln.toml allows when the caller does not know the project)."""
    for b in BACKENDS:
        assert b.cmake_option is None or catalogue.OPTION_PREFIX_RE.fullmatch(
            b.cmake_option) is None, b.name  # a suffix, not a prefixed name
    fp16 = (("DEMO_SYCL_F16", "ON"),)
    assert wheel_variant("sycl", "2025.3", fp16) == "syclfp16"
    assert wheel_variant("sycl", "2025.3", fp16, option_prefix="DEMO_") == "syclfp16"
    assert wheel_variant("sycl", "2025.3", fp16, option_prefix="OTHER_") == "sycl"
    assert wheel_variant("sycl", "2025.3", (("DEMO_SYCL_F16", "OFF"),)) == "sycl"
    # not an option prefix kiln.toml allows before the suffix: not the variant's option
    for key in ("SYCL_F16", "X_DEMO_SYCL_F16", "demo_SYCL_F16", "DEMO_XSYCL_F16"):
        assert wheel_variant("sycl", "2025.3", ((key, "ON"),)) == "sycl", key
    # kiln.toml's option_prefix is checked with the same pattern
    assert catalogue.OPTION_PREFIX_RE.pattern == project_module._OPTION_PREFIX.pattern


def test_probe_levels_come_from_the_catalogue() -> None:
    z = catalogue.CPU_ARCH_BY_NAME["s390x"]
    assert {m: lv.name for lv in z.levels for m in lv.machines} == probe_module.Z_MACHINES
    arm = catalogue.CPU_ARCH_BY_NAME["aarch64"]
    v82 = next(lv for lv in arm.levels if lv.cpuinfo_flags)
    flags = frozenset(v82.cpuinfo_flags)
    assert probe_module._arm_level(flags) == v82.name
    assert probe_module._arm_level(flags - {v82.cpuinfo_flags[0]}) == arm.levels[0].name
    x86 = [f.name for f in catalogue.CPU_ARCH_BY_NAME["x86_64"].features]
    assert probe_module._x86_features(frozenset({"sse4_2", "avx2", "avx512f", "avx512bw",
                                                 "avx512vl", "avx_vnni"})) == frozenset(x86)


def test_install_scripts_take_levels_and_tiers_from_the_catalogue() -> None:
    values = install_scripts.catalogue_values()
    assert values["level_orders"] == " ".join(
        '"' + " ".join(a.names) + '"' for a in CPU_ARCHES)
    assert values["first_level_implied"] == '[ "$lo_first" != z13 ]'
    assert values["no_runtime_sh"] == "cpu|kleidiai"
    assert values["emulated_x86_level"] == catalogue.EMULATED_X86_LEVEL
    assert values["x86_levels"] == list(catalogue.CPU_ARCH_BY_NAME["x86_64"].names)


def test_an_unknown_backend_ranks_after_every_known_one() -> None:
    assert max(b.tier for b in BACKENDS) < catalogue.UNKNOWN_TIER


def test_cpu_check_reads_the_catalogue_first_level_rule() -> None:
    """z13 is checked (IBM Z before it exists), x86-64 and armv8-a are not."""
    assert [a.first_implied for a in CPU_ARCHES] == [True, True, False]
    assert CPU_BASELINES == ("x86-64", "x86-64-v2", "x86-64-v3", "x86-64-v4", "armv8-a",
                             "armv8.2-a", "apple-m1", "z13", "z14", "z15")


# --------------------------------------------------------------------------------------------
# the level and backend lists are written once


def _collections(tree: ast.AST) -> list[tuple[int, set[str], bool]]:
    """(line, string constants, is a mapping) of every collection literal."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Tuple | ast.List | ast.Set):
            elts: list[ast.expr | None] = list(node.elts)
        elif isinstance(node, ast.Dict):
            elts = [*node.keys, *node.values]
        else:
            continue
        strings = {e.value for e in elts if isinstance(e, ast.Constant)
                   and isinstance(e.value, str)}
        out.append((node.lineno, strings, isinstance(node, ast.Dict)))
    return out


def test_no_other_module_lists_cpu_levels_or_backends() -> None:
    """Two CPU level names in one literal, or three backend names in one list, outside the
    catalogue are a copy of its facts. (Mappings keyed by other names that happen to match
    backends, such as toolchain modules or the runtime checks the catalogue names, are not.)"""
    levels = {lv.name for lv in CPU_LEVELS}
    backends = set(NAMES)
    bad = []
    for path in sorted(KILN.rglob("*.py")):
        if path == KILN / "matrix" / "catalogue.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for line, strings, mapping in _collections(tree):
            if len(strings & levels) >= 2 or (not mapping and len(strings & backends) >= 3):
                bad.append(f"{path.relative_to(KILN.parent)}:{line}: {sorted(strings)}")
    assert not bad, ("CPU levels or backends listed outside kiln/matrix/catalogue.py:\n"
                     + "\n".join(bad))


def test_the_install_templates_hold_no_level_list() -> None:
    for name in ("install.sh.j2", "install.ps1.j2"):
        text = (KILN / "release" / "templates" / name).read_text(encoding="utf-8")
        for lv in CPU_LEVELS:
            assert f"={lv.name}" not in text and f" {lv.name} " not in text, (name, lv.name)
        assert "'kleidiai'" not in text and "cpu|kleidiai" not in text, name
