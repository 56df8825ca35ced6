"""An old glibc to run Linux builds against: Debian 11 "bullseye"'s ``libc6`` (glibc 2.31),
unpacked into ``<kiln cache>/oldroot/bullseye-<arch>``, once (``kiln.files.install_once``),
however many tests ask at the same time.

The matrix promises glibc 2.17 (ubuntu-*) and 2.28 (openeuler-*); no mirror reachable from
the test machines serves a C library that old as a package, so bullseye's is the oldest one
a test can run against. What is downloaded is checked along Debian's own chain: the
``InRelease`` file (its OpenPGP signature checked with ``gpgv`` against the Debian archive
keyring when both are installed), the ``Packages.xz`` sha256 it lists, and the ``.deb``
sha256 that ``Packages`` lists. Absolute symbolic links in the package (``/lib64/ld-linux-
x86-64.so.2`` -> ``/lib/x86_64-linux-gnu/ld-2.31.so``) are made relative, so the root works
from wherever it lies, for the loader run by hand and for ``qemu-aarch64 -L``.
"""

from __future__ import annotations

import hashlib
import lzma
import os
import re
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from kiln.files import install_once

MIRROR = "http://deb.debian.org/debian"
SUITE = "bullseye"
GLIBC = "2.31"
ARCHES = {"x86_64": "amd64", "aarch64": "arm64"}
KEYRINGS = ("/usr/share/keyrings/debian-archive-keyring.gpg",)


class Unreachable(Exception):
    """The mirror cannot be reached: tests skip, naming why."""


def cache_root() -> Path:
    """kiln's cache directory, by kiln's own rule (``$KILN_CACHE``, ``$XDG_CACHE_HOME/kiln``,
    ``~/.cache/kiln``)."""
    from kiln.build.cache import default_cache_dir

    return default_cache_dir(os.environ)


def _get(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            data: bytes = response.read()
            return data
    except (urllib.error.URLError, TimeoutError, OSError) as e:
        raise Unreachable(f"{url}: {e}") from e


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _release_sha256(release: str, name: str) -> str:
    """The sha256 ``InRelease`` lists for ``name`` (e.g. main/binary-amd64/Packages.xz)."""
    section = release.split("SHA256:", 1)[1]
    for line in section.splitlines()[1:]:
        if not line.startswith(" "):
            break
        digest, _, path = line.split()
        if path == name:
            return digest
    raise AssertionError(f"InRelease lists no {name}")


def _check_signature(inrelease: bytes, work: Path) -> str:
    """'signed' when gpgv accepts InRelease, 'unchecked' when gpgv or the keyring is missing;
    a bad signature fails."""
    gpgv = shutil.which("gpgv")
    keyrings = [k for k in KEYRINGS if Path(k).is_file()]
    if gpgv is None or not keyrings:
        return "unchecked"
    path = work / "InRelease"
    path.write_bytes(inrelease)
    argv = [gpgv, *(a for k in keyrings for a in ("--keyring", k)), str(path)]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"InRelease signature does not verify:\n{done.stderr}"
    return "signed"


def _package(packages: str, name: str) -> tuple[str, str, str]:
    """(Filename, SHA256, Version) of package ``name`` in a Packages index."""
    for stanza in packages.split("\n\n"):
        if re.search(rf"^Package: {re.escape(name)}$", stanza, re.M):
            fields = dict(re.findall(r"^(Filename|SHA256|Version): (.+)$", stanza, re.M))
            return fields["Filename"], fields["SHA256"], fields["Version"]
    raise AssertionError(f"no {name} in the Packages index")


def _relative_links(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_symlink():
            target = os.readlink(path)
            if target.startswith("/"):
                path.unlink()
                path.symlink_to(os.path.relpath(root / target.lstrip("/"), path.parent))


def _fill(arch: str) -> Callable[[Path], str]:
    def fill(dest: Path) -> str:
        deb_arch = ARCHES[arch]
        inrelease = _get(f"{MIRROR}/dists/{SUITE}/InRelease")
        trust = _check_signature(inrelease, dest)
        index = f"main/binary-{deb_arch}/Packages.xz"
        packed = _get(f"{MIRROR}/dists/{SUITE}/{index}")
        want = _release_sha256(inrelease.decode("utf-8"), index)
        assert _sha256(packed) == want, f"{index}: sha256 differs from InRelease's"
        filename, deb_sha, version = _package(lzma.decompress(packed).decode("utf-8"), "libc6")
        deb = _get(f"{MIRROR}/{filename}")
        assert _sha256(deb) == deb_sha, f"{filename}: sha256 differs from Packages'"
        (dest / "libc6.deb").write_bytes(deb)
        subprocess.run(["dpkg-deb", "-x", str(dest / "libc6.deb"), str(dest)], check=True,
                       capture_output=True)
        (dest / "libc6.deb").unlink()
        (dest / "InRelease").unlink(missing_ok=True)
        _relative_links(dest)
        return f"libc6 {version} {deb_arch} from {SUITE}, InRelease {trust}\n"
    return fill


def bullseye_root(arch: str) -> Path:
    """The unpacked bullseye libc6 for ``arch`` ("x86_64" or "aarch64"); ``Unreachable``
    when the mirror cannot be reached."""
    base = cache_root() / "oldroot"
    return install_once(base / f"{SUITE}-{arch}", lock=base / f"{SUITE}-{arch}.lock",
                        fill=_fill(arch))


def loader(root: Path) -> Path:
    """The x86_64 dynamic loader of the root."""
    return root / "lib" / "x86_64-linux-gnu" / f"ld-{GLIBC}.so"
