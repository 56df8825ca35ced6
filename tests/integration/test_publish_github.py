"""``kiln publish DIR --to github://OWNER/REPO`` against the stand-in GitHub API on 127.0.0.1,
with faults injected: a connection dropped mid-upload, a 500, a lost answer that turns the
retry into ``422 already_exists``, a killed process. After any single fault (and a re-run
where the first run gave up) the published release must be complete and correct, no asset
duplicated, and nothing partial ever visible as published."""

from __future__ import annotations

import logging
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from github_standin import StandIn
from test_release_cli import Project, make_release_dir

from kiln.errors import ConfigError, PublishError
from kiln.files import sha256_file
from kiln.publish import LocalRelease, load_release
from kiln.publish.github import GitHubPublisher, Retry

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("minisign") is None, reason="minisign is not installed"),
]
REPO = Path(__file__).resolve().parents[2]
OWNER, NAME = "ember-ml", "ember"
TOKEN = "ghp_standinTOKEN0123456789abcdefSECRET"
FAST = Retry(attempts=4, backoff=0.01, max_backoff=0.05, timeout=10, upload_timeout=20)
ONCE = Retry(attempts=1, backoff=0.01, timeout=10, upload_timeout=20)
UPLOAD = rf"/repos/{OWNER}/{NAME}/releases/\d+/assets"
SIZE = 200_000  # bytes of payload per archive: big enough to cut an upload in the middle


@pytest.fixture
def built(tmp_path: Path) -> tuple[Project, LocalRelease]:
    project, out = make_release_dir(tmp_path, size=SIZE)
    return project, load_release(out, env=project.env)


@pytest.fixture
def standin(built: tuple[Project, LocalRelease]) -> Iterator[StandIn]:
    project, _ = built
    s = StandIn(OWNER, NAME, TOKEN)
    s.commits.add(project.head)
    with s.running():
        yield s


def publisher(s: StandIn, retry: Retry = FAST, logs: list[str] | None = None
              ) -> GitHubPublisher:
    sink = logs if logs is not None else []
    return GitHubPublisher(OWNER, NAME, token=TOKEN, api_url=s.api_url, retry=retry,
                           log=sink.append)


def assert_published_correctly(s: StandIn, release: LocalRelease) -> None:
    """One release of the tag, published, holding exactly the release's files; and every
    moment it was visible as published, it was complete."""
    rels = s.releases_of(release.tag)
    assert len(rels) == 1, [(r.id, r.draft) for r in rels]
    rel = rels[0]
    assert not rel.draft and rel.body == release.notes
    want = {name: ("uploaded", release.size(name), sha)
            for name, sha in release.files.items()}
    assert s.snapshot(rel) == want
    assert len(rel.assets) == len(want)  # no duplicates
    assert s.published_snapshots == [want]
    assert s.changes_while_published == []
    kind, sha = s.refs[release.tag]
    assert kind == "tag" and s.tag_objects[sha]["object"]["sha"] == release.manifest.commit


def first_archive(release: LocalRelease) -> str:
    return sorted(n for n in release.files if n.endswith((".tar.gz", ".zip")))[0]


# --------------------------------------------------------------------------------------------


def test_publish_through_the_cli(built: tuple[Project, LocalRelease], standin: StandIn,
                                 capsys: pytest.CaptureFixture[str],
                                 caplog: pytest.LogCaptureFixture) -> None:
    project, release = built
    env = {**project.env, "GITHUB_TOKEN": TOKEN, "GITHUB_API_URL": standin.api_url}
    caplog.set_level(logging.DEBUG)
    code, out, err = project.kiln(["-v", "publish", str(release.directory), "--to",
                                   f"github://{OWNER}/{NAME}"], capsys, env=env)
    assert code == 0, err
    assert f"published {release.tag}" in out
    assert_published_correctly(standin, release)
    # A re-run finds it published and complete, and changes nothing.
    count = len(standin.requests)
    code, out, err = project.kiln(["publish", str(release.directory), "--to",
                                   f"github://{OWNER}/{NAME}"], capsys, env=env)
    assert code == 0 and "already published" in out
    assert all(method == "GET" for method, _, _ in standin.requests[count:])
    assert_published_correctly(standin, release)
    everything = out + err + caplog.text + "".join(r.getMessage() for r in caplog.records)
    assert TOKEN not in everything
    assert all(a in ("", f"Bearer {TOKEN}") for a in standin.auth_seen)


def test_drafts_are_found_across_pages_and_cleaned_up(built: tuple[Project, LocalRelease],
                                                      standin: StandIn) -> None:
    _, release = built
    standin.max_per_page = 2
    for n in range(7):
        standin.add_release(f"b{n + 1000}")
    draft = standin.add_release(release.tag, draft=True)
    duplicate = standin.add_release(release.tag, draft=True)
    for n in range(3):
        standin.add_release(f"b{n + 100}")
    # A broken copy of one asset and a stray file, as an earlier failed tool would leave.
    from github_standin import Asset

    name = first_archive(release)
    for aid, (asset_name, state, data) in enumerate([(name, "starter", b"partial"),
                                                     ("junk.txt", "uploaded", b"junk")]):
        draft.assets[aid + 1] = Asset(id=aid + 1, release_id=draft.id, name=asset_name,
                                      label="", content_type="text/plain", state=state,
                                      data=data)
    logs: list[str] = []
    result = publisher(standin, logs=logs).publish(release)
    assert not result.already_published
    assert duplicate.id not in standin.releases
    assert any("resuming draft" in line for line in logs)
    assert any("broken copy" in line for line in logs)
    assert_published_correctly(standin, release)
    assert standin.releases_of(release.tag)[0].id == draft.id
    assert any("page=4" in path for method, path, _ in standin.requests if method == "GET")


FAULTS = {
    "drop mid-upload": lambda s, r: s.drop_upload(first_archive(r), 50_000),
    "500 on upload": lambda s, r: s.fail("POST", UPLOAD, 500),
    "lost upload answer, 422 on retry": lambda s, r: s.lose_response("POST", UPLOAD),
    "500 listing releases": lambda s, r: s.fail("GET", rf"/repos/{OWNER}/{NAME}/releases",
                                                502),
    "lost create answer": lambda s, r: s.lose_response("POST",
                                                       rf"/repos/{OWNER}/{NAME}/releases"),
    "500 on publish": lambda s, r: s.fail("PATCH", rf"/repos/{OWNER}/{NAME}/releases/\d+",
                                          500),
    "lost publish answer": lambda s, r: s.lose_response(
        "PATCH", rf"/repos/{OWNER}/{NAME}/releases/\d+"),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_single_fault_is_recovered_in_the_same_run(built: tuple[Project, LocalRelease],
                                                   standin: StandIn, fault: str) -> None:
    _, release = built
    FAULTS[fault](standin, release)
    publisher(standin).publish(release)
    assert standin.pending_faults == []
    assert_published_correctly(standin, release)
    assert any(status in (0, 500, 502) for _, _, status in standin.requests)


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_single_fault_then_rerun(built: tuple[Project, LocalRelease], standin: StandIn,
                                 fault: str) -> None:
    """With no retries the first run stops at the fault; nothing is published until the
    re-run finishes the job."""
    _, release = built
    FAULTS[fault](standin, release)
    try:
        publisher(standin, ONCE).publish(release)
    except PublishError:
        assert all(r.draft for r in standin.releases_of(release.tag))
        assert standin.published_snapshots == []
    else:
        # Only a lost answer to the publishing PATCH itself ends in success: the release was
        # published, and the read-back shows it complete.
        assert fault == "lost publish answer"
    assert standin.pending_faults == []
    publisher(standin).publish(release)
    assert_published_correctly(standin, release)


KILL = """
import sys
from kiln.cli import main
sys.exit(main(["publish", sys.argv[1], "--to", sys.argv[2]]))
"""


def test_killed_mid_upload_then_rerun(built: tuple[Project, LocalRelease],
                                      standin: StandIn) -> None:
    project, release = built
    name = first_archive(release)
    standin.hang_upload(name, 60_000)
    env = {**project.env, "GITHUB_TOKEN": TOKEN, "GITHUB_API_URL": standin.api_url,
           "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", KILL, str(release.directory),
                             f"github://{OWNER}/{NAME}"], env=env, cwd=project.repo,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert standin.hanging.wait(60), "the upload never started"
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        standin.release_hang.set()
    out, err = proc.communicate()
    assert TOKEN.encode() not in out + err
    deadline = time.monotonic() + 10
    rel = standin.releases_of(release.tag)[0]
    while time.monotonic() < deadline and not any(a.name == name for a in rel.assets.values()):
        time.sleep(0.05)
    left = {a.name: a.state for a in rel.assets.values()}
    assert left.get(name) == "starter" and rel.draft
    publisher(standin).publish(release)
    assert_published_correctly(standin, release)


def test_without_server_digests_the_assets_are_downloaded_and_hashed(
        built: tuple[Project, LocalRelease], standin: StandIn) -> None:
    _, release = built
    standin.send_digest = False
    publisher(standin).publish(release)
    standin.send_digest = True
    assert_published_correctly(standin, release)
    downloads = [p for m, p, s in standin.requests if p.startswith("/download/")]
    assert len(downloads) >= len(release.files)
    # The storage host never sees the token (the redirect changes host:port).
    assert all(a in ("", f"Bearer {TOKEN}") for a in standin.auth_seen)


def test_a_published_release_that_differs_is_left_alone(
        built: tuple[Project, LocalRelease], standin: StandIn) -> None:
    _, release = built
    publisher(standin).publish(release)
    rel = standin.releases_of(release.tag)[0]
    asset = next(a for a in rel.assets.values() if a.name == first_archive(release))
    asset.data = b"tampered"
    with pytest.raises(PublishError, match="already published and differs") as info:
        publisher(standin).publish(release)
    assert "never changes a published release" in (info.value.hint or "")
    assert standin.changes_while_published == []


def test_a_tag_on_another_commit_is_refused(built: tuple[Project, LocalRelease],
                                            standin: StandIn) -> None:
    _, release = built
    standin.refs[release.tag] = ("commit", "f" * 40)
    with pytest.raises(PublishError, match="points at ffffffffffff"):
        publisher(standin).publish(release)
    assert standin.releases_of(release.tag) == []


def test_an_existing_annotated_tag_is_used(built: tuple[Project, LocalRelease],
                                           standin: StandIn) -> None:
    _, release = built
    standin.tag_objects["1" * 40] = {"sha": "1" * 40, "tag": release.tag,
                                     "object": {"sha": release.manifest.commit,
                                                "type": "commit"}}
    standin.refs[release.tag] = ("tag", "1" * 40)
    publisher(standin).publish(release)
    assert standin.refs[release.tag] == ("tag", "1" * 40)
    assert all(p != f"/repos/{OWNER}/{NAME}/git/tags" for m, p, _ in standin.requests
               if m == "POST")


def test_bad_token_says_so_without_showing_it(built: tuple[Project, LocalRelease],
                                              standin: StandIn) -> None:
    _, release = built
    bad = "ghp_wrongTOKENwrongTOKEN"
    p = GitHubPublisher(OWNER, NAME, token=bad, api_url=standin.api_url, retry=FAST)
    with pytest.raises(PublishError) as info:
        p.publish(release)
    text = info.value.render()
    assert "401" in text and "Bad credentials" in text and "GITHUB_TOKEN" in text
    assert bad not in text and bad not in repr(p)


def test_token_is_required_and_plain_http_refused(built: tuple[Project, LocalRelease],
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    project, release = built
    code, _, err = project.kiln(["publish", str(release.directory), "--to",
                                 f"github://{OWNER}/{NAME}"], capsys)
    assert code == 2 and "GITHUB_TOKEN" in err
    with pytest.raises(ConfigError, match="not https"):
        GitHubPublisher(OWNER, NAME, token=TOKEN, api_url="http://api.example.invalid")


def test_release_files_reach_github_byte_for_byte(built: tuple[Project, LocalRelease],
                                                  standin: StandIn) -> None:
    _, release = built
    publisher(standin).publish(release)
    rel = standin.releases_of(release.tag)[0]
    for a in rel.assets.values():
        assert a.data == release.path(a.name).read_bytes()
        assert sha256_file(release.path(a.name)) == release.files[a.name]


def test_a_commit_unknown_to_github_asks_to_push_it(built: tuple[Project, LocalRelease],
                                                    standin: StandIn) -> None:
    _, release = built
    standin.commits.clear()
    with pytest.raises(PublishError, match="Object does not exist") as info:
        publisher(standin).publish(release)
    assert f"git push origin {release.tag}" in (info.value.hint or "")
    assert standin.releases_of(release.tag) == []


def test_a_projects_tag_prefix_names_its_github_tag_and_release(
        built: tuple[Project, LocalRelease], standin: StandIn) -> None:
    """Another project released from the same repository (kiln.toml's release.tag_prefix):
    its bN is the tag and release llama-bN on GitHub, and ember's bN is left alone."""
    _, release = built
    standin.refs[release.tag] = ("commit", "f" * 40)  # ember's own bN, on another commit
    p = GitHubPublisher(OWNER, NAME, token=TOKEN, api_url=standin.api_url, retry=FAST,
                        tag_prefix="llama-")
    p.publish(release)
    tag = f"llama-{release.tag}"
    kind, sha = standin.refs[tag]
    assert kind == "tag" and standin.tag_objects[sha]["object"]["sha"] == release.manifest.commit
    assert standin.refs[release.tag] == ("commit", "f" * 40)
    (rel,) = standin.releases_of(tag)
    assert not rel.draft and standin.releases_of(release.tag) == []
