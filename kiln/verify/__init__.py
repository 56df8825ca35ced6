"""Verify a staged build: run it where an emulator exists, inspect it where none does.

What a run-based method runs and expects comes from the project's ``kiln.toml``: the smoke
program and its arguments (``[smoke]``), its server (``[smoke.server]``), how it is pointed at
a backend (``[smoke.backends.<backend>]``), the files every tree holds (``[package]``) and the
device code (``[build.device_code]``). One module per method in ``kiln/verify/`` behind the
``Verifier`` protocol, registered in ``VERIFIERS``:

- ``native``: runs the build's smoke program on this host;
- ``qemu``: runs it under qemu-user (aarch64, s390x; glibc builds with ``-L`` the Debian
  cross sysroot, static musl builds without);
- ``wine``: runs the Windows x86_64 build under wine;
- ``lavapipe``: runs a Vulkan build's smoke program on its vulkan backend
  (``[smoke.backends.vulkan]``) on Mesa's lavapipe (Linux x86_64 directly, Windows x86_64
  under wine, Linux aarch64 under qemu-aarch64);
- ``openvino-cpu``: runs an OpenVINO build's smoke program on OpenVINO's CPU plugin
  (``[smoke.backends.openvino]``);
- ``inspect``: checks what cannot be run here (format and machine, macOS minimum version and
  code signature, highest GLIBC_x.y symbol version, needed libraries against an allow-list,
  no absolute paths of the build host).

Every run-based method inspects first, then runs the smoke program (greedy, a fixed number of
tokens) on the small model named in ``recipes/verify.yaml`` and compares its ``generated_ids``
(``smoke.output = "json-ids"``) or its standard output (``"stdout"``) with the host build's
(the reference entry, ``ubuntu-x64``): s390x is big-endian, and the same little-endian GGUF
must give the same tokens everywhere. Then the build's server, where ``[smoke.server]`` names
one, runs behind the same emulator (``kiln.verify.server``: port 0, ``GET /health``, one greedy
completion of the same prompt whose tokens must be the smoke program's, SIGTERM), and
inspection requires every file an archive requires (``kiln.package.archive.required_files``),
the server included.

``kiln.verify.floors`` (imported by its own name, not re-exported here) measures an archive's
compatibility floors from its binaries (glibc and GLIBCXX symbol versions, macOS minos, PE
subsystem version, x86-64 level outside run-time dispatch, Android API level) and checks them
against the matrix's promise (docs/floors.md).
"""

from __future__ import annotations

from kiln.errors import VerifyError
from kiln.matrix import Entry
from kiln.verify.base import (
    VERIFY_VERSION,
    Check,
    CliRun,
    ToolNeed,
    Verifier,
    VerifyContext,
    VerifyReport,
    compare_ids,
    parse_cli_json,
)
from kiln.verify.inspect import InspectVerifier
from kiln.verify.lavapipe import LavapipeVerifier
from kiln.verify.native import NativeVerifier
from kiln.verify.openvino_cpu import OpenvinoCpuVerifier
from kiln.verify.qemu import QemuVerifier
from kiln.verify.wine import WineVerifier

__all__ = [
    "VERIFIERS",
    "VERIFY_VERSION",
    "Check",
    "CliRun",
    "ToolNeed",
    "Verifier",
    "VerifyContext",
    "VerifyReport",
    "compare_ids",
    "parse_cli_json",
    "verifier_for",
]

VERIFIERS: dict[str, Verifier] = {
    v.method: v for v in (NativeVerifier(), QemuVerifier(), WineVerifier(), InspectVerifier(),
                          OpenvinoCpuVerifier(), LavapipeVerifier())
}


def verifier_for(entry: Entry) -> Verifier:
    if entry.verify not in VERIFIERS:
        raise VerifyError(f"'{entry.id}': verification method '{entry.verify}' is not "
                          f"available in this kiln (have: {', '.join(sorted(VERIFIERS))})")
    return VERIFIERS[entry.verify]
