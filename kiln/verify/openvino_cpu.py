"""``openvino-cpu``: run the OpenVINO build's smoke program on its OpenVINO backend on
OpenVINO's CPU plugin and compare its ids with the host build's.

The OpenVINO runtime is the one kiln pins and unpacks into its cache
(kiln/build/toolchains/openvino.py). How the program is pointed at it, and at the CPU plugin,
is kiln.toml's ``[smoke.backends.openvino]``: extra arguments, variables to set (``{runtime}``
is the runtime's C API library) and to unset; a project without the table fails the check,
naming it. That it ran there, and not on the program's own CPU path, is checked from the JSON
the program prints: ``backend`` must be ``openvino`` and ``device`` must name the CPU plugin
with f32 inference precision (the program sets the hint to f32 so that CPUs with AMX or
AVX512-BF16 do not compute in bf16).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from kiln.build.toolchains.base import ToolchainPaths
from kiln.build.toolchains.openvino import install_openvino, runtime_library
from kiln.build.toolchains.recipe import VerifySpec
from kiln.errors import KilnError
from kiln.matrix import Entry
from kiln.run import run
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

__all__ = ["OpenvinoCpuVerifier", "device_check"]

HOW = "ran on OpenVINO's CPU plugin"


def device_check(stdout: str, program: str = "the smoke program") -> Check:
    """Whether the JSON ``program`` printed says it computed with OpenVINO on the CPU plugin
    in f32."""
    return backend_device_check(
        stdout, lambda backend, device: (backend == "openvino" and "CPU plugin" in device
                                         and device.endswith(", f32)")),
        "backend openvino on the CPU plugin in f32", program=program)


class OpenvinoCpuVerifier:
    method = "openvino-cpu"

    def needs(self, entry: Entry, spec: VerifySpec) -> Sequence[ToolNeed]:
        return ()  # the runtime is fetched into kiln's cache by verify() itself

    def verify(self, ctx: VerifyContext) -> VerifyReport:
        entry = ctx.entry
        out = inspect_first(ctx)
        ids = None
        model, problem = model_check(ctx)
        toolchains = ctx.extra.get("toolchains")
        program = ctx.smoke.program
        backend_run = ctx.smoke.backend("openvino")
        if entry.os != "linux" or entry.arch != ctx.host_arch or entry.backend != "openvino":
            out.append(Check(name="run", ok=False,
                             detail=f"openvino-cpu runs Linux {ctx.host_arch} OpenVINO builds "
                                    f"only, not {entry.os} {entry.arch} {entry.backend}"))
        elif problem is not None or model is None:
            out.append(problem or Check(name="model", ok=False, detail="missing"))
        elif backend_run is None:
            out.append(missing_backend("openvino", program, HOW))
        elif not toolchains:
            out.append(Check(name="run", ok=False,
                             detail="no toolchain directory given to find the OpenVINO runtime"))
        else:
            root = Path(toolchains)
            try:
                rt = install_openvino(ToolchainPaths(root=root, zig_cache=root.parent / "zig"),
                                      entry.backend_version or "", "linux", env=ctx.env,
                                      log_file=ctx.log_file)
                lib = runtime_library(rt, "linux")
            except KilnError as exc:
                out.append(Check(name="runtime", ok=False, detail=exc.message))
                return VerifyReport(entry_id=entry.id, method=self.method, checks=tuple(out))
            env = backend_run.environment(ctx.env, runtime=str(lib))
            exe = smoke_program(ctx)
            argv = [str(exe), *cli_args(ctx, str(model)), *backend_run.args]
            done = run(argv, env=env, check=False, timeout=ctx.spec.run.timeout_s, what=HOW)
            shown = backend_run.shown(runtime=str(lib))
            log_line(ctx, f"+ {shown} " + " ".join(done.argv) if shown
                     else "+ " + " ".join(done.argv))
            log_line(ctx, done.stdout)
            if done.stderr.strip():
                log_line(ctx, done.stderr)
            if done.returncode != 0:
                tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
                out.append(Check(name=HOW, ok=False,
                                 detail=f"{program} exited with {done.returncode}: {tail}"))
            else:
                out.append(device_check(done.stdout, program))
                try:
                    got = parse_cli_json(done.stdout, program)
                except KilnError as exc:
                    out.append(Check(name=HOW, ok=False, detail=exc.message))
                else:
                    out.append(compare_ids(got, ctx, how=HOW))
                    ids = got.generated_ids
        return VerifyReport(entry_id=entry.id, method=self.method, checks=tuple(out),
                            generated_ids=ids)
