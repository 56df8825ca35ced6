"""Build jobs: configure, build, install into a stage, verify, package — cached, in parallel.

``build_jobs`` is the stage's one entry point (``kiln build`` and the release stage call it):

1. refuse what cannot be built here (GPU backends without a recipe, ci-only entries) and
   check, before anything starts, that every program the jobs need is installed;
2. install the pinned toolchains into kiln's cache (once, under a lock);
3. build the host build first when a run-based verification needs its ids (the reference,
   ``ubuntu-x64``: ``recipes/verify.yaml``);
4. then every job in a thread pool of ``parallel`` workers, each with its own log file:
   stage (a cache hit, or CMake + Ninja through zig and ccache, installed into a stage,
   Windows binaries Authenticode-signed (kiln/package/authenticode.py), and stored in the
   cache: the certificate's fingerprint is part of a Windows build's key), verify
   (kiln/verify/__init__.py), package (kiln/package/archive.py) and write the asset record
   (kiln/package/records.py) into ``out``.

A failing job does not stop the others; its ``BuildResult`` says why and names its log.
Nothing half-written reaches ``out``: archives and records are written in a hidden temporary
directory inside ``out`` and renamed into place, and a leftover temporary directory of a killed
run is removed by the next. Builds run with a reduced, explicit environment (PATH, HOME, locale
and time zone fixed, SOURCE_DATE_EPOCH) so that a user's CC, CFLAGS or LDFLAGS cannot change
them.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import shutil
import sys
import tarfile
import threading
import time
import traceback
import zipfile
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kiln import __version__, vcs
from kiln.build.cache import CACHE_SCHEMA, BuildCache, CacheLayout, default_cache_dir, key_of
from kiln.build.source import resolve_source
from kiln.build.toolchains import TOOLCHAINS, Identity, Installed, ToolchainPaths, check_buildable
from kiln.build.toolchains.recipe import Recipe, VerifySpec, load_recipe, load_verify_spec
from kiln.console import Console, Progress
from kiln.errors import ConfigError, KilnError, SelectionError, ToolMissing, VerifyError
from kiln.files import COMPLETE, install_once, sha256_file
from kiln.matrix import Entry, Matrix, load_matrix
from kiln.package.archive import BuildInfo, package
from kiln.package.authenticode import CodeSigningKey, resolve_code_signing, sign_tree, tool_version
from kiln.package.records import AssetRecord, Tool, Verification, record_for, write_record
from kiln.package.wheel import build_wheel
from kiln.plan import Job, make_job
from kiln.project import BIG_ENDIAN_ARCHES, Project, load_project
from kiln.run import require_tool, run
from kiln.verify import VERIFY_VERSION, VerifyContext, VerifyReport, verifier_for
from kiln.verify.base import exe_name

__all__ = [
    "BuildResult",
    "BuildSummary",
    "ReproResult",
    "build_env",
    "build_jobs",
    "check_reproducible",
    "host_arch",
]

RUN_METHODS = ("native", "qemu", "wine", "openvino-cpu", "lavapipe")
HOST_TOOLS = ("cmake", "ninja", "ccache", "git")
# What the build programs inherit from the caller's environment; everything else (CC, CFLAGS,
# LDFLAGS, CMAKE_*, ZIG_*, CCACHE_*) is dropped so that builds are the same for everyone.
KEPT_ENV = ("PATH", "HOME", "USER", "LOGNAME", "TMPDIR")
TMP_PREFIX = ".kiln-tmp-"
# Part of every verification's cache key: bumped when the signature checks (Authenticode,
# Mach-O code signatures) change, so that reports cached before are redone.
SIGNATURE_CHECKS = 1


@dataclass(frozen=True, kw_only=True)
class BuildResult:
    """What happened to one job."""

    entry_id: str
    ok: bool
    asset: Path | None
    record: AssetRecord | None
    log: Path
    seconds: float
    cached: bool
    error: str | None
    verification: Verification | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "entry_id": self.entry_id, "ok": self.ok,
            "asset": None if self.asset is None else str(self.asset),
            "sha256": None if self.record is None else self.record.sha256,
            "log": str(self.log), "seconds": round(self.seconds, 3), "cached": self.cached,
            "error": self.error,
            "verification": None if self.verification is None else {
                "method": self.verification.method, "ok": self.verification.ok,
                "detail": self.verification.detail},
        }


@dataclass(frozen=True)
class BuildSummary:
    results: tuple[BuildResult, ...]
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)

    @property
    def failed(self) -> tuple[BuildResult, ...]:
        return tuple(r for r in self.results if not r.ok)

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "seconds": round(self.seconds, 3),
                "results": [r.to_json() for r in self.results]}


@dataclass(frozen=True, kw_only=True)
class _Staged:
    key: str
    stage: Path
    cached: bool
    identity: Identity
    tools: tuple[Tool, ...]


@dataclass(frozen=True, kw_only=True)
class _Reference:
    ids: tuple[int, ...] | None = None
    output: str | None = None  # a smoke test compared as text ("stdout")
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.ids is not None or self.output is not None


@dataclass(frozen=True, kw_only=True)
class _Session:
    """What every job of one ``build_jobs`` call shares."""

    repo: Path
    project: Project
    recipes: Path
    source: Path
    out: Path
    log_dir: Path
    layout: CacheLayout
    cache: BuildCache
    env: Mapping[str, str]
    commit: str
    epoch: int
    source_hash: str
    host_tools: tuple[tuple[str, str], ...]
    installed: Mapping[str, Installed]
    recipes_by_backend: Mapping[str, Recipe]
    spec: VerifySpec
    model: Path | None
    model_sha: str | None
    license_file: Path | None
    ninja_jobs: int
    host_arch: str
    host_paths: tuple[str, ...]
    python: str
    # the Windows binaries' signing key (None: no Windows job) and what of it goes into keys
    signing: CodeSigningKey | None = None
    signing_id: Mapping[str, Any] | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    # entries built or verified by this run before their job (the host build): not "cached"
    fresh: set[str] = field(default_factory=set)


class _Cancelled(KilnError):
    pass


# --------------------------------------------------------------------------------------------
# Environment and host facts


def build_env(env: Mapping[str, str], *, epoch: int | None = None) -> dict[str, str]:
    """The explicit environment of every build program (see the module docstring)."""
    out = {k: env[k] for k in KEPT_ENV if k in env}
    out.setdefault("PATH", os.defpath)
    out.update({"LC_ALL": "C", "LANG": "C", "TZ": "UTC"})
    if epoch is not None:
        out["SOURCE_DATE_EPOCH"] = str(epoch)
    return out


def host_arch() -> str:
    machine = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)


def _tool_versions(env: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    out = []
    for tool in ("cmake", "ninja", "ccache"):
        first = run([tool, "--version"], env=env, what=f"{tool} --version").stdout.strip()
        line = first.splitlines()[0] if first else "?"
        out.append((tool, line.split()[-1]))
    return tuple(out)


def _preflight(jobs: Sequence[Job], spec: VerifySpec, env: Mapping[str, str]) -> None:
    """Every program and directory the jobs need, checked before any build starts."""
    path = env.get("PATH")
    missing: list[str] = []
    hints: list[str] = []
    signing = ("osslsigncode",) if any(j.entry.os == "windows" for j in jobs) else ()
    for tool in (*HOST_TOOLS, *signing):
        try:
            require_tool(tool, path=path)
        except ToolMissing as exc:
            missing.append(f"'{tool}' ({'signing' if tool in signing else 'building'})")
            hints.append(exc.hint or "")
    for job in jobs:
        verifier = verifier_for(job.entry)
        for need in verifier.needs(job.entry, spec):
            if need.program and shutil.which(need.program, path=path) is None:
                missing.append(f"'{need.program}' (verifying {job.entry.id} with "
                               f"{verifier.method})")
                hints.append(need.hint)
            if need.path and not Path(need.path).is_dir():
                missing.append(f"{need.path} (verifying {job.entry.id} with {verifier.method})")
                hints.append(need.hint)
    if missing:
        unique_hints = list(dict.fromkeys(h for h in hints if h))
        raise ToolMissing("missing on this host: " + ", ".join(dict.fromkeys(missing)),
                          hint="; ".join(unique_hints) or None)


def _sweep_out(out: Path) -> None:
    """Remove temporary directories that killed kiln runs left in ``out``."""
    for d in out.glob(f"{TMP_PREFIX}*"):
        pid_text = d.name[len(TMP_PREFIX):].split("-", 1)[0]
        try:
            pid = int(pid_text)
        except ValueError:
            continue
        if pid == os.getpid() or not _alive(pid):
            shutil.rmtree(d, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _code_signing(env: Mapping[str, str], repo: Path, layout: CacheLayout,
                  run_env: Mapping[str, str], project: Project
                  ) -> tuple[CodeSigningKey, dict[str, Any]]:
    """The Windows binaries' signing key (``KILN_AUTHENTICODE_*`` in ``env``, else the
    project's throwaway certificate kept in the cache) and what of it goes into the cache
    keys."""
    key = resolve_code_signing(env, repo=repo, local_dir=layout.authenticode,
                               run_env=run_env, project=project.name)
    return key, {"cert": key.sha256, "timestamp": key.timestamp_url,
                 "tool": tool_version(run_env)}


def _first_model(repo: Path, spec: VerifySpec) -> Path | None:
    for rel in spec.run.models:
        path = Path(rel).expanduser()
        if (repo / path).is_file():
            return repo / path
    return None


def _license(project: Project, source: Path) -> Path | None:
    """The licence every archive carries: kiln.toml's project.license, relative to the
    project root (a directory source) or to the source (an sdist)."""
    base = project.root if project.sdist is None else source
    path = base / project.license
    return path if path.is_file() else None


def _log(path: Path, text: str) -> None:
    with path.open("a", encoding="utf-8") as fh:
        fh.write(text.rstrip("\n") + "\n")


# --------------------------------------------------------------------------------------------
# Stage: cache hit, or configure + build + install


def _build_key(s: _Session, job: Job, recipe: Recipe, ident: Identity) -> str:
    parts = {"schema": CACHE_SCHEMA, "entry": job.entry.id, "source": s.source_hash,
             "recipe": recipe.sha256, "toolchain": ident.to_json(),
             "host_tools": [list(t) for t in s.host_tools]}
    if job.entry.os == "windows":
        # the cache holds signed trees: another certificate is another build
        parts["authenticode"] = s.signing_id
    if s.project.targets:  # what is built and staged
        parts["targets"] = list(s.project.targets)
    return key_of(parts)


def _stage(s: _Session, job: Job, log: Path, *, ninja_jobs: int) -> _Staged:
    entry = job.entry
    recipe = s.recipes_by_backend[entry.backend]
    toolchain = TOOLCHAINS[recipe.toolchain]
    ident = toolchain.identity(job, recipe)
    tools = toolchain.tools(job)
    key = _build_key(s, job, recipe, ident)
    _log(log, f"== {entry.id}: build key {key}")
    with s.cache.lock(key):
        hit = s.cache.lookup(key)
        if hit is not None:
            _log(log, f"cache hit: {hit}")
            return _Staged(key=key, stage=hit, cached=True, identity=ident, tools=tools)
        with s.cache.work_lock(entry.id):
            work = s.cache.work_dir(entry.id)
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
            build, stage = work / "build", work / "stage"
            paths = ToolchainPaths(root=s.layout.toolchains, zig_cache=s.layout.zig)
            configured = toolchain.configure(s.installed[recipe.toolchain], job, recipe,
                                             recipes=s.recipes, paths=paths, source=s.source,
                                             build=build, work=work)
            env = dict(s.env)
            env.update({"CCACHE_DIR": str(s.layout.ccache),
                        "CCACHE_COMPILERCHECK": configured.compiler_check,
                        "CCACHE_COMPILERTYPE": "clang", "CCACHE_NOHASHDIR": "1",
                        "CCACHE_MAXSIZE": "5G"})
            targets = s.project.targets
            launchers = ["-DCMAKE_C_COMPILER_LAUNCHER=ccache"]
            if targets:  # a project with targets may be C++ (a C-only CMake project has no CXX)
                launchers.append("-DCMAKE_CXX_COMPILER_LAUNCHER=ccache")
            steps = [
                ("configure", ["cmake", "-G", "Ninja", "-S", str(s.source), "-B", str(build),
                               f"-DCMAKE_TOOLCHAIN_FILE={configured.toolchain_file}",
                               *launchers,
                               *(f"-D{k}={v}" for k, v in configured.cmake_options)]),
                ("build", ["cmake", "--build", str(build), "--parallel", str(ninja_jobs),
                           *(("--target", *targets) if targets else ())]),
            ]
            if not targets:
                steps.append(("install", ["cmake", "--install", str(build), "--prefix",
                                          str(stage)]))
            for step, argv in steps:
                if s.cancel.is_set():
                    raise _Cancelled("cancelled")
                run(argv, env=env, cwd=work, log_file=log, what=f"{step} {entry.id}")
            if targets:
                _stage_targets(build, stage, targets, entry)
            if entry.os == "windows" and s.signing is not None:
                signed = sign_tree(stage, s.signing, epoch=s.epoch, env=s.env, log_file=log)
                _log(log, f"Authenticode-signed: {', '.join(signed) or 'no PE file'}")
            stored = s.cache.store(key, stage, {"entry": entry.id, "source": s.source_hash,
                                                "identity": ident.to_json()})
            shutil.rmtree(work, ignore_errors=True)
            _log(log, f"stored in the cache: {stored}")
            return _Staged(key=key, stage=stored, cached=False, identity=ident, tools=tools)


def _stage_targets(build: Path, stage: Path, targets: Sequence[str], entry: Entry) -> None:
    """Stage the programs of kiln.toml's build.targets from the build tree's bin/ (where
    CMake projects put their executables with CMAKE_RUNTIME_OUTPUT_DIRECTORY) into
    ``stage/bin``."""
    (stage / "bin").mkdir(parents=True, exist_ok=True)
    for target in targets:
        name = exe_name(entry, target)
        found = next((p for p in (build / "bin" / name, build / name) if p.is_file()), None)
        if found is None:
            raise KilnError(f"build target '{target}' made no {name} in the build "
                            "tree's bin/ or top directory",
                            hint="kiln.toml's build.targets names executables")
        shutil.copy2(found, stage / "bin" / found.name)


# --------------------------------------------------------------------------------------------
# Verify (cached when it passed)


def _entry_model(s: _Session, job: Job, log: Path) -> tuple[Path | None, str | None]:
    """The model an entry's run uses, and its sha256: kiln's one model, or for a big-endian
    entry of a project whose smoke test converts it (kiln.toml's smoke.big_endian), a copy
    converted once by that command and kept in the cache."""
    smoke = s.project.smoke
    model = s.model
    if model is None or job.entry.arch not in BIG_ENDIAN_ARCHES or not smoke.big_endian:
        return model, s.model_sha
    key = key_of({"model": s.model_sha, "convert": list(smoke.big_endian),
                  "source": s.source_hash})
    dest = s.layout.root / "models" / key

    def fill(tmp: Path) -> str:
        copy = tmp / model.name
        shutil.copyfile(model, copy)
        argv = smoke.convert_argv(python=s.python, source=str(s.source), model=str(copy))
        # the converter asks before it rewrites the file in place
        run(argv, env=s.env, input_text="YES\n", log_file=log,
            what=f"convert {model.name} to big-endian for {job.entry.id}")
        return sha256_file(copy) + "\n"

    install_once(dest, lock=s.layout.locks / f"model-{key[:16]}.lock", fill=fill)
    _log(log, f"big-endian model: {dest / model.name}")
    return dest / model.name, (dest / COMPLETE).read_text(encoding="utf-8").strip()


def _verify(s: _Session, job: Job, staged: _Staged, ref: _Reference | None,
            log: Path) -> tuple[VerifyReport, bool]:
    verifier = verifier_for(job.entry)
    smoke = s.project.smoke
    model, model_sha = (_entry_model(s, job, log) if verifier.method in RUN_METHODS
                        else (s.model, s.model_sha))
    vkey = key_of({"version": VERIFY_VERSION, "method": verifier.method, "spec": s.spec.sha256,
                   "model": model_sha, "reference": None if ref is None else list(ref.ids or ()),
                   **({} if smoke.output == "json-ids" else {
                       "smoke": [smoke.program, *smoke.args, smoke.output],
                       "reference_output": None if ref is None else ref.output}),
                   "host_paths": list(s.host_paths), "signatures": SIGNATURE_CHECKS,
                   "authenticode": s.signing_id if job.entry.os == "windows" else None})
    usable = ref is None or ref.ok
    if usable:
        with s.cache.lock(staged.key):
            data = s.cache.read_verify(staged.key, vkey)
        if data is not None:
            report = VerifyReport.from_json(data)
            if report.ok:
                _log(log, f"verification ({report.method}) cached: {report.detail}")
                return report, True
    ctx = VerifyContext(job=job, stage=staged.stage, spec=s.spec, env=s.env, log_file=log,
                        model=model, reference_ids=None if ref is None else ref.ids,
                        reference_error=None if ref is None else ref.error,
                        reference_output=None if ref is None else ref.output, smoke=smoke,
                        layout=s.project.layout, source=s.source,
                        source_label=s.project.source_dir or (
                            s.project.sdist.subdir if s.project.sdist else s.source.name),
                        host_paths=s.host_paths, wine_root=s.layout.wine,
                        host_arch=s.host_arch, extra=_verify_extra(s))
    report = verifier.verify(ctx)
    _log(log, f"verification ({report.method}): {'ok' if report.ok else 'FAILED'}: "
              f"{report.detail}")
    if report.ok and usable:
        with s.cache.lock(staged.key):
            s.cache.write_verify(staged.key, vkey, report.to_json())
    return report, False


def _verify_extra(s: _Session) -> dict[str, str]:
    extra = {"toolchains": str(s.layout.toolchains)}
    if s.signing is not None:  # what the Windows binaries' signatures are checked against
        extra.update({"authenticode_cert": str(s.signing.cert),
                      "authenticode_throwaway": "1" if s.signing.throwaway else ""})
    return extra


# --------------------------------------------------------------------------------------------
# Package (atomic into out)


def _package(s: _Session, job: Job, staged: _Staged,
             report: VerifyReport) -> tuple[Path, AssetRecord]:
    entry = job.entry
    if s.license_file is None:
        raise KilnError(f"no licence file: kiln.toml's project.license "
                        f"'{s.project.license}' does not exist",
                        hint="every archive carries the project's licence")
    ident = staged.identity
    info = BuildInfo(
        id=entry.id, build_number=job.build_number, commit=s.commit,
        source_date_epoch=s.epoch, source_tree=s.source_hash, target=job.target,
        os=entry.os, arch=entry.arch, backend=entry.backend_label,
        toolchain=((ident.toolchain, ident.version), *s.host_tools),
        cflags=ident.cflags, ldflags=ident.ldflags, cmake_options=ident.cmake_options,
        kiln_version=__version__)
    tmp = s.out / f"{TMP_PREFIX}{os.getpid()}-{entry.id}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        made = package(job, staged.stage, dest_dir=tmp, info=info, license_file=s.license_file,
                       epoch=s.epoch, layout=s.project.layout)
        record = record_for(entry, made, kind="archive", build_number=job.build_number,
                            commit=s.commit, toolchain=staged.tools,
                            verification=report.to_verification())
        made_record = write_record(record, tmp)
        # The wheel comes from the same staged tree (no second compile); a failed wheel check
        # fails the entry before anything of it reaches --out.
        binding = s.project.binding
        wheel = None if binding is None else build_wheel(
            entry, staged.stage, binding=s.project.root / binding, out=tmp,
            build_number=job.build_number, commit=s.commit, toolchain=staged.tools,
            source_date_epoch=s.epoch, verification=report.to_verification(), env=s.env,
            license_file=s.license_file, project=s.project)
        final = s.out / made.name
        final_record = s.out / made_record.name
        # Old record first: a kill between the two renames leaves an asset without a record,
        # never a record that describes other bytes.
        final_record.unlink(missing_ok=True)
        if wheel is not None:
            (s.out / wheel.record_path.name).unlink(missing_ok=True)
            os.replace(wheel.path, s.out / wheel.path.name)
            os.replace(wheel.record_path, s.out / wheel.record_path.name)
        os.replace(made, final)
        os.replace(made_record, final_record)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final, record


# --------------------------------------------------------------------------------------------
# One job, start to end


def _one(s: _Session, job: Job, ref: _Reference | None, reporter: _Reporter) -> BuildResult:
    entry = job.entry
    log = s.log_dir / f"{entry.id}.log"
    t0 = time.monotonic()
    cached = False
    verification: Verification | None = None
    reporter.started(entry.id)
    try:
        if s.cancel.is_set():
            raise _Cancelled("cancelled")
        staged = _stage(s, job, log, ninja_jobs=s.ninja_jobs)
        if s.cancel.is_set():
            raise _Cancelled("cancelled")
        report, verify_cached = _verify(s, job, staged, ref, log)
        verification = report.to_verification()
        cached = staged.cached and verify_cached and entry.id not in s.fresh
        if not report.ok:
            raise VerifyError(f"verification ({report.method}) failed: {report.detail}")
        asset, record = _package(s, job, staged, report)
        _log(log, f"packaged {asset.name} sha256 {record.sha256}")
        result = BuildResult(entry_id=entry.id, ok=True, asset=asset, record=record, log=log,
                             seconds=time.monotonic() - t0, cached=cached, error=None,
                             verification=verification)
    except KilnError as exc:
        text = exc.render()
        output = getattr(exc, "output", "")
        _log(log, f"FAILED: {text}")
        detail = text + (("\n" + "\n".join(output.splitlines()[-12:])) if output else "")
        result = BuildResult(entry_id=entry.id, ok=False, asset=None, record=None, log=log,
                             seconds=time.monotonic() - t0, cached=cached, error=detail,
                             verification=verification)
    except Exception as exc:  # a bug in kiln: keep the other jobs going, keep the traceback
        _log(log, "FAILED (internal error):\n" + traceback.format_exc())
        result = BuildResult(entry_id=entry.id, ok=False, asset=None, record=None, log=log,
                             seconds=time.monotonic() - t0, cached=False,
                             error=f"internal error: {exc!r} (traceback in the log)",
                             verification=verification)
    reporter.finished(result)
    return result


class _Reporter:
    """Lines and progress as jobs start and finish (nothing with ``quiet``)."""

    def __init__(self, console: Console, progress: Progress | None, total: int) -> None:
        self.console = console
        self.progress = progress
        self.total = total
        self.done = 0
        self.running: list[str] = []
        self.lock = threading.Lock()

    def _describe(self) -> None:
        if self.progress is not None:
            self.progress.describe("building " + ", ".join(self.running)
                                   if self.running else "building")

    def started(self, entry_id: str) -> None:
        with self.lock:
            self.running.append(entry_id)
            self._describe()

    def finished(self, r: BuildResult) -> None:
        with self.lock:
            if r.entry_id in self.running:
                self.running.remove(r.entry_id)
            self.done += 1
            self._describe()
            if self.progress is None:
                return
            state = ("ok (cached)" if r.cached else "ok") if r.ok else "FAILED"
            how = f", {r.verification.method}" if r.verification else ""
            head = (f"[{self.done}/{self.total}] {r.entry_id}: {state}{how} "
                    f"in {r.seconds:.1f}s (log: {r.log})")
            if self.console.github:
                # The whole log, folded, under the entry's line; an annotation for failures.
                self.progress.line(f"::group::{head}")
                with contextlib.suppress(OSError):
                    self.progress.line(r.log.read_text(encoding="utf-8", errors="replace")
                                       .rstrip())
                self.progress.line("::endgroup::")
                if not r.ok and r.error:
                    first = r.error.splitlines()[0]
                    self.progress.line(f"::error title=kiln build {r.entry_id}::{first}")
            else:
                self.progress.line(head)
                if not r.ok and r.error:
                    self.progress.line("    " + r.error.splitlines()[0])
            self.progress.advance()


# --------------------------------------------------------------------------------------------
# The entry point


def build_jobs(jobs: Sequence[Job], *, repo: Path, out: Path, env: Mapping[str, str],
               parallel: int, console: Console, cache_dir: Path | None = None,
               layout: CacheLayout | None = None, log_dir: Path | None = None,
               matrix: Matrix | None = None, python: str | None = None,
               quiet: bool = False, on_ci_runner: bool = False,
               project: Project | None = None) -> BuildSummary:
    """Build, verify and package ``jobs``; see the module docstring.

    ``env`` is the caller's environment (parsed at the CLI edge): the build programs get a
    reduced copy (``build_env``), pip (installing zig) the whole of it. ``layout`` overrides
    ``cache_dir`` (``check_reproducible`` builds with fresh caches that way). Raises before
    building anything for what cannot work (``SelectionError``, ``ToolMissing``,
    ``ConfigError``); afterwards each job's failure is in its ``BuildResult``.
    ``on_ci_runner``: this is the entries' own CI runner (``kiln build --on-ci-runner``), so
    ci-only entries are built, not refused. ``project`` is what ``repo/kiln.toml`` describes
    (read when not given).
    """
    t_start = time.monotonic()
    jobs = tuple(jobs)
    if not jobs:
        raise SelectionError("nothing to build", hint="name entries: kiln build ubuntu-x64")
    if parallel < 1:
        raise ConfigError(f"--jobs must be at least 1, got {parallel}")
    repo = repo.absolute()
    project = project or load_project(repo)
    recipes = project.recipes_dir
    check_buildable([j.entry for j in jobs], recipes, on_ci_runner=on_ci_runner)
    spec = load_verify_spec(recipes)
    base_env = build_env(env)
    ref_id = spec.run.reference
    needs_ref = any(j.verify in RUN_METHODS and j.entry.id != ref_id for j in jobs)
    ref_job = next((j for j in jobs if j.entry.id == ref_id), None)
    if needs_ref and ref_job is None:
        m = matrix if matrix is not None else load_matrix(project.matrix_dir)
        try:
            ref_job = make_job(m.get(ref_id), jobs[0].build_number, project.names)
        except KeyError as exc:
            raise ConfigError(f"recipes/verify.yaml: run.reference '{ref_id}' is not a matrix "
                              "entry", hint="name the entry built for this host") from exc
        check_buildable([ref_job.entry], recipes)
    all_jobs = jobs + ((ref_job,) if ref_job is not None and ref_job not in jobs else ())
    _preflight(all_jobs, spec, base_env)

    layout = layout or CacheLayout.at(cache_dir or default_cache_dir(env))
    cache = BuildCache(layout)
    out = out.absolute()
    out.mkdir(parents=True, exist_ok=True)
    _sweep_out(out)
    log_dir = (log_dir or out / "logs").absolute()
    log_dir.mkdir(parents=True, exist_ok=True)
    for j in all_jobs:
        (log_dir / f"{j.entry.id}.log").write_text(f"kiln {__version__} build {j.entry.id}\n",
                                                  encoding="utf-8")

    commit = vcs.commit_sha(repo, base_env)
    epoch_text = env.get("SOURCE_DATE_EPOCH")
    try:
        epoch = int(epoch_text) if epoch_text else vcs.commit_time(repo, base_env)
    except ValueError as exc:
        raise ConfigError(f"SOURCE_DATE_EPOCH={epoch_text!r} is not an integer") from exc
    base_env = build_env(env, epoch=epoch)
    python = python or sys.executable
    source = resolve_source(project, cache_root=layout.root, python=python, env=env,
                            run_env=base_env)
    source_hash = source.digest
    host_tools = _tool_versions(base_env)
    recipes_by_backend = {b: load_recipe(recipes, b) for b in sorted({j.entry.backend
                                                                     for j in all_jobs})}
    paths = ToolchainPaths(root=layout.toolchains, zig_cache=layout.zig)
    layout.toolchains.mkdir(parents=True, exist_ok=True)
    installed = {name: TOOLCHAINS[name].install(paths, python=python, env=env)
                 for name in sorted({r.toolchain for r in recipes_by_backend.values()})}
    model = _first_model(repo, spec)
    signing: CodeSigningKey | None = None
    signing_id: dict[str, Any] | None = None
    if any(j.entry.os == "windows" for j in all_jobs):
        signing, signing_id = _code_signing(env, repo, layout, base_env, project)
    home = env.get("HOME", "")
    # Where a build could leak this machine's paths from (not --out: it must not change keys).
    host_paths = tuple(sorted({*layout.host_paths(), str(repo),
                               *((home,) if len(home) > 1 else ())}))
    cores = os.cpu_count() or 1
    session = _Session(
        repo=repo, project=project, recipes=recipes, source=source.path, out=out,
        log_dir=log_dir, layout=layout,
        cache=cache, env=base_env, commit=commit, epoch=epoch, source_hash=source_hash,
        host_tools=host_tools, installed=installed, recipes_by_backend=recipes_by_backend,
        spec=spec, model=model, model_sha=None if model is None else sha256_file(model),
        license_file=_license(project, source.path), ninja_jobs=max(1, cores // parallel),
        host_arch=host_arch(), host_paths=host_paths, python=python, signing=signing,
        signing_id=signing_id)

    results: list[BuildResult] = []
    progress = contextlib.nullcontext(None) if quiet else console.progress("building", len(jobs))
    with progress as bar:
        reporter = _Reporter(console, bar, len(jobs))
        ref: _Reference | None = None
        if needs_ref and ref_job is not None:
            ref = _reference(session, ref_job, cores, bar)
        pool = ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="kiln-build")
        try:
            futures = [pool.submit(_one, session, j,
                                   None if j.entry.id == ref_id else ref, reporter)
                       for j in jobs]
            results = [f.result() for f in futures]
        except BaseException:
            session.cancel.set()
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
    return BuildSummary(results=tuple(results), seconds=time.monotonic() - t_start)


def _reference(s: _Session, job: Job, cores: int, progress: Progress | None) -> _Reference:
    """Build and run the host build first; its ids are what run-based checks compare with."""
    log = s.log_dir / f"{job.entry.id}.log"
    if progress is not None:
        progress.describe(f"building the host build ({job.entry.id}) for reference ids")
    try:
        staged = _stage(s, job, log, ninja_jobs=cores)
        report, verify_cached = _verify(s, job, staged, None, log)
        if not (staged.cached and verify_cached):
            s.fresh.add(job.entry.id)
    except KilnError as exc:
        return _Reference(error=f"the host build {job.entry.id} failed: "
                                f"{exc.message.splitlines()[0]} (log: {log})")
    if not report.ok or (report.generated_ids is None and report.output is None):
        return _Reference(error=f"the host build {job.entry.id} did not verify: "
                                f"{report.detail} (log: {log})")
    return _Reference(ids=report.generated_ids, output=report.output)


# --------------------------------------------------------------------------------------------
# Reproducibility


@dataclass(frozen=True, kw_only=True)
class ReproResult:
    entry_id: str
    asset: str
    first: str | None
    second: str | None
    differing: tuple[str, ...] = ()

    @property
    def same(self) -> bool:
        return self.first is not None and self.first == self.second


def _member_digests(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    if path.name.endswith(".zip"):
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                out[info.filename] = hashlib.sha256(zf.read(info)).hexdigest()
    else:
        with tarfile.open(path, "r:gz") as tar:
            for m in tar.getmembers():
                f = tar.extractfile(m)
                data = f.read() if f is not None else m.linkname.encode()
                out[m.name] = hashlib.sha256(data).hexdigest() + f":{m.mode:o}:{m.mtime}"
    return out


def check_reproducible(jobs: Sequence[Job], first: BuildSummary, *, repo: Path,
                       env: Mapping[str, str], parallel: int, console: Console,
                       layout: CacheLayout, matrix: Matrix | None = None) -> tuple[
                           ReproResult, ...]:
    """Build ``jobs`` again with empty build caches (fresh builds/, work/ and ccache/ under
    other paths; the installed toolchains and zig's libc cache are shared) and compare the
    archives' sha256 with ``first``'s."""
    scratch = layout.root / f"repro-{os.getpid()}"
    shutil.rmtree(scratch, ignore_errors=True)
    try:
        second = build_jobs(jobs, repo=repo, out=scratch / "out", env=env, parallel=parallel,
                            console=console, layout=layout.fresh(scratch / "cache"),
                            matrix=matrix, quiet=True)
        by_id = {r.entry_id: r for r in second.results}
        out: list[ReproResult] = []
        for r in first.results:
            other = by_id.get(r.entry_id)
            a = r.record.sha256 if r.record else None
            b = other.record.sha256 if other and other.record else None
            differing: tuple[str, ...] = ()
            if a and b and a != b and r.asset and other and other.asset:
                da, db = _member_digests(r.asset), _member_digests(other.asset)
                differing = tuple(sorted(k for k in set(da) | set(db) if da.get(k) != db.get(k)))
            out.append(ReproResult(entry_id=r.entry_id,
                                   asset=r.asset.name if r.asset else "-", first=a, second=b,
                                   differing=differing))
        return tuple(out)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
