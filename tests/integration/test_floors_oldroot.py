"""Measured floors (kiln/verify/floors.py) for real: small programs compiled here with zig
(glibc 2.17 and 2.34 targets, Windows, macOS, an AVX2 kernel behind run-time dispatch and the
same kernel called directly), then the Linux floors of ember's own ubuntu-x64 and
ubuntu-arm64 archives proven by running them under the oldest glibc reachable from here:
Debian 11's 2.31 (tests/integration/debian_root.py).

The archives are those in ``$KILN_FLOORS_ARCHIVES`` (a release directory) when it is set;
otherwise ``kiln build ubuntu-x64 ubuntu-arm64`` makes them into build/kiln-test/out-floors
with the integration tests' shared kiln cache (cache hits after the first session).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import debian_root
import pytest
from filelock import FileLock

from kiln.matrix.model import Requirements
from kiln.verify.floors import (
    Floors,
    check_promise,
    classify_instruction,
    measure_archive,
    measure_tree,
    parse_objdump,
)

pytestmark = [pytest.mark.integration]

REPO = Path(__file__).resolve().parents[2]
WORK = REPO / "build" / "kiln-test"
MODEL = REPO / "tests" / "runtime" / "data" / "tiny" / "tiny-gpt2-q8_0.gguf"
PROMPT = "The quick brown fox"


def _vkey(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split("."))


def _req(**kw: object) -> Requirements:
    base: dict[str, object] = dict(
        os="linux", arch="x86_64", backend="cpu", backend_version=None, libc="glibc",
        libc_floor="2.17", min_os=None, cpu_baseline="x86-64", cpu_dispatch=(),
        gpu_targets=(), min_driver=None)
    base.update(kw)
    return Requirements(**base)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# programs compiled with zig


@pytest.fixture(scope="module")
def zig() -> Path:
    from kiln.build.toolchains.zig import ZIG_VERSION

    roots = [debian_root.cache_root(), Path(os.environ.get("KILN_TEST_CACHE") or WORK / "cache")]
    for root in roots:
        exe = root / "toolchains" / f"zig-{ZIG_VERSION}" / "ziglang" / "zig"
        if exe.is_file():
            return exe
    pytest.skip(f"zig {ZIG_VERSION} is not installed in kiln's cache: run any kiln build once")


HELLO = r"""
#include <stdio.h>
int main(int argc, char **argv) { printf("%d %s\n", argc, argv[0]); return 0; }
"""

# float work the compiler vectorises: with -mcpu=x86_64_v3 all of it is VEX-encoded
SUM = r"""
#include <stdio.h>
int main(int argc, char **argv) {
    float a[64], s = 0;
    (void)argv;
    for (int i = 0; i < 64; i++) a[i] = (float)(i * argc);
    for (int i = 0; i < 64; i++) s += a[i] * a[i];
    printf("%g\n", s);
    return 0;
}
"""

# ember's shape: a kernel per level, reached through a static const table that a CPU check
# picks (DIRECT: main calls the AVX2 kernel itself, with nothing checking the CPU)
KERNELS = r"""
#include <immintrin.h>
#include <stdio.h>
typedef void (*add_fn)(float *, const float *, int);
struct table { add_fn add; const char *name; };
static void add_scalar(float *a, const float *b, int n) {
    for (int i = 0; i < n; i++) a[i] += b[i];
}
__attribute__((target("avx2,fma"), noinline))
static void add_avx2(float *a, const float *b, int n) {
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(a + i, _mm256_add_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i)));
    for (; i < n; i++) a[i] += b[i];
}
static const struct table k_scalar = {add_scalar, "scalar"};
static const struct table k_avx2 = {add_avx2, "avx2"};
__attribute__((noinline)) static const struct table *pick(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") ? &k_avx2 : &k_scalar;
}
int main(int argc, char **argv) {
    float a[16], b[16];
    (void)argv;
    for (int i = 0; i < 16; i++) { a[i] = (float)i; b[i] = (float)argc; }
#ifdef DIRECT
    add_avx2(a, b, 16);
#else
    pick()->add(a, b, 16);
#endif
    printf("%g %s\n", a[15], pick()->name);
    return 0;
}
"""


def _compile(zig: Path, tmp: Path, target: str, source: str, name: str,
             *flags: str) -> Path:
    """``<tmp>/<target-name>/bin/<name>`` built from ``source``; returns the tree's root."""
    root = tmp / f"{name}-{target}-{len(flags)}"
    (root / "bin").mkdir(parents=True)
    src = tmp / f"{name}.c"
    src.write_text(source)
    env = {**os.environ, "ZIG_GLOBAL_CACHE_DIR": str(zig.parents[2].parent / "zig"),
           "ZIG_LOCAL_CACHE_DIR": str(tmp / "zig-local")}
    done = subprocess.run([str(zig), "cc", "-target", target, "-O2", *flags, str(src), "-o",
                           str(root / "bin" / name)], env=env, capture_output=True, text=True,
                          check=False, timeout=600)
    assert done.returncode == 0, done.stderr
    return root


def test_glibc_floor_follows_the_target(zig: Path, tmp_path: Path) -> None:
    old = measure_tree(_compile(zig, tmp_path, "x86_64-linux-gnu.2.17", HELLO, "hello"))
    new = measure_tree(_compile(zig, tmp_path, "x86_64-linux-gnu.2.34", HELLO, "hello"))
    assert old.glibc is not None and _vkey(old.glibc) <= (2, 17)
    assert new.glibc == "2.34"  # __libc_start_main@GLIBC_2.34
    assert new.where["glibc"] == "bin/hello"
    assert (old.x86_64_level, new.x86_64_level, new.machines) == ("v1", "v1", ("x86_64",))
    assert check_promise(old, _req()) == []
    assert check_promise(new, _req()) == [
        "bin/hello needs GLIBC_2.34 but the matrix promises glibc 2.17"]


def test_windows_subsystem_version_and_machine(zig: Path, tmp_path: Path) -> None:
    root = _compile(zig, tmp_path, "x86_64-windows-gnu", HELLO, "hello.exe")
    floors = measure_tree(root)
    # the same numbers as binutils reads them
    header = subprocess.run(["objdump", "-p", str(root / "bin" / "hello.exe")],
                            capture_output=True, text=True, check=True).stdout
    fields = dict(line.split(None, 1) for line in header.splitlines()
                  if line.startswith(("MajorSubsystemVersion", "MinorSubsystemVersion")))
    want = f"{int(fields['MajorSubsystemVersion'])}.{int(fields['MinorSubsystemVersion'])}"
    assert floors.windows == want
    assert floors.machines == ("x86_64",)
    assert floors.x86_64_level == "v1"
    win = _req(os="windows", libc="msvcrt", libc_floor=None, min_os="10")
    assert check_promise(floors, win) == []
    assert check_promise(floors, _req(os="windows", libc="msvcrt", libc_floor=None,
                                      min_os="5.1")) == [
        f"bin/hello.exe needs Windows NT {want} (PE subsystem version) but the matrix "
        "promises Windows 5.1 (NT 5.1)"]


def test_macos_minimum(zig: Path, tmp_path: Path) -> None:
    floors = measure_tree(_compile(zig, tmp_path, "aarch64-macos.13.0", HELLO, "hello"))
    assert floors.macos == "13.0"
    assert floors.machines == ("aarch64",)
    mac = _req(os="macos", arch="aarch64", libc="system", libc_floor=None, min_os="11.0",
               cpu_baseline="apple-m1")
    assert check_promise(floors, mac) == [
        "bin/hello needs macOS 13.0 but the matrix promises macOS 11.0"]


def _has_avx2(binary: Path) -> bool:
    text = subprocess.run(["objdump", "-d", "-w", str(binary)], capture_output=True,
                          text=True, check=True).stdout
    return any(classify_instruction(i.raw, i.text) == 3 for i in parse_objdump(text))


@pytest.mark.parametrize("strip", [False, True], ids=["symbols", "stripped"])
def test_dispatched_avx2_does_not_count_but_a_direct_call_does(zig: Path, tmp_path: Path,
                                                               strip: bool) -> None:
    flags = ("-s",) if strip else ()
    dispatched = _compile(zig, tmp_path, "x86_64-linux-gnu.2.17", KERNELS, "k", *flags)
    direct = _compile(zig, tmp_path / "d", "x86_64-linux-gnu.2.17", KERNELS, "k", "-DDIRECT",
                      *flags)
    assert _has_avx2(dispatched / "bin" / "k")  # the kernel is there ...
    assert measure_tree(dispatched).x86_64_level == "v1"  # ... behind the CPU check
    floors = measure_tree(direct)
    assert floors.x86_64_level == "v3"
    assert check_promise(floors, _req()) == [
        "bin/k runs x86-64-v3 instructions outside run-time dispatch but the matrix "
        "promises x86-64"]
    # compiled above the baseline as a whole: main itself shows it
    base = _compile(zig, tmp_path / "b", "x86_64-linux-gnu.2.17", SUM, "sum", *flags)
    whole = _compile(zig, tmp_path / "w", "x86_64-linux-gnu.2.17", SUM, "sum",
                     "-mcpu=x86_64_v3", *flags)
    assert measure_tree(base).x86_64_level == "v1"
    assert measure_tree(whole).x86_64_level == "v3"


# --------------------------------------------------------------------------------------------
# ember's archives under glibc 2.31


@pytest.fixture(scope="module")
def archives() -> dict[str, Path]:
    given = os.environ.get("KILN_FLOORS_ARCHIVES")
    if given:
        found = {}
        for entry in ("ubuntu-x64", "ubuntu-arm64"):
            hits = sorted(Path(given).glob(f"ember-b*-bin-{entry}.tar.gz"))
            assert hits, f"no ember-b*-bin-{entry}.tar.gz in {given}"
            found[entry] = hits[-1]
        return found
    out = WORK / "out-floors"
    WORK.mkdir(parents=True, exist_ok=True)
    with FileLock(str(WORK / "floors.lock")):
        env = {**os.environ, "KILN_CACHE": os.environ.get("KILN_TEST_CACHE")
               or str(WORK / "cache")}
        env.pop("GITHUB_ACTIONS", None)
        done = subprocess.run([sys.executable, "-m", "kiln", "build", "ubuntu-x64",
                               "ubuntu-arm64", "--out", str(out), "--json",
                               "--build-number", "3"], cwd=REPO, env=env,
                              capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        results = json.loads(done.stdout)["results"]
    return {r["entry_id"]: Path(r["asset"]) for r in results}


@pytest.fixture(scope="module")
def roots() -> dict[str, Path]:
    if shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg-deb is not installed: apt-get install -y dpkg")
    try:
        return {arch: debian_root.bullseye_root(arch) for arch in debian_root.ARCHES}
    except debian_root.Unreachable as e:
        pytest.skip(f"Debian's mirror is unreachable, so no glibc {debian_root.GLIBC} root: "
                    f"{e}")


def _unpack(archive: Path, dest: Path) -> Path:
    from kiln.files import safe_unpack

    dest.mkdir()
    safe_unpack(archive, dest, max_bytes=1 << 30)
    (top,) = dest.iterdir()
    return top


def _generate(argv: list[str], env: dict[str, str]) -> tuple[list[int], str]:
    done = subprocess.run([*argv, "-m", str(MODEL), "-p", PROMPT, "-n", "1", "--temp", "0",
                           "--json", "-t", "1"], env=env, capture_output=True, text=True,
                          check=False, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    last = [line for line in done.stdout.splitlines() if line.startswith("{")][-1]
    ids: list[int] = json.loads(last)["generated_ids"]
    return ids, done.stderr


def test_linux_archives_run_under_glibc_2_31(archives: dict[str, Path],
                                             roots: dict[str, Path], tmp_path: Path) -> None:
    if shutil.which("qemu-aarch64") is None:
        pytest.skip("qemu-aarch64 is not installed: apt-get install -y qemu-user")
    assert MODEL.is_file(), "no tiny model: run scripts/make_tiny_model.py"
    x64, arm64 = roots["x86_64"], roots["aarch64"]

    # the roots hold glibc 2.31, as the C library itself says
    ld = debian_root.loader(x64)
    banner = subprocess.run([str(ld), str(x64 / "lib/x86_64-linux-gnu/libc.so.6")],
                            capture_output=True, text=True, check=True).stdout
    assert f"release version {debian_root.GLIBC}." in banner
    banner = subprocess.run(["qemu-aarch64", "-L", str(arm64),
                             str(arm64 / "lib/aarch64-linux-gnu/libc.so.6")],
                            capture_output=True, text=True, check=True).stdout
    assert f"release version {debian_root.GLIBC}." in banner

    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"}
    generated = {}
    for entry, arch in (("ubuntu-x64", "x86_64"), ("ubuntu-arm64", "aarch64")):
        floors = measure_archive(archives[entry])
        # the run proves something only if the measured floor is at most the root's glibc
        assert floors.glibc is not None
        assert _vkey(floors.glibc) <= _vkey(debian_root.GLIBC), floors
        assert floors.machines == (arch,)
        top = _unpack(archives[entry], tmp_path / entry)
        cli = str(top / "bin" / "ember-cli")
        if arch == "x86_64":
            argv = [str(ld), "--library-path", str(x64 / "lib/x86_64-linux-gnu"), cli]
            libc = f"{x64}/lib/x86_64-linux-gnu/libc.so.6"
            run_env = {**env, "LD_DEBUG": "libs"}
        else:
            # qemu opens guest paths inside -L first; the host has no arm64 libc of its own
            assert not Path("/lib/aarch64-linux-gnu/libc.so.6").exists()
            argv = ["qemu-aarch64", "-L", str(arm64), "-E", "LD_DEBUG=libs", cli]
            libc = "/lib/aarch64-linux-gnu/libc.so.6"
            run_env = env
        version = subprocess.run([*argv, "--version"], env=env, capture_output=True,
                                 text=True, check=False, timeout=120)
        assert version.returncode == 0 and "ember-cli" in version.stdout, version.stderr
        ids, trace = _generate(argv, run_env)
        assert f"calling init: {libc}" in trace, trace[-2000:]
        assert "/usr/lib/x86_64-linux-gnu/libc.so.6" not in trace
        generated[entry] = ids
    assert len(generated["ubuntu-x64"]) == 1
    assert generated["ubuntu-x64"] == generated["ubuntu-arm64"]


def test_floors_from_real_archives_keep_the_matrix_promise(archives: dict[str, Path]) -> None:
    promises = {"ubuntu-x64": _req(), "ubuntu-arm64": _req(arch="aarch64",
                                                           cpu_baseline="armv8-a")}
    for entry, archive in archives.items():
        floors = measure_archive(archive)
        assert check_promise(floors, promises[entry]) == [], (entry, floors)
        assert Floors.from_json(floors.to_json()) == floors
