"""``kiln reproduce`` for real: a release of two cheap entries (ubuntu-x64, verified by running
it, and macos-arm64, inspected) is rebuilt from its commit with empty build caches and found
identical, with a signed statement that ``minisign -V`` accepts; a release whose signed archive
was built from a work tree with a change that is not in the commit (what a compromised build
machine would publish) is found DIFFERENT, with diffoscope's report, and exit code 12.

The project is a snapshot of this checkout's runtime/, matrix/, recipes/, the tiny model and
the release settings, committed into its own git repository; kiln's cache is the one the build
tests share (``build/kiln-test/cache`` or ``$KILN_TEST_CACHE``), so the pinned toolchains and
zig's libc cache are installed once. diffoscope and minisign are required (CI installs them
from scripts/apt-packages.txt): without them these tests fail rather than skip.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from kiln.build.toolchains.recipe import load_verify_spec
from kiln.matrix import load_matrix
from kiln.release.index import index_comment, parse_index
from kiln.release.manifest import ReleaseManifest, format_sums, release_comment

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("kiln-build")]

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("KILN_TEST_CACHE") or REPO / "build" / "kiln-test" / "cache")
ENTRIES = ["ubuntu-x64", "macos-arm64"]
MATRIX = load_matrix(REPO / "matrix")
GIT_ENV = {"GIT_AUTHOR_NAME": "kiln test", "GIT_AUTHOR_EMAIL": "test@invalid",
           "GIT_COMMITTER_NAME": "kiln test", "GIT_COMMITTER_EMAIL": "test@invalid",
           "GIT_AUTHOR_DATE": "2026-01-01T00:00:00Z",
           "GIT_COMMITTER_DATE": "2026-01-01T00:00:00Z", "GIT_CONFIG_NOSYSTEM": "1"}


@dataclass(frozen=True)
class Project:
    repo: Path
    root: Path
    env: dict[str, str]
    key: Path

    def kiln(self, *args: str, env: dict[str, str] | None = None
             ) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "kiln", *args], cwd=self.repo,
                              env={**self.env, **(env or {})}, capture_output=True, text=True,
                              check=False)

    def git(self, *args: str) -> str:
        return subprocess.run(["git", *args], cwd=self.repo, env=self.env, check=True,
                              capture_output=True, text=True).stdout.strip()

    def release(self, name: str, *, dirty: bool = False) -> Path:
        """Build ENTRIES with ``kiln build`` (the shared cache) and release them."""
        number = self.git("rev-list", "--count", "HEAD")
        art = self.root / f"{name}-artifacts"
        done = self.kiln("build", *(ENTRIES if not dirty else ENTRIES[1:]), "--out", str(art),
                         "--build-number", number)
        assert done.returncode == 0, done.stdout + done.stderr
        out = self.root / name
        done = self.kiln("release", "--artifacts", str(art), "--out", str(out), "--tag",
                         f"b{number}", "--allow-missing", "*", "--no-git-tag",
                         *(["--allow-dirty"] if dirty else []))
        assert done.returncode == 0, done.stdout + done.stderr
        return out


def _require(tool: str) -> None:
    assert shutil.which(tool), f"{tool} is not installed (scripts/apt-packages.txt)"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    for tool in ("minisign", "diffoscope", "git"):
        _require(tool)
    root = tmp_path_factory.mktemp("reproduce")
    repo = root / "project"
    ignore = shutil.ignore_patterns("build*", "__pycache__", "*.tmp")
    models = [m for m in load_verify_spec(REPO / "recipes").run.models if (REPO / m).is_file()]
    assert models, "no tiny model: run scripts/make_tiny_model.py"
    for rel in ["runtime", "matrix", "recipes", "pyproject.toml", "kiln.toml",
                "release_notes/release.md.j2", models[0]]:
        src = REPO / rel
        if src.is_dir():
            shutil.copytree(src, repo / rel, ignore=ignore)
        else:
            (repo / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, repo / rel)
    home = root / "home"
    home.mkdir()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home),
           "LANG": "C.UTF-8", "KILN_CACHE": str(CACHE), **GIT_ENV}
    keys = root / "keys"
    keys.mkdir()
    key = keys / "reproducer.key"
    subprocess.run(["minisign", "-G", "-f", "-W", "-s", str(key), "-p",
                    str(keys / "reproducer.pub")], check=True, capture_output=True)
    env["KILN_SIGNING_KEY"] = str(key)
    p = Project(repo=repo, root=root, env=env, key=key)
    p.git("init", "-q", "-b", "main")
    p.git("add", "-A")
    p.git("commit", "-q", "-m", "snapshot")
    return p


@pytest.fixture(scope="module")
def release(project: Project) -> Path:
    return project.release("release")


def test_a_release_reproduces_and_gets_a_signed_statement(project: Project,
                                                          release: Path) -> None:
    done = project.kiln("reproduce", "--release", f"file://{release}", "--only", *ENTRIES,
                        "--parallel", "1")
    assert done.returncode == 0, done.stdout + done.stderr
    manifest = json.loads((release / "manifest.json").read_text())
    names = sorted(a["name"] for a in manifest["assets"])
    for name in names:
        assert any(name in line and "identical" in line for line in done.stdout.splitlines()), (
            done.stdout)
    report = project.root / "release-reproduce"
    statement = report / "reproduced.intoto.json"
    subprocess.run(["minisign", "-V", "-p", str(project.key.with_suffix(".pub")), "-m",
                    str(statement)], check=True, capture_output=True)
    subprocess.run(["minisign", "-V", "-p", str(report / "reproduced.minisign.pub"), "-m",
                    str(statement)], check=True, capture_output=True)
    body = json.loads(statement.read_text())
    assert body["_type"] == "https://in-toto.io/Statement/v1"
    assert body["predicateType"] == "https://kiln.dev/reproduced/v1"
    assert sorted(s["name"] for s in body["subject"]) == names
    digests = {a["name"]: a["sha256"] for a in manifest["assets"]}
    assert all(s["digest"]["sha256"] == digests[s["name"]] for s in body["subject"])
    pred = body["predicate"]
    assert pred["tag"] == manifest["tag"] and pred["commit"] == manifest["commit"]
    assert pred["not_rebuilt"] == []
    assert set(pred["rebuilder"]["toolchains"]) == set(ENTRIES)
    assert not (report / "diffoscope").exists()
    assert str(project.root) not in statement.read_text()
    # From a clone that does not hold the release's commit: refused before anything is built.
    elsewhere = subprocess.run([sys.executable, "-m", "kiln", "reproduce", "--release",
                                str(release), "--report-dir", str(project.root / "elsewhere")],
                               cwd=REPO, env=project.env, capture_output=True, text=True,
                               check=False)
    assert elsewhere.returncode == 2, elsewhere.stdout + elsewhere.stderr
    assert f"commit {manifest['commit']}, which is not in the repository" in elsewhere.stderr
    assert not (project.root / "elsewhere").exists()


def test_an_archive_not_built_from_the_commit_is_different(project: Project) -> None:
    # A build machine that compiles something the commit does not hold, then signs the
    # result as a release of that commit: everything verifies, only a rebuild can tell.
    core = sorted((project.repo / "runtime" / "src" / "core").glob("*.c"))[0]
    original = core.read_text()
    core.write_text(original + "\nint ember_not_in_the_commit(void) { return 42; }\n")
    try:
        release = project.release("tampered", dirty=True)
    finally:
        core.write_text(original)
    report = project.root / "tampered-report"
    done = project.kiln("reproduce", "--release", str(release), "--only", "macos-arm64",
                        "--report-dir", str(report), "--parallel", "1")
    assert done.returncode == 12, done.stdout + done.stderr
    archive = f"ember-b1-bin-macos-arm64.{MATRIX.get('macos-arm64').archive}"
    assert "DIFFERENT" in done.stdout
    text = report / "diffoscope" / f"{archive}.txt"
    assert text.is_file() and text.stat().st_size > 0, done.stdout + done.stderr
    assert "BUILD-INFO.json" in text.read_text(errors="replace")
    assert str(text) in done.stdout
    assert (report / "rebuilt" / archive).is_file()
    assert not (report / "reproduced.intoto.json").exists()
    outcome = {a["name"]: a for a in
               json.loads((report / "reproduce.json").read_text())["assets"]}
    assert outcome[archive]["status"] == "DIFFERENT", outcome
    assert outcome[archive]["report"] == text.name


def test_a_toolchain_mismatch_is_refused_before_building(project: Project, release: Path,
                                                         tmp_path: Path) -> None:
    # The same release, signed again, saying macos-arm64 was built with another zig.
    other = tmp_path / "other-zig"
    shutil.copytree(release, other)
    data = json.loads((other / "manifest.json").read_text())
    for asset in data["assets"]:
        if asset["entry_id"] == "macos-arm64":
            asset["toolchain"] = [{"name": "zig", "version": "0.16.0"}]
    (other / "manifest.json").write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    # ... and its index, signed again too: kiln reproduce first verifies the release as
    # `kiln verify` does, and an index that disagrees with the manifest is refused there.
    index = json.loads((other / "index.json").read_text())
    for asset in index["releases"][0]["assets"]:
        if asset["id"] == "macos-arm64":
            asset["record"]["toolchain"] = [{"name": "zig", "version": "0.16.0"}]
    (other / "index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    subprocess.run(["minisign", "-S", "-s", str(project.key), "-m", str(other / "index.json"),
                    "-x", str(other / "index.json.minisig"), "-t",
                    index_comment(parse_index((other / "index.json").read_bytes(),
                                              source="index.json"))],
                   check=True, capture_output=True)
    names = sorted(p.name for p in other.iterdir()
                   if p.name not in ("SHA256SUMS", "SHA256SUMS.minisig"))
    (other / "SHA256SUMS").write_text(format_sums(
        {n: hashlib.sha256((other / n).read_bytes()).hexdigest() for n in names}))
    subprocess.run(["minisign", "-S", "-s", str(project.key), "-m", str(other / "SHA256SUMS"),
                    "-x", str(other / "SHA256SUMS.minisig"), "-t",
                    release_comment(ReleaseManifest.from_json(data, source="manifest.json"))],
                   check=True, capture_output=True)
    report = tmp_path / "report"
    done = project.kiln("reproduce", "--release", str(other), "--report-dir", str(report),
                        "--only", *ENTRIES)
    assert done.returncode == 5, done.stdout + done.stderr
    assert ("macos-arm64 (ember-b1-bin-macos-arm64.tar.gz): zig 0.16.0 in the release, "
            "0.17.1 here") in done.stderr
    assert "ubuntu-x64" not in done.stderr.split("hint:")[0]
    assert not report.exists()  # nothing was built, no report begun
