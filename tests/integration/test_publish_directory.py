"""``kiln publish DIR --to file://MIRROR``: layout, idempotent re-runs, and faults (an error
mid-copy, a killed process) that must leave the previous release and ``latest`` untouched."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from test_release_cli import (
    Project,
    git,
    make_artifact,
    make_key,
    make_project,
    make_release_dir,
)

from kiln.publish import load_release
from kiln.publish.directory import DirectoryPublisher
from kiln.release.index import parse_index

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("minisign") is None, reason="minisign is not installed"),
]
REPO = Path(__file__).resolve().parents[2]


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != ".kiln-publish.lock"}


def next_release(project: Project, tmp: Path) -> Path:
    """Another commit and its release (b<N+1>)."""
    (project.repo / "runtime" / "src" / "next.c").write_text("/* next */\n")
    git(project.repo, project.env, "add", "-A")
    git(project.repo, project.env, "commit", "-q", "-m", "next (#99)")
    art = tmp / "art2"
    make_artifact(art, "ubuntu-x64", number=project.number, commit=project.head)
    out = tmp / "release2"
    code, _, _ = project.kiln(["release", "--artifacts", str(art), "--out", str(out),
                               "--allow-missing", "*"])
    assert code == 0
    return out


def test_publish_layout_latest_and_rerun(tmp_path: Path) -> None:
    project, release = make_release_dir(tmp_path)
    mirror = tmp_path / "mirror"
    tag = f"b{project.number}"
    code, out, _ = project.kiln(["publish", str(release), "--to", f"file://{mirror}"])
    assert code == 0 and f"published {tag}" in out
    assert (mirror / "latest").read_text() == f"{tag}\n"
    assert tree(mirror / tag) == tree(release)
    subprocess.run(["sha256sum", "--strict", "-c", "SHA256SUMS"], cwd=mirror / tag,
                   check=True, capture_output=True)
    first = parse_index((mirror / "index.json").read_bytes(), source="index.json")
    assert (first.kind, first.version, [r.tag for r in first.releases]) == ("mirror", 1, [tag])
    subprocess.run(["minisign", "-V", "-q", "-p", str(release / "minisign.pub"), "-m",
                    str(mirror / "index.json")], check=True, capture_output=True)
    # The mirror's page (index.html, page.css, page.js) is written beside its index.
    assert {"index.html", "page.css", "page.js"} <= set(tree(mirror))
    # (the index and the page, which shows the index's version, are rewritten; nothing else)
    before = {k: v for k, v in tree(mirror).items() if not k.startswith("index.")}
    code, out, _ = project.kiln(["publish", str(release), "--to", f"file://{mirror}"])
    assert code == 0 and "already published" in out
    assert {k: v for k, v in tree(mirror).items() if not k.startswith("index.")} == before
    # Publishing again re-signs the mirror's index: a higher version, the same releases.
    again = parse_index((mirror / "index.json").read_bytes(), source="index.json")
    assert again.version == 2 and again.releases == first.releases


def test_a_mirror_without_a_key_keeps_no_index_and_says_so(tmp_path: Path) -> None:
    project, release = make_release_dir(tmp_path)
    mirror = tmp_path / "mirror"
    env = {k: v for k, v in project.env.items() if k != "KILN_SIGNING_KEY"}
    done = subprocess.run([sys.executable, "-m", "kiln", "publish", str(release), "--to",
                           f"file://{mirror}"], cwd=project.repo, env=env,
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "index.json is not written" in done.stdout + done.stderr
    assert not (mirror / "index.json").exists()


def test_the_mirror_index_must_be_signed_with_the_release_key(tmp_path: Path) -> None:
    project, release = make_release_dir(tmp_path)
    other = make_key(tmp_path / "other-key")
    code, _, err = project.kiln(["publish", str(release), "--to",
                                 f"file://{tmp_path / 'mirror'}", "--signing-key", str(other)])
    assert code == 10, err


def test_same_tag_with_other_content_is_refused(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    project, release = make_release_dir(tmp_path)
    mirror = tmp_path / "mirror"
    assert project.kiln(["publish", str(release), "--to", f"file://{mirror}"])[0] == 0
    tag = f"b{project.number}"
    victim = next((mirror / tag).glob("*.zip"))
    victim.write_bytes(b"replaced")
    before = tree(mirror)
    code, _, err = project.kiln(["publish", str(release), "--to", f"file://{mirror}"], capsys)
    assert code == 10 and "already holds a different release" in err
    assert tree(mirror) == before


def test_an_older_release_does_not_move_latest(tmp_path: Path) -> None:
    project, first = make_release_dir(tmp_path)
    old_tag = f"b{project.number}"
    second = next_release(project, tmp_path)
    mirror = tmp_path / "mirror"
    assert project.kiln(["publish", str(second), "--to", f"file://{mirror}"])[0] == 0
    new_tag = (mirror / "latest").read_text().strip()
    assert new_tag != old_tag
    assert project.kiln(["publish", str(first), "--to", f"file://{mirror}"])[0] == 0
    assert (mirror / "latest").read_text().strip() == new_tag
    assert (mirror / old_tag / "manifest.json").is_file()


def test_a_tampered_release_directory_is_not_published(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    project, release = make_release_dir(tmp_path)
    notes = release / "RELEASE_NOTES.md"
    notes.write_text(notes.read_text() + "\nextra\n")
    mirror = tmp_path / "mirror"
    code, _, err = project.kiln(["publish", str(release), "--to", f"file://{mirror}"], capsys)
    assert code == 12 and "RELEASE_NOTES.md: sha256 differs" in err
    assert not mirror.exists()
    # A re-signed SHA256SUMS from another key fails the signature check.
    (release / "RELEASE_NOTES.md").write_text(notes.read_text().replace("\nextra\n", ""))
    sig = release / "SHA256SUMS.minisig"
    lines = sig.read_text().splitlines()
    lines[1] = lines[1][:-4] + ("AAAA" if not lines[1].endswith("AAAA") else "BBBB")
    sig.write_text("\n".join(lines) + "\n")
    code, _, err = project.kiln(["publish", str(release), "--to", f"file://{mirror}"], capsys)
    assert code == 12 and "does not verify" in err


def test_error_mid_copy_leaves_the_previous_release(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    project, first = make_release_dir(tmp_path)
    mirror = tmp_path / "mirror"
    assert project.kiln(["publish", str(first), "--to", f"file://{mirror}"])[0] == 0
    before = tree(mirror)
    second = next_release(project, tmp_path)
    release = load_release(second, env=project.env)
    real_copy = DirectoryPublisher._copy
    copied: list[str] = []

    def failing_copy(self: DirectoryPublisher, rel: object, name: str, stage: Path) -> None:
        if len(copied) == 3:
            raise OSError(28, "No space left on device")
        copied.append(name)
        real_copy(self, rel, name, stage)  # type: ignore[arg-type]

    monkeypatch.setattr(DirectoryPublisher, "_copy", failing_copy)
    with pytest.raises(OSError, match="No space left"):
        DirectoryPublisher(mirror).publish(release)
    assert tree(mirror) == before
    assert not [p for p in mirror.iterdir() if p.name.startswith(f".{release.tag}")]
    monkeypatch.setattr(DirectoryPublisher, "_copy", real_copy)
    DirectoryPublisher(mirror).publish(release)
    assert (mirror / "latest").read_text() == f"{release.tag}\n"
    assert tree(mirror / release.tag) == tree(second)


KILL_AFTER_TWO = """
import os, signal, sys
from pathlib import Path
from kiln.publish import load_release
from kiln.publish.directory import DirectoryPublisher
real = DirectoryPublisher._copy
done = []
def copy(self, rel, name, stage):
    if len(done) == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    done.append(name)
    real(self, rel, name, stage)
DirectoryPublisher._copy = copy
release = load_release(Path(sys.argv[1]), env=dict(os.environ))
DirectoryPublisher(Path(sys.argv[2])).publish(release)
"""


def test_killed_publish_leaves_no_trace_and_resumes(tmp_path: Path) -> None:
    project, first = make_release_dir(tmp_path)
    mirror = tmp_path / "mirror"
    assert project.kiln(["publish", str(first), "--to", f"file://{mirror}"])[0] == 0
    before = tree(mirror)
    second = next_release(project, tmp_path)
    env = {**project.env, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", KILL_AFTER_TWO, str(second), str(mirror)],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    after = tree(mirror)
    # Nothing visible changed: only the hidden staging folder of the killed run is new.
    assert {k: v for k, v in after.items() if not k.startswith(".")} == before
    tag = json.loads((second / "manifest.json").read_text())["tag"]
    assert not (mirror / tag).exists()
    assert (mirror / "latest").read_text() == before["latest"].decode()
    assert [p.name for p in mirror.glob(f".{tag}.partial-*")]  # the killed run's staging
    code, out, _ = project.kiln(["publish", str(second), "--to", f"file://{mirror}"])
    assert code == 0, out
    assert "interrupted publish" in out
    assert not list(mirror.glob(".*.partial-*"))
    assert (mirror / "latest").read_text() == f"{tag}\n"
    assert tree(mirror / tag) == tree(second)
    assert os.path.isdir(mirror / before["latest"].decode().strip())


def test_a_damaged_bench_report_on_the_mirror_stops_the_page_and_index(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    art = project.artifacts(["ubuntu-x64"])
    bench = tmp_path / "bench.json"
    bench.write_text('{"date": "d", "cpu": "c", "rows": [{"model": "Q4_1", "threads": 1, '
                     '"pp_ratio": 1.2, "tg_ratio": 0.9}]}')
    release = tmp_path / "release"
    code, _, _ = project.kiln(["release", "--artifacts", str(art), "--out", str(release),
                               "--allow-missing", "*", "--bench", str(bench)])
    assert code == 0
    mirror = tmp_path / "mirror"
    assert project.kiln(["publish", str(release), "--to", f"file://{mirror}"])[0] == 0
    assert "1.20x" in (mirror / "index.html").read_text()
    tag = f"b{project.number}"
    (mirror / tag / "bench-cpu.json").write_text('{"rows": "<script>"}')
    before = {k: v for k, v in tree(mirror).items() if not k.startswith(f"{tag}/")}
    second = next_release(project, tmp_path)
    code, _, _ = project.kiln(["publish", str(second), "--to", f"file://{mirror}"])
    assert code == 10
    # the mirror's index, its signature and its page are as they were
    after = {k: v for k, v in tree(mirror).items() if k in before}
    assert after == before


def test_a_link_planted_at_the_mirror_page_is_replaced_not_followed(tmp_path: Path) -> None:
    project, release = make_release_dir(tmp_path)
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    outside = tmp_path / "outside.html"
    outside.write_text("not the mirror's\n")
    (mirror / "index.html").symlink_to(outside)
    (mirror / "page.js").symlink_to(release / "manifest.json")
    code, _, _ = project.kiln(["publish", str(release), "--to", f"file://{mirror}"])
    assert code == 0
    assert outside.read_text() == "not the mirror's\n"
    assert not (mirror / "index.html").is_symlink() and not (mirror / "page.js").is_symlink()
    assert "releases" in (mirror / "index.html").read_text()
    subprocess.run(["sha256sum", "--strict", "-c", "SHA256SUMS"], cwd=release, check=True,
                   capture_output=True)
