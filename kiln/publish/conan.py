"""Publish a release's binaries as Conan 2 packages (``conan://REMOTE`` or ``conan://URL``).

``conan://NAME`` names a remote of the user's Conan configuration (``conan remote list``);
``conan://http(s)://HOST[:PORT]`` names a server directly (the remote is then called ``kiln``).
Credentials are Conan's own environment variables: ``CONAN_LOGIN_USERNAME_<NAME>`` and
``CONAN_PASSWORD_<NAME>`` (``_KILN`` for a URL), or the unsuffixed ``CONAN_LOGIN_USERNAME`` /
``CONAN_PASSWORD``.

Conan runs in a private, temporary ``CONAN_HOME`` holding only that remote: nothing lands in
the user's cache, no other remote (ConanCenter) is asked, and what the user's configuration
holds cannot change the packages. For each archive of the release that has a package
(``kiln.package.conan.select_packages``): unpack it, ``conan export-pkg`` the recipe
(``recipes/conanfile.py``, copied out of the repository so that Conan's generated files do not
land there) with the archive's settings. The package is named after the project (kiln.toml's
project.name, which the release's manifest must name too), and the recipe reads the unpacked
archive from the ``user.<name>:prebuilt`` configuration. Then the server's revisions of
``<name>/0.0.<N>`` are compared with the local ones:

- every package already on the server with the same package revision is kept (the package
  revision is the hash of the packaged files, which come byte for byte from the release, so the
  same release always gives the same revisions): publishing twice uploads nothing;
- the same package id with another revision, or another recipe revision of this version, is
  an error: a published version is never changed;
- the rest is uploaded with ``conan upload``, and the server's list is read back and checked.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kiln
from kiln.errors import CommandFailed, ConfigError, PublishError
from kiln.files import UNPACK_DAMAGE, safe_unpack
from kiln.matrix import Matrix, load_matrix
from kiln.package.conan import ConanPackage, conan_version, select_packages
from kiln.package.records import AssetRecord
from kiln.package.wheel import console_script
from kiln.project import load_project
from kiln.publish.base import LocalRelease, PublishResult, check_names, confined
from kiln.run import run

__all__ = ["ConanPublisher", "ConanRemote", "conan_publisher", "find_recipe"]

URL_REMOTE = "kiln"
RECIPE = Path("recipes") / "conanfile.py"
CONAN_HINT = "pip install conan==2.34.0"
# What conan may see of the caller's environment besides its credentials.
PASSED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "HTTP_PROXY", "HTTPS_PROXY",
              "NO_PROXY", "http_proxy", "https_proxy", "no_proxy", "REQUESTS_CA_BUNDLE",
              "SSL_CERT_FILE")
CREDENTIAL_PREFIXES = ("CONAN_LOGIN_USERNAME", "CONAN_PASSWORD")
TIMEOUT = 1800.0


@dataclass(frozen=True, kw_only=True)
class ConanRemote:
    name: str
    url: str
    verify_ssl: bool = True


def find_recipe(start: Path) -> Path:
    """The project root holding ``recipes/conanfile.py`` and ``matrix/``: searched upwards
    from ``start``, then kiln's own source tree."""
    here = Path(kiln.__file__).resolve().parent.parent
    for d in (start, *start.parents, here):
        if (d / RECIPE).is_file() and (d / "matrix" / "defaults.yaml").is_file():
            return d
    raise ConfigError(f"no {RECIPE} with a matrix/ beside it above {start}",
                      hint="run kiln publish from the project's checkout")


def _conan_env(env: Mapping[str, str], home: Path) -> dict[str, str]:
    out = {k: env[k] for k in PASSED_ENV if k in env}
    out.update({k: v for k, v in env.items() if k.startswith(CREDENTIAL_PREFIXES)})
    out["CONAN_HOME"] = str(home)
    out.setdefault("PATH", "/usr/bin:/bin")
    # Plain output: the publisher reads JSON and shows Conan's text only when it fails.
    out["NO_COLOR"] = "1"
    out["CONAN_NON_INTERACTIVE"] = "1"
    return out


def _unpack(archive: Path, dest: Path, *, max_bytes: int) -> Path:
    """Unpack a release archive into ``dest`` with the installer's checks
    (``kiln.files.safe_unpack``: the archive is what users install, so it is held to the same
    rules, at most its record's ``unpacked_size``); return its single top directory."""
    dest.mkdir(parents=True)
    try:
        safe_unpack(archive, dest, max_bytes=max_bytes)
    except UNPACK_DAMAGE as exc:
        raise PublishError(f"cannot unpack {archive.name}: {exc}",
                           hint="the release's archive is damaged: build the release "
                                "again") from exc
    except OSError as exc:
        raise PublishError(f"cannot unpack {archive.name} into {dest}: {exc}",
                           hint="is the disk full?") from exc
    tops = [p for p in dest.iterdir()]
    if len(tops) != 1 or not tops[0].is_dir():
        raise PublishError(f"{archive.name}: expected one top directory, found "
                           f"{sorted(p.name for p in tops)}",
                           hint="the release's archives are made by kiln build")
    return tops[0]


def _json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise PublishError(f"{what}: conan printed no JSON", hint="use conan 2.x") from exc


@dataclass(frozen=True, kw_only=True)
class _Exported:
    package: ConanPackage
    rrev: str
    package_id: str
    prev: str

    @property
    def label(self) -> str:
        p = self.package
        return f"{p.os} {p.arch} {p.backend} ({p.record.entry_id})"


class ConanPublisher:
    def __init__(self, remote: ConanRemote, *, repo: Path, matrix: Matrix, name: str,
                 env: Mapping[str, str], log: Callable[[str], None] = lambda _m: None) -> None:
        self.remote = remote
        self.repo = repo
        self.matrix = matrix
        self.name = name  # the project's, which names its Conan package
        self.env = env
        self.log = log

    def _conan(self, args: Sequence[str], cenv: Mapping[str, str], what: str,
               cwd: Path | None = None) -> str:
        program = console_script("conan", self.env, hint=CONAN_HINT)
        try:
            return run([program, *args], env=cenv, cwd=cwd, timeout=TIMEOUT,
                       what=f"conan {what}").stdout
        except CommandFailed as exc:
            raise PublishError(f"conan {what} failed: {exc.message}\n{exc.output}",
                               hint="see Conan's output above; for authentication set "
                                    f"CONAN_LOGIN_USERNAME_{self.remote.name.upper()} and "
                                    f"CONAN_PASSWORD_{self.remote.name.upper()}") from exc

    def _packages(self, release: LocalRelease) -> tuple[ConanPackage, ...]:
        pairs: list[tuple[AssetRecord, Any]] = []
        for asset in release.manifest.assets:
            try:
                entry = self.matrix.get(asset.record.entry_id)
            except KeyError as exc:
                raise PublishError(f"{asset.record.name}: entry '{asset.record.entry_id}' is "
                                   "not in this checkout's matrix",
                                   hint="publish from the checkout of the release's tag") from exc
            pairs.append((asset.record, entry))
        packages, skipped = select_packages(pairs, name=self.name)
        for reason in skipped:
            self.log(f"no Conan package: {reason}")
        if not packages:
            raise PublishError(f"release {release.tag} holds no archive that makes a Conan "
                               "package", hint="release Linux, macOS or Windows builds")
        return packages

    def _remote_revisions(self, cenv: Mapping[str, str],
                          version: str) -> dict[str, dict[str, set[str]]]:
        """rrev -> package id -> package revisions on the server (empty when none)."""
        ref = f"{self.name}/{version}#*:*#*"
        data = _json(self._conan(["list", ref, "-r", self.remote.name, "--format=json"],
                                 cenv, "list"), "conan list")
        found = data.get(self.remote.name, {}) if isinstance(data, dict) else {}
        if "error" in found:
            message = str(found["error"])
            if "not found" in message.lower():
                return {}
            raise PublishError(f"conan list on remote {self.remote.name} "
                               f"({self.remote.url}): {message}",
                               hint="check the remote's URL and that the server is running")
        out: dict[str, dict[str, set[str]]] = {}
        recipe = found.get(f"{self.name}/{version}", {})
        for rrev, rinfo in (recipe.get("revisions") or {}).items():
            pkgs = out.setdefault(rrev, {})
            for pkg_id, pinfo in (rinfo.get("packages") or {}).items():
                pkgs[pkg_id] = set((pinfo.get("revisions") or {}).keys())
        return out

    def _export(self, pkg: ConanPackage, release: LocalRelease, work: Path, recipe: Path,
                profile: Path, cenv: Mapping[str, str], version: str) -> _Exported:
        tree = _unpack(confined(release.directory, pkg.record.name),
                       confined(work / "unpacked", pkg.record.entry_id),
                       max_bytes=pkg.record.unpacked_size)
        args = ["export-pkg", str(recipe), "--name", self.name, "--version", version,
                "-pr:h", str(profile), "-pr:b", str(profile), *pkg.settings_args(),
                "-c", f"user.{self.name}:prebuilt={tree}", "--format=json"]
        data = _json(self._conan(args, cenv, "export-pkg", cwd=recipe.parent), "export-pkg")
        try:
            node = data["graph"]["nodes"]["0"]
            return _Exported(package=pkg, rrev=str(node["rrev"]),
                             package_id=str(node["package_id"]), prev=str(node["prev"]))
        except (KeyError, TypeError) as exc:
            raise PublishError("conan export-pkg: unexpected JSON (no rrev/package_id/prev)",
                               hint="use conan 2.x") from exc

    def publish(self, release: LocalRelease) -> PublishResult:
        check_names(release)
        if release.manifest.project != self.name:
            raise PublishError(f"release {release.tag} is of project "
                               f"{release.manifest.project!r}, and {self.repo / RECIPE} "
                               f"packages {self.name!r}",
                               hint="publish from the checkout of the release's project")
        packages = self._packages(release)
        version = conan_version(release.manifest.build_number)
        ref = f"{self.name}/{version}"
        with tempfile.TemporaryDirectory(prefix="kiln-conan-") as tmp:
            work = Path(tmp)
            home = work / "home"
            home.mkdir()
            cenv = _conan_env(self.env, home)
            recipe = work / "recipe" / "conanfile.py"
            recipe.parent.mkdir()
            shutil.copyfile(self.repo / RECIPE, recipe)
            profile = work / "profile"
            # export-pkg needs a build profile too; every setting that matters is on the
            # command line, and the recipe has no compiler setting.
            profile.write_text("[settings]\nos=Linux\narch=x86_64\nbuild_type=Release\n")
            self._conan(["remote", "remove", "*"], cenv, "remote remove")
            add = ["remote", "add", self.remote.name, self.remote.url]
            if not self.remote.verify_ssl:
                add.append("--insecure")
            self._conan(add, cenv, "remote add")

            before = self._remote_revisions(cenv, version)
            exported = [self._export(p, release, work, recipe, profile, cenv, version)
                        for p in packages]
            rrevs = {e.rrev for e in exported}
            if len(rrevs) != 1:
                raise PublishError(f"the recipe gave {len(rrevs)} recipe revisions in one run")
            rrev = rrevs.pop()
            if before and rrev not in before:
                raise PublishError(
                    f"{ref} is on {self.remote.name} with another recipe ({', '.join(before)}) "
                    f"than this checkout's {RECIPE} ({rrev})",
                    hint="a published version is never changed: publish from the checkout of "
                         "the release's tag, or release under a new tag")
            on_server = before.get(rrev, {})
            kept, todo = [], []
            for e in exported:
                prevs = on_server.get(e.package_id, set())
                if e.prev in prevs:
                    kept.append(e)
                elif prevs:
                    raise PublishError(
                        f"{ref}:{e.package_id} ({e.label}) is on {self.remote.name} with "
                        f"other contents (package revisions {', '.join(sorted(prevs))}, "
                        f"this release's is {e.prev})",
                        hint="a published package is never changed; release under a new tag")
                else:
                    todo.append(e)
            for e in kept:
                self.log(f"{ref} {e.label} is already on {self.remote.name}")
            if todo:
                self._conan(["upload", f"{ref}#{rrev}", "-r", self.remote.name, "-c",
                             "--format=json"], cenv, "upload")
                for e in todo:
                    self.log(f"uploaded {ref} {e.label} to {self.remote.name}")
            after = self._remote_revisions(cenv, version).get(rrev, {})
            missing = [e.label for e in exported if e.prev not in after.get(e.package_id, ())]
            if missing:
                raise PublishError(f"after the upload, {self.remote.name} lacks {ref} for "
                                   f"{', '.join(missing)}",
                                   hint="check the server's logs and publish again")
        return PublishResult(destination=f"conan://{self.remote.name}", url=self.remote.url,
                             uploaded=tuple(f"{ref}:{e.package_id}" for e in todo),
                             kept=tuple(f"{ref}:{e.package_id}" for e in kept),
                             already_published=not todo)


def _user_remote(name: str, env: Mapping[str, str]) -> ConanRemote:
    """Look ``name`` up in the user's Conan configuration."""
    program = console_script("conan", env, hint=CONAN_HINT)
    cenv = {k: v for k, v in env.items() if k in (*PASSED_ENV, "CONAN_HOME")}
    try:
        text = run([program, "remote", "list", "--format=json"], env=cenv,
                   what="conan remote list").stdout
    except CommandFailed as exc:
        raise ConfigError(f"conan://{name}: cannot read Conan's remotes: {exc.message}",
                          hint="check `conan remote list`") from exc
    remotes = _json(text, "conan remote list")
    for r in remotes if isinstance(remotes, list) else []:
        if isinstance(r, dict) and r.get("name") == name:
            return ConanRemote(name=name, url=str(r["url"]),
                               verify_ssl=bool(r.get("verify_ssl", True)))
    known = ", ".join(str(r.get("name")) for r in remotes if isinstance(r, dict)) or "none"
    raise ConfigError(f"conan://{name}: Conan has no remote named '{name}' (known: {known})",
                      hint=f"add it with `conan remote add {name} URL`, or pass "
                           "conan://https://HOST/... to name the server directly")


def conan_publisher(target: str, *, env: Mapping[str, str],
                    log: Callable[[str], None]) -> ConanPublisher:
    """Parse ``NAME`` or ``http(s)://HOST[:PORT][/PATH]`` (what follows ``conan://``)."""
    if target.startswith(("http://", "https://")):
        parts = urlsplit(target)
        if not parts.hostname:
            raise ConfigError(f"conan://{target}: no host in the URL")
        remote = ConanRemote(name=URL_REMOTE, url=target.rstrip("/"))
    else:
        name = target.strip("/")
        if not name or "/" in name:
            raise ConfigError(f"conan://{target}: expected conan://REMOTE (a name from "
                              "`conan remote list`) or conan://https://HOST/...")
        remote = _user_remote(name, env)
    repo = find_recipe(Path(os.getcwd()))
    project = load_project(repo)
    return ConanPublisher(remote, repo=repo, matrix=load_matrix(project.matrix_dir),
                          name=project.name, env=env, log=log)
