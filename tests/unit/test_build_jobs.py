"""kiln/build/jobs.py's orchestration with a fake toolchain, fake programs and fake verifiers: no
compiler, no subprocess. Real builds are in tests/integration/test_build_e2e.py."""

from __future__ import annotations

import io
import shutil
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from ember_project import NAMES

import kiln.build.jobs
import kiln.build.source
import kiln.verify
from kiln import vcs
from kiln.build.jobs import BuildSummary, build_jobs
from kiln.build.toolchains import Configured, Identity, Installed, ToolchainPaths
from kiln.build.toolchains.recipe import Recipe, VerifySpec
from kiln.console import Console
from kiln.errors import CommandFailed, SelectionError
from kiln.matrix import Entry, Matrix, load_matrix
from kiln.package.authenticode import CodeSigningKey
from kiln.package.records import Tool, read_record
from kiln.plan import Job, make_job
from kiln.run import Completed
from kiln.verify import Check, ToolNeed, VerifyContext, VerifyReport

IDS = (11, 22, 33)


class FakeToolchain:
    name = "zig"
    version = "0.17.1"

    def __init__(self) -> None:
        self.installs = 0

    def install(self, paths: ToolchainPaths, *, python: str, env: Mapping[str, str],
                log_file: Path | None = None) -> Installed:
        self.installs += 1
        return Installed(name="zig", version="0.17.1", root=paths.root,
                         executable=paths.root / "zig")

    def identity(self, job: Job, recipe: Recipe) -> Identity:
        return Identity(toolchain="zig", version="0.17.1", target=job.target, mcpu="generic",
                        system=("Linux", job.entry.arch), cflags=recipe.cflags,
                        ldflags=recipe.ldflags_for(job.entry.os), cmake_options=())

    def configure(self, installed: Installed, job: Job, recipe: Recipe, *, recipes: Path,
                  paths: ToolchainPaths, source: Path, build: Path, work: Path) -> Configured:
        tc = work / "toolchain.cmake"
        tc.write_text("# fake\n")
        return Configured(toolchain_file=tc, compiler_check="string:fake", cmake_options=())

    def tools(self, job: Job) -> tuple[Tool, ...]:
        return (Tool(name="zig", version="0.17.1"),)


class FakePrograms:
    """Stands in for kiln.build.jobs.run: cmake configure/build/install."""

    def __init__(self, fail: Sequence[str] = ()) -> None:
        self.fail = set(fail)
        self.calls: list[tuple[str, ...]] = []
        self.lock = threading.Lock()

    def __call__(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None,
                 cwd: Path | None = None, log_file: Path | None = None,
                 what: str | None = None, **kw: Any) -> Completed:
        args = tuple(str(a) for a in argv)
        with self.lock:
            self.calls.append(args)
        step, _, entry_id = (what or "").partition(" ")
        if step == "build" and entry_id in self.fail:
            raise CommandFailed(f"build {entry_id} failed with exit code 1",
                                output="src/llama.c:12: error: expected ';'")
        if step == "install":
            stage = Path(args[args.index("--prefix") + 1])
            windows = entry_id.startswith("win-")
            exe = ".exe" if windows else ""
            files = [f"bin/ember-cli{exe}", f"bin/ember-bench{exe}", f"bin/ember-server{exe}",
                     "include/ember.h", "share/ember/licenses/civetweb.md",
                     "share/ember/licenses/cJSON.txt",
                     "bin/ember.dll" if windows else (
                         "lib/libember.dylib" if entry_id.startswith("macos")
                         else "lib/libember.so")]
            for rel in files:
                p = stage / rel
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_bytes(f"{entry_id}:{rel}".encode())
        return Completed(argv=args, returncode=0, stdout="", stderr="")

    def built(self) -> list[str]:
        return sorted(Path(a[a.index("--build") + 1]).parent.name
                      for a in self.calls if "--build" in a)


class FakeVerifier:
    def __init__(self, method: str) -> None:
        self.method = method
        self.seen: list[tuple[str, tuple[int, ...] | None, str | None]] = []

    def needs(self, entry: Entry, spec: VerifySpec) -> Sequence[ToolNeed]:
        return ()

    def verify(self, ctx: VerifyContext) -> VerifyReport:
        self.seen.append((ctx.entry.id, ctx.reference_ids, ctx.reference_error))
        if self.method != "inspect" and ctx.reference_ids is None and ctx.reference_error:
            return VerifyReport(entry_id=ctx.entry.id, method=self.method,
                                checks=(Check(name="run", ok=False,
                                              detail=ctx.reference_error),))
        return VerifyReport(entry_id=ctx.entry.id, method=self.method,
                            checks=(Check(name="run", ok=True, detail="fake ok"),),
                            generated_ids=IDS)


class FakeSigning:
    """Stands in for the Authenticode key (kiln.package.authenticode) and osslsigncode: appends
    the certificate's fingerprint to each .exe / .dll."""

    def __init__(self) -> None:
        self.cert_sha = "c" * 64
        self.signed: list[str] = []

    def resolve(self, env: Mapping[str, str], repo: Path, layout: Any,
                run_env: Mapping[str, str], project: Any) -> tuple[CodeSigningKey, dict[str, Any]]:
        key = CodeSigningKey(key=layout.authenticode / "key.pem",
                             cert=layout.authenticode / "cert.pem", throwaway=True,
                             description="ember")
        return key, {"cert": self.cert_sha, "timestamp": None, "tool": "fake 1.0"}

    def sign_tree(self, tree: Path, key: CodeSigningKey, *, epoch: int,
                  env: Mapping[str, str], log_file: Path | None = None) -> tuple[str, ...]:
        done = []
        for p in sorted(tree.rglob("*")):
            if p.suffix in (".exe", ".dll"):
                p.write_bytes(p.read_bytes() + f"|signed {self.cert_sha} {epoch}".encode())
                done.append(p.relative_to(tree).as_posix())
        self.signed.extend(done)
        return tuple(done)


@pytest.fixture
def fake_repo(tmp_path: Path, repo_root: Path) -> Path:
    repo = tmp_path / "repo"
    shutil.copytree(repo_root / "recipes", repo / "recipes")
    (repo / "runtime").mkdir()
    (repo / "runtime" / "CMakeLists.txt").write_text("project(ember C)\n")
    (repo / "runtime" / "LICENSE").write_text("MIT\n")
    shutil.copy(repo_root / "kiln.toml", repo / "kiln.toml")
    return repo


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setattr(kiln.build.jobs, "_preflight", lambda jobs, spec, env: None)
    monkeypatch.setattr(vcs, "commit_sha", lambda repo, env: "a" * 40)
    monkeypatch.setattr(vcs, "commit_time", lambda repo, env: 1_700_000_000)
    monkeypatch.setattr(kiln.build.source, "source_tree_hash", lambda repo, sub, env: "s" * 64)
    monkeypatch.setattr(kiln.build.jobs, "_tool_versions",
                        lambda env: (("cmake", "3.25.1"), ("ninja", "1.11.1")))
    # Wheels are made from the staged tree by kiln.package.wheel (tested in test_wheel*.py and,
    # wired
    # into real builds, in tests/integration/test_build_e2e.py); these fake trees have no wheel.
    monkeypatch.setattr(kiln.build.jobs, "build_wheel", lambda *args, **kwargs: None)
    toolchain = FakeToolchain()
    monkeypatch.setitem(kiln.build.jobs.TOOLCHAINS, "zig", toolchain)
    programs = FakePrograms()
    monkeypatch.setattr(kiln.build.jobs, "run", programs)
    verifiers = {m: FakeVerifier(m) for m in ("native", "qemu", "wine", "inspect")}
    for m, v in verifiers.items():
        monkeypatch.setitem(kiln.verify.VERIFIERS, m, v)
    signing = FakeSigning()
    monkeypatch.setattr(kiln.build.jobs, "_code_signing", signing.resolve)
    monkeypatch.setattr(kiln.build.jobs, "sign_tree", signing.sign_tree)
    return {"toolchain": toolchain, "programs": programs, "verifiers": verifiers,
            "signing": signing}


@pytest.fixture
def matrix(repo_root: Path) -> Matrix:
    return load_matrix(repo_root / "matrix")


def jobs_for(matrix: Matrix, *ids: str) -> list[Job]:
    return [make_job(matrix.get(i), 5, NAMES) for i in ids]


def go(jobs: Sequence[Job], repo: Path, tmp_path: Path, matrix: Matrix,
       parallel: int = 2) -> BuildSummary:
    return build_jobs(jobs, repo=repo, out=tmp_path / "out", env={"PATH": "/usr/bin"},
                      parallel=parallel, console=Console(stream=io.StringIO(), terminal=False),
                      cache_dir=tmp_path / "cache", matrix=matrix)


def test_one_failure_does_not_stop_the_others(fake_repo: Path, tmp_path: Path, matrix: Matrix,
                                              fakes: dict[str, Any]) -> None:
    fakes["programs"].fail = {"macos-arm64"}
    summary = go(jobs_for(matrix, "macos-arm64", "ubuntu-s390x", "win-cpu-x64"), fake_repo,
                 tmp_path, matrix)
    by_id = {r.entry_id: r for r in summary.results}
    assert [r.entry_id for r in summary.results] == ["macos-arm64", "ubuntu-s390x",
                                                     "win-cpu-x64"]
    assert not summary.ok and [r.entry_id for r in summary.failed] == ["macos-arm64"]
    bad = by_id["macos-arm64"]
    assert bad.asset is None and bad.record is None and bad.error is not None
    assert "build macos-arm64 failed" in bad.error and "expected ';'" in bad.error
    assert "build macos-arm64 failed" in bad.log.read_text()
    out = tmp_path / "out"
    names = sorted(p.name for p in out.iterdir() if p.is_file())
    assert names == ["ember-b5-bin-ubuntu-s390x.tar.gz", "ember-b5-bin-ubuntu-s390x.tar.gz.json",
                     "ember-b5-bin-win-cpu-x64.zip", "ember-b5-bin-win-cpu-x64.zip.json"]
    assert not list(out.glob(".kiln-tmp-*"))
    record = read_record(out / "ember-b5-bin-win-cpu-x64.zip.json")
    assert record.verification.method == "wine" and record.verification.ok
    assert record.commit == "a" * 40 and record.build_number == 5
    assert by_id["win-cpu-x64"].record == record
    assert (out / "logs" / "ubuntu-s390x.log").is_file()


def test_reference_ids_come_from_the_host_build(fake_repo: Path, tmp_path: Path,
                                                matrix: Matrix, fakes: dict[str, Any]) -> None:
    summary = go(jobs_for(matrix, "ubuntu-arm64", "win-cpu-x64", "macos-x64"), fake_repo,
                 tmp_path, matrix)
    assert summary.ok
    v = fakes["verifiers"]
    # ubuntu-x64 was built and run first (not packaged: not selected)
    assert v["native"].seen == [("ubuntu-x64", None, None)]
    assert v["qemu"].seen == [("ubuntu-arm64", IDS, None)]
    assert v["wine"].seen == [("win-cpu-x64", IDS, None)]
    assert "ubuntu-x64" in fakes["programs"].built()
    assert not (tmp_path / "out" / "ember-b5-bin-ubuntu-x64.tar.gz").exists()


def test_failed_host_build_fails_the_runs_that_need_it(fake_repo: Path, tmp_path: Path,
                                                       matrix: Matrix,
                                                       fakes: dict[str, Any]) -> None:
    fakes["programs"].fail = {"ubuntu-x64"}
    summary = go(jobs_for(matrix, "ubuntu-x64", "ubuntu-arm64", "macos-x64"), fake_repo,
                 tmp_path, matrix)
    by_id = {r.entry_id: r for r in summary.results}
    assert not by_id["ubuntu-x64"].ok
    assert not by_id["ubuntu-arm64"].ok
    assert "the host build ubuntu-x64 failed" in (by_id["ubuntu-arm64"].error or "")
    assert by_id["macos-x64"].ok  # inspect needs no reference


def test_second_build_is_a_cache_hit_for_every_entry(fake_repo: Path, tmp_path: Path,
                                                     matrix: Matrix,
                                                     fakes: dict[str, Any]) -> None:
    jobs = jobs_for(matrix, "ubuntu-x64", "ubuntu-s390x", "macos-arm64", "win-cpu-arm64")
    first = go(jobs, fake_repo, tmp_path, matrix)
    assert first.ok and not any(r.cached for r in first.results)
    calls = len(fakes["programs"].calls)
    second = go(jobs, fake_repo, tmp_path, matrix)
    assert second.ok and all(r.cached for r in second.results)
    assert len(fakes["programs"].calls) == calls  # nothing configured, built or installed
    assert [r.record.sha256 for r in first.results if r.record] == [
        r.record.sha256 for r in second.results if r.record]


def test_a_failed_install_leaves_no_cache_entry(fake_repo: Path, tmp_path: Path,
                                                matrix: Matrix, fakes: dict[str, Any],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    programs: FakePrograms = fakes["programs"]

    def half_install(argv: Sequence[str], **kw: Any) -> Completed:
        done = programs(argv, **kw)
        if (kw.get("what") or "").startswith("install"):
            raise CommandFailed("install ubuntu-s390x failed: disk full")
        return done

    monkeypatch.setattr(kiln.build.jobs, "run", half_install)
    summary = go(jobs_for(matrix, "ubuntu-s390x"), fake_repo, tmp_path, matrix)
    assert not summary.ok
    builds = tmp_path / "cache" / "builds"
    assert [p.name for p in builds.iterdir() if (p / "COMPLETE").exists()] == []
    monkeypatch.setattr(kiln.build.jobs, "run", programs)
    assert go(jobs_for(matrix, "ubuntu-s390x"), fake_repo, tmp_path, matrix).ok


def test_interrupt_while_packaging_leaves_nothing_in_out(fake_repo: Path, tmp_path: Path,
                                                         matrix: Matrix, fakes: dict[str, Any],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    real_package = kiln.build.jobs.package

    def interrupted(job: Job, stage: Path, *, dest_dir: Path, **kw: Any) -> Path:
        if job.entry.id == "macos-x64":
            (dest_dir / job.artifact).write_bytes(b"half an archive")
            raise KeyboardInterrupt
        return real_package(job, stage, dest_dir=dest_dir, **kw)

    monkeypatch.setattr(kiln.build.jobs, "package", interrupted)
    with pytest.raises(KeyboardInterrupt):
        go(jobs_for(matrix, "macos-x64"), fake_repo, tmp_path, matrix, parallel=1)
    out = tmp_path / "out"
    assert [p.name for p in out.iterdir() if p.name != "logs"] == []


def test_gpu_and_ci_only_entries_are_refused_before_anything_runs(
        fake_repo: Path, tmp_path: Path, matrix: Matrix, fakes: dict[str, Any]) -> None:
    # a backend without a recipe (removed here, whatever the repository has by now)
    (fake_repo / "recipes" / "vulkan.yaml").unlink(missing_ok=True)
    with pytest.raises(SelectionError) as err:
        go(jobs_for(matrix, "ubuntu-x64", "ubuntu-cuda-13.3-x64", "ubuntu-vulkan-x64",
                    "ubuntu-rocm-7.2-x64"), fake_repo, tmp_path, matrix)
    text = err.value.render()
    assert "backend vulkan 1.3 is not buildable by this kiln yet" in text
    assert "'ubuntu-rocm-7.2-x64' is ci-only: builds on runner ubuntu-24.04" in text
    # CUDA entries build here (host code by zig, device code by the pinned nvcc / NVRTC)
    assert "cuda" not in text
    assert fakes["programs"].calls == [] and fakes["toolchain"].installs == 0
    assert not (tmp_path / "out").exists()


def test_leftovers_of_a_killed_run_are_swept(fake_repo: Path, tmp_path: Path, matrix: Matrix,
                                             fakes: dict[str, Any]) -> None:
    out = tmp_path / "out"
    dead = out / ".kiln-tmp-999999999-ubuntu-x64"
    dead.mkdir(parents=True)
    (dead / "ember-b5-bin-ubuntu-x64.tar.gz").write_bytes(b"partial")
    assert go(jobs_for(matrix, "macos-x64"), fake_repo, tmp_path, matrix).ok
    assert not dead.exists()


class StageReader(FakeVerifier):
    """A verifier that keeps what it saw of the staged tree."""

    def __init__(self, method: str) -> None:
        super().__init__(method)
        self.files: dict[str, bytes] = {}
        self.extra: dict[str, str] = {}

    def verify(self, ctx: VerifyContext) -> VerifyReport:
        self.files = {p.relative_to(ctx.stage).as_posix(): p.read_bytes()
                      for p in ctx.stage.rglob("*") if p.is_file()}
        self.extra = dict(ctx.extra)
        return super().verify(ctx)


def test_windows_trees_are_signed_before_verification_and_cached_signed(
        fake_repo: Path, tmp_path: Path, matrix: Matrix, fakes: dict[str, Any],
        monkeypatch: pytest.MonkeyPatch) -> None:
    inspect = StageReader("inspect")
    monkeypatch.setitem(kiln.verify.VERIFIERS, "inspect", inspect)
    summary = go(jobs_for(matrix, "win-cpu-arm64"), fake_repo, tmp_path, matrix)
    assert summary.ok
    signing: FakeSigning = fakes["signing"]
    assert signing.signed == ["bin/ember-bench.exe", "bin/ember-cli.exe",
                              "bin/ember-server.exe", "bin/ember.dll"]
    # the verifier saw the signed files, and the certificate to check them against
    assert inspect.files["bin/ember.dll"].endswith(f"|signed {'c' * 64} 1700000000".encode())
    assert inspect.files["include/ember.h"] == b"win-cpu-arm64:include/ember.h"
    assert inspect.extra["authenticode_cert"].endswith("cert.pem")
    assert inspect.extra["authenticode_throwaway"] == "1"


def test_another_certificate_is_another_windows_build(fake_repo: Path, tmp_path: Path,
                                                     matrix: Matrix,
                                                     fakes: dict[str, Any]) -> None:
    jobs = jobs_for(matrix, "macos-arm64", "win-cpu-arm64")
    first = go(jobs, fake_repo, tmp_path, matrix)
    assert first.ok
    signing: FakeSigning = fakes["signing"]
    signing.cert_sha = "d" * 64
    signing.signed.clear()
    second = go(jobs, fake_repo, tmp_path, matrix)
    by_id = {r.entry_id: r for r in second.results}
    # the cache never hands out a tree signed with the old certificate
    assert not by_id["win-cpu-arm64"].cached
    assert signing.signed == ["bin/ember-bench.exe", "bin/ember-cli.exe",
                              "bin/ember-server.exe", "bin/ember.dll"]
    assert by_id["macos-arm64"].cached  # other entries' keys do not depend on it
    third = go(jobs, fake_repo, tmp_path, matrix)
    assert all(r.cached for r in third.results)


def test_no_signing_key_is_looked_up_without_a_windows_job(
        fake_repo: Path, tmp_path: Path, matrix: Matrix, fakes: dict[str, Any],
        monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object) -> None:
        raise AssertionError("no Windows job: no signing key needed")

    monkeypatch.setattr(kiln.build.jobs, "_code_signing", refuse)
    assert go(jobs_for(matrix, "macos-arm64"), fake_repo, tmp_path, matrix).ok
