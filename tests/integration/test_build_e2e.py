"""``kiln build`` for real: zig cross-builds, qemu/wine/native runs, inspection, packaging,
the cache, reproducibility, and the failure modes (bad selector, missing tool, failing
compile, Ctrl-C).

One entry per verification method: ubuntu-x64 (native), ubuntu-s390x (qemu, big-endian),
win-cpu-x64 (wine), macos-arm64 (inspect). The builds work on a snapshot of the checkout
(runtime/, matrix/, recipes/, the model, the license) committed into its own git repository
under build/kiln-test/ (gitignored), so that edits in progress in runtime/ cannot disturb a
run, and share one kiln cache there (or ``$KILN_TEST_CACHE``) across tests and sessions: the
first session fills zig's libc caches (minutes), later ones mostly hit.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from filelock import FileLock

from kiln.package.records import read_record

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("kiln-build")]

REPO = Path(__file__).resolve().parents[2]
WORK = REPO / "build" / "kiln-test"
FOUR = ["ubuntu-x64", "ubuntu-s390x", "win-cpu-x64", "macos-arm64"]
GIT_ENV = {"GIT_AUTHOR_NAME": "kiln test", "GIT_AUTHOR_EMAIL": "test@invalid",
           "GIT_COMMITTER_NAME": "kiln test", "GIT_COMMITTER_EMAIL": "test@invalid",
           "GIT_AUTHOR_DATE": "2026-01-01T00:00:00Z",
           "GIT_COMMITTER_DATE": "2026-01-01T00:00:00Z"}


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, env={**os.environ, **GIT_ENV}, check=True,
                   capture_output=True)


def snapshot(dest: Path) -> Path:
    from kiln.build.toolchains.recipe import load_verify_spec

    shutil.rmtree(dest, ignore_errors=True)
    ignore = shutil.ignore_patterns("build*", "__pycache__", "*.tmp")
    models = [m for m in load_verify_spec(REPO / "recipes").run.models if (REPO / m).is_file()]
    assert models, "no tiny model: run scripts/make_tiny_model.py"
    for rel in ["runtime", "matrix", "recipes", "kiln.toml", models[0]]:
        src = REPO / rel
        if src.is_dir():
            shutil.copytree(src, dest / rel, ignore=ignore)
        elif src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    git(dest, "init", "-q")
    git(dest, "add", "-A")
    git(dest, "commit", "-q", "-m", "snapshot")
    return dest


def _run_id() -> str:
    """One id per pytest run, the same in every xdist worker."""
    return os.environ.get("PYTEST_XDIST_TESTRUNUID") or f"pid-{os.getpid()}"


@contextmanager
def _once_per_run(name: str) -> Iterator[bool]:
    """Serialise a shared step across xdist workers; yields whether this run still has to do
    it (the work directory is shared, so two workers must never snapshot or build at once)."""
    WORK.mkdir(parents=True, exist_ok=True)
    with FileLock(str(WORK / f"{name}.lock")):
        stamp = WORK / f"{name}.run"
        todo = not (stamp.is_file() and stamp.read_text() == _run_id())
        yield todo
        if todo:
            stamp.write_text(_run_id())


@pytest.fixture(scope="module")
def snap() -> Path:
    with _once_per_run("snap") as todo:
        if todo:
            snapshot(WORK / "repo")
    return WORK / "repo"


@pytest.fixture(scope="module")
def cache() -> Path:
    return Path(os.environ.get("KILN_TEST_CACHE") or WORK / "cache")


def kiln(args: list[str], repo: Path, cache: Path, *,
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "KILN_CACHE": str(cache)}
    full_env.pop("GITHUB_ACTIONS", None)
    full_env.pop("GITHUB_STEP_SUMMARY", None)
    if env is not None:
        full_env.update(env)
    return subprocess.run([sys.executable, "-m", "kiln", "build", *args], cwd=repo,
                          env=full_env, capture_output=True, text=True, check=False)


@pytest.fixture(scope="module")
def four(snap: Path, cache: Path) -> dict[str, Any]:
    out = WORK / "out-four"
    saved = WORK / "four.json"
    with _once_per_run("four") as todo:
        if todo:
            shutil.rmtree(out, ignore_errors=True)
            done = kiln([*FOUR, "--out", str(out), "--json", "--build-number", "3"], snap,
                        cache)
            assert done.returncode == 0, done.stdout + done.stderr
            saved.write_text(done.stdout)
    data: dict[str, Any] = json.loads(saved.read_text())
    data["out"] = out
    data["by_id"] = {r["entry_id"]: r for r in data["results"]}
    return data


def test_each_verification_method_for_real(four: dict[str, Any]) -> None:
    by_id = four["by_id"]
    assert all(by_id[i]["ok"] for i in FOUR)
    methods = {i: by_id[i]["verification"]["method"] for i in FOUR}
    assert methods == {"ubuntu-x64": "native", "ubuntu-s390x": "qemu", "win-cpu-x64": "wine",
                       "macos-arm64": "inspect"}
    details = {i: by_id[i]["verification"]["detail"] for i in FOUR}
    assert "ran natively: 16 ids" in details["ubuntu-x64"]
    # big-endian s390x and Windows give the host build's tokens
    assert "ran under qemu-s390x: 16 ids identical to the host build's" in details["ubuntu-s390x"]
    assert "ran under wine: 16 ids identical to the host build's" in details["win-cpu-x64"]
    assert "minos 11.0, ad-hoc signed" in details["macos-arm64"]
    assert "glibc <= 2.17" in details["ubuntu-s390x"]
    assert "no host paths" in details["win-cpu-x64"]


def test_archives_and_records(four: dict[str, Any]) -> None:
    out: Path = four["out"]
    names = sorted(p.name for p in out.iterdir() if p.is_file())
    archives = [f"ember-b3-bin-{i}.{'zip' if i.startswith('win') else 'tar.gz'}" for i in FOUR]
    # Each entry's wheel comes from the same staged tree, with its record beside it.
    wheels = ["ember-0.0.3-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
              "ember-0.0.3-py3-none-manylinux_2_17_s390x.manylinux2014_s390x.whl",
              "ember-0.0.3-py3-none-win_amd64.whl",
              "ember-0.0.3-py3-none-macosx_11_0_arm64.whl"]
    assert names == sorted(a + suffix for a in (*archives, *wheels) for suffix in ("", ".json"))
    for w in wheels:
        record = read_record(out / f"{w}.json")
        assert record.kind == "wheel" and record.verification.ok
    for i in FOUR:
        record = read_record(out / f"{four['by_id'][i]['asset'].rsplit('/', 1)[-1]}.json")
        assert record.entry_id == i and record.verification.ok and record.build_number == 3
    with zipfile.ZipFile(out / "ember-b3-bin-win-cpu-x64.zip") as zf:
        names = set(zf.namelist())
        info = json.loads(zf.read("ember-b3-bin-win-cpu-x64/BUILD-INFO.json"))
    top = "ember-b3-bin-win-cpu-x64/"
    assert {top + "bin/ember-cli.exe", top + "bin/ember-bench.exe", top + "bin/ember.dll",
            top + "bin/ember-server.exe", top + "share/ember/licenses/civetweb.md",
            top + "share/ember/licenses/cJSON.txt", top + "include/ember.h",
            top + "LICENSE"} <= names
    assert info["toolchain"]["zig"] == "0.17.1" and info["target"] == "x86_64-windows-gnu"
    with tarfile.open(out / "ember-b3-bin-macos-arm64.tar.gz") as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert "ember-b3-bin-macos-arm64/lib/libember.dylib" in members
    assert {m.uid for m in members.values()} == {0}


def test_nothing_changed_is_a_cache_hit_for_every_entry(four: dict[str, Any], snap: Path,
                                                        cache: Path) -> None:
    out = WORK / "out-again"
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.monotonic()
    done = kiln([*FOUR, "--out", str(out), "--json", "--build-number", "3"], snap, cache)
    seconds = time.monotonic() - t0
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)["results"]
    assert [r["cached"] for r in results] == [True] * 4
    assert [r["sha256"] for r in results] == [four["by_id"][r["entry_id"]]["sha256"]
                                              for r in results]
    assert seconds < 60


def test_reproducible_with_empty_caches(snap: Path, cache: Path) -> None:
    out = WORK / "out-repro"
    shutil.rmtree(out, ignore_errors=True)
    done = kiln(["ubuntu-x64", "macos-arm64", "win-cpu-x64", "--out", str(out), "--json",
                 "--check-reproducible", "--build-number", "3"], snap, cache)
    assert done.returncode == 0, done.stdout + done.stderr
    repro = json.loads(done.stdout)["reproducible"]
    assert [r["same"] for r in repro] == [True, True, True], repro


def test_bad_selector(snap: Path, cache: Path, tmp_path: Path) -> None:
    done = kiln(["ubuntu-x46", "--out", str(tmp_path / "out")], snap, cache)
    assert done.returncode == 4
    assert "did you mean 'ubuntu-x64'?" in done.stderr
    assert not (tmp_path / "out").exists()


def test_missing_emulator_names_the_package(snap: Path, cache: Path, tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("cmake", "ninja", "ccache", "git"):
        found = shutil.which(tool)
        assert found is not None
        (bin_dir / tool).symlink_to(found)
    done = kiln(["ubuntu-s390x", "--out", str(tmp_path / "out")], snap, cache,
                env={"PATH": str(bin_dir)})
    assert done.returncode == 5, done.stderr
    assert "'qemu-s390x' (verifying ubuntu-s390x with qemu)" in done.stderr
    assert "apt-get install -y qemu-user" in done.stderr
    assert not (tmp_path / "out").exists()


def test_failing_compile_is_clear_and_leaves_no_archive(snap: Path, cache: Path,
                                                        tmp_path: Path) -> None:
    broken = tmp_path / "repo"
    shutil.copytree(snap, broken)
    src = broken / "runtime" / "src" / "core" / "sampler.c"
    src.write_text(src.read_text() + "\n#error injected by test_build_e2e\n")
    out = tmp_path / "out"
    done = kiln(["macos-x64", "ubuntu-x64", "--out", str(out), "--build-number", "3"], broken,
                cache)
    assert done.returncode == 7, done.stdout + done.stderr
    assert "2 of 2 builds failed" in done.stderr
    assert "build macos-x64 failed" in done.stdout and "injected by test_build_e2e" in done.stdout
    assert sorted(p.name for p in out.iterdir()) == ["logs"]
    assert "injected by test_build_e2e" in (out / "logs" / "macos-x64.log").read_text()


def _default_sigint() -> None:
    """In the child: Ctrl-C's default action, whatever the test runner's process set (a
    SIGINT ignored by the parent would be ignored by kiln too, as under nohup)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_leaves_neither_archive_nor_cache_entry(snap: Path, cache: Path,
                                                       tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(snap, repo)
    src = repo / "runtime" / "src" / "core" / "sampler.c"
    # a source no build has seen: a real build starts, and is interrupted
    src.write_text(src.read_text() + f"\nint kiln_test_interrupt_{time.time_ns()}(void);\n")
    out = tmp_path / "out"
    builds = cache / "builds"
    before = set(builds.iterdir()) if builds.is_dir() else set()
    env = {**os.environ, "KILN_CACHE": str(cache)}
    proc = subprocess.Popen([sys.executable, "-m", "kiln", "build", "ubuntu-x64", "--out",
                             str(out), "--build-number", "3"], cwd=repo, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=_default_sigint)
    log = out / "logs" / "ubuntu-x64.log"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if log.is_file() and "+ cmake --build" in log.read_text():
            break
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    assert [p.name for p in out.iterdir()] == ["logs"]
    after = set(builds.iterdir())
    assert not [p for p in after - before if not p.name.startswith(".")], "cache entry written"
    # and the next run builds it
    done = kiln(["ubuntu-x64", "--out", str(out), "--build-number", "3"], repo, cache)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (out / "ember-b3-bin-ubuntu-x64.tar.gz").is_file()
