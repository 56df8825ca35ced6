"""``lavapipe``: run the Vulkan build's smoke program on its Vulkan backend on Mesa's lavapipe
(Vulkan on the CPU) and compare its ids with the host build's.

How the program is pointed at a backend is kiln.toml's: ``[smoke.backends.vulkan]`` (extra
arguments, variables to set and to unset: e.g. ``--backend vulkan`` and a variable that lets
it use a CPU device, which Vulkan backends tend to skip) and ``[smoke.backends.cpu]`` for the
second run, on the archive's own CPU path in the same environment; a project without them
fails the check, naming the table. The Vulkan
loader is pointed at lavapipe's driver manifest alone (``VK_DRIVER_FILES``, and
``VK_ICD_FILENAMES`` for loaders older than 1.3.207), so a GPU on the machine does not take
over. That it computed on lavapipe, and not on the program's CPU path, is checked from the JSON
the program prints: ``backend`` must be ``vulkan`` and ``device`` must name llvmpipe.

Where each build runs:

- Linux x86_64: directly, with the host's lavapipe (``mesa-vulkan-drivers``);
- Windows x86_64: under wine, whose ``vulkan-1.dll`` (winevulkan) hands the calls to the host's
  loader and so to lavapipe. Wine reaches Vulkan through its X11 driver only ("Failed to load
  Wine graphics driver supporting Vulkan" without a display), so the run gets a virtual X
  server from ``xvfb-run -a``;
- Linux aarch64: under ``qemu-aarch64 -L <sysroot>`` with Debian's arm64 loader and lavapipe
  (``libvulkan1:arm64 mesa-vulkan-drivers:arm64``, multiarch) found through
  ``QEMU_LD_PREFIX``'s library path; the driver manifest is the arm64 one.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from filelock import FileLock

from kiln.build.toolchains.recipe import VerifySpec
from kiln.errors import KilnError, ToolMissing
from kiln.matrix import Entry
from kiln.run import install_hint, require_tool, run
from kiln.verify.base import (
    Check,
    ToolNeed,
    VerifyContext,
    VerifyReport,
    backend_device_check,
    cli_args,
    compare_ids,
    log_line,
    missing_backend,
    model_check,
    parse_cli_json,
    smoke_program,
)
from kiln.verify.inspect import inspect_first
from kiln.verify.wine import windows_path

__all__ = ["LAVAPIPE_INSTALL", "LavapipeVerifier", "device_check", "manifest_for"]

LAVAPIPE_INSTALL = "apt-get install -y mesa-vulkan-drivers libvulkan1"
XVFB_INSTALL = "apt-get install -y --no-install-recommends xvfb xauth"
ARM64_INSTALL = ("dpkg --add-architecture arm64 && apt-get update && apt-get install -y "
                 "mesa-vulkan-drivers:arm64 libvulkan1:arm64")
ICD_DIR = Path("/usr/share/vulkan/icd.d")
ARM64_LIBS = "/usr/lib/aarch64-linux-gnu"  # Debian's multiarch directory of arm64 libraries
# the architecture name Mesa puts in its manifest's file name
MANIFEST_ARCH = {"x86_64": "x86_64", "aarch64": "aarch64"}


def manifest_for(arch: str, icd_dir: Path = ICD_DIR) -> Path:
    """lavapipe's driver manifest for binaries of ``arch``."""
    return icd_dir / f"lvp_icd.{MANIFEST_ARCH.get(arch, arch)}.json"


def device_check(stdout: str, program: str = "the smoke program") -> Check:
    """Whether the JSON ``program`` printed says it computed with the Vulkan backend on
    lavapipe."""
    return backend_device_check(
        stdout, lambda backend, device: backend == "vulkan" and "llvmpipe" in device,
        "backend vulkan on lavapipe's llvmpipe", program=program)


def _how(entry: Entry) -> str:
    if entry.os == "windows":
        return "ran on lavapipe under wine"
    if entry.arch == "aarch64":
        return "ran on lavapipe under qemu-aarch64"
    return "ran on lavapipe"


class LavapipeVerifier:
    method = "lavapipe"

    def needs(self, entry: Entry, spec: VerifySpec) -> Sequence[ToolNeed]:
        needs = []
        if entry.os == "windows":
            needs.append(ToolNeed(program="wine", hint=install_hint("wine")))
            needs.append(ToolNeed(program="xvfb-run", hint=XVFB_INSTALL))
        elif entry.arch == "aarch64":
            q = spec.qemu_for(entry.arch)
            if q is not None:
                needs.append(ToolNeed(program=q.program, hint=install_hint(q.program)))
                needs.append(ToolNeed(path=q.sysroot,
                                      hint=f"apt-get install -y {q.sysroot_package}"))
            # (a directory: kiln checks needs with is_dir; verify() checks the manifest itself)
            return (*needs, ToolNeed(path=ARM64_LIBS, hint=ARM64_INSTALL))
        return (*needs, ToolNeed(path=str(ICD_DIR), hint=LAVAPIPE_INSTALL))

    def verify(self, ctx: VerifyContext) -> VerifyReport:
        entry = ctx.entry
        out = inspect_first(ctx)
        ids = None
        model, problem = model_check(ctx)
        how = _how(entry)
        runnable = entry.backend == "vulkan" and (
            (entry.os == "linux" and entry.arch in ("x86_64", "aarch64"))
            or (entry.os == "windows" and entry.arch == "x86_64"))
        if not runnable:
            out.append(Check(name="run", ok=False,
                             detail=f"lavapipe runs Vulkan builds for Linux x86_64/aarch64 and "
                                    f"Windows x86_64, not {entry.os} {entry.arch} "
                                    f"{entry.backend}"))
        elif problem is not None or model is None:
            out.append(problem or Check(name="model", ok=False, detail="missing"))
        else:
            try:
                check, ids = self._run(ctx, model, how)
            except ToolMissing:
                raise
            except KilnError as exc:
                check = [Check(name=how, ok=False, detail=exc.message)]
            out.extend(check)
        return VerifyReport(entry_id=entry.id, method=self.method, checks=tuple(out),
                            generated_ids=ids)

    def _run(self, ctx: VerifyContext, model: Path,
             how: str) -> tuple[list[Check], tuple[int, ...] | None]:
        entry = ctx.entry
        program = ctx.smoke.program
        vulkan, cpu = ctx.smoke.backend("vulkan"), ctx.smoke.backend("cpu")
        if vulkan is None:
            return [missing_backend("vulkan", program, how)], None
        if cpu is None:
            return [missing_backend("cpu", program, how)], None
        manifest = manifest_for(entry.arch if entry.os == "linux" else "x86_64")
        if not manifest.is_file():
            hint = ARM64_INSTALL if entry.arch == "aarch64" else LAVAPIPE_INSTALL
            return [Check(name=how, ok=False, detail=f"{manifest} is missing ({hint})")], None
        # both runs get the loader's settings and the vulkan backend's variables, so that only
        # the backend differs; the cpu run's own come on top
        env = vulkan.environment({**ctx.env, "VK_DRIVER_FILES": str(manifest),
                                  "VK_ICD_FILENAMES": str(manifest)})
        exe = smoke_program(ctx)
        model_arg, prefix, cwd = str(model), [], None
        lock: FileLock | None = None
        if entry.os == "windows":
            if ctx.wine_root is None:
                return [Check(name=how, ok=False, detail="no wine prefix directory given")], None
            ctx.wine_root.mkdir(parents=True, exist_ok=True)
            env.update({"WINEPREFIX": str(ctx.wine_root / entry.arch), "WINEDEBUG": "-all",
                        "WINEARCH": "win64", "WINEDLLOVERRIDES": "mscoree,mshtml="})
            env.pop("DISPLAY", None)
            prefix = [require_tool("xvfb-run", path=ctx.env.get("PATH")), "-a",
                      require_tool("wine", path=ctx.env.get("PATH"))]
            model_arg, cwd = windows_path(model), exe.parent
            lock = FileLock(str(ctx.wine_root / f"{entry.arch}.lock"))
        elif entry.arch == "aarch64":
            q = ctx.spec.qemu_for(entry.arch)
            if q is None:
                return [Check(name=how, ok=False, detail="recipes/verify.yaml has no qemu "
                                                         "entry for aarch64")], None
            prefix = [require_tool(q.program, path=ctx.env.get("PATH")), "-L", q.sysroot]
            # the arm64 loader and Mesa live in the host's multiarch directory
            env["QEMU_SET_ENV"] = f"LD_LIBRARY_PATH={ARM64_LIBS}"
        checks: list[Check] = []
        ids: dict[str, tuple[int, ...]] = {}
        for backend, backend_run in (("vulkan", vulkan), ("cpu", cpu)):
            argv = [*prefix, str(exe), *cli_args(ctx, model_arg), *backend_run.args]
            what = how if backend == "vulkan" else how.replace("on lavapipe", "on its CPU path")
            run_env = env if backend == "vulkan" else cpu.environment(env)
            shown = " ".join(v for v in (f"VK_DRIVER_FILES={manifest}", vulkan.shown(),
                                         "" if backend == "vulkan" else cpu.shown()) if v)
            if lock is not None:
                with lock:
                    done = run(argv, env=run_env, cwd=cwd, check=False,
                               timeout=ctx.spec.run.timeout_s, what=what)
            else:
                done = run(argv, env=run_env, cwd=cwd, check=False,
                           timeout=ctx.spec.run.timeout_s, what=what)
            log_line(ctx, f"+ {shown} " + " ".join(done.argv))
            log_line(ctx, done.stdout)
            if done.stderr.strip():
                log_line(ctx, done.stderr)
            if done.returncode != 0:
                tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
                checks.append(Check(name=what, ok=False,
                                    detail=f"{program} exited with {done.returncode}: {tail}"))
                return checks, None
            ids[backend] = parse_cli_json(done.stdout, program).generated_ids
            if backend == "vulkan":
                checks.append(device_check(done.stdout, program))
                checks.append(compare_ids(parse_cli_json(done.stdout, program), ctx, how=how))
        # the same archive's CPU path is a second reference, independent of the host build
        same = ids["vulkan"] == ids["cpu"]
        on_vulkan = " ".join(vulkan.args) or "the vulkan run"
        on_cpu = " ".join(cpu.args) or "the cpu run"
        checks.append(Check(name="vulkan = cpu", ok=same,
                            detail=f"the archive's {on_cpu} gives the same ids" if same else
                                   f"{on_vulkan} {list(ids['vulkan'])} but {on_cpu} "
                                   f"{list(ids['cpu'])}"))
        return checks, ids["vulkan"]
