from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from kiln.errors import MatrixError
from kiln.matrix import Entry, json_schema, load_matrix

DESIGN_IDS = [
    "macos-arm64", "macos-arm64-kleidiai", "macos-x64", "ubuntu-x64", "ubuntu-arm64",
    "ubuntu-s390x", "ubuntu-vulkan-x64", "ubuntu-vulkan-arm64", "ubuntu-cuda-12.4-x64",
    "ubuntu-cuda-13.3-x64", "ubuntu-rocm-7.2-x64", "ubuntu-sycl-fp32-x64",
    "ubuntu-sycl-fp16-x64", "ubuntu-openvino-2026.2-x64", "android-arm64", "win-cpu-x64",
    "win-cpu-arm64", "win-vulkan-x64", "win-opencl-adreno-arm64", "win-cuda-12.4-x64",
    "win-cuda-13.3-x64", "win-sycl-x64", "win-hip-radeon-x64", "win-openvino-2026.2-x64",
    "openeuler-x64", "openeuler-arm64", "openeuler-ascend-910b-arm64",
]


def test_real_matrix_has_the_27_design_ids_in_order(repo_root: Path) -> None:
    m = load_matrix(repo_root / "matrix")
    assert list(m.ids) == DESIGN_IDS


def test_exactly_two_disabled_with_pull_request_links(repo_root: Path) -> None:
    m = load_matrix(repo_root / "matrix")
    off = {e.id: e.disabled for e in m.disabled}
    assert set(off) == {"macos-arm64-kleidiai", "openeuler-ascend-910b-arm64"}
    for d in off.values():
        assert d is not None
        assert re.match(r"^https://github\.com/[^/]+/[^/]+/pull/\d+$", d.tracking)
        assert d.reason


def test_entries_are_frozen_and_merged(repo_root: Path) -> None:
    m = load_matrix(repo_root / "matrix")
    e = m.get("ubuntu-s390x")
    assert isinstance(e, Entry)
    with pytest.raises(AttributeError):
        e.id = "x"  # type: ignore[misc]
    # defaults (per arch), family defaults and the entry all contribute
    assert e.cpu_baseline == "z13"
    assert e.libc == "glibc" and e.libc_floor == "2.17"
    assert e.zig_target == "s390x-linux-gnu.2.17"
    win = m.get("win-cuda-12.4-x64")
    assert win.archive == "zip" and win.libc == "none"
    assert "sm_50" in win.gpu_targets and "compute_90" in win.gpu_targets  # backend profile
    assert m.get("win-cuda-13.3-x64").gpu_targets[0] == "sm_75"
    assert m.get("openeuler-arm64").zig_target == "aarch64-linux-gnu.2.28"
    assert m.get("macos-x64").zig_target == "x86_64-macos.10.15"
    assert m.get("android-arm64").zig_target == "aarch64-linux-musl"
    assert dict(m.get("ubuntu-sycl-fp16-x64").cmake) == {"EMBER_SYCL_F16": "ON"}


def test_cuda_bundles_carry_different_sm_lists(repo_root: Path) -> None:
    m = load_matrix(repo_root / "matrix")
    old = set(m.get("ubuntu-cuda-12.4-x64").gpu_targets)
    new = set(m.get("ubuntu-cuda-13.3-x64").gpu_targets)
    assert {"sm_50", "sm_61", "sm_70"} <= old
    assert not ({"sm_50", "sm_61", "sm_70"} & new)
    assert "sm_120" in new


def test_schema_file_is_generated_from_the_code(repo_root: Path) -> None:
    committed = json.loads((repo_root / "matrix" / "schema.json").read_text())
    assert committed == json_schema(), "run: kiln matrix schema --write matrix/schema.json"


def test_schema_accepts_every_matrix_file(repo_root: Path) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    import yaml

    schema = json_schema()
    for path in sorted((repo_root / "matrix").glob("*.yaml")):
        jsonschema.validate(yaml.safe_load(path.read_text()), schema)


# ---------------------------------------------------------------------------- broken copies


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path.name}"
    path.write_text(text.replace(old, new, 1))


def _problems(root: Path) -> list[str]:
    with pytest.raises(MatrixError) as info:
        load_matrix(root)
    return list(info.value.problems)


def test_duplicate_id(matrix_copy: Path) -> None:
    _edit(matrix_copy / "windows.yaml", "- id: win-cpu-arm64", "- id: win-cpu-x64")
    (p,) = _problems(matrix_copy)
    assert "duplicate id 'win-cpu-x64'" in p
    assert "matrix/windows.yaml:14" in p and "first defined in " in p and "windows.yaml:10" in p


def test_unknown_key_suggests_the_closest(matrix_copy: Path) -> None:
    _edit(matrix_copy / "ubuntu.yaml", "  - id: ubuntu-s390x\n    arch: s390x",
          "  - id: ubuntu-s390x\n    arhc: s390x")
    problems = _problems(matrix_copy)
    assert any("entry 'ubuntu-s390x'" in p and "unknown key 'arhc'" in p
               and "did you mean 'arch'?" in p for p in problems), problems


def test_unknown_arch_names_the_value_and_the_choices(matrix_copy: Path) -> None:
    _edit(matrix_copy / "ubuntu.yaml", "arch: s390x", "arch: sparc64")
    problems = _problems(matrix_copy)
    assert any("'sparc64'" in p and "x86_64, aarch64, s390x" in p for p in problems), problems


def test_broken_tracking_urls(matrix_copy: Path) -> None:
    for bad in ("http://github.com/ggml-org/llama.cpp/pull/21259",
                "https://github.com/ggml-org/llama.cpp/issues/21259",
                "https://github.com/ggml-org/llama.cpp/pull/",
                "not a url"):
        text = (matrix_copy / "macos.yaml").read_text()
        text = re.sub(r"tracking: .*", f"tracking: {bad}", text)
        (matrix_copy / "macos.yaml").write_text(text)
        problems = _problems(matrix_copy)
        assert any(bad in p and "pull request" in p for p in problems), (bad, problems)


def test_impossible_combinations(matrix_copy: Path) -> None:
    _edit(matrix_copy / "macos.yaml", "  - id: macos-x64\n    arch: x86_64",
          "  - id: macos-x64\n    arch: x86_64\n    backend: cuda\n    backend_version: \"12.4\"")
    _edit(matrix_copy / "ubuntu.yaml", "  - id: ubuntu-arm64\n    arch: aarch64\n"
          "    verify: qemu", "  - id: ubuntu-arm64\n    arch: aarch64\n    verify: wine")
    problems = _problems(matrix_copy)
    assert any("macos-x64" in p and "cuda does not exist on macos" in p for p in problems)
    assert any("ubuntu-arm64" in p and "wine verification needs a Windows" in p
               for p in problems)


def test_every_error_is_reported_in_one_run(matrix_copy: Path) -> None:
    _edit(matrix_copy / "windows.yaml", "- id: win-cpu-arm64", "- id: win-cpu-x64")
    _edit(matrix_copy / "ubuntu.yaml", "arch: s390x", "arch: sparc64")
    _edit(matrix_copy / "android.yaml", "verify: qemu", "verfy: qemu")
    _edit(matrix_copy / "openeuler.yaml", "pull/17192", "pull/abc")
    _edit(matrix_copy / "macos.yaml", 'min_os: "10.15"', "min_os: 10.15")
    problems = _problems(matrix_copy)
    text = "\n".join(problems)
    assert "duplicate id 'win-cpu-x64'" in text
    assert "sparc64" in text
    assert "did you mean 'verify'?" in text
    assert "pull/abc" in text
    assert "expected a string, got float 10.15" in text
    assert len(problems) >= 5


def test_missing_required_field_and_yaml_syntax(matrix_copy: Path) -> None:
    _edit(matrix_copy / "android.yaml", "    arch: aarch64\n", "")
    _edit(matrix_copy / "macos.yaml", "entries:", "entries: [")
    problems = _problems(matrix_copy)
    assert any("android.yaml" in p and "missing required field 'arch'" in p for p in problems)
    assert any("macos.yaml" in p and "not valid YAML" in p for p in problems)


def test_duplicate_key_in_one_mapping(matrix_copy: Path) -> None:
    _edit(matrix_copy / "android.yaml", "    verify: qemu", "    verify: qemu\n    verify: inspect")
    problems = _problems(matrix_copy)
    assert any("key 'verify' appears twice" in p for p in problems), problems


def test_unknown_backend_profile_and_enum_in_defaults(matrix_copy: Path) -> None:
    _edit(matrix_copy / "defaults.yaml", "  build: local", "  build: remote")
    _edit(matrix_copy / "ubuntu.yaml", 'backend_version: "12.4"', 'backend_version: "12.9"')
    problems = _problems(matrix_copy)
    assert any("defaults.yaml" in p and "'remote'" in p for p in problems), problems
    assert any("no profile 'cuda@12.9'" in p for p in problems), problems


def test_cmake_options_are_the_projects_not_the_toolchains(matrix_copy: Path) -> None:
    """An entry's cmake: keys are the project's own upper-case variables, whatever their
    prefix (the loader does not know the project); CMAKE_* belong to the toolchain (recipes/
    and the toolchain file), and names that are no CMake variable never reach a -D."""
    _edit(matrix_copy / "ubuntu.yaml", "  - id: ubuntu-x64\n",
          '  - id: ubuntu-x64\n    cmake: {GGML_NATIVE: "OFF", LLAMA_CURL: "OFF"}\n')
    m = load_matrix(matrix_copy)
    assert dict(m.get("ubuntu-x64").cmake) == {"GGML_NATIVE": "OFF", "LLAMA_CURL": "OFF"}
    for key, message in (("CMAKE_TOOLCHAIN_FILE", "belongs to the toolchain"),
                         ("CMAKE_C_FLAGS", "belongs to the toolchain"),
                         ("ggml_native", "is not an upper-case CMake variable name"),
                         ("_X", "is not an upper-case CMake variable name"),
                         ("A B", "is not an upper-case CMake variable name"),
                         ("A=B", "is not an upper-case CMake variable name")):
        _edit(matrix_copy / "ubuntu.yaml", "    cmake: {GGML_NATIVE:",
              f'    cmake: {{"{key}": "ON", GGML_NATIVE:')
        problems = _problems(matrix_copy)
        assert any(key in p and message in p for p in problems), (key, problems)
        _edit(matrix_copy / "ubuntu.yaml", f'    cmake: {{"{key}": "ON", GGML_NATIVE:',
              "    cmake: {GGML_NATIVE:")
    jsonschema = pytest.importorskip("jsonschema")
    pattern = json_schema()["$defs"]["entry"]["properties"]["cmake"]["propertyNames"]
    for key, ok in (("GGML_NATIVE", True), ("EMBER_SYCL_F16", True), ("CMAKE_C_FLAGS", False),
                    ("ggml", False)):
        errors = list(jsonschema.Draft202012Validator(pattern).iter_errors(key))
        assert (not errors) == ok, key


def test_unlisted_family_file(matrix_copy: Path) -> None:
    (matrix_copy / "freebsd.yaml").write_text("entries: []\n")
    problems = _problems(matrix_copy)
    assert any("freebsd.yaml" in p and "families" in p for p in problems)


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(MatrixError) as info:
        load_matrix(tmp_path / "nope")
    assert "no such directory" in str(info.value)
