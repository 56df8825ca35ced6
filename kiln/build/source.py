"""Where a project's source comes from: a directory of the checkout, or a pinned sdist.

A directory source is hashed from the files git does not ignore (``source_tree_hash``). An
sdist (``[project.sdist]`` in ``kiln.toml``) is fetched once with ``pip download`` (the package
index the user's pip is configured for), refused unless its sha256 is the pinned one, unpacked
with the same checks as a hostile release archive (``safe_unpack``) into
``<cache>/sources/<sha256>/`` under a lock, and never touched again; its key in the build
cache is the sdist's sha256 and the subdirectory.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from kiln.build.cache import source_tree_hash
from kiln.errors import CommandFailed, ConfigError, IntegrityError
from kiln.files import UNPACK_DAMAGE, install_once, safe_unpack, sha256_file
from kiln.project import Project, SdistSource
from kiln.run import run

__all__ = ["MAX_SDIST_BYTES", "Source", "resolve_source"]

# What an unpacked sdist may hold at most (llama-cpp-python 0.3.36: about 330 MB).
MAX_SDIST_BYTES = 2 << 30


@dataclass(frozen=True, kw_only=True)
class Source:
    """The directory with the top CMakeLists.txt and what identifies its content."""

    path: Path
    digest: str


def _fetch(sdist: SdistSource, dest: Path, *, python: str, env: Mapping[str, str]) -> str:
    with tempfile.TemporaryDirectory(prefix="kiln-sdist-") as tmp:
        try:
            run([python, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                 "--no-input", "--disable-pip-version-check", "--dest", tmp, sdist.requirement],
                env=env, what=f"pip download {sdist.requirement}")
        except CommandFailed as exc:
            raise CommandFailed(exc.message, output=exc.output,
                                hint="kiln fetches the project's sdist from the package index "
                                     "pip is configured for; check that it is reachable") from exc
        files = [p for p in Path(tmp).iterdir() if p.name.endswith(".tar.gz")]
        if len(files) != 1:
            raise IntegrityError(f"pip download {sdist.requirement} gave "
                                 f"{sorted(p.name for p in Path(tmp).iterdir())}, not one "
                                 ".tar.gz sdist")
        got = sha256_file(files[0])
        if got != sdist.sha256:
            raise IntegrityError(f"{files[0].name}: sha256 {got}, but kiln.toml pins "
                                 f"{sdist.sha256}",
                                 hint="the index served other bytes: do not build them; if "
                                      "the pin is what is wrong, fix it in kiln.toml")
        try:
            safe_unpack(files[0], dest, max_bytes=MAX_SDIST_BYTES)
        except UNPACK_DAMAGE as exc:
            raise IntegrityError(f"{files[0].name} cannot be unpacked: {exc}") from exc
    return f"{sdist.requirement} sha256 {sdist.sha256}\n"


def resolve_source(project: Project, *, cache_root: Path, python: str,
                   env: Mapping[str, str], run_env: Mapping[str, str]) -> Source:
    """The project's source directory, fetched and unpacked first for an sdist. ``env`` is the
    caller's environment (pip's settings), ``run_env`` the reduced one of git."""
    if project.source_dir is not None:
        path = project.root / project.source_dir
        if not (path / "CMakeLists.txt").is_file():
            raise ConfigError(f"{path}/CMakeLists.txt not found",
                              hint="kiln.toml's project.source names the directory of the "
                                   "top CMakeLists.txt")
        return Source(path=path,
                      digest=source_tree_hash(project.root, project.source_dir, run_env))
    sdist = project.sdist
    assert sdist is not None
    dest = cache_root / "sources" / sdist.sha256
    install_once(dest, lock=cache_root / "locks" / f"source-{sdist.sha256[:16]}.lock",
                 fill=lambda tmp: _fetch(sdist, tmp, python=python, env=env))
    tops = [p for p in dest.iterdir() if p.is_dir()]
    if len(tops) != 1:
        shutil.rmtree(dest, ignore_errors=True)
        raise IntegrityError(f"{sdist.requirement}: the sdist has {len(tops)} top directories, "
                             "not one")
    path = tops[0] / sdist.subdir
    if not (path / "CMakeLists.txt").is_file():
        raise ConfigError(f"{sdist.requirement}: no CMakeLists.txt in {sdist.subdir}/",
                          hint="kiln.toml's project.sdist.subdir names the CMake project "
                               "inside the sdist")
    digest = hashlib.sha256(f"sdist\0{sdist.sha256}\0{sdist.subdir}".encode()).hexdigest()
    return Source(path=path, digest=digest)
