"""``kiln install`` / ``kiln uninstall`` for any project: the project's name comes from the
release's signed index (``project``) and names the default prefix (``~/.<project>``), the
install record (``.<project>-install.json``) and the messages; ``kiln uninstall`` takes
``--prefix`` or ``--project``."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path

import pytest
from test_host import profile
from test_rank_install import TAG, keypair, make_release, sign

from kiln.cli import main
from kiln.errors import ConfigError, InstallError, IntegrityError
from kiln.install import host as host_module
from kiln.install.host import probe
from kiln.install.installer import (
    Fetcher,
    check_project,
    default_prefix,
    fetch_release,
    find_install_records,
    install,
    install_record_name,
    install_release,
    rank,
    read_install_record,
    uninstall,
)
from kiln.release.index import ReleaseIndex, release_index
from kiln.release.manifest import ReleaseManifest

HOST = "centos7-old-glibc"


def mirror_of(tmp: Path, project: str, **kw: object) -> tuple[Path, str, object]:
    secret, pub = keypair()
    root = tmp / f"mirror-{project}"
    make_release(root, secret, project=project, **kw)  # type: ignore[arg-type]
    return root, pub, secret


def release_index_of(rel: Path) -> ReleaseIndex:
    """The release index ``kiln release`` would write for the release directory ``rel``."""
    manifest = ReleaseManifest.from_json(json.loads((rel / "manifest.json").read_text()),
                                         source="m")
    return release_index(manifest, distros={"ubuntu-x64": "ubuntu"},
                         general=frozenset({"ubuntu"}), floors={}, expiry_days=36500)


def write_signed(directory: Path, index: ReleaseIndex, secret: object) -> None:
    """``index.json`` and its signature (the release key, the comment naming the index)."""
    (directory / "index.json").write_text(index.text(), encoding="utf-8")
    (directory / "index.json.minisig").write_bytes(sign(secret, index.text().encode(),
                                                        index.comment()))


def env_of(tmp: Path) -> dict[str, str]:
    return {"HOME": str(tmp / "home"), "KILN_CACHE": str(tmp / "cache")}


def install_from(root: Path, pub: str, tmp: Path, prefix: Path | None = None) -> object:
    done = install_release(str(root), pubkey=pub, prefix=prefix, host=probe(profile(HOST)),
                           env=env_of(tmp))
    assert done.result is not None
    return done.result


def run_kiln(args: list[str], env: dict[str, str],
             capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    out = io.StringIO()
    code = main(args, env=env, stdout=out)
    return code, out.getvalue(), capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# the project from the index: default prefix, record, result


def test_the_index_names_the_project_prefix_and_record(tmp_path: Path) -> None:
    root, pub, _s = mirror_of(tmp_path, "llama")
    release = fetch_release(str(root), "latest", pubkey=pub, fetcher=Fetcher())
    assert release.project == "llama"
    result = install_from(root, pub, tmp_path)
    prefix = tmp_path / "home" / ".llama"
    assert result.prefix == prefix and result.project == "llama"  # type: ignore[attr-defined]
    assert result.bin == prefix / "bin"  # type: ignore[attr-defined]
    assert result.programs == ("llama-cli",)  # type: ignore[attr-defined]
    assert [p.name for p in find_install_records(prefix)] == [".llama-install.json"]
    record = json.loads((prefix / ".llama-install.json").read_text(encoding="utf-8"))
    assert record["tag"] == TAG and record["installed_by"] == "kiln install"
    assert "bin/llama-cli" in record["files"] and ".llama-install.json" not in record["files"]
    assert not (tmp_path / "home" / ".ember").exists()
    # ember's record keeps its name (install.sh writes the same one)
    eroot, epub, _e = mirror_of(tmp_path, "ember")
    install_from(eroot, epub, tmp_path)
    assert (tmp_path / "home" / ".ember" / ".ember-install.json").is_file()
    assert read_install_record(tmp_path / "home" / ".ember", "ember") is not None


def test_default_prefix_is_the_projects(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert default_prefix({"HOME": "/h"}, "llama") == Path("/h/.llama")
    with pytest.raises(ConfigError, match="HOME is not set"):
        default_prefix({}, "llama")
    monkeypatch.setattr("sys.platform", "win32")
    assert default_prefix({"LOCALAPPDATA": "/l", "HOME": "/h"}, "llama") == Path("/l/llama")


@pytest.mark.parametrize("name", ["", ".", "..", ".llama", "../x", "a/b", "a\\b", "-x", "_x",
                                  "a b", "x\x00", "é"])
def test_unsafe_project_names_are_refused(name: str) -> None:
    with pytest.raises(ConfigError, match="not a plain project name"):
        check_project(name)
    with pytest.raises(ConfigError):
        install_record_name(name)
    with pytest.raises(ConfigError):
        default_prefix({"HOME": "/h"}, name)


@pytest.mark.parametrize("name", ["../evil", ".evil", "a/b", "", "..", "x y"])
def test_an_unsafe_project_in_a_signed_index_is_refused(tmp_path: Path, name: str) -> None:
    root, pub, secret = mirror_of(tmp_path, "ember")
    rel = root / TAG
    # signed with the release key, its comment naming the same project
    write_signed(rel, replace(release_index_of(rel), project=name), secret)
    with pytest.raises(IntegrityError) as exc:
        install_from(root, pub, tmp_path)
    assert exc.value.exit_code == 12 and "project" in exc.value.message
    home = tmp_path / "home"
    assert not home.exists() or list(home.iterdir()) == []
    assert not (tmp_path / "evil").exists()


def test_an_index_of_another_project_than_the_manifest_is_refused(tmp_path: Path) -> None:
    root, pub, secret = mirror_of(tmp_path, "ember")
    rel = root / TAG
    write_signed(rel, replace(release_index_of(rel), project="llama"), secret)
    with pytest.raises(IntegrityError, match=r"is an index of project 'llama', but "
                                             r"manifest\.json is of project 'ember'"):
        fetch_release(str(root), "latest", pubkey=pub, fetcher=Fetcher())


def test_a_prefix_of_another_project_is_refused(tmp_path: Path) -> None:
    root, pub, _s = mirror_of(tmp_path, "llama")
    eroot, epub, _e = mirror_of(tmp_path, "ember")
    prefix = tmp_path / "shared"
    install_from(eroot, epub, tmp_path, prefix)
    before = sorted(p.name for p in prefix.iterdir())
    with pytest.raises(InstallError, match=r"holds an install of another project "
                                           r"\(\.ember-install\.json\), not of llama"):
        install_from(root, pub, tmp_path, prefix)
    assert sorted(p.name for p in prefix.iterdir()) == before


def test_records_of_other_projects_in_an_archive_are_dropped(tmp_path: Path) -> None:
    root, pub, _s = mirror_of(tmp_path, "llama",
                              extra=((".ember-install.json", b'{"tag": "b1"}'),))
    result = install_from(root, pub, tmp_path)
    prefix = result.prefix  # type: ignore[attr-defined]
    assert [p.name for p in find_install_records(prefix)] == [".llama-install.json"]
    assert uninstall(prefix)["project"] == "llama"


# --------------------------------------------------------------------------------------------
# kiln install's output


def test_kiln_install_reports_the_project_and_bin(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    root, pub, _s = mirror_of(tmp_path, "llama")
    monkeypatch.setattr(host_module, "probe", lambda _src: probe(profile(HOST)))
    env = env_of(tmp_path)
    (tmp_path / "minisign.pub").write_text(pub, encoding="utf-8")
    key = str(tmp_path / "minisign.pub")
    code, out, err = run_kiln(["install", "--from", str(root), "--pubkey", key], env, capsys)
    assert code == 0, err
    prefix = tmp_path / "home" / ".llama"
    assert f"llama {TAG}: ubuntu-x64" in out
    assert f"installed llama {TAG} (ubuntu-x64) into {prefix}" in out
    assert "  programs: llama-cli" in out
    assert f'  add to PATH: export PATH="{prefix / "bin"}:$PATH"' in out
    code, out, err = run_kiln(["install", "--from", str(root), "--pubkey", key, "--json"],
                              env, capsys)
    assert code == 0, err
    got = json.loads(out)
    assert got["bin"] == str(prefix / "bin") and got["programs"] == ["llama-cli"]
    assert got["project"] == "llama" and "cli" not in got
    assert got["replaced"] == f"{TAG} ubuntu-x64"


def test_kiln_install_help_names_no_project(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["install", "--help"], env={}, stdout=io.StringIO())
    text = capsys.readouterr().out
    assert "default: ~/.<project>" in text and "ember" not in text.lower()


# --------------------------------------------------------------------------------------------
# kiln uninstall: --prefix or --project


def test_uninstall_by_project(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root, pub, _s = mirror_of(tmp_path, "llama")
    install_from(root, pub, tmp_path)
    prefix = tmp_path / "home" / ".llama"
    env = env_of(tmp_path)
    code, _out, err = run_kiln(["uninstall", "--project", "ember"], env, capsys)
    assert code == 11 and "nothing installed by kiln" in err and ".ember-install.json" in err
    code, out, err = run_kiln(["uninstall", "--project", "llama"], env, capsys)
    assert code == 0, err
    assert f"removed llama {TAG} (ubuntu-x64) from {prefix}" in out
    assert not prefix.exists()


def test_uninstall_by_project_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root, pub, _s = mirror_of(tmp_path, "llama")
    install_from(root, pub, tmp_path)
    code, out, err = run_kiln(["uninstall", "--project", "llama", "--json"], env_of(tmp_path),
                              capsys)
    assert code == 0, err
    got = json.loads(out)
    assert got["project"] == "llama" and got["tag"] == TAG
    assert got["removed"] == str(tmp_path / "home" / ".llama")


@pytest.mark.parametrize("name", ["../home", ".llama", "a/b", ""])
def test_uninstall_refuses_an_unsafe_project(tmp_path: Path, name: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "home").mkdir()
    code, _out, err = run_kiln(["uninstall", "--project", name], env_of(tmp_path), capsys)
    assert code == 2 and "--project" in err and "not a plain project name" in err
    assert (tmp_path / "home").is_dir()


def test_uninstall_needs_prefix_or_project(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    code, _out, err = run_kiln(["uninstall"], env_of(tmp_path), capsys)
    assert code == 2 and "pass --prefix DIR" in err and "--project NAME" in err


def test_uninstall_by_prefix_finds_the_single_record(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    root, pub, _s = mirror_of(tmp_path, "llama")
    prefix = tmp_path / "opt" / "l"
    install_from(root, pub, tmp_path, prefix)
    code, out, err = run_kiln(["uninstall", "--prefix", str(prefix)], env_of(tmp_path), capsys)
    assert code == 0, err
    assert f"removed llama {TAG} (ubuntu-x64) from {prefix}" in out and not prefix.exists()


def test_uninstall_by_prefix_without_a_record_is_refused(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]
                                                         ) -> None:
    prefix = tmp_path / "usr"
    (prefix / "bin").mkdir(parents=True)
    (prefix / ".ember-install.json").mkdir()  # a directory is not a record
    code, _out, err = run_kiln(["uninstall", "--prefix", str(prefix)], env_of(tmp_path), capsys)
    assert code == 11 and "nothing installed by kiln" in err
    assert (prefix / "bin").is_dir()
    with pytest.raises(InstallError, match="nothing installed by kiln"):
        uninstall(prefix)


def test_uninstall_by_prefix_with_two_records_is_refused(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]
                                                         ) -> None:
    root, pub, _s = mirror_of(tmp_path, "llama")
    prefix = tmp_path / "p"
    install_from(root, pub, tmp_path, prefix)
    (prefix / ".ember-install.json").write_text('{"tag": "b1"}', encoding="utf-8")
    code, _out, err = run_kiln(["uninstall", "--prefix", str(prefix)], env_of(tmp_path), capsys)
    assert code == 11
    assert ("holds several install records (.ember-install.json, .llama-install.json)"
            in err) and "--project" in err
    assert prefix.is_dir() and (prefix / "bin" / "llama-cli").is_file()
    with pytest.raises(InstallError, match="several install records"):
        read_install_record(prefix)
    # --project says which: the prefix is removed, as an install of that project
    code, out, err = run_kiln(["uninstall", "--prefix", str(prefix), "--project", "llama"],
                              env_of(tmp_path), capsys)
    assert code == 0, err
    assert f"removed llama {TAG}" in out and not prefix.exists()


def test_install_keeps_the_record_format(tmp_path: Path) -> None:
    root, pub, _s = mirror_of(tmp_path, "llama")
    fetcher = Fetcher()
    release = fetch_release(str(root), "latest", pubkey=pub, fetcher=fetcher)
    choice = rank(release.manifest, probe(profile(HOST)))
    assert choice.chosen is not None
    install(release, choice.chosen, tmp_path / "x", cache=tmp_path / "c", fetcher=fetcher)
    record = read_install_record(tmp_path / "x", "llama")
    assert record is not None
    assert sorted(record) == ["asset", "date", "entry_id", "files", "host", "installed_by",
                              "schema", "sha256", "signed", "tag", "url"]


def test_a_mirror_index_of_another_project_is_refused_and_not_remembered(
        tmp_path: Path) -> None:
    """The mirror's signed index.json of another project (signed with the same key) is
    refused, and its version is not recorded as seen: otherwise it would lock the mirror's
    real index out as a rollback."""
    from datetime import UTC, datetime

    from kiln.install.installer import trust_store
    from kiln.release.index import mirror_index

    root, pub, secret = mirror_of(tmp_path, "ember")
    honest = mirror_index(None, release_index_of(root / TAG), now=datetime.now(UTC),
                          expiry_days=30)
    write_signed(root, replace(honest, project="llama", version=99), secret)
    env = env_of(tmp_path)
    with pytest.raises(IntegrityError, match=r"the mirror's index\.json is an index of "
                                             r"project 'llama', the release's of 'ember'"):
        install_release(str(root), pubkey=pub, host=probe(profile(HOST)), env=env)
    assert trust_store(env).seen(pub, "mirror", str(root)) is None
    # the mirror's own index afterwards: accepted, and remembered
    write_signed(root, honest, secret)
    assert install_release(str(root), pubkey=pub, host=probe(profile(HOST)),
                           env=env).result is not None
    assert trust_store(env).seen(pub, "mirror", str(root)) == honest.version
