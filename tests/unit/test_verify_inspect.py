"""kiln/verify/inspect.py on facts (no binaries needed) and on a synthetic code signature;
the id comparison and the JSON parsing of kiln/verify.py."""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import pytest
from ember_project import EMBER, EMBER_LAYOUT, NAMES

from kiln.build.toolchains.recipe import load_verify_spec
from kiln.errors import VerifyError
from kiln.matrix import Entry, load_matrix
from kiln.package.macho import CS_ADHOC, read_code_signature
from kiln.plan import make_job
from kiln.verify import CliRun, VerifyContext, compare_ids, parse_cli_json
from kiln.verify.inspect import (
    BinaryFacts,
    _codesign_problem,
    check_facts,
    check_host_paths,
    glibc_max,
    summarize,
)


def entry(repo_root: Path, entry_id: str) -> Entry:
    return load_matrix(repo_root / "matrix").get(entry_id)


def failed(checks: list) -> list[str]:  # type: ignore[type-arg]
    return [c.name for c in checks if not c.ok]


def elf(**kw: object) -> BinaryFacts:
    base: dict[str, object] = dict(path="bin/ember-cli", format="ELF", machine="aarch64",
                                   big_endian=False, libraries=("libember.so.0", "libc.so.6"),
                                   glibc_versions=("GLIBC_2.17",),
                                   interpreter="/lib/ld-linux-aarch64.so.1")
    base.update(kw)
    return BinaryFacts(**base)  # type: ignore[arg-type]


ALLOWED_LINUX = ("libc.so.6", "libm.so.6", "libpthread.so.0")


def test_good_linux_binary_passes(repo_root: Path) -> None:
    checks = check_facts(elf(), entry(repo_root, "ubuntu-arm64"), allowed=ALLOWED_LINUX,
                         own={"libember.so.0"})
    assert failed(checks) == []


def test_glibc_above_the_floor_fails(repo_root: Path) -> None:
    facts = elf(glibc_versions=("GLIBC_2.17", "GLIBC_2.34"))
    checks = check_facts(facts, entry(repo_root, "ubuntu-arm64"), allowed=ALLOWED_LINUX,
                         own={"libember.so.0"})
    assert failed(checks) == ["bin/ember-cli: glibc"]
    assert "GLIBC_2.34, floor 2.17" in checks[1].detail
    # openEuler's floor is 2.28
    ok = check_facts(elf(glibc_versions=("GLIBC_2.28",)), entry(repo_root, "openeuler-arm64"),
                     allowed=ALLOWED_LINUX, own={"libember.so.0"})
    assert failed(ok) == []


def test_glibc_max_reads_three_part_versions_and_flags_private() -> None:
    assert glibc_max(["GLIBC_2.2.5", "GLIBC_2.17", "GLIBC_2.3.4"]) == ("2.17", [])
    assert glibc_max(["GLIBC_PRIVATE"]) == (None, ["GLIBC_PRIVATE"])


def test_wrong_machine_and_endianness_fail(repo_root: Path) -> None:
    s390 = entry(repo_root, "ubuntu-s390x")
    little = elf(machine="s390x", big_endian=False)
    assert "bin/ember-cli: format" in failed(check_facts(little, s390, allowed=ALLOWED_LINUX,
                                                         own={"libember.so.0"}))
    big = elf(machine="s390x", big_endian=True)
    assert failed(check_facts(big, s390, allowed=ALLOWED_LINUX, own={"libember.so.0"})) == []
    x86 = elf(machine="x86_64")
    assert "bin/ember-cli: format" in failed(check_facts(
        x86, entry(repo_root, "ubuntu-arm64"), allowed=ALLOWED_LINUX, own={"libember.so.0"}))


def test_unknown_library_fails(repo_root: Path) -> None:
    facts = elf(libraries=("libember.so.0", "libc.so.6", "libstdc++.so.6"))
    checks = check_facts(facts, entry(repo_root, "ubuntu-arm64"), allowed=ALLOWED_LINUX,
                         own={"libember.so.0"})
    bad = [c for c in checks if not c.ok]
    assert len(bad) == 1 and "libstdc++.so.6" in bad[0].detail


def test_sycl_runtime_is_allowed_for_sycl_entries_only(repo_root: Path) -> None:
    """SYCL links Intel's runtime (icpx -fsycl); verify.yaml allows it for that backend only."""
    spec = load_verify_spec(repo_root / "recipes")
    facts = elf(machine="x86_64", libraries=("libember.so.0", "libc.so.6", "libsycl.so.8"),
                interpreter="/lib64/ld-linux-x86-64.so.2")
    sycl = entry(repo_root, "ubuntu-sycl-fp32-x64")
    cpu = entry(repo_root, "ubuntu-x64")
    ok = check_facts(facts, sycl, allowed=spec.allowed_for("linux", sycl.backend),
                     own={"libember.so.0"})
    assert [c for c in ok if not c.ok and c.name.endswith("libraries")] == []
    bad = check_facts(facts, cpu, allowed=spec.allowed_for("linux", cpu.backend),
                      own={"libember.so.0"})
    assert any("libsycl.so.8" in c.detail for c in bad if not c.ok)
    assert "sycl8.dll" in spec.allowed_for("windows", "sycl")
    assert "sycl8.dll" not in spec.allowed_for("windows", "vulkan")


def test_android_must_be_static(repo_root: Path) -> None:
    android = entry(repo_root, "android-arm64")
    static = elf(libraries=(), glibc_versions=(), interpreter=None)
    assert failed(check_facts(static, android, allowed=(), own=set())) == []
    dynamic = elf(libraries=("libc.so",), glibc_versions=(), interpreter="/lib/ld-musl.so.1")
    assert "bin/ember-cli: static" in failed(check_facts(dynamic, android, allowed=(), own=set()))


def macho(**kw: object) -> BinaryFacts:
    base: dict[str, object] = dict(path="bin/ember-cli", format="MachO", machine="aarch64",
                                   big_endian=False,
                                   libraries=("/usr/lib/libSystem.B.dylib",
                                              "@rpath/libember.0.dylib"),
                                   macos_minos="11.0.0", code_signature="ad-hoc")
    base.update(kw)
    return BinaryFacts(**base)  # type: ignore[arg-type]


def test_macos_minimum_and_signature(repo_root: Path) -> None:
    arm = entry(repo_root, "macos-arm64")
    allowed = ("/usr/lib/libSystem.B.dylib",)
    own = {"libember.0.dylib"}
    assert failed(check_facts(macho(), arm, allowed=allowed, own=own)) == []
    assert failed(check_facts(macho(macos_minos="12.0.0"), arm, allowed=allowed, own=own)) == [
        "bin/ember-cli: macOS minimum"]
    assert failed(check_facts(macho(code_signature="absent"), arm, allowed=allowed,
                              own=own)) == ["bin/ember-cli: code signature"]
    # hashes that match but no adhoc flag: not what zig writes, and no certificate is checked
    assert failed(check_facts(macho(code_signature="signed"), arm, allowed=allowed,
                              own=own)) == ["bin/ember-cli: code signature"]
    # x86_64 Macs run unsigned code: an absent signature is recorded, not refused
    x64 = entry(repo_root, "macos-x64")
    facts = macho(machine="x86_64", macos_minos="10.15.0", code_signature="absent")
    checks = check_facts(facts, x64, allowed=allowed, own=own)
    assert failed(checks) == []
    assert [c.detail for c in checks if c.name.endswith("code signature")] == [
        "unsigned (x86_64 macOS runs unsigned code)"]
    assert "code signature: unsigned" in summarize(checks, x64).detail
    assert "ad-hoc signed" in summarize(check_facts(macho(), arm, allowed=allowed, own=own),
                                        arm).detail
    # but a signature that does not match the file fails there too
    broken = macho(machine="x86_64", macos_minos="10.15.0", code_signature="invalid: page 1")
    assert failed(check_facts(broken, x64, allowed=allowed, own=own)) == [
        "bin/ember-cli: code signature"]


def test_windows_dlls_case_insensitive_patterns(repo_root: Path) -> None:
    win = entry(repo_root, "win-cpu-x64")
    allowed = ("kernel32.dll", "api-ms-win-crt-*.dll")
    facts = BinaryFacts(path="bin/ember-cli.exe", format="PE", machine="x86_64",
                        big_endian=False, libraries=("ember.dll", "KERNEL32.dll",
                                                     "api-ms-win-crt-heap-l1-1-0.dll"))
    assert failed(check_facts(facts, win, allowed=allowed, own={"ember.dll"})) == []
    bad = BinaryFacts(path="bin/ember-cli.exe", format="PE", machine="x86_64",
                      big_endian=False, libraries=("libwinpthread-1.dll",))
    assert failed(check_facts(bad, win, allowed=allowed, own={"ember.dll"})) == [
        "bin/ember-cli.exe: libraries"]


def test_host_paths_found_in_utf8_and_utf16() -> None:
    files = [("bin/a", b"xx/home/me/cache/zig/lib/x.c\0"),
             ("bin/b.exe", "C:/ok Z:/x".encode("utf-16-le") + "/work/repo".encode("utf-16-le")),
             ("include/ember.h", b"clean")]
    check = check_host_paths(files, ("/home/me/cache", "/work/repo"))
    assert not check.ok
    assert "bin/a contains /home/me/cache" in check.detail
    assert "bin/b.exe contains /work/repo" in check.detail
    assert check_host_paths([("include/ember.h", b"clean")], ("/work/repo",)).ok


def signed_blob(code: bytes, page_log2: int = 12) -> bytes:
    page = 1 << page_log2
    hashes = b"".join(hashlib.sha256(code[i:i + page]).digest()
                      for i in range(0, len(code), page))
    n = len(hashes) // 32
    ident = b"ember-cli\0"
    hash_offset = 44 + len(ident)
    cd = struct.pack(">9I", 0xFADE0C02, hash_offset + len(hashes), 0x20400, 0x2, hash_offset,
                     44, 0, n, len(code))
    cd += struct.pack(">4B", 32, 2, 0, page_log2) + b"\0" * 4 + ident + hashes
    superblob = struct.pack(">III", 0xFADE0CC0, 20 + len(cd), 1) + struct.pack(">II", 0, 20)
    return superblob + cd


def test_code_signature_hashes_checked() -> None:
    code = bytes(range(256)) * 40  # 10240 bytes: three pages
    blob = signed_blob(code)
    data = code + blob
    assert _codesign_problem(data, len(code), len(blob)) is None
    tampered = bytearray(data)
    tampered[5000] ^= 0xFF
    problem = _codesign_problem(bytes(tampered), len(code), len(blob))
    assert problem is not None and "page 1" in problem
    assert _codesign_problem(data, 0, 16) == "no SuperBlob at LC_CODE_SIGNATURE's offset"


def test_code_signature_flags_and_identifier_are_read() -> None:
    code = bytes(range(256)) * 40
    blob = signed_blob(code)
    sig = read_code_signature(code + blob, len(code), len(blob))
    assert sig.adhoc and sig.flags == CS_ADHOC and sig.identifier == "ember-cli"
    assert sig.hash_type == "sha256" and sig.state == "ad-hoc"
    # the same blob without the adhoc flag (flags are the CodeDirectory's fourth word)
    cd_at = 20
    no_flag = bytearray(blob)
    no_flag[cd_at + 12:cd_at + 16] = struct.pack(">I", 0)
    plain = read_code_signature(code + bytes(no_flag), len(code), len(no_flag))
    assert not plain.adhoc and plain.state == "signed"
    tampered = bytearray(code + blob)
    tampered[100] ^= 1
    assert read_code_signature(bytes(tampered), len(code), len(blob)).state.startswith(
        "invalid: page 0")


def test_parse_cli_json_ignores_noise_and_crlf() -> None:
    out = ("wine: something\r\n"
           '{"prompt_ids": [1, 2], "generated_ids": [3, 4, 5], "text": "hi"}\r\n')
    got = parse_cli_json(out, "ember-cli")
    assert got.prompt_ids == (1, 2) and got.generated_ids == (3, 4, 5)
    with pytest.raises(VerifyError, match=r"^ember-cli printed no JSON object"):
        parse_cli_json("Segmentation fault\n", "ember-cli")
    with pytest.raises(VerifyError, match=r"^ember-cli's JSON lacks"):
        parse_cli_json('{"ids": []}\n', "ember-cli")
    # the messages name the project's program
    with pytest.raises(VerifyError, match=r"^demo-cli printed invalid JSON"):
        parse_cli_json("{oops\n", "demo-cli")


def ctx_with(repo_root: Path, reference: tuple[int, ...] | None,
             error: str | None = None) -> VerifyContext:
    spec = load_verify_spec(repo_root / "recipes")
    job = make_job(entry(repo_root, "ubuntu-s390x"), 1, NAMES)
    return VerifyContext(job=job, stage=Path("/nonexistent"), spec=spec, env={},
                         layout=EMBER_LAYOUT, smoke=EMBER.smoke,
                         log_file=Path("/nonexistent.log"), model=None,
                         reference_ids=reference, reference_error=error)


def test_compare_ids(repo_root: Path) -> None:
    n = load_verify_spec(repo_root / "recipes").run.n_predict
    ids = tuple(range(n))
    run = CliRun(prompt_ids=(1,), generated_ids=ids, text="")
    assert compare_ids(run, ctx_with(repo_root, ids), how="qemu").ok
    other = (*range(n - 1), 999)
    diff = compare_ids(run, ctx_with(repo_root, other), how="qemu")
    assert not diff.ok and f"at step {n - 1}" in diff.detail
    short = CliRun(prompt_ids=(1,), generated_ids=ids[:3], text="")
    assert "generated 3 ids" in compare_ids(short, ctx_with(repo_root, ids), how="q").detail
    no_ref = compare_ids(run, ctx_with(repo_root, None, "the host build failed"), how="q")
    assert not no_ref.ok and "host build failed" in no_ref.detail
    assert compare_ids(run, ctx_with(repo_root, None), how="native").ok
