"""Publish to a mirror directory (``file://PATH``), e.g. a folder served over HTTP.

Layout: ``PATH/<tag>/`` holds one release (the files of the release directory), and
``PATH/latest`` is a one-line text file naming the newest tag (a text file rather than a
symlink, so the mirror can be copied to object storage or any web server as it is).

Atomicity: the release is copied into ``PATH/.<tag>.partial-<pid>/`` (each file fsync'ed and
re-hashed), the staging directory is fsync'ed and renamed to ``PATH/<tag>`` in one step, and
``latest`` is rewritten (temp file + rename), then the mirror's signed ``index.json``
(``kiln.release.index``: every release, newest first, version one above the last, a fresh
expiry) when a signing key is given. A publish that fails or is killed leaves
the previous releases and ``latest`` untouched; its staging directory is removed by the next
run. A lock file keeps two publishers of one mirror apart. A tag already published with the
same files is a success (a re-run); with different files it is an error: published releases
are never changed.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from filelock import FileLock, Timeout

from kiln.errors import KilnError, PublishError, ReleaseError
from kiln.files import atomic_write_text, fsync_dir, sha256_file
from kiln.publish.base import LocalRelease, PublishResult, check_names, confined
from kiln.release.index import ReleaseIndex, mirror_index, parse_index
from kiln.release.manifest import INDEX_NAME, INDEX_SIGNATURE_NAME, PUBLIC_KEY_NAME, TAG_RE
from kiln.release.page.render import BENCH_NAME, mirror_page, read_bench


class IndexSigner(Protocol):
    def public_key(self) -> str: ...

    def sign(self, path: Path, signature: Path, *, trusted_comment: str) -> None: ...

__all__ = ["LATEST", "DirectoryPublisher", "IndexSigner"]

LATEST = "latest"
LOCK = ".kiln-publish.lock"


def _number(tag: str) -> int:
    m = TAG_RE.fullmatch(tag)
    return int(m.group(1)) if m else -1


class DirectoryPublisher:
    def __init__(self, root: Path, *, log: Callable[[str], None] = lambda _m: None,
                 lock_timeout: float = 600.0, signer: IndexSigner | None = None,
                 index_expiry_days: int = 30) -> None:
        self.root = root
        self.log = log
        self.lock_timeout = lock_timeout
        self.signer = signer
        self.index_expiry_days = index_expiry_days

    def _plan_index(self, release: LocalRelease) -> tuple[ReleaseIndex, dict[str, str]] | None:
        """The mirror root's next ``index.json`` with ``release`` in it (version one above the
        previous index's, a fresh expiry) and the mirror's page for it, made before anything
        is written, so that a publish that cannot update them changes nothing. ``None``
        without a signer: the mirror then keeps no index and says so (installers cannot tell
        a rollback of ``latest``)."""
        if self.signer is None:
            self.log(f"warning: no signing key: {self.root / INDEX_NAME} is not written, so "
                     "installers cannot check this mirror's 'latest' against a rollback or a "
                     "freeze, and the mirror gets no page (index.html is made from that "
                     "index; pass --signing-key or set KILN_SIGNING_KEY)")
            return None
        if self.signer.public_key().strip() != release.path(PUBLIC_KEY_NAME).read_text(
                encoding="utf-8").strip():
            raise PublishError(f"the signing key is not the key release {release.tag} is "
                               "signed with", hint="sign the mirror's index with the release "
                                                   "key: installers pin one key")
        path = confined(self.root, INDEX_NAME)
        previous = None
        if path.is_file():
            try:
                previous = parse_index(path.read_bytes(), source=str(path))
            except KilnError as exc:
                raise PublishError(f"{path}: the mirror's index cannot be read: {exc.message}",
                                   hint="restore it from a backup; removing it lets "
                                        "installers that saw it refuse the mirror") from exc
        added = parse_index(release.path(INDEX_NAME).read_bytes(),
                            source=str(release.path(INDEX_NAME)))
        index = mirror_index(previous, added, now=datetime.now(UTC),
                             expiry_days=self.index_expiry_days)
        # A published bench report that cannot be read stops the publish here.
        return index, self._page(index, release)

    def _write_index(self, plan: tuple[ReleaseIndex, dict[str, str]] | None) -> None:
        """Sign and write the index ``_plan_index`` made, then the mirror's page."""
        if plan is None or self.signer is None:
            return
        index, page = plan
        path = confined(self.root, INDEX_NAME)
        stage = confined(self.root, f".{INDEX_NAME}.new-{os.getpid()}")
        atomic_write_text(stage, index.text())
        self.signer.sign(stage, stage.with_name(stage.name + ".minisig"),
                         trusted_comment=index.comment())
        # The index first, then its signature: an installer that reads between the two
        # renames finds a signature that does not verify and refuses; it never trusts a
        # mismatched pair.
        stage.replace(path)
        stage.with_name(stage.name + ".minisig").replace(confined(self.root,
                                                                  INDEX_SIGNATURE_NAME))
        fsync_dir(self.root)
        self.log(f"{INDEX_NAME}: version {index.version}, {len(index.releases)} releases, "
                 f"expires {index.expires}")
        root = self.root.resolve()
        for name, text in page.items():
            # Replaced by a rename, never written through: a link planted at the name is
            # replaced, not followed.
            atomic_write_text(root / name, text)
        fsync_dir(self.root)
        self.log(f"index.html: {len(index.releases)} releases")

    def _page(self, index: ReleaseIndex, release: LocalRelease) -> dict[str, str]:
        """The mirror's page (``index.html``, ``page.css``, ``page.js``) for ``index``, with
        the CPU figures of the releases that carry ``bench-cpu.json`` (``release``'s from its
        directory: it is not copied yet)."""
        bench: dict[str, dict[str, Any]] = {}
        for r in index.releases:
            if r.tag == release.tag:
                path = release.path(BENCH_NAME)
                if BENCH_NAME not in release.files:
                    continue
            else:
                path = confined(self.root, f"{r.tag}/{BENCH_NAME}")
            if not path.is_file():
                continue
            try:
                bench[r.tag] = read_bench(path, source=str(path))[1]
            except ReleaseError as exc:
                raise PublishError(exc.message, hint="it was checked when released: restore "
                                   "the release from its signed copy") from exc
        return mirror_page(index, bench=bench)

    def _copy(self, release: LocalRelease, name: str, stage: Path) -> None:
        dst = confined(stage, name)
        with release.path(name).open("rb") as fin, dst.open("wb") as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)
            fout.flush()
            os.fsync(fout.fileno())
        if sha256_file(dst) != release.files[name]:
            raise PublishError(f"{release.path(name)}: changed while it was copied to "
                               f"{self.root}", hint="publish again from an unchanged release")

    def _same(self, target: Path, release: LocalRelease) -> bool:
        have = {p.name for p in target.iterdir()}
        if have != set(release.files):
            return False
        return all(sha256_file(target / n) == d for n, d in release.files.items())

    def _update_latest(self, tag: str) -> bool:
        latest = confined(self.root, LATEST)
        current = latest.read_text(encoding="utf-8").strip() if latest.is_file() else ""
        if current and _number(current) > _number(tag):
            return False  # publishing an older release does not move `latest` back
        if current != tag:
            atomic_write_text(latest, tag + "\n")
            fsync_dir(self.root)
        return True

    def publish(self, release: LocalRelease) -> PublishResult:
        tag = release.tag
        # Checked before the mirror is created or locked: a refused release leaves the mirror
        # exactly as it was.
        check_names(release)
        confined(self.root, tag)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise PublishError(f"cannot create the mirror directory {self.root}: "
                               f"{exc.strerror}") from exc
        try:
            with FileLock(str(self.root / LOCK), timeout=self.lock_timeout):
                return self._publish_locked(release, tag)
        except Timeout as exc:
            raise PublishError(f"{self.root} is locked by another publish "
                               f"({self.root / LOCK})",
                               hint="wait for it to finish; remove the lock file only if no "
                                    "publish is running") from exc

    def _publish_locked(self, release: LocalRelease, tag: str) -> PublishResult:
        for stale in self.root.glob(f".{tag}.partial-*"):
            self.log(f"removing {stale.name}, left by an interrupted publish")
            shutil.rmtree(confined(self.root, stale.name))
        # Resolved now, under the lock: a link planted in the mirror cannot lead the copy out.
        target = confined(self.root, tag)
        if target.exists():
            if not self._same(target, release):
                raise PublishError(
                    f"{target} already holds a different release {tag}",
                    hint="a published release is never changed; release under a new tag")
            plan = self._plan_index(release)
            moved = self._update_latest(tag)
            self._write_index(plan)
            self.log(f"{tag} is already published in {self.root}"
                     + ("" if moved else " (latest points at a newer release)"))
            return PublishResult(destination=f"file://{self.root}", url=str(target),
                                 uploaded=(), kept=tuple(sorted(release.files)),
                                 already_published=True)
        plan = self._plan_index(release)
        stage = confined(self.root, f".{tag}.partial-{os.getpid()}")
        stage.mkdir()
        try:
            for name in sorted(release.files):
                self._copy(release, name, stage)
                self.log(f"copied {name}")
            fsync_dir(stage)
            stage.rename(target)
            fsync_dir(self.root)
        finally:
            if stage.exists():
                shutil.rmtree(stage)
        moved = self._update_latest(tag)
        self._write_index(plan)
        self.log(f"published {tag} to {target}"
                 + ("; latest -> " + tag if moved else "; latest unchanged (newer exists)"))
        return PublishResult(destination=f"file://{self.root}", url=str(target),
                             uploaded=tuple(sorted(release.files)), kept=(),
                             already_published=False)
