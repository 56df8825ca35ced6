"""``inspect``: check built binaries without running them.

Binary formats are read with LIEF (one well-kept library that reads ELF, PE and Mach-O alike,
with type stubs) into ``BinaryFacts``; the checks then work on those facts only, so unit
tests feed them fakes. What is checked, per file in bin/ and lib/:

- format and machine type (ELF/PE/Mach-O; x86_64, aarch64, s390x, big-endian for s390x);
- macOS: the minimum version in LC_BUILD_VERSION equals the entry's ``min_os``; arm64
  binaries carry the ad-hoc code signature zig's linker writes (LC_CODE_SIGNATURE, a
  CodeDirectory with the adhoc flag) whose page hashes match the file (Apple Silicon kills
  unsigned or altered arm64 code); x86_64 binaries may be unsigned (zig signs none there), but
  a signature they carry must match, and what was seen is recorded. LIEF finds the signature,
  ``kiln.package.macho.read_code_signature`` checks it, which LIEF does not;
- Windows: every PE file of bin/ and lib/ carries an Authenticode signature that verifies
  (``osslsigncode verify``, ``kiln.package.authenticode.verify_pe``) against the certificate
  the build signed with (``ctx.extra["authenticode_cert"]``); the record names it;
- Linux glibc: the highest GLIBC_x.y symbol version needed is at most the entry's floor;
- Android (static musl): no program interpreter and no needed library;
- needed libraries / imported DLLs: the project's own (present in the tree) or on the
  allow-list in ``recipes/verify.yaml``;
- CUDA entries: the cubins and PTX of the project's device code (kiln.toml's
  ``[build.device_code]``, compiled by kiln) embedded in the library (found by their own ELF /
  PTX headers, ``kiln/build/toolchains/cuda_device.py``) are exactly the entry's
  ``gpu_targets``, once each; no binary needs a CUDA runtime or toolkit library at link time,
  and the library names the driver it opens at run time (``libcuda.so.1`` / ``nvcuda.dll``);
- HIP entries: likewise, the one code-object bundle holds exactly the entry's gfx targets
  and no ROCm library is needed at link time (``libamdhip64`` is opened at run time);
- OpenCL entries: the embedded kernel source is the project's, byte for byte
  (``kiln.verify.opencl_checks``);
- and for every file of the tree: no absolute path of the build host inside.

Before those, the tree must hold every file an archive requires (``check_required``):
``kiln.package.archive.required_files`` is the one list (kiln.toml's ``[package]``: the
project's tools, header, library, licences), so an entry that is only inspected fails on a
missing tool as the run-based ones do, and as packaging would refuse it later.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from kiln.build.toolchains import cuda_device, hip
from kiln.build.toolchains.recipe import VerifySpec
from kiln.errors import ConfigError, IntegrityError
from kiln.matrix import Entry
from kiln.package.archive import required_files
from kiln.package.authenticode import Signer, cert_sha256, signer_note, verify_pe
from kiln.package.macho import macho_facts, read_code_signature
from kiln.run import install_hint
from kiln.verify import opencl_checks
from kiln.verify.base import (
    Check,
    ToolNeed,
    VerifyContext,
    VerifyReport,
    log_line,
    project_source,
)

__all__ = [
    "BinaryFacts",
    "InspectVerifier",
    "check_cuda_device_code",
    "check_facts",
    "check_gpu_runtime_links",
    "check_hip_device_code",
    "check_host_paths",
    "check_pe_signature",
    "check_required",
    "compact",
    "device_code_note",
    "glibc_max",
    "inspect_first",
    "inspect_stage",
    "read_facts",
    "signature_needs",
    "summarize",
]

GLIBC_RE = re.compile(r"^GLIBC_(\d+)\.(\d+)(?:\.(\d+))?$")
FORMAT_FOR_OS = {"linux": "ELF", "android": "ELF", "macos": "MachO", "windows": "PE"}
# Libraries a GPU build must not need at link time: the backends open their vendor's driver /
# runtime with dlopen / LoadLibrary, so an archive runs (on the CPU) where none is installed.
GPU_RUNTIME_LIBS = {
    "cuda": ("libcuda.so*", "libcudart*", "libnvrtc*", "libcublas*", "nvcuda.dll",
             "cudart*.dll", "nvrtc*.dll", "cublas*.dll"),
    "hip": ("libamdhip64*", "libhiprtc*", "librocblas*", "amdhip64*.dll", "hiprtc*.dll"),
}
# The driver the backend opens at run time: its name must be in the library.
GPU_DRIVER = {("cuda", "linux"): "libcuda.so.1", ("cuda", "windows"): "nvcuda.dll",
              ("hip", "linux"): "libamdhip64.so", ("hip", "windows"): "amdhip64"}


@dataclass(frozen=True, kw_only=True)
class BinaryFacts:
    """What the checks need to know about one binary."""

    path: str                          # relative to the stage, e.g. "bin/demo-cli"
    format: str                        # "ELF" | "PE" | "MachO"
    machine: str                       # "x86_64" | "aarch64" | "s390x" | other names as seen
    big_endian: bool
    libraries: tuple[str, ...]         # DT_NEEDED / imported DLLs / LC_LOAD_DYLIB
    glibc_versions: tuple[str, ...] = ()   # GLIBC_x.y symbol versions needed
    interpreter: str | None = None     # ELF PT_INTERP
    macos_minos: str | None = None     # LC_BUILD_VERSION / LC_VERSION_MIN_MACOSX
    # Mach-O: "ad-hoc" | "signed" (no adhoc flag) | "absent" | "invalid: ..."
    code_signature: str | None = None


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = [int(p) for p in text.split(".")]
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def glibc_max(versions: Iterable[str]) -> tuple[str | None, list[str]]:
    """Highest GLIBC_x.y (as "x.y") and any odd versions such as GLIBC_PRIVATE."""
    best: tuple[int, ...] | None = None
    odd = []
    for v in versions:
        m = GLIBC_RE.fullmatch(v)
        if not m:
            if v.startswith("GLIBC_"):
                odd.append(v)
            continue
        t = tuple(int(g) for g in m.groups() if g is not None)
        if best is None or t > best:
            best = t
    return (None if best is None else ".".join(str(x) for x in best)), odd


# --------------------------------------------------------------------------------------------
# Reading binaries (LIEF)


def _codesign_problem(data: bytes, offset: int, size: int) -> str | None:
    """None when the code directory's page hashes match ``data``; else what is wrong
    (``kiln.package.macho.read_code_signature``)."""
    return read_code_signature(data, offset, size).problem


def _text(value: str | bytes) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def read_facts(path: Path, rel: str) -> BinaryFacts | None:
    """Facts of one file, or None when it is no ELF/PE/Mach-O binary."""
    import lief

    lief.logging.disable()
    name = str(path)
    if lief.is_elf(name):
        elf = lief.ELF.parse(name)
        if elf is None:
            return None
        versions: list[str] = []
        for req in elf.symbols_version_requirement:
            versions.extend(_text(aux.name) for aux in req.get_auxiliary_symbols())
        machines = {lief.ELF.ARCH.X86_64: "x86_64", lief.ELF.ARCH.AARCH64: "aarch64",
                    lief.ELF.ARCH.S390: "s390x"}
        arch = elf.header.machine_type
        return BinaryFacts(
            path=rel, format="ELF", machine=machines.get(arch, str(arch)),
            big_endian=elf.header.identity_data == lief.ELF.Header.ELF_DATA.MSB,
            libraries=tuple(_text(lib) for lib in elf.libraries),
            glibc_versions=tuple(sorted(set(versions))),
            interpreter=elf.interpreter if elf.has_interpreter else None)
    if lief.is_pe(name):
        pe = lief.PE.parse(name)
        if pe is None:
            return None
        pe_machines = {lief.PE.Header.MACHINE_TYPES.AMD64: "x86_64",
                       lief.PE.Header.MACHINE_TYPES.ARM64: "aarch64"}
        m = pe.header.machine
        return BinaryFacts(path=rel, format="PE", machine=pe_machines.get(m, str(m)),
                           big_endian=False, libraries=tuple(_text(i.name) for i in pe.imports))
    if lief.is_macho(name):
        fat = lief.MachO.parse(name)
        if fat is None or fat.size != 1:
            return None
        macho = fat.at(0)
        if macho is None:
            return None
        # the same reader as the macOS wheel check (kiln.package.macho)
        mfacts = macho_facts(macho)
        minos = None if mfacts.minos is None else ".".join(map(str, mfacts.minos))
        signature = "absent"
        cs = macho.code_signature
        if cs is not None:
            signature = read_code_signature(path.read_bytes(), cs.data_offset,
                                            cs.data_size).state
        machine = {"arm64": "aarch64"}.get(mfacts.arch, mfacts.arch)
        return BinaryFacts(path=rel, format="MachO", machine=machine, big_endian=False,
                           libraries=mfacts.dylibs, macos_minos=minos,
                           code_signature=signature)
    return None


# --------------------------------------------------------------------------------------------
# Checks on facts (no I/O)


def _allowed(lib: str, entry: Entry, allowed: Sequence[str], own: set[str]) -> bool:
    base = lib.rsplit("/", 1)[-1]
    if base in own or lib in own:
        return True
    if entry.os == "windows":
        return any(fnmatch.fnmatch(lib.lower(), pat.lower()) for pat in allowed)
    return any(fnmatch.fnmatchcase(lib, pat) for pat in allowed)


def check_facts(facts: BinaryFacts, entry: Entry, *, allowed: Sequence[str],
                own: set[str]) -> list[Check]:
    """The checks of one binary; ``own`` holds the file names of the archive's libraries."""
    name = facts.path
    out: list[Check] = []
    want_format = FORMAT_FOR_OS[entry.os]
    big = entry.arch == "s390x"
    ok = (facts.format == want_format and facts.machine == entry.arch
          and facts.big_endian == big)
    out.append(Check(name=f"{name}: format", ok=ok,
                     detail=f"{facts.format} {facts.machine}"
                            + (" big-endian" if facts.big_endian else "")
                            + ("" if ok else f" (expected {want_format} {entry.arch}"
                               + (" big-endian" if big else "") + ")")))
    if entry.os == "macos":
        want = entry.min_os or ""
        got = facts.macos_minos
        ok = got is not None and _version_tuple(got) == _version_tuple(want)
        out.append(Check(name=f"{name}: macOS minimum", ok=ok,
                         detail=f"{got or 'none recorded'}" + ("" if ok else f", want {want}")))
        sig = facts.code_signature or "absent"
        if entry.arch == "aarch64":
            ok = sig == "ad-hoc"
            detail = ("ad-hoc signature, hashes match" if ok else
                      "absent: arm64 macOS refuses to run unsigned code" if sig == "absent" else
                      "signed without the adhoc flag: kiln signs no Mach-O with a certificate"
                      if sig == "signed" else sig)
        else:  # x86_64 Macs run unsigned code, and zig signs none there: recorded, not needed
            ok = not sig.startswith("invalid")
            detail = {"ad-hoc": "ad-hoc signature, hashes match",
                      "absent": "unsigned (x86_64 macOS runs unsigned code)",
                      "signed": "signed, hashes match"}.get(sig, sig)
        out.append(Check(name=f"{name}: code signature", ok=ok, detail=detail))
    if entry.os == "linux" and entry.libc == "glibc":
        best, odd = glibc_max(facts.glibc_versions)
        floor = entry.libc_floor or "0"
        ok = not odd and (best is None or _version_tuple(best) <= _version_tuple(floor))
        out.append(Check(name=f"{name}: glibc", ok=ok,
                         detail=f"needs GLIBC_{best or '(none)'}, floor {floor}"
                                + (f"; unexpected {', '.join(odd)}" if odd else "")))
    if entry.libc == "musl" or entry.os == "android":
        static = facts.interpreter is None and not facts.libraries
        if name.startswith("bin/"):
            out.append(Check(name=f"{name}: static", ok=static,
                             detail="static, no interpreter" if static else
                             f"dynamic: interpreter {facts.interpreter}, needs "
                             f"{', '.join(facts.libraries) or 'nothing'}"))
    bad = [lib for lib in facts.libraries if not _allowed(lib, entry, allowed, own)]
    out.append(Check(name=f"{name}: libraries", ok=not bad,
                     detail=("needs " + ", ".join(facts.libraries) if facts.libraries
                             else "needs nothing") if not bad else
                     f"needs {', '.join(bad)}, which is neither in the archive nor allowed"))
    return out


def check_pe_signature(path: Path, rel: str, ctx: VerifyContext) -> Check:
    """A Windows binary's Authenticode signature against the build's certificate."""
    name = f"{rel}: authenticode"
    cert_text = ctx.extra.get("authenticode_cert")
    if not cert_text:
        return Check(name=name, ok=False,
                     detail="no certificate to check the signature against (the build signs "
                            "Windows binaries: kiln/package/authenticode.py)")
    cert = Path(cert_text)
    try:
        seen = verify_pe(path, cert, env=ctx.env)
    except IntegrityError as exc:
        return Check(name=name, ok=False, detail=exc.message)
    signer = Signer(subject=seen.subject, sha256=cert_sha256(cert),
                    throwaway=bool(ctx.extra.get("authenticode_throwaway")))
    return Check(name=name, ok=True, detail="verifies: " + signer_note(signer))


def check_gpu_runtime_links(facts: BinaryFacts, entry: Entry) -> Check | None:
    """A GPU entry's binary needs no vendor runtime at link time (None for other backends)."""
    patterns = GPU_RUNTIME_LIBS.get(entry.backend)
    if patterns is None:
        return None
    bad = [lib for lib in facts.libraries
           if any(fnmatch.fnmatch(lib.rsplit("/", 1)[-1].lower(), p.lower()) for p in patterns)]
    return Check(name=f"{facts.path}: no {entry.backend} runtime at link time", ok=not bad,
                 detail="links none of " + ", ".join(patterns) if not bad else
                 f"links {', '.join(bad)}: the backend must open it at run time "
                 "(runtime/src/backends/gpu_dl.h), or the archive fails to load without it")


def _range(names: Sequence[str]) -> str:
    return f"{names[0]}..{names[-1]} ({len(names)})" if len(names) > 2 else ", ".join(names)


def device_code_note(ctx: VerifyContext, backend: str) -> str:
    """The project's device code of ``backend`` and the option kiln hands it to the build
    with, for a message: "src/backends/cuda/kernels.cu (DEMO_CUDA_BLOBS unset?)"."""
    names = ctx.job.names
    try:
        rel = names.device_source(backend)
        option = names.option(f"{backend.upper()}_BLOBS")
    except ConfigError:
        return f"the project's {backend} device code ([build.device_code] in kiln.toml)"
    found = project_source(ctx)
    label = found[1] if found is not None else ""
    return f"{label}/{rel} ({option} unset?)" if label else f"{rel} ({option} unset?)"


def check_cuda_device_code(scanned: Sequence[tuple[str, cuda_device.DeviceCode]],
                           entry: Entry, driver_named: Sequence[str] = (), *,
                           device_code: str = "the project's cuda device code") -> list[Check]:
    """The device code found in each binary (``scanned``: (path, what scan_device_code found))
    against the entry's ``gpu_targets``: one binary (the library) carries it, exactly that SM
    list once each and its PTX; ``driver_named``: the binaries that name the driver;
    ``device_code``: what the build should have embedded (``device_code_note``)."""
    carriers = [(rel, dc) for rel, dc in scanned if dc.cubins or dc.ptx]
    if not carriers:
        return [Check(name="cuda device code", ok=False,
                      detail="no cubin and no PTX in any binary of bin/ or lib/: the build did "
                             f"not embed {device_code}")]
    out = []
    for rel, dc in carriers:
        problems = cuda_device.check_targets(dc, entry.gpu_targets)
        out.append(Check(name=f"{rel}: cuda device code", ok=not problems,
                         detail="; ".join(problems) if problems else
                         f"cubins {_range(dc.cubins)} + PTX {', '.join(dc.ptx) or 'none'}, "
                         "exactly the matrix's gpu_targets"))
    return out + _carrier_checks("cuda device code", "cuda driver",
                                 [rel for rel, _ in carriers], entry, driver_named)


def _carrier_checks(code_name: str, driver_name: str, carriers: Sequence[str], entry: Entry,
                    driver_named: Sequence[str]) -> list[Check]:
    """What CUDA and HIP share: device code in exactly one binary, and that binary names the
    vendor runtime it opens at run time."""
    out = []
    if len(carriers) > 1:
        out.append(Check(name=code_name, ok=False,
                         detail="device code embedded more than once: " + ", ".join(carriers)))
    driver = GPU_DRIVER.get((entry.backend, entry.os))
    if driver is not None:
        holders = [rel for rel in carriers if rel in driver_named]
        out.append(Check(name=driver_name, ok=bool(holders),
                         detail=f"{', '.join(holders)} opens {driver} at run time" if holders
                         else f"{driver} is named in no binary that carries device code"))
    return out


def check_hip_device_code(scanned: Sequence[tuple[str, hip.BundleScan]], entry: Entry,
                          driver_named: Sequence[str] = (), *,
                          device_code: str = "the project's hip device code") -> list[Check]:
    """``check_cuda_device_code`` for HIP: the code-object bundle of the library holds
    exactly the entry's gfx targets."""
    carriers = [(rel, sc) for rel, sc in scanned if sc.bundles or sc.compressed]
    if not carriers:
        return [Check(name="hip device code", ok=False,
                      detail="no offload bundle in any binary of bin/ or lib/: the build did "
                             f"not embed {device_code}")]
    out = []
    for rel, sc in carriers:
        problems = hip.check_gfx_targets(sc, entry.gpu_targets)
        out.append(Check(name=f"{rel}: hip device code", ok=not problems,
                         detail="; ".join(problems) if problems else
                         f"code objects {', '.join(sc.gfx)}, exactly the matrix's gpu_targets"))
    return out + _carrier_checks("hip device code", "hip runtime",
                                 [rel for rel, _ in carriers], entry, driver_named)


def check_required(stage: Path, groups: Sequence[Sequence[str]]) -> Check:
    """Every group of ``required_files`` has a file in ``stage`` (a group lists alternatives)."""
    missing = [" or ".join(g) for g in groups if not any((stage / p).is_file() for p in g)]
    if missing:
        return Check(name="required files", ok=False,
                     detail=f"the tree lacks {', '.join(missing)} (the project's CMake "
                            "install() rules or kiln.toml's build.targets make them; "
                            "kiln/package/archive.py: required_files)")
    return Check(name="required files", ok=True,
                 detail=", ".join(next(p for p in g if (stage / p).is_file()) for g in groups))


def check_host_paths(files: Iterable[tuple[str, bytes]], host_paths: Sequence[str]) -> Check:
    """No absolute path of the build host in any file (UTF-8 or UTF-16LE, as PE strings)."""
    needles = []
    for p in host_paths:
        if len(p) > 1:
            needles.append((p, p.encode()))
            needles.append((p, p.encode("utf-16-le")))
    hits = []
    for rel, data in files:
        found = sorted({p for p, n in needles if n in data})
        if found:
            hits.append(f"{rel} contains {', '.join(found)}")
    return Check(name="host paths", ok=not hits,
                 detail="no absolute path of the build host in any file" if not hits
                 else "; ".join(hits) + " (fix: -ffile-prefix-map, no debug info, @rpath)")


# --------------------------------------------------------------------------------------------
# The verifier


def _stage_files(stage: Path) -> list[Path]:
    return sorted(p for p in stage.rglob("*") if p.is_file() and not p.is_symlink())


def inspect_stage(ctx: VerifyContext) -> list[Check]:
    """Every inspect check on the stage (the run-based methods start with these)."""
    entry = ctx.entry
    files = _stage_files(ctx.stage)
    own = {p.name for p in ctx.stage.rglob("*") if p.parent.name in ("lib", "bin")}
    allowed = ctx.spec.allowed_for(entry.os, entry.backend)
    checks: list[Check] = []
    binaries = 0
    scanned: list[tuple[str, cuda_device.DeviceCode]] = []
    bundles: list[tuple[str, hip.BundleScan]] = []
    driver_named: list[str] = []
    opencl_bins: list[opencl_checks.OpenclBinary] = []
    driver = GPU_DRIVER.get((entry.backend, entry.os), "")
    checks.append(check_required(ctx.stage, required_files(ctx.job, ctx.layout)))
    for path in files:
        rel = path.relative_to(ctx.stage).as_posix()
        if not rel.startswith(("bin/", "lib/")):
            continue
        facts = read_facts(path, rel)
        if facts is None:
            continue
        binaries += 1
        checks.extend(check_facts(facts, entry, allowed=allowed, own=own))
        if entry.os == "windows" and facts.format == "PE":
            checks.append(check_pe_signature(path, rel, ctx))
        links = check_gpu_runtime_links(facts, entry)
        if links is not None:
            checks.append(links)
        if entry.backend in ("cuda", "hip"):
            data = path.read_bytes()
            if entry.backend == "cuda":
                scanned.append((rel, cuda_device.scan_device_code(data)))
            else:
                bundles.append((rel, hip.scan_bundles(data)))
            if driver and driver.encode() in data:
                driver_named.append(rel)
        if entry.backend == "opencl":
            opencl_bins.append(opencl_checks.OpenclBinary(rel, path.read_bytes(), facts.libraries))
    if binaries == 0:
        checks.append(Check(name="binaries", ok=False,
                            detail="no ELF/PE/Mach-O file in bin/ or lib/"))
    elif entry.backend == "cuda":
        checks.extend(check_cuda_device_code(scanned, entry, driver_named,
                                             device_code=device_code_note(ctx, "cuda")))
    elif entry.backend == "hip":
        checks.extend(check_hip_device_code(bundles, entry, driver_named,
                                            device_code=device_code_note(ctx, "hip")))
    elif entry.backend == "opencl":
        sources = opencl_checks.kernel_sources(ctx)
        if isinstance(sources, Check):
            checks.append(sources)
        else:
            checks.extend(opencl_checks.check_opencl(opencl_bins, entry, sources))
    checks.append(check_host_paths(((p.relative_to(ctx.stage).as_posix(), p.read_bytes())
                                    for p in files), ctx.host_paths))
    return checks


def summarize(checks: Sequence[Check], entry: Entry) -> Check:
    """Fold the per-file checks into one line for the record (failures kept apart)."""
    n = sum(1 for c in checks if c.name.endswith(": format"))
    facts = f"{n} binaries, {FORMAT_FOR_OS[entry.os]} {entry.arch}"
    if entry.os == "macos":
        facts += f", minos {entry.min_os}"
        signatures = {c.detail for c in checks if c.name.endswith(": code signature")}
        if signatures and all(d.startswith("ad-hoc") for d in signatures):
            facts += ", ad-hoc signed"
        elif signatures:
            facts += ", code signature: " + "; ".join(sorted(signatures))
    if entry.os == "windows":
        signed = [c for c in checks if c.name.endswith(": authenticode")]
        notes = sorted({c.detail.removeprefix("verifies: ") for c in signed})
        facts += f", {len(signed)} PE files Authenticode-signed ({'; '.join(notes) or 'none'})"
    if entry.os == "linux" and entry.libc == "glibc":
        facts += f", glibc <= {entry.libc_floor}"
    if entry.os == "android":
        facts += ", static"
    facts += ", allowed libraries only, no host paths"
    # the GPU evidence as it was seen (which file, which SMs, which driver), not restated
    gpu = [(c.name.removesuffix(" device code") + ": " if c.name.endswith(" device code")
            else "") + c.detail
           for c in checks
           if c.name.endswith((": cuda device code", ": hip device code", "cuda driver",
                               "hip runtime"))]
    if gpu:
        facts += "; " + "; ".join(gpu) + f"; no {entry.backend} runtime library at link time"
    if entry.backend == "opencl":
        facts += "; " + opencl_checks.summary(checks)
    if entry.backend in GPU_RUNTIME_LIBS:
        # what the binaries do link, for the record: system libraries and the project's own
        linked = sorted({lib for c in checks if c.name.endswith(": libraries")
                         and c.detail.startswith("needs ") and c.detail != "needs nothing"
                         for lib in c.detail.removeprefix("needs ").split(", ")},
                        key=str.lower)
        crt = [lib for lib in linked if lib.lower().startswith("api-ms-win-crt-")]
        if len(crt) > 1:  # the Universal CRT's API sets, one name for all of them
            linked = [f"api-ms-win-crt-*.dll ({len(crt)})"] + [x for x in linked if x not in crt]
        facts += "; links only " + (", ".join(linked) or "nothing")
    required = next((c for c in checks if c.name == "required files"), None)
    if required is not None:  # the tools by name, the rest (header, library, licences) counted
        present = required.detail.split(", ")
        tools = [p for p in present if p.startswith("bin/") and not p.endswith(".dll")]
        others = len(present) - len(tools)
        facts += f"; has {', '.join(tools)}" + (f" and the {others} other required files"
                                                 if others else "")
    return Check(name="inspect", ok=True, detail=facts)


class InspectVerifier:
    method = "inspect"

    def needs(self, entry: Entry, spec: VerifySpec) -> Sequence[ToolNeed]:
        return signature_needs(entry)

    def verify(self, ctx: VerifyContext) -> VerifyReport:
        checks = inspect_stage(ctx)
        return VerifyReport(entry_id=ctx.entry.id, method=self.method,
                            checks=tuple(compact(checks, ctx.entry)))


def signature_needs(entry: Entry) -> tuple[ToolNeed, ...]:
    """What checking a Windows entry's Authenticode signatures needs."""
    if entry.os != "windows":
        return ()
    return (ToolNeed(program="osslsigncode", hint=install_hint("osslsigncode")),)


def inspect_first(ctx: VerifyContext) -> list[Check]:
    """What the run verifiers (native, qemu, wine) start with: every inspect check, each
    logged to the entry's log, then compacted for the report; run checks are appended."""
    checks = inspect_stage(ctx)
    for c in checks:
        log_line(ctx, f"inspect {'ok  ' if c.ok else 'FAIL'} {c.name}: {c.detail}")
    return compact(checks, ctx.entry)


def compact(checks: Sequence[Check], entry: Entry) -> list[Check]:
    """All failures as they are, or one summary line when everything passed."""
    failed = [c for c in checks if not c.ok]
    return failed if failed else [summarize(checks, entry)]
