"""``kiln release`` end to end on a throwaway git repository: real git, real minisign, synthetic
archives with their records (the build stage is someone else's; its outputs are simulated
byte for byte as ``kiln.package.records`` defines them). The helpers here are used by the publish
tests too."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import kiln.build.jobs
from kiln.build.toolchains import refusal
from kiln.cli import main
from kiln.matrix import load_matrix
from kiln.package.records import AssetRecord, Tool, Verification, record_for, write_record

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
MATRIX = load_matrix(REPO / "matrix")
LOCAL = [e.id for e in MATRIX.enabled if e.local]
CI_ONLY = [e.id for e in MATRIX.enabled if not e.local]
needs_minisign = pytest.mark.skipif(shutil.which("minisign") is None,
                                    reason="minisign is not installed (scripts/apt-packages.txt)")


def base_env(home: Path) -> dict[str, str]:
    home.mkdir(parents=True, exist_ok=True)
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "LANG": "C.UTF-8",
        "GIT_AUTHOR_NAME": "Rel Eng", "GIT_AUTHOR_EMAIL": "releng@example.invalid",
        "GIT_COMMITTER_NAME": "Rel Eng", "GIT_COMMITTER_EMAIL": "releng@example.invalid",
        "GIT_AUTHOR_DATE": "2026-01-02T03:04:05Z", "GIT_COMMITTER_DATE": "2026-01-02T03:04:05Z",
        "GIT_CONFIG_NOSYSTEM": "1",
    }


def git(repo: Path, env: Mapping[str, str], *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], env=dict(env), check=True,
                          capture_output=True, text=True).stdout.strip()


def make_repo(root: Path, env: Mapping[str, str]) -> Path:
    """A project checkout with the real matrix, template and settings, and three commits."""
    repo = root / "project"
    repo.mkdir(parents=True)
    shutil.copytree(REPO / "matrix", repo / "matrix")
    shutil.copytree(REPO / "recipes", repo / "recipes")
    (repo / "release_notes").mkdir()
    shutil.copy(REPO / "release_notes" / "release.md.j2", repo / "release_notes")
    shutil.copy(REPO / "pyproject.toml", repo / "pyproject.toml")
    shutil.copy(REPO / "kiln.toml", repo / "kiln.toml")
    (repo / "runtime" / "src").mkdir(parents=True)
    # the record of vendored code kiln.toml names (release.third_party): the SBOM lists it
    (repo / "runtime" / "third_party").mkdir()
    shutil.copy(REPO / "runtime" / "third_party" / "SOURCES.json",
                repo / "runtime" / "third_party")
    (repo / "runtime" / "src" / "ember.c").write_text("int ember(void) { return 0; }\n")
    git(repo, env, "init", "-q", "-b", "main")
    git(repo, env, "add", "-A")
    git(repo, env, "commit", "-q", "-m", "ember: first light")
    (repo / "runtime" / "src" / "ember.c").write_text("int ember(void) { return 1; }\n")
    git(repo, env, "commit", "-q", "-am", "ggml: faster q4_1 dot product (#12)")
    (repo / "runtime" / "src" / "gguf.c").write_text("/* gguf */\n")
    git(repo, env, "add", "-A")
    git(repo, env, "commit", "-q", "-m", "gguf: read v3 headers (#34)")
    return repo


def make_key(directory: Path, password: str | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    key, pub = directory / "release.key", directory / "release.pub"
    argv = ["minisign", "-G", "-f", "-s", str(key), "-p", str(pub)]
    if password is None:
        argv.append("-W")
    subprocess.run(argv, input=None if password is None else f"{password}\n{password}\n",
                   text=True, check=True, capture_output=True)
    return key


def _payload(seed: str, size: int) -> bytes:
    out = bytearray()
    counter = 0
    while len(out) < size:
        out.extend(hashlib.sha256(f"{seed}:{counter}".encode()).digest())
        counter += 1
    return bytes(out[:size])


def make_artifact(directory: Path, entry_id: str, *, number: int, commit: str,
                  size: int = 256, ok: bool = True, library: bytes | None = None,
                  detail: str = "synthetic test asset") -> AssetRecord:
    """A deterministic archive of ``size`` incompressible bytes and its record; with
    ``library``, that file as ``lib/libember.so`` instead (an ELF file whose floors are
    measured)."""
    entry = MATRIX.get(entry_id)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"ember-b{number}-bin-{entry_id}.{entry.archive}"
    data = _payload(entry_id, size) if library is None else library
    member = f"ember-b{number}-bin-{entry_id}/lib/" + (
        "libember.bin" if library is None else "libember.so")
    if entry.archive == "zip":
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr(zipfile.ZipInfo(member, date_time=(1980, 1, 1, 0, 0, 0)), data)
    else:
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
            info = tarfile.TarInfo(member)
            info.size, info.mtime = len(data), 0
            tar.addfile(info, io.BytesIO(data))
        path.write_bytes(gzip.compress(raw.getvalue(), mtime=0))
    record = record_for(entry, path, kind="archive", build_number=number, commit=commit,
                        toolchain=(Tool(name="zig", version="0.17.1"),),
                        verification=Verification(method=entry.verify, ok=ok,
                                                  detail=detail))
    write_record(record, directory)
    return record


@dataclass
class Project:
    root: Path
    repo: Path
    env: dict[str, str]
    key: Path

    @property
    def head(self) -> str:
        return git(self.repo, self.env, "rev-parse", "HEAD")

    @property
    def number(self) -> int:
        return int(git(self.repo, self.env, "rev-list", "--count", "HEAD"))

    def artifacts(self, entries: Sequence[str] = LOCAL, *, size: int = 256,
                  name: str = "artifacts") -> Path:
        d = self.root / name
        for entry_id in entries:
            # One folder per entry, as CI's artifact download may lay them out.
            make_artifact(d / entry_id, entry_id, number=self.number, commit=self.head,
                          size=size)
        return d

    def kiln(self, args: Sequence[str], capsys: pytest.CaptureFixture[str] | None = None,
             env: Mapping[str, str] | None = None) -> tuple[int, str, str]:
        out = io.StringIO()
        code = main(list(args), env=dict(env if env is not None else self.env), stdout=out,
                    cwd=self.repo)
        err = capsys.readouterr().err if capsys is not None else ""
        return code, out.getvalue(), err


def make_project(root: Path, *, password: str | None = None) -> Project:
    env = base_env(root / "home")
    repo = make_repo(root, env)
    key = make_key(root / "keys", password)
    env["KILN_SIGNING_KEY"] = str(key)
    if password is not None:
        env["KILN_SIGNING_PASSWORD"] = password
    return Project(root=root, repo=repo, env=env, key=key)


def make_release_dir(root: Path, entries: Sequence[str] = ("macos-arm64", "ubuntu-x64",
                                                            "win-cpu-x64"),
                     *, size: int = 256) -> tuple[Project, Path]:
    """A signed release directory of a few entries, the rest allowed missing."""
    project = make_project(root)
    art = project.artifacts(entries, size=size)
    out = root / "release"
    code, _, _ = project.kiln(["release", "--artifacts", str(art), "--out", str(out),
                               "--allow-missing", "*"])
    assert code == 0
    return project, out


# --------------------------------------------------------------------------------------------


@pytest.fixture
def project(tmp_path: Path) -> Project:
    if shutil.which("minisign") is None:
        pytest.skip("minisign is not installed (scripts/apt-packages.txt)")
    return make_project(tmp_path)


def test_ci_only_entries_are_missing_unless_allowed(project: Project,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    art = project.artifacts()
    out = project.root / "release"
    code, _, err = project.kiln(["release", "--artifacts", str(art), "--out", str(out)], capsys)
    assert code == 9
    assert "5 enabled entries are missing" in err
    for entry_id in CI_ONLY:
        assert f"  - {entry_id}: not built here" in err
    assert "--allow-missing " + " ".join(CI_ONLY) in err
    assert not out.exists()
    assert git(project.repo, project.env, "tag", "--list") == ""


def test_release_is_complete_verifiable_and_tagged(project: Project,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    art = project.artifacts()
    out = project.root / "release"
    n, head = project.number, project.head
    code, _, err = project.kiln(["release", "--artifacts", str(art), "--out", str(out),
                                 "--allow-missing", *CI_ONLY], capsys)
    assert code == 0, err
    names = sorted(p.name for p in out.iterdir())
    assets = sorted(f"ember-b{n}-bin-{i}.{MATRIX.get(i).archive}" for i in LOCAL)
    assert names == sorted([*assets, "RELEASE_NOTES.md", "SHA256SUMS", "SHA256SUMS.minisig",
                            "install.ps1", "install.sh", "manifest.json", "minisign.pub",
                            "sbom.cdx.json", "provenance.intoto.json",
                            "provenance.intoto.json.minisig", "index.json",
                            "index.json.minisig", "index.html", "page.css", "page.js"])
    # The installers published with the release pin its key and name its tag.
    pub_line = (out / "minisign.pub").read_text().splitlines()[1]
    for script in ("install.sh", "install.ps1"):
        text = (out / script).read_text()
        assert pub_line in text and f"b{n}" in text
    # What a user runs.
    subprocess.run(["minisign", "-V", "-p", "minisign.pub", "-m", "SHA256SUMS"], cwd=out,
                   check=True, capture_output=True)
    subprocess.run(["minisign", "-V", "-p", str(project.key.with_suffix(".pub")), "-m",
                    "SHA256SUMS"], cwd=out, check=True, capture_output=True)
    subprocess.run(["sha256sum", "--strict", "-c", "SHA256SUMS"], cwd=out, check=True,
                   capture_output=True)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["tag"] == f"b{n}" and manifest["commit"] == head
    assert [a["name"] for a in manifest["assets"]] == sorted(assets)
    assert {m["entry_id"] for m in manifest["missing"]} == set(CI_ONLY)
    assert all(a["url"].startswith("https://github.com/") for a in manifest["assets"])
    notes = (out / "RELEASE_NOTES.md").read_text()
    for a in manifest["assets"]:
        assert f"]({a['url']})" in notes
    assert "## Disabled builds" in notes
    for e in MATRIX.disabled:
        assert e.disabled is not None and f"]({e.disabled.tracking})" in notes
    assert "gguf: read v3 headers ([#34](https://github.com/" in notes
    assert "no separate CUDA runtime download" in notes
    sbom = json.loads((out / "sbom.cdx.json").read_text())
    files = [c["name"] for c in sbom["components"] if c["bom-ref"].startswith("source:")]
    assert files == ["runtime/src/ember.c", "runtime/src/gguf.c",
                     "runtime/third_party/SOURCES.json"]
    # the vendored code kiln.toml's release.third_party records, and what it is compiled into
    vendored = {c["name"]: c for c in sbom["components"]
                if c["bom-ref"].startswith("vendored:")}
    assert sorted(vendored) == ["cJSON", "civetweb"]
    assert vendored["civetweb"]["description"].endswith("compiled into ember-server")
    # The annotated tag and the kept notes.
    assert git(project.repo, project.env, "cat-file", "-t", f"b{n}") == "tag"
    assert git(project.repo, project.env, "rev-parse", f"b{n}^{{commit}}") == head
    assert (project.repo / "release_notes" / f"b{n}.md").read_text() == notes
    assert str(project.root) not in "".join(
        (out / f).read_text() for f in ("manifest.json", "sbom.cdx.json", "RELEASE_NOTES.md"))


def test_releasing_the_same_commit_twice_is_byte_identical(
        project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    art = project.artifacts(size=4096)
    outs = [project.root / "one", project.root / "two"]
    for out in outs:
        code, _, err = project.kiln(["release", "--artifacts", str(art), "--out", str(out),
                                     "--allow-missing", "ubuntu-rocm-*", "*sycl*",
                                     "win-hip-*"], capsys)
        assert code == 0, err
    first = {p.name: p.read_bytes() for p in outs[0].iterdir()}
    second = {p.name: p.read_bytes() for p in outs[1].iterdir()}
    assert first.keys() == second.keys()
    differ = [name for name in first if first[name] != second[name]]
    assert differ == []
    # And into the same --out again: replaced atomically, still identical.
    code, _, err = project.kiln(["release", "--artifacts", str(art), "--out", str(outs[0]),
                                 "--allow-missing", *CI_ONLY], capsys)
    assert code == 0, err
    assert {p.name: p.read_bytes() for p in outs[0].iterdir()} == first


def test_a_dirty_tree_is_refused_unless_allowed(project: Project,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    art = project.artifacts(["ubuntu-x64"])
    (project.repo / "runtime" / "src" / "ember.c").write_text("/* edited */\n")
    args = ["release", "--artifacts", str(art), "--out", str(project.root / "r"),
            "--allow-missing", "*", "--no-git-tag"]
    code, _, err = project.kiln(args, capsys)
    assert code == 9 and "uncommitted changes" in err and "--allow-dirty" in err
    code, _, err = project.kiln([*args, "--allow-dirty"], capsys)
    assert code == 0, err
    assert git(project.repo, project.env, "tag", "--list") == ""


def test_an_existing_tag_elsewhere_is_refused(project: Project,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    n = project.number
    git(project.repo, project.env, "tag", "-a", f"b{n}", "-m", "old", "HEAD~1")
    art = project.artifacts(["ubuntu-x64"])
    code, _, err = project.kiln(["release", "--artifacts", str(art), "--out",
                                 str(project.root / "r"), "--allow-missing", "*"], capsys)
    assert code == 9 and f"tag b{n} exists and points at" in err


def test_notes_list_changes_since_the_previous_tag(project: Project,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    git(project.repo, project.env, "tag", "-a", "b2", "-m", "ember b2", "HEAD~1")
    art = project.artifacts(["ubuntu-x64"])
    out = project.root / "r"
    code, _, err = project.kiln(["release", "--artifacts", str(art), "--out", str(out),
                                 "--allow-missing", "*"], capsys)
    assert code == 0, err
    notes = (out / "RELEASE_NOTES.md").read_text()
    assert "Since b2 ([full comparison](" in notes and "/compare/b2...b3)" in notes
    assert "gguf: read v3 headers" in notes and "faster q4\\_1" not in notes


def test_tampered_artifact_is_an_integrity_error(project: Project,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    art = project.artifacts(["ubuntu-x64"])
    asset = next(art.rglob("*.tar.gz"))
    asset.write_bytes(asset.read_bytes()[:-1])
    code, _, err = project.kiln(["release", "--artifacts", str(art), "--out",
                                 str(project.root / "r"), "--allow-missing", "*"], capsys)
    assert code == 12 and "size or sha256 differs" in err


def test_password_protected_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if shutil.which("minisign") is None:
        pytest.skip("minisign is not installed")
    project = make_project(tmp_path, password="correct horse")
    art = project.artifacts(["ubuntu-x64"])
    out = tmp_path / "r"
    args = ["release", "--artifacts", str(art), "--out", str(out), "--allow-missing", "*",
            "--no-git-tag"]
    env = {k: v for k, v in project.env.items() if k != "KILN_SIGNING_PASSWORD"}
    code, _, err = project.kiln(args, capsys, env=env)
    assert code == 2 and "KILN_SIGNING_PASSWORD" in err
    code, _, err = project.kiln(args, capsys, env={**env, "KILN_SIGNING_PASSWORD": "wrong"})
    assert code == 2 and "wrong password" in err and "wrong\n" not in err
    code, _, err = project.kiln(args, capsys)
    assert code == 0, err
    assert "correct horse" not in err
    subprocess.run(["minisign", "-V", "-p", "minisign.pub", "-m", "SHA256SUMS"], cwd=out,
                   check=True, capture_output=True)


def test_a_signing_key_inside_the_repository_is_refused(
        project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    inside = project.repo / "release.key"
    shutil.copy(project.key, inside)
    art = project.artifacts(["ubuntu-x64"])
    code, _, err = project.kiln(["release", "--artifacts", str(art), "--out",
                                 str(project.root / "r"), "--allow-missing", "*",
                                 "--signing-key", str(inside)], capsys)
    assert code == 2 and "inside the repository" in err


def test_without_artifacts_it_builds_through_build_jobs(
        project: Project, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The build stage's interface, faked: CPU entries build, GPU entries fail and are
    therefore missing (allowed here)."""
    calls: list[dict[str, Any]] = []

    @dataclass(frozen=True)
    class Result:
        entry_id: str
        ok: bool
        error: str | None
        seconds: float = 1.5

    @dataclass(frozen=True)
    class Summary:
        results: tuple[Result, ...]

    def build_jobs(jobs: Sequence[Any], *, repo: Path, out: Path, env: Mapping[str, str],
                   parallel: int, console: object, cache_dir: Path | None = None,
                   log_dir: Path | None = None, **kw: Any) -> Summary:
        assert kw["project"].name == "ember"  # the project's own names
        assert all(j.artifact.startswith("ember-b") for j in jobs)
        calls.append({"ids": [j.entry.id for j in jobs], "env": dict(env), "log_dir": log_dir})
        results = []
        for job in jobs:
            assert log_dir is not None
            (log_dir / f"{job.entry.id}.log").write_text(f"build {job.entry.id}\n")
            if job.entry.backend == "cpu":
                make_artifact(out, job.entry.id, number=job.build_number,
                              commit=project.head)
                results.append(Result(job.entry.id, True, None))
            else:
                results.append(Result(job.entry.id, False, f"{job.entry.backend}: not yet"))
        return Summary(tuple(results))

    monkeypatch.setattr(kiln.build.jobs, "build_jobs", build_jobs)
    out = project.root / "r"
    # Which entries reach the build stage is this kiln's own decision (refusal()); the ones it
    # cannot build yet are missing with their reason, never handed to the build stage.
    refused = {e.id: refusal(e, REPO / "recipes") for e in MATRIX.enabled if e.local}
    buildable = [i for i in LOCAL if refused[i] is None]
    failing_gpu = [i for i in buildable if MATRIX.get(i).backend != "cpu"]
    code, _, err = project.kiln(["release", "--out", str(out)], capsys)
    assert code == 9
    # the failed release's build logs outlive its scratch directory, beside --out
    assert calls[0]["log_dir"] == project.root / "r-logs"
    for entry_id in failing_gpu:
        assert (project.root / "r-logs" / f"{entry_id}.log").is_file()
    for entry_id, why in refused.items():
        if why is not None:
            assert f"{entry_id}: not built here: {why}" in err
    for entry_id in failing_gpu:
        assert (f"{entry_id}: build failed here: {MATRIX.get(entry_id).backend}: not yet"
                in err)
    code, _, err = project.kiln(["release", "--out", str(out), "--allow-missing",
                                 *[e.id for e in MATRIX.enabled if e.backend != "cpu"]], capsys)
    assert code == 0, err
    assert calls[0]["ids"] == buildable
    assert calls[0]["env"]["SOURCE_DATE_EPOCH"] == git(project.repo, project.env, "log", "-1",
                                                       "--format=%ct")
    assert "KILN_SIGNING_PASSWORD" not in calls[0]["env"]
    notes = (out / "RELEASE_NOTES.md").read_text()
    for entry_id in failing_gpu:
        assert (f"`{entry_id}`: build failed here: {MATRIX.get(entry_id).backend}: not yet"
                in notes)
    for entry_id, why in refused.items():
        if why is not None:
            assert f"`{entry_id}`: not built here" in notes


def test_the_library_api_releases_and_publishes_without_the_cli(project: Project) -> None:
    """``kiln.make_release`` and ``kiln.publish_release`` as a pipeline calls them (docs/api.md):
    the same release as ``kiln release --artifacts``, typed results, the tag created."""
    import kiln

    art = project.artifacts()
    out = project.root / "release"
    release = kiln.make_release(out, repo=project.repo, artifacts=art,
                                allow_missing=list(CI_ONLY), env=project.env)
    assert release.tag == f"b{project.number}" and release.commit == project.head
    assert release.out == out and release.tag_created
    assert sorted(x.record.entry_id for x in release.manifest.assets) == sorted(LOCAL)
    assert sorted(m.entry_id for m in release.manifest.missing) == sorted(CI_ONLY)
    assert release.notes == project.repo / "release_notes" / f"{release.tag}.md"
    assert release.notes.read_text() == (out / "RELEASE_NOTES.md").read_text()
    assert git(project.repo, project.env, "tag", "--list") == release.tag
    with pytest.raises(AttributeError):
        release.tag = "b1"  # type: ignore[misc]  # frozen: a result is a record

    mirror = project.root / "mirror"
    published = kiln.publish_release(out, f"file://{mirror}", env=project.env)
    assert published.tag == release.tag and not published.result.already_published
    assert (mirror / release.tag / "SHA256SUMS").is_file()
    again = kiln.publish_release(out, f"file://{mirror}", env=project.env)
    assert again.result.already_published and again.result.uploaded == ()


def test_a_bad_bench_report_is_refused_before_anything_is_written(
        project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    art = project.artifacts(["ubuntu-x64"])
    bench = project.root / "bench.json"
    bench.write_text('{"date": "d", "cpu": "c", "rows": [{"model": "Q4_1", "threads": 1, '
                     '"pp_ratio": "fast", "tg_ratio": 1.0}]}')
    out = project.root / "release"
    code, _, err = project.kiln(["release", "--artifacts", str(art), "--out", str(out),
                                 "--allow-missing", "*", "--bench", str(bench)], capsys)
    assert code == 9 and "rows[0]" in err and "pp_ratio" in err
    assert not out.exists()
    assert not (project.repo / "release_notes" / f"b{project.number}.md").exists()
    bench.write_text('{"date": "d", "cpu": "c", "rows": [{"model": "Q4_1", "threads": 1, '
                     '"pp_ratio": 1.2, "tg_ratio": 0.9}]}')
    code, _, err = project.kiln(["release", "--artifacts", str(art), "--out", str(out),
                                 "--allow-missing", "*", "--bench", str(bench)], capsys)
    assert code == 0, err
    assert (out / "bench-cpu.json").read_text() == bench.read_text()
    assert "bench-cpu.json" in (out / "SHA256SUMS").read_text()
    assert "1.20x" in (out / "index.html").read_text()


# --------------------------------------------------------------------------------------------
# Another project released from a subdirectory of the same repository (examples/llamacpp): its
# own git tags, previous tag, changes, names, SBOM and installers; ember's untouched.

LLAMA = Path("examples") / "llamacpp"
LLAMA_MATRIX = load_matrix(REPO / LLAMA / "matrix")


def _llama_artifact(directory: Path, entry_id: str, *, number: int, commit: str) -> None:
    entry = LLAMA_MATRIX.get(entry_id)
    directory.mkdir(parents=True, exist_ok=True)
    top = f"llama-b{number}-bin-{entry_id}"
    path = directory / f"{top}.{entry.archive}"
    exe = ".exe" if entry.os == "windows" else ""
    data = _payload(entry_id, 512)
    if entry.archive == "zip":
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr(zipfile.ZipInfo(f"{top}/bin/llama-completion{exe}",
                                        date_time=(1980, 1, 1, 0, 0, 0)), data)
    else:
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
            info = tarfile.TarInfo(f"{top}/bin/llama-completion")
            info.size, info.mtime, info.mode = len(data), 0, 0o755
            tar.addfile(info, io.BytesIO(data))
        path.write_bytes(gzip.compress(raw.getvalue(), mtime=0))
    record = record_for(entry, path, kind="archive", build_number=number, commit=commit,
                        toolchain=(Tool(name="zig", version="0.17.1"),),
                        verification=Verification(method=entry.verify, ok=True,
                                                  detail="synthetic test asset"))
    write_record(record, directory)


def _no_ember(text: str) -> list[str]:
    """The lines that name ember, besides links into the repository both projects live in."""
    return [line for line in text.splitlines()
            if re.search(r"(?<![A-Za-z])ember(?![A-Za-z])",
                         line.replace("github.com/ember-ml/ember/", ""), re.IGNORECASE)]


def test_another_project_in_a_subdirectory_has_its_own_releases(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if shutil.which("minisign") is None:
        pytest.skip("minisign is not installed (scripts/apt-packages.txt)")
    project = make_project(tmp_path)
    env, repo = project.env, project.repo
    git(repo, env, "tag", "-a", "b3", "-m", "ember b3")  # ember's own release
    shutil.copytree(REPO / LLAMA, repo / LLAMA, symlinks=True,
                    ignore=shutil.ignore_patterns("b[0-9]*.*"))
    git(repo, env, "add", "-A")
    git(repo, env, "commit", "-q", "-m", "llama: describe llama.cpp's CPU builds (#56)")
    (repo / "runtime" / "src" / "ember.c").write_text("int ember(void) { return 2; }\n")
    git(repo, env, "commit", "-q", "-am", "runtime: a change llama's notes must not list")
    number, head = project.number, project.head

    # ember's archives are never released under llama's name
    wrong = project.artifacts(["ubuntu-x64"], name="ember-art")
    code, _, err = project.kiln(["-C", str(LLAMA), "release", "--artifacts", str(wrong),
                                 "--out", str(tmp_path / "wrong"), "--allow-missing", "*"],
                                capsys)
    assert code == 9 and "not named as llama's kiln.toml names them" in err, err
    assert not (tmp_path / "wrong").exists()

    art, out = tmp_path / "llama-art", tmp_path / "llama-release"
    for entry_id in ("ubuntu-x64", "win-cpu-x64"):
        _llama_artifact(art / entry_id, entry_id, number=number, commit=head)
    code, text, err = project.kiln(["-C", str(LLAMA), "release", "--artifacts", str(art),
                                    "--out", str(out), "--allow-missing", "*"])
    assert code == 0, err
    assert f"created tag llama-b{number}" in text
    tags = git(repo, env, "tag", "--list").split()
    assert f"llama-b{number}" in tags and f"b{number}" not in tags and "b3" in tags

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["project"] == "llama" and manifest["tag"] == f"b{number}"
    assert {a["name"] for a in manifest["assets"]} == {
        f"llama-b{number}-bin-ubuntu-x64.tar.gz", f"llama-b{number}-bin-win-cpu-x64.zip"}
    assert all(f"/releases/download/llama-b{number}/" in a["url"] for a in manifest["assets"])
    subprocess.run(["minisign", "-V", "-p", "minisign.pub", "-m", "SHA256SUMS"], cwd=out,
                   check=True, capture_output=True)

    notes = (out / "RELEASE_NOTES.md").read_text()
    assert notes.startswith(f"# llama.cpp b{number} (CPU builds)")
    assert "First release." in notes  # ember's b3 is not llama's previous release
    assert "describe llama.cpp's CPU builds" in notes
    assert "must not list" not in notes and "faster q4_1" not in notes
    assert "llama-cpp-python==0.3.36" in notes and not _no_ember(notes)
    assert (repo / LLAMA / "release_notes" / f"b{number}.md").read_text() == notes
    assert not (repo / "release_notes" / f"b{number}.md").exists()

    sbom = json.loads((out / "sbom.cdx.json").read_text())
    sdist = [c for c in sbom["components"] if c["bom-ref"].startswith("sdist:")]
    assert [(c["name"], c["version"], c["purl"]) for c in sdist] == [
        ("llama-cpp-python", "0.3.36", "pkg:pypi/llama-cpp-python@0.3.36")]
    assert not [c for c in sbom["components"] if c["bom-ref"].startswith("source:runtime")]

    for script in ("install.sh", "install.ps1"):
        body = (out / script).read_text()
        assert not _no_ember(body), _no_ember(body)[:3]
        assert "llama-install" in body and "llama-completion" in body
    assert 'PREFIX="${HOME:?HOME is not set: pass --prefix}/.llama"' in (
        out / "install.sh").read_text()
    assert "LLAMA_INSTALL_SYSROOT" in (out / "install.sh").read_text()

    # The next llama release names its own previous tag and compares git tags.
    (repo / LLAMA / "recipes" / "cpu.yaml").write_text(
        (repo / LLAMA / "recipes" / "cpu.yaml").read_text() + "# tuned\n")
    git(repo, env, "commit", "-q", "-am", "llama: tune the CPU recipe")
    number2, head2 = project.number, project.head
    art2 = tmp_path / "llama-art2"
    _llama_artifact(art2 / "ubuntu-x64", "ubuntu-x64", number=number2, commit=head2)
    code, _, err = project.kiln(["-C", str(LLAMA), "release", "--artifacts", str(art2),
                                 "--out", str(tmp_path / "llama-release2"),
                                 "--allow-missing", "*"])
    assert code == 0, err
    notes2 = (tmp_path / "llama-release2" / "RELEASE_NOTES.md").read_text()
    assert f"Since b{number} " in notes2
    assert f"compare/llama-b{number}...llama-b{number2})" in notes2
    assert "tune the CPU recipe" in notes2 and "describe llama.cpp" not in notes2
