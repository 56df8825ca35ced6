"""Wheels without programs: tags, versions and variants for the whole matrix, the contents and
bytes of a wheel from a fake staged tree, RECORD, the Mach-O reader, how auditwheel's and
delvewheel's answers are judged, the cibuildwheel project, and the Conan package selection
(with the recipe's backend list kept in step with the variants)."""

from __future__ import annotations

import ast
import base64
import hashlib
import shutil
import struct
import zipfile
from pathlib import Path

import pytest
from ember_project import EMBER

from kiln.errors import ConfigError, VerifyError
from kiln.matrix import Entry, load_matrix
from kiln.package import wheel as kw
from kiln.package.conan import backend_option, conan_version, package_for, select_packages
from kiln.package.records import AssetRecord, Tool, Verification
from kiln.package.wheel import (
    WheelFile,
    check_macos,
    host_entry,
    no_wheel_reason,
    parse_wheel_name,
    read_macho,
    record_text,
    variant,
    wheel_files,
    wheel_target,
    wheel_version,
    write_cibuildwheel_project,
    write_wheel,
)
from kiln.project import Project, load_project

REPO = Path(__file__).resolve().parents[2]
MATRIX = load_matrix(REPO / "matrix")
EPOCH = 1767323045
COMMIT = "b" * 40


def entry(entry_id: str) -> Entry:
    return MATRIX.get(entry_id)


# --------------------------------------------------------------------------------------------
# tags, versions, variants


def test_the_promised_platform_tags_and_nothing_else() -> None:
    tags = {t.platform_tags[0] for e in MATRIX.enabled
            if (t := wheel_target(e, EMBER)) is not None}
    assert tags == {
        "manylinux_2_17_x86_64", "manylinux_2_17_aarch64", "manylinux_2_17_s390x",
        "macosx_11_0_arm64", "macosx_10_15_x86_64", "win_amd64", "win_arm64",
        "manylinux_2_39_x86_64",  # the SYCL builds, linked in the glibc 2.39 oneAPI image
    }


def test_every_entry_has_a_wheel_or_a_reason() -> None:
    for e in MATRIX:
        assert (wheel_target(e, EMBER) is None) == (no_wheel_reason(e, EMBER) is not None), e.id
    assert "static musl" in (no_wheel_reason(entry("android-arm64"), EMBER) or "")
    assert "2.17" in (no_wheel_reason(entry("openeuler-x64"), EMBER) or "")


def test_wheel_file_names_are_unique_and_valid() -> None:
    packaging_utils = pytest.importorskip("packaging.utils")
    names = [t.filename(4242) for e in MATRIX if (t := wheel_target(e, EMBER)) is not None]
    assert len(names) == len(set(names))
    for name in names:
        dist, version, build, tags = packaging_utils.parse_wheel_filename(name)
        ours = parse_wheel_name(name)
        assert dist == ours.distribution == "ember" and build == ()
        assert str(version) == ours.version  # already in PEP 440 normal form
        assert {str(t) for t in tags} == {f"py3-none-{p}" for p in ours.platforms}


def test_linux_wheels_carry_the_manylinux2014_alias() -> None:
    t = wheel_target(entry("ubuntu-s390x"), EMBER)
    assert t is not None
    assert t.filename(7) == "ember-0.0.7-py3-none-manylinux_2_17_s390x.manylinux2014_s390x.whl"
    assert t.checker == "auditwheel" and t.index == ""


@pytest.mark.parametrize(("entry_id", "expected"), [
    ("ubuntu-x64", None),
    ("ubuntu-cuda-12.4-x64", "cu124"),
    ("win-cuda-13.3-x64", "cu133"),
    ("ubuntu-rocm-7.2-x64", "rocm7.2"),
    ("win-hip-radeon-x64", "rocm7.2"),
    ("ubuntu-vulkan-arm64", "vulkan"),
    ("ubuntu-sycl-fp32-x64", "sycl"),
    ("ubuntu-sycl-fp16-x64", "syclfp16"),
    ("win-openvino-2026.2-x64", "openvino"),
    ("win-opencl-adreno-arm64", "opencl"),
])
def test_variants(entry_id: str, expected: str | None) -> None:
    assert variant(entry(entry_id)) == expected
    t = wheel_target(entry(entry_id), EMBER)
    assert t is not None and t.index == (expected or "")


def test_versions_are_pep440_normal() -> None:
    version = pytest.importorskip("packaging.version")
    for e in MATRIX:
        v = wheel_version(12, variant(e))
        assert str(version.Version(v)) == v
    assert wheel_version(12) == "0.0.12" and wheel_version(12, "cu124") == "0.0.12+cu124"
    with pytest.raises(ConfigError):
        wheel_version(-1)
    with pytest.raises(ConfigError):
        wheel_version(1, "CU-124")


def test_parse_wheel_name() -> None:
    n = parse_wheel_name("ember-0.0.3+cu124-py3-none-win_amd64.whl")
    assert (n.public_version, n.local, n.python, n.platforms) == (
        "0.0.3", "cu124", "py3", ("win_amd64",))
    assert parse_wheel_name("ember-0.0.3-py3-none-any.whl").local is None
    for bad in ("ember-0.0.3.tar.gz", "ember-py3-none.whl", "a/ember-1-py3-none-any.whl"):
        with pytest.raises(ConfigError):
            parse_wheel_name(bad)


# --------------------------------------------------------------------------------------------
# contents and bytes


def fake_stage(root: Path, os_name: str = "linux") -> Path:
    stage = root / "stage"
    (stage / "lib").mkdir(parents=True)
    (stage / "bin").mkdir()
    (stage / "share" / "ember").mkdir(parents=True)
    (stage / "share" / "ember" / "LICENSE").write_text("MIT License\n")
    if os_name == "windows":
        (stage / "bin" / "ember.dll").write_bytes(b"MZ fake dll")
    elif os_name == "macos":
        (stage / "lib" / "libember.0.1.0.dylib").write_bytes(macho())
        (stage / "lib" / "libember.0.dylib").symlink_to("libember.0.1.0.dylib")
        (stage / "lib" / "libember.dylib").symlink_to("libember.0.dylib")
    else:
        (stage / "lib" / "libember.so.0.1.0").write_bytes(b"\x7fELF fake library")
        (stage / "lib" / "libember.so.0").symlink_to("libember.so.0.1.0")
        (stage / "lib" / "libember.so").symlink_to("libember.so.0")
    return stage


def fake_binding(root: Path) -> Path:
    pkg = root / "python" / "ember"
    (pkg / "__pycache__").mkdir(parents=True)
    (pkg / "__init__.py").write_text("'''binding'''\n")
    (pkg / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"junk")
    (pkg / "lib").mkdir()
    (pkg / "lib" / "libember.so").write_bytes(b"a developer's own build")
    return pkg


def test_wheel_files_layout_and_record(tmp_path: Path) -> None:
    files = wheel_files(entry("ubuntu-x64"), fake_stage(tmp_path), binding=fake_binding(tmp_path),
                        build_number=5, commit=COMMIT, project=EMBER)
    names = [f.name for f in files]
    assert names == ["ember/__init__.py", "ember/lib/libember.so.0",
                     "ember-0.0.5.dist-info/LICENSE", "ember-0.0.5.dist-info/METADATA",
                     "ember-0.0.5.dist-info/WHEEL", "ember-0.0.5.dist-info/RECORD"]
    by_name = {f.name: f for f in files}
    assert by_name["ember/lib/libember.so.0"].data == b"\x7fELF fake library"
    assert by_name["ember/lib/libember.so.0"].executable
    wheel_meta = by_name["ember-0.0.5.dist-info/WHEEL"].data.decode()
    assert "Root-Is-Purelib: false" in wheel_meta
    assert "Tag: py3-none-manylinux_2_17_x86_64\nTag: py3-none-manylinux2014_x86_64" in wheel_meta
    meta = by_name["ember-0.0.5.dist-info/METADATA"].data.decode()
    assert "Name: ember\nVersion: 0.0.5\n" in meta and COMMIT in meta
    assert str(tmp_path) not in meta
    record = by_name["ember-0.0.5.dist-info/RECORD"].data.decode().splitlines()
    assert record[-1] == "ember-0.0.5.dist-info/RECORD,,"
    for line in record[:-1]:
        path, digest, size = line.split(",")
        data = by_name[path].data
        want = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        assert digest == f"sha256={want}" and int(size) == len(data)


def test_windows_and_macos_libraries(tmp_path: Path) -> None:
    win = wheel_files(entry("win-cpu-arm64"), fake_stage(tmp_path / "w", "windows"),
                      binding=fake_binding(tmp_path / "w"), build_number=1, commit=COMMIT,
                      project=EMBER)
    # the DLL beside ember-server.exe (Windows looks for a DLL in the program's folder)
    assert "ember/bin/ember.dll" in [f.name for f in win]
    mac = wheel_files(entry("macos-x64"), fake_stage(tmp_path / "m", "macos"),
                      binding=fake_binding(tmp_path / "m"), build_number=1, commit=COMMIT,
                      project=EMBER)
    # the install name ember-server is linked against, where @executable_path/../lib finds it
    assert "ember/lib/libember.0.dylib" in [f.name for f in mac]


def add_server(stage: Path, os_name: str = "linux", *, licences: bool = True,
               data: bytes = b"\x7fELF fake server") -> None:
    name = "ember-server.exe" if os_name == "windows" else "ember-server"
    (stage / "bin" / name).write_bytes(data)
    if licences:
        (stage / "share" / "ember" / "licenses").mkdir(parents=True)
        (stage / "share" / "ember" / "licenses" / "civetweb.md").write_text("civetweb MIT\n")
        (stage / "share" / "ember" / "licenses" / "cJSON.txt").write_text("cJSON MIT\n")


def test_the_server_its_console_script_and_licences(tmp_path: Path) -> None:
    stage = fake_stage(tmp_path)
    add_server(stage)
    binding = fake_binding(tmp_path)
    (binding / "bin").mkdir()
    (binding / "bin" / "ember-server.py").write_text("a developer's leftover\n")
    files = wheel_files(entry("ubuntu-x64"), stage, binding=binding, build_number=5,
                        commit=COMMIT, project=EMBER)
    names = [f.name for f in files]
    d = "ember-0.0.5.dist-info"
    assert names == ["ember/__init__.py", "ember/bin/ember-server", "ember/lib/libember.so.0",
                     f"{d}/LICENSE", f"{d}/METADATA", f"{d}/WHEEL", f"{d}/entry_points.txt",
                     f"{d}/licenses/cJSON.txt", f"{d}/licenses/civetweb.md", f"{d}/RECORD"]
    by_name = {f.name: f for f in files}
    server = by_name["ember/bin/ember-server"]
    assert server.executable and server.data == b"\x7fELF fake server"
    assert by_name[f"{d}/entry_points.txt"].data == \
        b"[console_scripts]\nember-server = ember.server:main\n"
    assert by_name[f"{d}/licenses/civetweb.md"].data == b"civetweb MIT\n"
    assert "python -m ember.server" in by_name[f"{d}/METADATA"].data.decode()
    record = by_name[f"{d}/RECORD"].data.decode()
    assert "ember/bin/ember-server,sha256=" in record


def test_the_windows_server_is_an_exe(tmp_path: Path) -> None:
    stage = fake_stage(tmp_path, "windows")
    add_server(stage, "windows", data=b"MZ fake server")
    names = [f.name for f in wheel_files(entry("win-cpu-x64"), stage,
                                         binding=fake_binding(tmp_path), build_number=1,
                                         commit=COMMIT, project=EMBER)]
    assert "ember/bin/ember-server.exe" in names and "ember/bin/ember-server" not in names


def test_without_a_server_there_is_no_console_script(tmp_path: Path) -> None:
    files = wheel_files(entry("ubuntu-x64"), fake_stage(tmp_path),
                        binding=fake_binding(tmp_path), build_number=1, commit=COMMIT,
                        project=EMBER)
    names = [f.name for f in files]
    assert not any("ember-server" in n or "entry_points" in n or "/licenses/" in n
                   for n in names)
    meta = next(f for f in files if f.name.endswith("/METADATA")).data.decode()
    assert "ember.server" not in meta


def test_a_server_without_its_licences_is_a_build_error(tmp_path: Path) -> None:
    stage = fake_stage(tmp_path)
    add_server(stage, licences=False)
    with pytest.raises(kw.BuildError, match=r"share/ember/licenses/civetweb\.md"):
        wheel_files(entry("ubuntu-x64"), stage, binding=fake_binding(tmp_path), build_number=1,
                    commit=COMMIT, project=EMBER)


def test_no_shared_library_is_a_build_error(tmp_path: Path) -> None:
    stage = fake_stage(tmp_path)
    for p in (stage / "lib").iterdir():
        p.unlink()
    with pytest.raises(kw.BuildError, match="no shared library"):
        wheel_files(entry("ubuntu-x64"), stage, binding=fake_binding(tmp_path), build_number=1,
                    commit=COMMIT, project=EMBER)


def test_an_entry_without_a_wheel_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="android-arm64"):
        wheel_files(entry("android-arm64"), fake_stage(tmp_path), binding=fake_binding(tmp_path),
                    build_number=1, commit=COMMIT, project=EMBER)


def test_write_wheel_is_reproducible(tmp_path: Path) -> None:
    files = wheel_files(entry("ubuntu-arm64"), fake_stage(tmp_path),
                        binding=fake_binding(tmp_path), build_number=3, commit=COMMIT,
                        project=EMBER)
    a, b = tmp_path / "a.whl", tmp_path / "b.whl"
    write_wheel(files, a, EPOCH)
    write_wheel(list(files), b, EPOCH)
    assert a.read_bytes() == b.read_bytes()
    with zipfile.ZipFile(a) as zf:
        infos = zf.infolist()
        assert [i.filename for i in infos] == [f.name for f in files]
        assert {i.date_time for i in infos} == {(2026, 1, 2, 3, 4, 4)}
        assert {i.external_attr >> 16 for i in infos} == {0o100644, 0o100755}
        assert all(i.create_system == 3 for i in infos)
    # Before 1980 the zip format has no dates: clamped, not an error.
    write_wheel(files, tmp_path / "old.whl", 0)
    # A rewrite of a wheel (as after a repair) gives the same bytes.
    kw.renormalize(a, tmp_path / "c.whl", EPOCH)
    assert (tmp_path / "c.whl").read_bytes() == a.read_bytes()


def test_record_text_lists_record_last() -> None:
    files = [WheelFile(name="x/a.py", data=b"a"), WheelFile(name="x-1.dist-info/RECORD",
                                                            data=b"old")]
    text = record_text(files, "x-1.dist-info/RECORD")
    assert text.splitlines()[-1] == "x-1.dist-info/RECORD,,"
    assert len(text.splitlines()) == 2


# --------------------------------------------------------------------------------------------
# Mach-O, auditwheel, delvewheel


def macho(cpu: int = 0x0100000C, minos: tuple[int, int, int] = (11, 0, 0),
          dylibs: tuple[str, ...] = ("/usr/lib/libSystem.B.dylib",)) -> bytes:
    cmds = b""
    version = (minos[0] << 16) | (minos[1] << 8) | minos[2]
    cmds += struct.pack("<6I", 0x32, 24, 1, version, version, 0)  # LC_BUILD_VERSION
    for name in dylibs:
        raw = name.encode() + b"\0"
        size = (24 + len(raw) + 7) // 8 * 8
        cmds += struct.pack("<6I", 0xC, size, 24, 2, 0x10000, 0x10000)
        cmds += raw.ljust(size - 24, b"\0")
    header = struct.pack("<8I", 0xFEEDFACF, cpu, 0, 6, 1 + len(dylibs), len(cmds), 0, 0)
    return header + cmds


def test_read_macho() -> None:
    facts = read_macho(macho(minos=(10, 15, 0), cpu=0x01000007))
    assert facts.arch == "x86_64" and facts.minos == (10, 15, 0)
    assert facts.dylibs == ("/usr/lib/libSystem.B.dylib",)
    with pytest.raises(VerifyError):
        read_macho(b"\x7fELF" + b"\0" * 60)


def _mac_files(data: bytes) -> list[WheelFile]:
    return [WheelFile(name="ember/lib/libember.0.dylib", data=data, executable=True)]


def test_check_macos() -> None:
    target = wheel_target(entry("macos-arm64"), EMBER)
    assert target is not None
    assert check_macos(_mac_files(macho()), target).ok
    too_new = check_macos(_mac_files(macho(minos=(13, 0, 0))), target)
    assert not too_new.ok and "newer than the tag's 11.0" in too_new.detail
    foreign = check_macos(_mac_files(macho(dylibs=("/opt/homebrew/lib/libomp.dylib",))), target)
    assert not foreign.ok and "delocate" in foreign.detail
    wrong = check_macos(_mac_files(macho(cpu=0x01000007)), target)
    assert not wrong.ok and "architecture x86_64" in wrong.detail
    # the server is read too, when the wheel has it
    server = WheelFile(name="ember/bin/ember-server", data=macho(), executable=True)
    assert check_macos([*_mac_files(macho()), server], target).ok
    bad = WheelFile(name="ember/bin/ember-server",
                    data=macho(dylibs=("/opt/homebrew/lib/libomp.dylib",)), executable=True)
    got = check_macos([*_mac_files(macho()), bad], target)
    assert not got.ok and "ember-server: needs dylibs outside macOS" in got.detail


def test_auditwheel_verdicts(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    target = wheel_target(entry("ubuntu-arm64"), EMBER)
    assert target is not None
    reports = {"ok": {"overall_tag": "manylinux_2_17_aarch64", "external_libs": {}},
               "older": {"overall_tag": "manylinux_2_5_aarch64", "external_libs": {}},
               "newer": {"overall_tag": "manylinux_2_28_aarch64", "external_libs": {}}}
    for name, report in reports.items():
        monkeypatch.setattr(kw, "auditwheel_report", lambda _w, _e, r=report: r)
        check = kw._check_linux(tmp_path / "x.whl", target, tmp_path, EPOCH, {})
        assert check.ok == (name != "newer"), name
        assert not check.repaired


def test_delvewheel_output() -> None:
    none = ("Analyzing x.whl\n\nThe following DLLs will be copied into the wheel.\n    None\n\n"
            "The following DLLs are assumed to be present in the end user's environment and "
            "will not be copied into the wheel.\n    kernel32.dll\n")
    assert kw._delvewheel_copies(none) == []
    some = none.replace("    None\n", "    libwinpthread-1.dll (C:\\mingw\\bin)\n")
    assert kw._delvewheel_copies(some) == ["libwinpthread-1.dll (C:\\mingw\\bin)"]
    with pytest.raises(VerifyError):
        kw._delvewheel_copies("something else")


# --------------------------------------------------------------------------------------------
# cibuildwheel


def test_cibuildwheel_project(tmp_path: Path) -> None:
    out = write_cibuildwheel_project(tmp_path / "build" / "cibw", repo=tmp_path, project=EMBER)
    pyproject = (out / "pyproject.toml").read_text()
    assert 'build-backend = "kiln_wheel_backend"' in pyproject and 'backend-path = ["."]' in \
        pyproject
    backend = (out / "kiln_wheel_backend.py").read_text()
    assert "'../..'" in backend and str(tmp_path) not in backend
    ast.parse(backend)


def test_host_entry() -> None:
    e = host_entry(MATRIX.entries, {}, system="Linux", machine="x86_64", project=EMBER)
    assert e.id == "ubuntu-x64"
    assert host_entry(MATRIX.entries, {}, system="Darwin", machine="arm64",
                      project=EMBER).id == "macos-arm64"
    assert host_entry(MATRIX.entries, {}, system="Windows", machine="ARM64",
                      project=EMBER).id == "win-cpu-arm64"
    chosen = host_entry(MATRIX.entries, {"KILN_WHEEL_ENTRY": "ubuntu-s390x"}, system="Linux",
                        machine="x86_64", project=EMBER)
    assert chosen.id == "ubuntu-s390x"
    with pytest.raises(ConfigError):
        host_entry(MATRIX.entries, {"KILN_WHEEL_ENTRY": "nope"}, system="Linux",
                   machine="x86_64", project=EMBER)


def test_pyproject_cibuildwheel_overrides_name_real_entries() -> None:
    import tomllib

    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    overrides = data["tool"]["cibuildwheel"]["overrides"]
    for o in overrides:
        e = entry(o["environment"]["KILN_WHEEL_ENTRY"])
        t = wheel_target(e, EMBER)
        assert t is not None and e.backend == "cpu"
        if "MACOSX_DEPLOYMENT_TARGET" in o["environment"]:
            assert o["environment"]["MACOSX_DEPLOYMENT_TARGET"] == e.min_os


# --------------------------------------------------------------------------------------------
# Conan


def record(entry_id: str, kind: str = "archive") -> AssetRecord:
    e = entry(entry_id)
    return AssetRecord(
        name=f"ember-b1-bin-{entry_id}.{e.archive}", kind=kind, entry_id=e.id, os=e.os,
        arch=e.arch, backend=e.backend, backend_version=e.backend_version, libc=e.libc,
        libc_floor=e.libc_floor, min_os=e.min_os, cpu_baseline=e.cpu_baseline,
        cpu_dispatch=e.cpu_dispatch, gpu_targets=e.gpu_targets, min_driver=e.min_driver,
        build_number=1, commit=COMMIT, size=1, sha256="0" * 64, unpacked_size=1,
        toolchain=(Tool(name="zig", version="0.17.1"),),
        verification=Verification(method="inspect", ok=True, detail=""))


def test_conan_packages_one_per_settings() -> None:
    ids = ["openeuler-x64", "ubuntu-x64", "android-arm64", "win-cpu-arm64",
           "ubuntu-cuda-12.4-x64", "macos-arm64"]
    pairs = [(record(i), entry(i)) for i in ids] + [(record("ubuntu-x64", "wheel"),
                                                     entry("ubuntu-x64"))]
    packages, skipped = select_packages(pairs, name="ember")
    got = {(p.os, p.arch, p.backend): p.record.entry_id for p in packages}
    assert got == {("Linux", "x86_64", "cpu"): "ubuntu-x64",
                   ("Linux", "x86_64", "cu124"): "ubuntu-cuda-12.4-x64",
                   ("Windows", "armv8", "cpu"): "win-cpu-arm64",
                   ("Macos", "armv8", "cpu"): "macos-arm64"}
    assert any(s.startswith("openeuler-x64: same os, arch and backend as ubuntu-x64")
               for s in skipped)
    assert any(s.startswith("android-arm64") for s in skipped)
    assert conan_version(42) == "0.0.42"
    pkg = package_for(record("win-cpu-arm64"), entry("win-cpu-arm64"), name="ember")
    assert not isinstance(pkg, str)
    assert pkg.settings_args() == ["-s", "os=Windows", "-s", "arch=armv8", "-s",
                                   "build_type=Release", "-o", "ember/*:backend=cpu"]


def _recipe_list(name: str) -> list[str]:
    tree = ast.parse((REPO / "recipes" / "conanfile.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == name for t in node.targets):
            value = ast.literal_eval(node.value)
            return list(value) if isinstance(value, list) else list(value.values())
    raise AssertionError(f"{name} not in recipes/conanfile.py")


def test_recipe_backends_cover_every_entry() -> None:
    backends = set(_recipe_list("BACKENDS"))
    assert {backend_option(e) for e in MATRIX} <= backends
    assert set(_recipe_list("CONAN_OS")) >= {"linux", "macos", "windows"}



# --------------------------------------------------------------------------------------------
# another project: names, library, server and description all from its kiln.toml

DEMO_TOML = """
[project]
name = "demo-rt"
license = "LICENSE"
source = "src"

[build]
binding = "py/demo_rt"
option_prefix = "DEMO_"

[package]
required = ["bin/demo-run{exe}"]

[package.library]
linux = "lib64/libdemo.so"
windows = "bin/demo.dll"

[smoke]
program = "demo-run"
args = ["-m", "{model}"]
output = "json-ids"

[smoke.server]
program = "demo-serve"
args = ["-m", "{model}"]

[wheel]
summary = "{name}: a demo ({what})"
readme = "wheel.md.j2"
server_licenses = ["share/demo/licenses/dep.txt"]
cmake = { DEMO_SHARED = "ON" }
"""
DEMO_README = ("# {{ name }} {{ version }} ({{ entry_id }}, {{ what }}): a {brace} stays\n"
               "{% if server %}\nrun `{{ server }}` (python -m {{ import_name }}.server)\n"
               "{% endif %}")


def demo_project(root: Path, *, server: bool = True) -> Project:
    text = DEMO_TOML
    if not server:
        text = text.replace('[smoke.server]\nprogram = "demo-serve"\nargs = ["-m", "{model}"]\n',
                            "").replace('server_licenses = ["share/demo/licenses/dep.txt"]\n', "")
    root.mkdir(parents=True, exist_ok=True)
    (root / "kiln.toml").write_text(text)
    (root / "wheel.md.j2").write_text(DEMO_README)
    pkg = root / "py" / "demo_rt"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("'''demo'''\n")
    (pkg / "server.py").write_text("def main(): pass\n")
    return load_project(root)


def demo_stage(root: Path) -> Path:
    stage = root / "stage"
    (stage / "lib64").mkdir(parents=True)
    (stage / "bin").mkdir()
    (stage / "lib64" / "libdemo.so.3.1").write_bytes(b"\x7fELF fake demo library")
    (stage / "lib64" / "libdemo.so.3").symlink_to("libdemo.so.3.1")
    (stage / "lib64" / "libdemo.so").symlink_to("libdemo.so.3")
    (stage / "bin" / "demo-serve").write_bytes(b"\x7fELF fake demo server")
    (stage / "share" / "demo" / "licenses").mkdir(parents=True)
    (stage / "share" / "demo" / "licenses" / "dep.txt").write_text("dep: MIT\n")
    (stage / "LICENSE").write_text("demo licence\n")
    return stage


def test_another_projects_wheel_is_named_and_laid_out_after_it(tmp_path: Path) -> None:
    demo = demo_project(tmp_path / "demo")
    target = wheel_target(entry("ubuntu-cuda-12.4-x64"), demo)
    assert target is not None
    # PEP 427: the file name spells "-" as "_"; METADATA's Name is the project's
    assert target.filename(5) == ("demo_rt-0.0.5+cu124-py3-none-manylinux_2_17_x86_64."
                                  "manylinux2014_x86_64.whl")
    files = wheel_files(entry("ubuntu-cuda-12.4-x64"), demo_stage(tmp_path),
                        binding=demo.root / "py" / "demo_rt", build_number=5, commit=COMMIT,
                        project=demo)
    d = "demo_rt-0.0.5+cu124.dist-info"
    assert [f.name for f in files] == [
        "demo_rt/__init__.py", "demo_rt/bin/demo-serve", "demo_rt/lib64/libdemo.so.3",
        "demo_rt/server.py", f"{d}/LICENSE", f"{d}/METADATA", f"{d}/WHEEL",
        f"{d}/entry_points.txt", f"{d}/licenses/dep.txt", f"{d}/RECORD"]
    by_name = {f.name: f.data for f in files}
    assert by_name["demo_rt/lib64/libdemo.so.3"] == b"\x7fELF fake demo library"
    assert by_name[f"{d}/entry_points.txt"] == \
        b"[console_scripts]\ndemo-serve = demo_rt.server:main\n"
    assert by_name[f"{d}/LICENSE"] == b"demo licence\n"
    meta = by_name[f"{d}/METADATA"].decode()
    assert meta.startswith("Metadata-Version: 2.1\nName: demo-rt\nVersion: 0.0.5+cu124\n"
                           "Summary: demo-rt: a demo (cuda 12.4 build)\nRequires-Python: ")
    assert "License:" not in meta  # [wheel] names none
    assert [line for line in meta.splitlines() if line.startswith("Classifier")] == [
        "Classifier: Operating System :: POSIX :: Linux",
        "Classifier: Programming Language :: Python :: 3"]
    assert meta.endswith("\n\n# demo-rt 0.0.5+cu124 (ubuntu-cuda-12.4-x64, cuda 12.4 build): "
                         "a {brace} stays\nrun `demo-serve` (python -m demo_rt.server)\n")
    assert "ember" not in "".join(f.name for f in files) + meta
    # no macOS library in its kiln.toml: no macOS wheel, and the reason says so
    assert wheel_target(entry("macos-arm64"), demo) is None
    assert "[package.library] names no macos library" in (
        no_wheel_reason(entry("macos-arm64"), demo) or "")


def test_another_project_without_a_server_has_no_console_script(tmp_path: Path) -> None:
    demo = demo_project(tmp_path / "demo", server=False)
    # the staged tree has a program of the server's name: without [smoke.server] it stays out
    stage = demo_stage(tmp_path)
    (stage / "bin" / "demo.dll").write_bytes(b"MZ demo dll")
    (stage / "bin" / "demo-serve.exe").write_bytes(b"MZ demo server")
    files = wheel_files(entry("win-cpu-x64"), stage, binding=demo.root / "py" / "demo_rt",
                        build_number=1, commit=COMMIT, project=demo)
    names = [f.name for f in files]
    assert "demo_rt/bin/demo.dll" in names
    assert not any("demo-serve" in n or "entry_points" in n or "/licenses/" in n
                   for n in names)
    meta = next(f for f in files if f.name.endswith("/METADATA")).data.decode()
    assert "demo-serve" not in meta and meta.endswith("a {brace} stays\n")


def test_a_project_without_a_binding_has_no_wheels(repo_root: Path) -> None:
    llama = load_project(repo_root / "examples" / "llamacpp")
    assert wheel_target(entry("ubuntu-x64"), llama) is None
    assert "no Python binding" in (no_wheel_reason(entry("ubuntu-x64"), llama) or "")


def test_the_cibuildwheel_build_of_another_project(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The generated project and the native build (CMake faked) take the name, the source
    directory and the CMake options from kiln.toml."""
    demo = demo_project(tmp_path / "demo")
    out = write_cibuildwheel_project(demo.root / "build" / "cibw", repo=demo.root)
    assert 'name = "demo-rt"' in (out / "pyproject.toml").read_text()
    assert "compiles src/ natively" in (out / "pyproject.toml").read_text()
    assert "backend of demo-rt's wheel" in (out / "kiln_wheel_backend.py").read_text()
    shutil.copytree(REPO / "matrix", demo.root / "matrix")
    calls: list[list[str]] = []

    def fake_run(argv: list[str], **_kw: object) -> None:
        calls.append([str(a) for a in argv])
        if argv[:2] == ["cmake", "--install"]:
            shutil.copytree(demo_stage(tmp_path / "native"),
                            Path(argv[argv.index("--prefix") + 1]), symlinks=True)

    monkeypatch.setattr(kw, "run", fake_run)
    env = {"PATH": "/nonexistent", "KILN_WHEEL_ENTRY": "ubuntu-x64", "KILN_BUILD_NUMBER": "3",
           "KILN_COMMIT": COMMIT, "SOURCE_DATE_EPOCH": str(EPOCH)}
    made = kw.native_wheel(tmp_path / "wheelhouse", repo=demo.root, env=env)
    assert made.name == "demo_rt-0.0.3-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
    configure = calls[0]
    assert configure[:3] == ["cmake", "-S", str(demo.root / "src")]
    assert {"-DCMAKE_BUILD_TYPE=Release", "-DDEMO_SHARED=ON"} <= set(configure)
    assert not any("EMBER" in a for a in configure)
    with zipfile.ZipFile(made) as zf:
        assert "demo_rt/lib64/libdemo.so.3" in zf.namelist()


def test_conan_publishes_a_release_only_under_its_own_projects_name(tmp_path: Path) -> None:
    """The Conan package is named after kiln.toml's project, which the release must be of."""
    from kiln.errors import PublishError
    from kiln.publish.base import LocalRelease
    from kiln.publish.conan import ConanPublisher, ConanRemote
    from kiln.release.manifest import ReleaseManifest

    manifest = ReleaseManifest(project="ember", tag="b1", build_number=1, commit=COMMIT,
                               date="2026-01-02T03:04:05Z", base_url="https://x.invalid/",
                               assets=(), missing=(), disabled=())
    release = LocalRelease(directory=tmp_path, manifest=manifest, files={}, notes="")
    publisher = ConanPublisher(ConanRemote(name="kiln", url="http://127.0.0.1:9"), repo=REPO,
                               matrix=MATRIX, name="demo-rt", env={})
    with pytest.raises(PublishError, match=r"of project 'ember'.*packages 'demo-rt'"):
        publisher.publish(release)
    pkg = package_for(record("ubuntu-x64"), entry("ubuntu-x64"), name="demo-rt")
    assert not isinstance(pkg, str) and pkg.settings_args()[-1] == "demo-rt/*:backend=cpu"
