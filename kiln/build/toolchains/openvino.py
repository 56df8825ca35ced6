"""OpenVINO entries: zig for the host code (exactly as the cpu backend) + the pinned OpenVINO
runtime from PyPI for verification.

kiln's OpenVINO builds assume a backend that opens the OpenVINO C API (``libopenvino_c.so`` /
``openvino_c.dll``) at run time and declares the few entry points it calls itself, so the build
needs neither OpenVINO's headers nor its libraries: the host side is the zig cross build of
``kiln/build/toolchains/zig.py`` with the project's OpenVINO switch
(``<option_prefix>OPENVINO=ON``, kiln.toml ``[build]``), and the Windows entry cross-builds
like win-cpu-x64.

The runtime is still pinned and installed by kiln, because the ``openvino-cpu`` verifier runs
the archive's smoke program on OpenVINO's CPU plugin (kiln.toml ``[smoke.backends.openvino]``
says how): ``pip download`` fetches the ``openvino==OPENVINO_PINS[version]`` wheel of the
entry's platform (manylinux x86_64 or win_amd64) into
``<cache>/toolchains/openvino-<pin>/<os>/`` and kiln unpacks its ``libs/`` (the runtime, the
plugins, TBB) and ``include/openvino/c`` (the C API headers, kept for reference) there, under a
lock, renamed into place when complete. Nothing goes into the user's environment.

The archives do not bundle the OpenVINO runtime (about 100 MB of libraries and plugins): it is
a documented prerequisite, as the OpenVINO archive or ``pip install openvino==2026.2.*``, which
the project's backend finds as its documentation says (the verifier passes the runtime library
through ``[smoke.backends.openvino]``'s ``{runtime}``).
"""

from __future__ import annotations

import os
import shutil
import sys
import zipfile
from collections.abc import Mapping
from pathlib import Path

from kiln.errors import CommandFailed, ConfigError
from kiln.files import COMPLETE, install_once
from kiln.plan import Job
from kiln.run import run
from kiln.build.toolchains.base import ToolchainPaths
from kiln.build.toolchains.hosted import DeviceStep, ZigHostedToolchain

__all__ = ["OPENVINO_PINS", "OpenvinoToolchain", "install_command", "install_openvino",
           "runtime_library"]

# backend_version -> the exact wheel version (the C API and plugins are the same in every
# CPython tag of one release: one tag is fetched)
OPENVINO_PINS: dict[str, str] = {"2026.2": "2026.2.1"}
PLATFORM_TAGS: dict[str, str] = {"linux": "manylinux_2_28_x86_64", "windows": "win_amd64"}
WHEEL_PYTHON = "3.12"
# the C library inside libs/ (the Linux one carries the release in its name: .so.2621)
C_LIBRARY: dict[str, str] = {"linux": "libopenvino_c.so.*", "windows": "openvino_c.dll"}


def _pin(version: str) -> str:
    if version not in OPENVINO_PINS:
        raise ConfigError(f"kiln has no OpenVINO runtime pinned for {version!r}",
                          hint=f"known: {', '.join(sorted(OPENVINO_PINS))} "
                               "(kiln/build/toolchains/openvino.py OPENVINO_PINS)")
    return OPENVINO_PINS[version]


def _dest(paths: ToolchainPaths, version: str, os_name: str) -> Path:
    return paths.root / f"openvino-{_pin(version)}" / os_name


def _pip_download(dest: Path, version: str, os_name: str) -> list[str]:
    return [sys.executable, "-m", "pip", "download", "--no-deps", "--no-input",
            "--disable-pip-version-check", "--only-binary=:all:",
            "--platform", PLATFORM_TAGS[os_name], "--python-version", WHEEL_PYTHON,
            "--implementation", "cp", "-d", str(dest), f"openvino=={_pin(version)}"]


def install_command(paths: ToolchainPaths, version: str, os_name: str) -> str:
    """The exact command that fetches the wheel kiln unpacks (kiln runs it itself)."""
    return " ".join(_pip_download(_dest(paths, version, os_name) / "wheel", version, os_name))


def install_openvino(paths: ToolchainPaths, version: str, os_name: str, *,
                     env: Mapping[str, str], log_file: Path | None = None) -> Path:
    """Fetch and unpack the pinned OpenVINO runtime for ``os_name`` once; return its root,
    which holds ``libs/`` and ``include/openvino/c/``."""
    if os_name not in PLATFORM_TAGS:
        raise ConfigError(f"OpenVINO runtimes exist for {', '.join(PLATFORM_TAGS)} only, "
                          f"not {os_name}")
    pin = _pin(version)

    def fill(tmp: Path) -> str:
        try:
            run(_pip_download(tmp / "wheel", version, os_name), env=env,
                log_file=log_file, what=f"pip download OpenVINO {pin} ({os_name})")
        except CommandFailed as exc:
            raise CommandFailed(exc.message, output=exc.output,
                                hint="kiln fetches it from PyPI; by hand: "
                                     + install_command(paths, version, os_name)) from exc
        wheels = sorted((tmp / "wheel").glob("openvino-*.whl"))
        if len(wheels) != 1:
            raise ConfigError(f"pip download left {len(wheels)} OpenVINO wheels in "
                              f"{tmp / 'wheel'}, expected 1")
        _unpack(wheels[0], tmp)
        if not list((tmp / "libs").glob(C_LIBRARY[os_name])):
            raise ConfigError(f"{wheels[0].name} has no libs/{C_LIBRARY[os_name]}",
                              hint="report this: the openvino wheel layout changed")
        shutil.rmtree(tmp / "wheel")
        return f"openvino=={pin} {wheels[0].name}\n"

    return install_once(_dest(paths, version, os_name),
                        lock=paths.lock_dir() / f"openvino-{pin}-{os_name}.lock",
                        fill=fill, marker=COMPLETE)


def _unpack(wheel: Path, root: Path) -> None:
    """``openvino/libs/*`` -> ``root/libs``, ``openvino/include/openvino/c/**`` ->
    ``root/include/openvino/c``; nothing else of the wheel (the Python package) is kept."""
    with zipfile.ZipFile(wheel) as zf:
        for info in zf.infolist():
            name = info.filename
            if info.is_dir() or ".." in name.split("/"):
                continue
            if name.startswith("openvino/libs/") and name.count("/") == 2:
                out = root / "libs" / name.rsplit("/", 1)[1]
            elif name.startswith("openvino/include/openvino/c/"):
                out = root / "include" / name[len("openvino/include/"):]
            else:
                continue
            out.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, out.open("wb") as dst:
                shutil.copyfileobj(src, dst)
            if os.name == "posix":
                out.chmod(0o755 if ".so" in out.name else 0o644)


def runtime_library(root: Path, os_name: str) -> Path:
    """The C API library inside an unpacked runtime (``{runtime}`` of kiln.toml's
    ``[smoke.backends.openvino]``)."""
    found = sorted((root / "libs").glob(C_LIBRARY[os_name]))
    if not found:
        raise ConfigError(f"{root / 'libs'} has no {C_LIBRARY[os_name]}",
                          hint=f"remove {root} and build again")
    return found[0]


class OpenvinoToolchain(ZigHostedToolchain):
    """Registered as ``openvino`` (recipes/openvino.yaml): zig for the host, the pinned
    OpenVINO runtime for the verifier (per version and OS, so fetched by ``device_step``)."""

    name = "openvino"
    label = "zig+openvino"

    def identity_extras(self, job: Job) -> tuple[str, Mapping[str, str]]:
        return f"+openvino-{_pin(job.entry.backend_version or '')}", {}

    def device_step(self, job: Job, *, paths: ToolchainPaths, source: Path, build: Path,
                    work: Path) -> DeviceStep:
        ver = job.entry.backend_version or ""
        install_openvino(paths, ver, job.entry.os, env=os.environ)
        return f"openvino-{_pin(ver)}", {}
