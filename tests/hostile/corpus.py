"""The hostile corpus, as data: every case is a frozen ``Case`` naming its class, the consumers
it applies to, what to build, and what each consumer must answer (exit codes and a regular
expression its error message must match).

Release cases are built as a real release would be: tar.gz archives written with ``tarfile``,
records made by kiln's own ``record_for`` (so new record fields, such as ``unpacked_size``,
come along), a ``manifest.json`` from kiln's ``ReleaseManifest``, ``SHA256SUMS`` from kiln's
``format_sums`` and a minisign signature made with Debian's ``minisign`` program and a
throwaway key, with the trusted comment ``"<project> <tag> commit <commit> date <date>"``.
Only the hostile part differs from an honest release, so a consumer that refuses a case
refuses it for that reason.

``python -m hostile.corpus`` (from ``tests/``) prints the number of cases per consumer.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import math
import re
import struct
import subprocess
import sys
import tarfile
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from kiln.matrix import load_matrix
from kiln.package.records import AssetRecord, Tool, Verification, record_for
from kiln.release.index import ReleaseIndex
from kiln.release.manifest import (
    INDEX_NAME,
    INDEX_SIGNATURE_NAME,
    MANIFEST_NAME,
    SIGNATURE_NAME,
    SUMS_NAME,
    ReleaseAsset,
    ReleaseManifest,
)

from .server import Fault

REPO = Path(__file__).resolve().parents[2]
MATRIX = load_matrix(REPO / "matrix")

# consumers
KILN = "kiln-install"
DASH = "install.sh-dash"
BASH = "install.sh-bash"
PUB_FILE = "publish-file"
PUB_GH = "publish-github"
BINDING = "ember-binding"
CLI = "ember-cli"
SDIST = "kiln-build-sdist"  # a project's pinned sdist, unpacked as its source (kiln.toml)
INSTALLERS = (KILN, DASH, BASH)
SHELLS = (DASH, BASH)
PUBLISHERS = (PUB_FILE, PUB_GH)
RELEASE_CONSUMERS = (*INSTALLERS, *PUBLISHERS)
CONSUMERS = (*RELEASE_CONSUMERS, BINDING, CLI, SDIST)
# what unpacks an archive: the installers, and kiln build unpacking a project's sdist
UNPACKERS = (*INSTALLERS, SDIST)

ENTRY = "ubuntu-x64"  # the build a Linux x86_64 machine without a GPU installs
PROJECT = "ember"
COMMIT = "c0ffee0123456789abcdef0123456789abcdef01"
DATE = "2026-01-02T03:04:05Z"
INSTALLED = "b9"  # what the prefix holds before every installer case
NEW = "b10"  # the release a hostile mirror offers
COMMENT = "{project} {tag} commit {commit} date {date}"
CLI_SCRIPT = b"#!/bin/sh\necho 'ember-cli stand-in of the hostile corpus'\n"
PWNED = "PWNED"  # what an injected `touch PWNED` would create

# The classes of the shared hardening contract and the consumers each applies to. A test
# checks that every one has at least one case for each of its consumers.
CONTRACT_CLASSES: Mapping[str, tuple[str, ...]] = {
    "member-chardev": UNPACKERS, "member-blockdev": UNPACKERS, "member-fifo": UNPACKERS,
    "member-hardlink": UNPACKERS, "member-setuid": UNPACKERS, "member-setgid": UNPACKERS,
    "member-sticky": UNPACKERS, "member-absolute": UNPACKERS, "member-dotdot": UNPACKERS,
    "member-symlink-escape": UNPACKERS, "member-through-symlink": UNPACKERS,
    "member-duplicate": UNPACKERS, "member-bad-name": UNPACKERS,
    "size-body-longer": INSTALLERS, "size-endless": INSTALLERS,
    "size-unpack-bomb": INSTALLERS, "size-huge-file": INSTALLERS,
    "sums-duplicate": RELEASE_CONSUMERS, "sums-missing-asset": RELEASE_CONSUMERS,
    "sums-unsafe-name": RELEASE_CONSUMERS,
    "sig-other-key": RELEASE_CONSUMERS, "sig-other-content": RELEASE_CONSUMERS,
    "sig-comment-other-tag": RELEASE_CONSUMERS, "sig-comment-other-identity": PUBLISHERS,
    "rollback": INSTALLERS, "freeze": INSTALLERS,
    "transport-truncated": INSTALLERS, "transport-http-error": INSTALLERS,
    "tag-syntax": RELEASE_CONSUMERS, "asset-name-syntax": RELEASE_CONSUMERS,
    "record-field-syntax": (KILN, *PUBLISHERS),
    # the project the release's signed index names becomes ~/.<project> and the install
    # record's name (docs/install.md, "What an installer refuses")
    "project-other": RELEASE_CONSUMERS,
    "member-install-record": INSTALLERS, "member-no-programs": INSTALLERS,
    "publish-planted-link": (PUB_FILE,),
    "gguf-hostile": (BINDING, CLI), "binding-value": (BINDING,), "cli-value": (CLI,),
}


# --------------------------------------------------------------------------------------------
# the data


@dataclass(frozen=True)
class Member:
    """One tar member. ``kind`` is a tarfile type (REGTYPE, SYMTYPE, LNKTYPE, CHRTYPE...)."""

    name: str
    kind: bytes = tarfile.REGTYPE
    data: bytes = b""
    mode: int = 0o644
    linkname: str = ""
    owner: int = 0  # uid and gid written into the archive


@dataclass(frozen=True)
class ReleaseSpec:
    """A signed release; every field that is not left at its default is the hostile part."""

    tag: str = NEW
    members: tuple[Member, ...] = ()  # appended to the honest tree
    before: tuple[Member, ...] = ()  # written before the honest tree
    bomb: int = 0  # bytes of zeros beyond the recorded unpacked_size
    sums_edit: Callable[[str, str], str] | None = None  # (SHA256SUMS text, asset) -> text
    comment: str = COMMENT
    signer: str = "release"  # or "other": a key the consumer does not trust
    sign_other_content: bool = False  # a valid signature, but of other bytes
    manifest_tag: str | None = None  # the tag manifest.json claims
    asset_name: str | None = None  # the archive's name in the manifest and SHA256SUMS
    asset_toolchain: str | None = None  # JSON: what manifest.json's record says built it
    extra_files: tuple[tuple[str, bytes], ...] = ()  # files beside the release's own
    # the release's index.json: valid this many days after DATE (a small number: expired)
    index_days: int = 36500
    index_signer: str | None = None  # None: the release's signer; "other": an untrusted key
    project: str = PROJECT  # manifest.json's project and the signed comment's
    index_project: str | None = None  # index.json's project (None: ``project``)
    index_comment_project: str | None = None  # the project its signed comment names
    drop: tuple[str, ...] = ()  # honest members left out, by their name below the top dir


@dataclass(frozen=True)
class MirrorSpec:
    """A mirror: releases, its ``latest``, the installer's arguments, and server faults
    (paths relative to the mirror; ``{asset}`` is the archive of ``NEW``)."""

    releases: tuple[ReleaseSpec, ...] = (ReleaseSpec(),)
    latest: bytes | None = NEW.encode() + b"\n"
    args: tuple[str, ...] = ("--tag", "latest")
    faults: tuple[tuple[str, Fault], ...] = ()
    template: bool = False  # --from <mirror>/{tag}/ instead of the mirror root
    # the mirror root's signed index.json: (version, days valid from today, newest tag listed)
    root_index: tuple[int, int, str] | None = None
    # the highest mirror index version the installer has seen before (its trust record)
    trust_seen: int | None = None
    root_project: str = PROJECT  # the project the mirror root's index.json names


@dataclass(frozen=True)
class EmberSpec:
    gguf: Callable[[bytes], bytes] | None = None  # hostile model from the valid micro model
    binding: str | None = None  # statements run with ``m`` (the micro model) and ``ember``
    cli: tuple[str, ...] | None = None  # ember-cli arguments; "{model}" is the micro model


@dataclass(frozen=True)
class Expect:
    codes: frozenset[int]
    message: str  # regular expression searched in the consumer's error output


@dataclass(frozen=True)
class Case:
    name: str
    klass: str
    consumers: tuple[str, ...]
    expect: Expect
    mirror: MirrorSpec | None = None
    release: ReleaseSpec | None = None  # what the publish consumers get
    ember: EmberSpec | None = None
    per_consumer: tuple[tuple[str, Expect], ...] = ()
    why: str = ""
    planted: tuple[str, ...] = ()  # names in the publish mirror made links to a directory
    # outside it before publishing

    def expect_for(self, consumer: str) -> Expect:
        for c, e in self.per_consumer:
            if c == consumer:
                return e
        return self.expect

    def installs(self, consumer: str) -> bool:
        """The documented outcome is an install (exit 0): the consumer disarms the hostile
        part (an install record the archive carries) instead of refusing the release."""
        return self.expect_for(consumer).codes == frozenset({0})


def expect(codes: int | Sequence[int], message: str) -> Expect:
    return Expect(frozenset([codes] if isinstance(codes, int) else codes), message)


# --------------------------------------------------------------------------------------------
# building releases and mirrors


def top_dir(tag: str) -> str:
    safe = tag if re.fullmatch(r"b[0-9]{1,9}", tag) else NEW
    return f"ember-{safe}-bin-{ENTRY}"


def asset_name(tag: str) -> str:
    return f"ember-{tag}-bin-{ENTRY}.tar.gz"


def honest_members(tag: str) -> list[Member]:
    top = top_dir(tag)
    payload = hashlib.sha256(tag.encode()).digest() * 16
    return [Member(f"{top}/", tarfile.DIRTYPE, mode=0o755),
            Member(f"{top}/bin/", tarfile.DIRTYPE, mode=0o755),
            Member(f"{top}/bin/ember-cli", data=CLI_SCRIPT, mode=0o755),
            Member(f"{top}/lib/", tarfile.DIRTYPE, mode=0o755),
            Member(f"{top}/lib/libember.bin", data=payload)]


def write_tar(members: Sequence[Member]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for m in members:
            info = tarfile.TarInfo(m.name)
            info.type, info.mode, info.mtime = m.kind, m.mode, 0
            info.uid = info.gid = m.owner
            info.uname = info.gname = "root" if m.owner == 0 else "stranger"
            info.linkname = m.linkname
            if "\x00" in m.name:
                # A ustar name field ends at the first NUL; a pax path record carries it.
                info.pax_headers = {"path": m.name}
            if m.kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
                info.devmajor, info.devminor = 1, 3  # /dev/null's numbers
            if m.kind == tarfile.REGTYPE:
                info.size = len(m.data)
                tar.addfile(info, io.BytesIO(m.data))
            else:
                tar.addfile(info)
    return gzip.compress(raw.getvalue(), mtime=0)


def unpacked_of(members: Sequence[Member]) -> int:
    """The contract's unpacked_size: the sum of the sizes of the regular files."""
    return sum(len(m.data) for m in members if m.kind == tarfile.REGTYPE)


def record_of(path: Path, name: str, number: int, unpacked: int) -> AssetRecord:
    """The asset's record as kiln makes it, with ``name`` and ``unpacked_size`` set by the
    corpus (kiln's own ``record_for`` reads the archive, and may refuse a hostile one: then
    the record of an honest archive is adapted)."""
    entry = MATRIX.get(ENTRY)
    ver = Verification(method=entry.verify, ok=True, detail="hostile corpus")
    try:
        rec = record_for(entry, path, kind="archive", build_number=number, commit=COMMIT,
                         toolchain=(Tool(name="zig", version="0.17.1"),),
                         verification=ver)
    except Exception:
        honest = path.with_name(path.name + ".honest.tar.gz")
        honest.write_bytes(write_tar(honest_members(NEW)))
        rec = record_for(entry, honest, kind="archive", build_number=number, commit=COMMIT,
                         toolchain=(Tool(name="zig", version="0.17.1"),),
                         verification=ver)
        honest.unlink()
    data = path.read_bytes()
    changes: dict[str, object] = {"name": name, "size": len(data),
                                  "sha256": hashlib.sha256(data).hexdigest()}
    if "unpacked_size" in {f.name for f in dataclasses.fields(rec)}:
        changes["unpacked_size"] = unpacked
    return dataclasses.replace(rec, **changes)  # type: ignore[arg-type]


def format_sums(digests: Mapping[str, str]) -> str:
    from kiln.release.manifest import format_sums as kiln_format_sums

    return kiln_format_sums(digests)


def build_number(tag: str) -> int:
    m = re.match(r"b(\d{1,9})", tag)
    return int(m.group(1)) if m else 1


class Builder:
    """Writes the corpus's releases, mirrors and models under ``root``, once per case."""

    def __init__(self, root: Path, *, key: Path, other_key: Path,
                 micro_model: Callable[[], bytes] | None = None) -> None:
        self.root = root
        self.key, self.other_key = key, other_key
        self.mirrors = root / "mirrors"
        self.releases = root / "releases"
        self.models = root / "models"
        for d in (self.mirrors, self.releases, self.models):
            d.mkdir(parents=True, exist_ok=True)
        self._micro = micro_model
        self._done: dict[tuple[str, str], object] = {}

    @property
    def pubkey(self) -> Path:
        return self.key.with_name(self.key.name + ".pub")

    def sign(self, sums: Path, out: Path, *, comment: str, key: Path) -> None:
        # minisign cannot carry a newline in a comment (one hostile tag has one).
        comment = comment.replace("\n", " ")
        subprocess.run(["minisign", "-S", "-s", str(key), "-m", str(sums), "-x", str(out),
                        "-t", comment], check=True, capture_output=True, timeout=60)

    def write_release(self, directory: Path, spec: ReleaseSpec, *, full: bool) -> str:
        """Write ``spec`` into ``directory``; ``full`` adds what ``kiln publish`` wants (the
        public key, SBOM, notes and install scripts). Returns the archive's name."""
        directory.mkdir(parents=True, exist_ok=True)
        tag = spec.tag
        name = spec.asset_name or asset_name(tag)
        top = top_dir(tag)
        honest = [m for m in honest_members(tag)
                  if m.name.removeprefix(f"{top}/").rstrip("/") not in spec.drop]
        members = [*spec.before, *honest, *spec.members]
        declared = unpacked_of(members)
        if spec.bomb:
            members.append(Member(f"{top_dir(tag)}/lib/padding.bin", data=bytes(spec.bomb)))
        archive = directory / ".archive.tmp"
        archive.write_bytes(write_tar(members))
        record = record_of(archive, name, build_number(tag), declared)
        if "/" not in name and name not in (".", ".."):
            archive.rename(directory / name)
        else:
            archive.unlink()  # a name no file can have: only the manifest names it
        manifest_tag = spec.manifest_tag or tag
        manifest = ReleaseManifest(
            project=spec.project, tag=manifest_tag, build_number=build_number(manifest_tag),
            commit=COMMIT, date=DATE, base_url="https://ember.invalid/releases/",
            assets=(ReleaseAsset(record=record, url=f"https://ember.invalid/releases/{name}"),),
            missing=(), disabled=())
        manifest_text = manifest.text()
        if spec.asset_toolchain is not None:
            doc = json.loads(manifest_text)
            doc["assets"][0]["toolchain"] = json.loads(spec.asset_toolchain)
            manifest_text = json.dumps(doc, indent=2, sort_keys=True) + "\n"
        texts: dict[str, bytes] = {MANIFEST_NAME: manifest_text.encode()}
        index = self.release_index(manifest, spec)
        if spec.index_project is not None:
            index = dataclasses.replace(index, project=spec.index_project)
        texts[INDEX_NAME] = index.text().encode()
        if full:
            texts.update(self._publish_files(manifest))
        texts.update(dict(spec.extra_files))
        for fname, data in texts.items():
            (directory / fname).write_bytes(data)
        if full:
            # The signed build provenance, as kiln release writes it (kiln verify wants it).
            for fname in self.provenance(directory, manifest, spec):
                texts[fname] = (directory / fname).read_bytes()
        # The index is signed on its own and, with its signature, listed in SHA256SUMS.
        index_key = self.other_key if (spec.index_signer or spec.signer) == "other" else self.key
        signed = index if spec.index_comment_project is None else \
            dataclasses.replace(index, project=spec.index_comment_project)
        self.sign(directory / INDEX_NAME, directory / INDEX_SIGNATURE_NAME,
                  comment=signed.comment(), key=index_key)
        texts[INDEX_SIGNATURE_NAME] = (directory / INDEX_SIGNATURE_NAME).read_bytes()
        digests = {fname: hashlib.sha256(data).hexdigest() for fname, data in texts.items()}
        digests[name] = record.sha256
        sums = format_sums(digests)
        if spec.sums_edit is not None:
            sums = spec.sums_edit(sums, name)
        (directory / SUMS_NAME).write_text(sums, encoding="utf-8")
        key = self.other_key if spec.signer == "other" else self.key
        comment = spec.comment.format(project=spec.project, tag=tag, commit=COMMIT, date=DATE)
        target = directory / SUMS_NAME
        if spec.sign_other_content:
            target = directory / ".other-content"
            target.write_text(format_sums({"other": "0" * 64}), encoding="utf-8")
        self.sign(target, directory / SIGNATURE_NAME, comment=comment, key=key)
        if spec.sign_other_content:
            target.unlink()
        return name

    def provenance(self, directory: Path, manifest: ReleaseManifest,
                   spec: ReleaseSpec) -> tuple[str, ...]:
        """Write and sign ``provenance.intoto.json`` of ``manifest``; nothing when a hostile
        value makes kiln's own statement refuse itself."""
        from datetime import datetime

        from kiln.release.manifest import PROVENANCE_NAME, PROVENANCE_SIGNATURE_NAME
        from kiln.release.provenance import provenance_comment, release_provenance

        epoch = int(datetime.strptime(DATE, "%Y-%m-%dT%H:%M:%S%z").timestamp())
        try:
            text = release_provenance(manifest, repo_url="https://github.com/ember-ml/ember",
                                      matrix_dir=REPO / "matrix", recipes=REPO / "recipes",
                                      epoch=epoch)
            comment = provenance_comment(manifest)
        except Exception:
            return ()
        (directory / PROVENANCE_NAME).write_text(text, encoding="utf-8")
        key = self.other_key if spec.signer == "other" else self.key
        self.sign(directory / PROVENANCE_NAME, directory / PROVENANCE_SIGNATURE_NAME,
                  comment=comment, key=key)
        return (PROVENANCE_NAME, PROVENANCE_SIGNATURE_NAME)

    @staticmethod
    def release_index(manifest: ReleaseManifest, spec: ReleaseSpec) -> ReleaseIndex:
        """The release's index.json as ``kiln release`` writes it (of the manifest's honest
        values: a hostile tag or name makes the index refuse itself, as it should)."""
        from kiln.release.index import ReleaseIndex as Index
        from kiln.release.index import release_index

        try:
            return release_index(manifest, distros={ENTRY: "ubuntu"},
                                 general=frozenset({"ubuntu"}), floors={},
                                 expiry_days=spec.index_days)
        except (ValueError, IndexError):
            return Index(project=manifest.project, kind="release", version=1, expires=DATE,
                         releases=())

    def root_index(self, d: Path, spec: MirrorSpec) -> None:
        """The mirror root's signed index.json, listing the newest release of ``spec``."""
        from datetime import UTC, datetime, timedelta

        from kiln.release.index import ReleaseIndex as Index
        from kiln.release.index import parse_index

        assert spec.root_index is not None
        version, days, newest = spec.root_index
        releases = []
        for sub in sorted(d.iterdir()):
            if (sub / INDEX_NAME).is_file():
                try:
                    one = parse_index((sub / INDEX_NAME).read_bytes(), source="corpus")
                except Exception:
                    continue
                releases += [r for r in one.releases if r.tag == newest or r.tag != NEW]
        releases.sort(key=lambda r: r.build_number, reverse=True)
        expires = (datetime.now(UTC) + timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")
        index = Index(project=spec.root_project, kind="mirror", version=version,
                      expires=expires, releases=tuple(releases))
        (d / INDEX_NAME).write_text(index.text(), encoding="utf-8")
        self.sign(d / INDEX_NAME, d / INDEX_SIGNATURE_NAME, comment=index.comment(),
                  key=self.key)

    def _publish_files(self, manifest: ReleaseManifest) -> dict[str, bytes]:
        from kiln.release.manifest import NOTES_NAME, PUBLIC_KEY_NAME, SBOM_NAME

        pub = self.pubkey.read_text(encoding="utf-8")
        out = {PUBLIC_KEY_NAME: pub.encode(),
               SBOM_NAME: json.dumps({"bomFormat": "CycloneDX", "specVersion": "1.5"}).encode(),
               NOTES_NAME: f"# ember {manifest.tag}\n\nhostile corpus\n".encode()}
        try:
            from ember_project import render

            scripts = render(manifest, pub, "https://ember.invalid/releases/")
        except Exception:
            scripts = {"install.sh": "#!/bin/sh\nexit 1\n", "install.ps1": "exit 1\n"}
        out.update({n: t.encode() for n, t in scripts.items()})
        return out

    def mirror(self, case: Case) -> Path:
        """The case's mirror directory under ``mirrors`` (served over HTTP)."""
        key = (case.name, "mirror")
        if key not in self._done:
            assert case.mirror is not None
            d = self.mirrors / slug(case.name)
            d.mkdir(parents=True, exist_ok=True)
            for spec in case.mirror.releases:
                sub = spec.tag if re.fullmatch(r"b[0-9]{1,9}", spec.tag) else "hostile-tag"
                self.write_release(d / sub, spec, full=False)
            if case.mirror.latest is not None:
                (d / "latest").write_bytes(case.mirror.latest)
            if case.mirror.root_index is not None:
                self.root_index(d, case.mirror)
            self._done[key] = d
        return self._done[key]  # type: ignore[return-value]

    def release_dir(self, case: Case) -> Path:
        """The case's release directory, as ``kiln release`` would leave it, for publishing."""
        key = (case.name, "release")
        if key not in self._done:
            assert case.release is not None
            d = self.releases / slug(case.name)
            self.write_release(d, case.release, full=True)
            self._done[key] = d
        return self._done[key]  # type: ignore[return-value]

    def model(self, case: Case) -> Path:
        key = (case.name, "model")
        if key not in self._done:
            assert case.ember is not None and self._micro is not None
            data = self._micro()
            if case.ember.gguf is not None:
                data = case.ember.gguf(data)
            p = self.models / f"{slug(case.name)}.gguf"
            p.write_bytes(data)
            self._done[key] = p
        return self._done[key]  # type: ignore[return-value]


def slug(name: str) -> str:
    """A case's directory name: a digest, so that no word of the case's name appears in the
    paths and URLs a consumer prints (a message would match its regex through them)."""
    return "c" + hashlib.sha256(name.encode()).hexdigest()[:12]


# --------------------------------------------------------------------------------------------
# SHA256SUMS edits


def dup_same(text: str, asset: str) -> str:
    line = next(ln for ln in text.splitlines() if ln.endswith("  " + asset))
    return text + line + "\n"


def dup_diff(text: str, asset: str) -> str:
    # The honest line last: a reader that keeps the last of two lines installs the right
    # bytes and so hides the ambiguity; the contract wants the file refused.
    return ("f" * 64 + "  " + asset + "\n") + text


def drop_asset(text: str, asset: str) -> str:
    return "".join(ln + "\n" for ln in text.splitlines() if not ln.endswith("  " + asset))


def add_line(name: str) -> Callable[[str, str], str]:
    def edit(text: str, asset: str) -> str:
        return text + "e" * 64 + "  " + name + "\n"
    return edit


def huge_sums(text: str, asset: str) -> str:
    # Valid lines of names that could be release files: over the 1 MiB cap only by size.
    lines = [f"{hashlib.sha256(str(i).encode()).hexdigest()}  filler-{i:07d}.bin"
             for i in range((1 << 20) // 80 + 200)]
    return text + "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# GGUF edits (the micro model is a valid llama GGUF written by tests/runtime/micro_gguf.py)


def _kv_value_offset(data: bytes, key: str) -> int:
    """Offset of the value of the F32 metadata ``key``."""
    raw = key.encode()
    at = data.find(struct.pack("<Q", len(raw)) + raw)
    assert at >= 0, key
    at += 8 + len(raw)
    (vtype,) = struct.unpack_from("<I", data, at)
    assert vtype == 6, (key, vtype)  # GGUF_TYPE_FLOAT32
    return at + 4


def set_f32(key: str, value: float) -> Callable[[bytes], bytes]:
    def edit(data: bytes) -> bytes:
        at = _kv_value_offset(data, key)
        return data[:at] + struct.pack("<f", value) + data[at + 4:]
    return edit


def header_count(which: int, value: int) -> Callable[[bytes], bytes]:
    """Overwrite the tensor count (``which`` 0) or the metadata count (1) of a v3 header."""
    def edit(data: bytes) -> bytes:
        at = 8 + 8 * which
        return data[:at] + struct.pack("<Q", value) + data[at + 8:]
    return edit


def truncate(frac: float) -> Callable[[bytes], bytes]:
    def edit(data: bytes) -> bytes:
        return data[: int(len(data) * frac)]
    return edit


def many_tensors(data: bytes) -> bytes:
    # A header that claims a million tensors with only the real ones' descriptions behind it.
    return header_count(0, 1_000_000)(data)


# --------------------------------------------------------------------------------------------
# the cases


def _member(name: str, klass: str, members: Sequence[Member], token: str, *,
            before: Sequence[Member] = (), why: str = "",
            consumers: tuple[str, ...] = UNPACKERS) -> Case:
    top = top_dir(NEW)
    return Case(
        name=name, klass=klass, consumers=consumers,
        mirror=MirrorSpec(releases=(ReleaseSpec(members=tuple(
            dataclasses.replace(m, name=m.name.replace("TOP", top),
                                linkname=m.linkname.replace("TOP", top)) for m in members),
            before=tuple(before)),)),
        expect=expect(12, token), why=why)


DEEP = "../../../../../../../../../../../.."  # climbs out of any test directory


def member_cases(sandbox: str) -> list[Case]:
    """``sandbox``: an absolute directory the absolute-path members aim at (checked empty)."""
    R, L = tarfile.REGTYPE, tarfile.SYMTYPE
    return [
        _member("member-chardev", "member-chardev",
                [Member("TOP/bin/hostile-chardev", tarfile.CHRTYPE)], "hostile-chardev"),
        _member("member-blockdev", "member-blockdev",
                [Member("TOP/bin/hostile-blockdev", tarfile.BLKTYPE)], "hostile-blockdev"),
        _member("member-fifo", "member-fifo",
                [Member("TOP/bin/hostile-fifo", tarfile.FIFOTYPE)], "hostile-fifo"),
        _member("member-hardlink-inside", "member-hardlink",
                [Member("TOP/bin/hostile-hardlink", tarfile.LNKTYPE,
                        linkname="TOP/bin/ember-cli")], "hostile-hardlink",
                why="even to a file of the archive: hard links are not allowed"),
        _member("member-hardlink-outside", "member-hardlink",
                [Member("TOP/bin/hostile-hardlink-out", tarfile.LNKTYPE,
                        linkname="/etc/hostname")], "hostile-hardlink-out"),
        _member("member-setuid", "member-setuid",
                [Member("TOP/bin/hostile-setuid", R, CLI_SCRIPT, 0o4755)], "hostile-setuid"),
        _member("member-setgid", "member-setgid",
                [Member("TOP/bin/hostile-setgid", R, CLI_SCRIPT, 0o2755)], "hostile-setgid"),
        _member("member-sticky", "member-sticky",
                [Member("TOP/lib/hostile-sticky/", tarfile.DIRTYPE, mode=0o1777)],
                "hostile-sticky"),
        _member("member-absolute", "member-absolute",
                [Member(f"{sandbox}/hostile-absolute", R, b"escaped\n")], "hostile-absolute"),
        _member("member-dotdot", "member-dotdot",
                [Member("TOP/../../hostile-dotdot", R, b"escaped\n")], "hostile-dotdot"),
        _member("member-dotdot-deep", "member-dotdot",
                [Member(f"TOP/{DEEP}/tmp/hostile-dotdot-deep", R, b"escaped\n")],
                "hostile-dotdot-deep"),
        _member("member-symlink-root", "member-symlink-escape",
                [Member("TOP/lib/hostile-symlink-root", L, linkname="/")],
                "hostile-symlink-root"),
        _member("member-symlink-up", "member-symlink-escape",
                [Member("TOP/lib/hostile-symlink-up", L, linkname="../../..")],
                "hostile-symlink-up"),
        _member("member-through-symlink", "member-through-symlink",
                [Member("TOP/lib/hostile-link", L, linkname="../../.."),
                 Member("TOP/lib/hostile-link/hostile-through", R, b"escaped\n")],
                "hostile-(link|through)"),
        _member("member-through-symlink-inside", "member-through-symlink",
                [Member("TOP/lib/hostile-alias", L, linkname="../bin"),
                 Member("TOP/lib/hostile-alias/ember-cli", R, b"#!/bin/sh\necho replaced\n",
                        0o755)], "hostile-alias",
                why="the link stays inside, but writing through it replaces another member"),
        _member("member-duplicate", "member-duplicate",
                [Member("TOP/bin/ember-cli", R, b"#!/bin/sh\necho second copy\n", 0o755)],
                r"(?is)(duplicate|twice|more than once|again).*ember-cli|"
                r"ember-cli.*(duplicate|twice|more than once|again)"),
        # kiln install only: GNU tar and bsdtar end a member name at its NUL when they list
        # and when they extract, so install.sh checks and writes the same (harmless) name
        _member("member-nul-name", "member-bad-name",
                [Member("TOP/bin/hostile-nul\x00name", R, b"x")], "hostile-nul",
                consumers=(KILN,)),
        _member("member-backslash", "member-bad-name",
                [Member("TOP\\..\\..\\hostile-backslash", R, b"x")], "hostile-backslash"),
    ]


ASSET = f"{NEW}/{asset_name(NEW)}"
CAP = r"(larger than|longer than|more than|exceeds|too (large|long|big)|\blimit\b|\bcap\b)"
_A = re.escape(asset_name(NEW))
BOTH = rf"(?is)({_A}.*{CAP}|{CAP}.*{_A})"  # the archive's name and what is wrong with it


def release_cases() -> list[Case]:
    cases: list[Case] = []
    add = cases.append
    # sizes
    add(Case("size-body-longer", "size-body-longer", INSTALLERS,
             mirror=MirrorSpec(faults=((ASSET, Fault("longer", extra=4096)),)),
             expect=expect(12, BOTH)))
    add(Case("size-endless-asset", "size-endless", INSTALLERS,
             mirror=MirrorSpec(faults=((ASSET, Fault("endless")),)),
             expect=expect(12, BOTH)))
    for fname in ("latest", f"{NEW}/{SUMS_NAME}", f"{NEW}/{SIGNATURE_NAME}",
                  f"{NEW}/{MANIFEST_NAME}"):
        consumers = (KILN,) if fname.endswith(MANIFEST_NAME) else INSTALLERS
        add(Case(f"size-endless-{fname.rsplit('/', 1)[-1]}", "size-endless", consumers,
                 mirror=MirrorSpec(faults=((fname, Fault("endless")),)),
                 expect=expect((11, 12), rf"(?is){re.escape(fname.rsplit('/', 1)[-1])}"
                                         rf".*{CAP}")))
    add(Case("size-unpack-bomb", "size-unpack-bomb", INSTALLERS,
             mirror=MirrorSpec(releases=(ReleaseSpec(bomb=64 << 20),)),
             expect=expect(12, r"unpacks to more than (the )?\d+ bytes")))
    add(Case("size-huge-sums", "size-huge-file", INSTALLERS,
             mirror=MirrorSpec(releases=(ReleaseSpec(sums_edit=huge_sums),)),
             expect=expect((11, 12), rf"(?is){SUMS_NAME}.*{CAP}")))
    # SHA256SUMS
    dup = r"(?i)(twice|duplicate|more than once|listed again|repeated)"
    add(Case("sums-dup-same", "sums-duplicate", RELEASE_CONSUMERS,
             mirror=MirrorSpec(releases=(ReleaseSpec(sums_edit=dup_same),)),
             release=ReleaseSpec(sums_edit=dup_same), expect=expect(12, dup)))
    add(Case("sums-dup-different", "sums-duplicate", RELEASE_CONSUMERS,
             mirror=MirrorSpec(releases=(ReleaseSpec(sums_edit=dup_diff),)),
             release=ReleaseSpec(sums_edit=dup_diff), expect=expect(12, dup)))
    missing = expect(12, rf"(?i){re.escape(asset_name(NEW))}.*not (listed|in)")
    add(Case("sums-missing-asset", "sums-missing-asset", RELEASE_CONSUMERS,
             mirror=MirrorSpec(releases=(ReleaseSpec(sums_edit=drop_asset),)),
             release=ReleaseSpec(sums_edit=drop_asset), expect=missing,
             # install.sh finds no build of the release for this machine: also a refusal,
             # and what it must say then is that the asset is not in the release.
             per_consumer=tuple((c, expect((11, 12), rf"(?i){re.escape(asset_name(NEW))}.*"
                                           r"not (listed|in)|not in release"))
                                for c in SHELLS)))
    for label, name in (("slash", "../escaped.bin"), ("dotdot", ".."), ("dot", "."),
                        ("leading-dot", ".hidden"), ("backslash", "..\\escaped"),
                        ("control", "bell\x07name"), ("shell", "$(touch PWNED)"),
                        ("space", "two words")):
        extra: tuple[tuple[str, bytes], ...] = ()
        if label in ("leading-dot", "space", "shell"):
            extra = ((name, b"listed\n"),)  # the file exists, so only its name is wrong

        def edit(text: str, asset: str, name: str = name) -> str:
            if f"  {name}\n" in text:
                return text  # listed already, as a file of the release directory
            return text + hashlib.sha256(b"listed\n").hexdigest() + "  " + name + "\n"

        add(Case(f"sums-name-{label}", "sums-unsafe-name", RELEASE_CONSUMERS,
                 mirror=MirrorSpec(releases=(ReleaseSpec(sums_edit=edit),)),
                 release=ReleaseSpec(sums_edit=edit, extra_files=extra),
                 expect=expect(12, rf"(?i){SUMS_NAME}.*(line|name)"),
                 # Names the contract's name rule refuses but its SHA256SUMS list does not
                 # mention: a release error or an integrity error, both refusals.
                 per_consumer=() if label not in ("shell", "space") else (
                     *((c, expect((11, 12), rf"(?i){SUMS_NAME}.*(line|name)"))
                       for c in INSTALLERS),
                     *((c, expect((9, 12), rf"(?i){SUMS_NAME}.*(line|name)"))
                       for c in PUBLISHERS))))
    # signatures
    bad_sig = expect(12, r"(?i)does not verify")
    add(Case("sig-other-key", "sig-other-key", RELEASE_CONSUMERS,
             mirror=MirrorSpec(releases=(ReleaseSpec(signer="other"),)),
             release=ReleaseSpec(signer="other"), expect=bad_sig))
    add(Case("sig-other-content", "sig-other-content", RELEASE_CONSUMERS,
             mirror=MirrorSpec(releases=(ReleaseSpec(sign_other_content=True),)),
             release=ReleaseSpec(sign_other_content=True), expect=bad_sig))
    # kiln publish checks the whole signed identity against manifest.json (a release error
    # or an integrity error: both refusals).
    pub_comment = tuple((c, expect((9, 12), r"(?i)comment.*does not name")) for c in PUBLISHERS)
    for label, comment, why in (
            ("other-tag", "{project} b9 commit {commit} date {date}", ""),
            ("longer-tag", "{project} b100 commit {commit} date {date}",
             "b100 contains b10: the match must be on the whole token")):
        spec = ReleaseSpec(comment=comment)
        add(Case(f"sig-comment-{label}", "sig-comment-other-tag", RELEASE_CONSUMERS,
                 mirror=MirrorSpec(releases=(spec,)), release=spec,
                 expect=expect(12, rf"(?i)does not name {NEW}"), per_consumer=pub_comment,
                 why=why))
    for label, comment in (("other-commit", "{project} {tag} commit " + "d" * 40 + " date {date}"),
                           ("other-date", "{project} {tag} commit {commit} date "
                                          "2020-01-01T00:00:00Z"),
                           ("other-project", "llama {tag} commit {commit} date {date}")):
        add(Case(f"sig-comment-{label}", "sig-comment-other-identity", PUBLISHERS,
                 release=ReleaseSpec(comment=comment), expect=pub_comment[0][1]))
    add(Case("sig-comment-explicit-tag", "sig-comment-other-tag", INSTALLERS,
             mirror=MirrorSpec(releases=(ReleaseSpec(
                 comment="{project} b11 commit {commit} date {date}"),),
                 args=("--tag", NEW)),
             expect=expect(12, rf"(?i)does not name {NEW}")))
    # rollback and freeze
    # naming both releases and the way to override it
    down = r"(?s)(\bb9\b.*\bb{n}\b|\bb{n}\b.*\bb9\b).*--allow-downgrade"
    for n, latest, args, klass in ((3, b"b3\n", ("--tag", "latest"), "rollback"),
                                   (3, None, ("--tag", "b3"), "rollback"),
                                   (8, b"b8\n", ("--tag", "latest"), "freeze")):
        what = "latest" if latest else "explicit-tag"
        add(Case(f"{klass}-{what}-b{n}", klass, INSTALLERS,
                 mirror=MirrorSpec(releases=(ReleaseSpec(tag=f"b{n}"),), latest=latest,
                                   args=args),
                 expect=expect(11, down.format(n=n)),
                 why="a mirror frozen on an older release is refused as a rollback is"
                 if klass == "freeze" else ""))
    # the signed index (docs/index.md): its version may only grow, its expiry is enforced,
    # and its signature is the release key's
    add(Case("rollback-index-version", "rollback", INSTALLERS,
             mirror=MirrorSpec(root_index=(3, 30, NEW), trust_seen=5),
             expect=expect(12, r"(?is)index version 3 is older than version 5.*rollback"),
             why="a mirror index older than one the installer has seen is an old index "
                 "served as current"))
    add(Case("freeze-root-index-expired", "freeze", INSTALLERS,
             mirror=MirrorSpec(root_index=(7, -1, NEW)),
             expect=expect(12, r"(?is)index expired on .*freeze"),
             why="a mirror whose index is past its expiry stopped being updated (or replays "
                 "an old index)"))
    add(Case("freeze-release-index-expired", "freeze", INSTALLERS,
             mirror=MirrorSpec(releases=(ReleaseSpec(index_days=1),)),
             expect=expect(12, r"(?is)index expired on .*freeze")))
    add(Case("sig-index-other-key", "sig-other-key", RELEASE_CONSUMERS,
             mirror=MirrorSpec(releases=(ReleaseSpec(index_signer="other"),)),
             release=ReleaseSpec(index_signer="other"),
             expect=expect(12, r"(?is)index\.json\.minisig does not verify"),
             per_consumer=tuple((c, expect((9, 12), r"(?is)index\.json\.minisig"))
                                for c in PUBLISHERS)))
    # transport
    add(Case("transport-truncated-fin", "transport-truncated", INSTALLERS,
             mirror=MirrorSpec(faults=((ASSET, Fault("truncate-fin")),)),
             expect=expect((11, 12), r"(?i)(truncat|broke|closed|failed after|short)")))
    add(Case("transport-short-body", "transport-truncated", INSTALLERS,
             mirror=MirrorSpec(faults=((ASSET, Fault("short")),)),
             expect=expect((11, 12), r"(?i)(truncat|does not match|short)")))
    for status in (403, 404, 416, 500):
        add(Case(f"transport-http-{status}-asset", "transport-http-error", INSTALLERS,
                 mirror=MirrorSpec(faults=((ASSET, Fault("status", status)),)),
                 expect=expect(11, rf"\b{status}\b")))
    add(Case("transport-http-500-sums", "transport-http-error", INSTALLERS,
             mirror=MirrorSpec(faults=((f"{NEW}/{SUMS_NAME}", Fault("status", 500)),)),
             expect=expect(11, r"\b500\b")))
    # tags and names
    LATEST = expect((11, 12), r"(?is)\blatest\b.*\b(not a|does not hold|invalid)\b.*\btag")
    NOT_A_TAG = r"(?is)\btag\b.*\bnot a\b.*\btag\b"
    BAD_NAME = r"(?i)(not a (release |plain )?file name|name start(s|ing) with|starts with '\.')"
    for label, tag in (("escaped", "./../escaped"), ("dotdot", "../../x"),
                       ("sed", "b1/e;s/x/y"), ("subst", "b1$(touch PWNED)"),
                       ("newline", "b1\n"), ("space", "b1 b2"), ("backtick", "b1`touch PWNED`")):
        add(Case(f"tag-arg-{label}", "tag-syntax", INSTALLERS,
                 mirror=MirrorSpec(args=("--tag", tag), template=True),
                 expect=expect(2, r"(?is)--tag\b.*\b(not|neither)\b.*\btag\b")))
        add(Case(f"tag-latest-{label}", "tag-syntax", INSTALLERS,
                 mirror=MirrorSpec(latest=tag.encode() + b"\n"), expect=LATEST))
        add(Case(f"tag-manifest-{label}", "tag-syntax", (KILN, *PUBLISHERS),
                 mirror=MirrorSpec(releases=(ReleaseSpec(manifest_tag=tag),)),
                 release=ReleaseSpec(manifest_tag=tag),
                 expect=expect((11, 12), NOT_A_TAG),
                 per_consumer=tuple((c, expect((9, 10, 12), NOT_A_TAG)) for c in PUBLISHERS)))
    # the programs a record says built its asset: plain words, or the release is refused
    for label, tools in (("empty", []), ("not-a-list", "zig 0.17.1"),
                         ("shell", [{"name": "zig$(touch PWNED)", "version": "0.17.1"}]),
                         ("newline", [{"name": "zig", "version": "0.17.1\nb1"}]),
                         ("extra-key", [{"name": "zig", "version": "0.17.1", "url": "x"}])):
        value = json.dumps(tools)
        add(Case(f"record-toolchain-{label}", "record-field-syntax", (KILN, *PUBLISHERS),
                 mirror=MirrorSpec(releases=(ReleaseSpec(asset_toolchain=value),)),
                 release=ReleaseSpec(asset_toolchain=value),
                 expect=expect(11, r"(?is)field 'toolchain'"),
                 per_consumer=tuple((c, expect(9, r"(?is)field 'toolchain'"))
                                    for c in PUBLISHERS)))
    add(Case("tag-latest-two-lines", "tag-syntax", INSTALLERS,
             mirror=MirrorSpec(latest=b"b10\nb3\n"), expect=LATEST))
    for label, name in (("dotdot", "../../escaped.tar.gz"),
                        ("escaped", "./../escaped.tar.gz"),
                        ("shell", f"ember-{NEW}-bin-{ENTRY}$(touch PWNED).tar.gz"),
                        ("semicolon", f"ember-{NEW}-bin-{ENTRY};touch PWNED;.tar.gz"),
                        ("space", f"ember {NEW} bin {ENTRY}.tar.gz")):
        add(Case(f"asset-name-{label}", "asset-name-syntax", (KILN, *PUBLISHERS),
                 mirror=MirrorSpec(releases=(ReleaseSpec(asset_name=name),)),
                 release=ReleaseSpec(asset_name=name),
                 expect=expect((11, 12), BAD_NAME),
                 per_consumer=tuple((c, expect((9, 10, 12), BAD_NAME)) for c in PUBLISHERS)))
    add(Case("publish-planted-tag-link", "publish-planted-link", (PUB_FILE,),
             release=ReleaseSpec(), planted=(NEW,),
             expect=expect(10, rf"(?is){NEW}.*\b(link|outside)\b"),
             why="a link where the release's directory goes must not lead the copy out"))
    # install.sh builds the asset's name from the tag itself; a hostile line in SHA256SUMS
    # that looks like its asset must not be picked up through grep's regex either.
    add(Case("asset-name-grep", "asset-name-syntax", SHELLS,
             mirror=MirrorSpec(releases=(ReleaseSpec(sums_edit=add_line(
                 f"x  ember-{NEW}-bin-{ENTRY}.tar.gz")),)),
             expect=expect(12, rf"(?i){SUMS_NAME}.*(line|name)")))
    return cases


OTHER_PROJECT = "llama"  # a project the release key might sign too
# An install record as installers write it, telling of another install than the one made.
LYING_RECORD = json.dumps({"schema": 1, "tag": "b999", "entry_id": ENTRY,
                           "asset": f"{OTHER_PROJECT}-b999-bin-{ENTRY}.tar.gz",
                           "sha256": "a" * 64, "url": "https://llama.invalid/b999/",
                           "signed": True, "installed_by": "kiln install",
                           "host": "hostile corpus", "files": ["bin/ember-cli"]},
                          indent=2, sort_keys=True).encode() + b"\n"
NO_PROGRAMS = rf"{_A} holds no (programs|{PROJECT}-cli)\b"


def project_cases() -> list[Case]:
    """The project's name comes from the release's signed index.json (docs/index.md) and
    becomes a directory and a file name: the default prefix ``~/.<project>`` and the install
    record ``.<project>-install.json``. install.sh is rendered for one project (its name
    baked in): an index of any other project is refused there."""
    other = rf"(?is)index of project '?{OTHER_PROJECT}'?.*\b{PROJECT}\b"
    return [
        Case("project-index-other", "project-other", RELEASE_CONSUMERS,
             mirror=MirrorSpec(releases=(ReleaseSpec(index_project=OTHER_PROJECT),)),
             release=ReleaseSpec(index_project=OTHER_PROJECT),
             expect=expect(12, other),
             why="the signed index names another project than the signed manifest: the "
                 "name would become ~/.llama and .llama-install.json for ember's files"),
        Case("project-index-comment-other", "project-other", RELEASE_CONSUMERS,
             mirror=MirrorSpec(releases=(ReleaseSpec(index_comment_project=OTHER_PROJECT),)),
             release=ReleaseSpec(index_comment_project=OTHER_PROJECT),
             expect=expect(12, rf"(?is)comment.*\b{OTHER_PROJECT}\b.*\b{PROJECT}\b"),
             why="the index says ember, but its signature was made for a llama index"),
        Case("project-mirror-index-other", "project-other", INSTALLERS,
             mirror=MirrorSpec(root_index=(7, 30, NEW), root_project=OTHER_PROJECT),
             expect=expect(12, other),
             why="the mirror root's signed index (which picks latest and counts versions) "
                 "is another project's"),
        Case("project-release-other", "project-other", INSTALLERS,
             mirror=MirrorSpec(releases=(ReleaseSpec(project=OTHER_PROJECT),)),
             expect=expect(12, other),
             # kiln install installs whichever project the index names, but never over
             # another project's install: the prefix holds ember's b9.
             per_consumer=((KILN, expect(11, r"holds an install of another project "
                                             rf"\(\.{PROJECT}-install\.json\), not of "
                                             rf"{OTHER_PROJECT}")),),
             why="a whole release of another project signed with the same key: ember's "
                 "install.sh must not put it into ~/.ember as ember"),
    ]


def archive_cases() -> list[Case]:
    """What an archive holds that only an installer gives meaning to: an install record at
    the top of its tree (removed, and the installer's own written: exit 0, the prefix then
    holds one record, which tells the truth; a directory where the record goes is refused),
    and no program in ``bin/`` (refused, exit 11)."""
    R, L, D = tarfile.REGTYPE, tarfile.SYMTYPE, tarfile.DIRTYPE
    top = top_dir(NEW)
    own, other = f".{PROJECT}-install.json", f".{OTHER_PROJECT}-install.json"
    installs = expect(0, rf"installed {PROJECT} {NEW} \({ENTRY}\)")

    def case(name: str, klass: str, members: Sequence[Member], want: Expect, *,
             drop: tuple[str, ...] = (), why: str = "") -> Case:
        spec = ReleaseSpec(members=tuple(dataclasses.replace(m, name=f"{top}/{m.name}")
                                         for m in members), drop=drop)
        return Case(name, klass, INSTALLERS, mirror=MirrorSpec(releases=(spec,)),
                    expect=want, why=why)

    return [
        case("member-install-record-other", "member-install-record",
             [Member(other, R, LYING_RECORD)], installs,
             why="a record of another project would say llama is installed in ~/.ember"),
        case("member-install-record-own", "member-install-record",
             [Member(own, R, LYING_RECORD)], installs,
             why="the archive's record of its own project names another release"),
        case("member-install-record-own-link", "member-install-record",
             [Member(own, L, linkname="lib/libember.bin")], installs,
             why="writing the record through the link would overwrite the library"),
        case("member-install-record-both", "member-install-record",
             [Member(other, L, linkname="bin/ember-cli"), Member(own, R, LYING_RECORD)],
             installs),
        case("member-install-record-own-dir", "member-install-record",
             [Member(f"{own}/", D, mode=0o755), Member(f"{own}/tag", R, b"b999\n")],
             expect(12, rf"(?i)holds a directory named {re.escape(own)}"),
             why="no record can be written where the archive put a directory"),
        case("member-no-bin", "member-no-programs",
             [Member(f"lib/{PROJECT}-cli", R, CLI_SCRIPT, 0o755)], expect(11, NO_PROGRAMS),
             drop=("bin", f"bin/{PROJECT}-cli"),
             why="the program is in the archive, but not in bin/"),
        case("member-empty-bin", "member-no-programs", [], expect(11, NO_PROGRAMS),
             drop=(f"bin/{PROJECT}-cli",)),
        case("member-bin-program-dir", "member-no-programs",
             [Member(f"bin/{PROJECT}-cli/", D, mode=0o755),
              Member(f"bin/{PROJECT}-cli/{PROJECT}-cli", R, CLI_SCRIPT, 0o755)],
             expect(11, NO_PROGRAMS), drop=(f"bin/{PROJECT}-cli",),
             why="a directory where the program goes is no program"),
    ]


def ember_cases() -> list[Case]:
    cases: list[Case] = []
    add = cases.append
    short = r"(?i)(truncat|cannot fit|exceeds|too small|empty)"
    count = r"(?i)count.*(cannot fit|too (large|many)|exceeds)"
    for name, edit, msg in (
            ("gguf-empty", lambda d: b"", short),
            ("gguf-truncated-header", truncate(0.01), short),
            ("gguf-truncated-data", truncate(0.6), short),
            ("gguf-huge-tensor-count", header_count(0, 2**63), count),
            ("gguf-huge-kv-count", header_count(1, 2**63 - 1), count),
            ("gguf-many-tensors", many_tensors, count),
            ("gguf-rms-eps-nan", set_f32("llama.attention.layer_norm_rms_epsilon",
                                         math.nan), r"(?i)eps"),
            ("gguf-rms-eps-inf", set_f32("llama.attention.layer_norm_rms_epsilon",
                                         math.inf), r"(?i)eps"),
            ("gguf-rms-eps-negative", set_f32("llama.attention.layer_norm_rms_epsilon",
                                              -1.0), r"(?i)eps"),
            ("gguf-rope-base-nan", set_f32("llama.rope.freq_base", math.nan), r"(?i)rope"),
    ):
        add(Case(name, "gguf-hostile", (BINDING, CLI), ember=EmberSpec(gguf=edit),
                 expect=expect(2, msg), per_consumer=((BINDING, expect(0, msg)),)))
    for name, code, msg in (
            ("binding-logits-empty", "m.logits([])", r"(?i)(empty|no token|at least one)"),
            ("binding-token-2p32p1", "m.logits([2**32 + 1])", r"4294967297"),
            ("binding-token-negative", "m.logits([-1])", r"-1"),
            ("binding-token-bytes-2p32p1", "m.token_bytes(2**32 + 1)", r"4294967297"),
            ("binding-n-ctx-2p32", "ember.Model(PATH, n_ctx=2**32)", r"(?i)n_ctx"),
            ("binding-n-ctx-negative", "ember.Model(PATH, n_ctx=-1)", r"(?i)n_ctx"),
            ("binding-n-threads-2p32p1", "ember.Model(PATH, n_threads=2**32 + 1)",
             r"(?i)n_threads"),
            ("binding-nul-in-path", "ember.Model(PATH + '\\x00.ignored')", r"(?i)(NUL|null)"),
            ("binding-temperature-nan", "m.generate([1], 2, temperature=float('nan'))",
             r"(?i)temperature"),
            ("binding-generate-2p32", "m.generate([1], 2**32 + 1)", r"(?i)n_tokens"),
    ):
        add(Case(name, "binding-value", (BINDING,), ember=EmberSpec(binding=code),
                 expect=expect(0, msg)))
    for name, args, msg in (
            # An endless prompt file is refused at a cap, not read until memory runs out.
            ("cli-file-dev-zero", ("-f", "/dev/zero"),
             r"/dev/zero.*(larger than|too large|more than)"),
            ("cli-n-negative", ("-n", "-1"), r"-n"),
            ("cli-n-overflow", ("-n", "99999999999999999999999"), r"-n"),
            ("cli-c-zero", ("-c", "0"), r"-c"),
            ("cli-c-2p32", ("-c", str(2**32)), r"-c"),
            ("cli-c-negative", ("-c", "-5"), r"-c"),
            ("cli-t-zero", ("-t", "0"), r"-t"),
            ("cli-t-2p32p1", ("-t", str(2**32 + 1)), r"-t"),
            ("cli-t-negative", ("-t", "-2"), r"-t"),
            ("cli-temp-nan", ("--temp", "nan"), r"--temp"),
            ("cli-top-p-nan", ("--top-p", "nan"), r"--top-p"),
    ):
        prompt = () if "-f" in args else ("-p", "Hello")
        add(Case(name, "cli-value", (CLI,),
                 ember=EmberSpec(cli=("-m", "{model}", *prompt, *args)),
                 expect=expect((1, 2), msg)))
    return cases


def all_cases(sandbox: str = "/nonexistent-hostile-sandbox") -> list[Case]:
    cases = [*member_cases(sandbox), *release_cases(), *project_cases(), *archive_cases(),
             *ember_cases()]
    names = [c.name for c in cases]
    assert len(names) == len(set(names)), sorted(n for n, k in Counter(names).items() if k > 1)
    return cases


def cases_for(consumer: str, sandbox: str = "/nonexistent-hostile-sandbox") -> list[Case]:
    return [c for c in all_cases(sandbox) if consumer in c.consumers]


def figures() -> dict[str, int]:
    """Cases per consumer."""
    return {c: len(cases_for(c)) for c in CONSUMERS}


if __name__ == "__main__":
    f = figures()
    for consumer, n in f.items():
        print(f"{consumer:18} {n:4d}")
    print(f"{'total':18} {sum(f.values()):4d} (case x consumer), {len(all_cases())} cases",
          file=sys.stdout)
