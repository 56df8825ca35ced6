"""``qemu``: run the build's smoke program (kiln.toml) under qemu-user and compare with the host
build's ids or output.

binfmt is not registered on the build host, so kiln calls ``qemu-<arch>`` explicitly. glibc
builds get ``-L <Debian cross sysroot>`` (``/usr/aarch64-linux-gnu``, ``/usr/s390x-linux-gnu``)
for the dynamic loader and libc; static musl builds (Android) need nothing. s390x is
big-endian: the same little-endian GGUF must give the same ids as the host build. A second
run gives a non-ASCII prompt and model path (``unicode_check``); then the build's server (the
smoke test's ``server``) runs under the same qemu (sockets are the host's) and must give the
program's tokens over HTTP (``kiln.verify.server.server_check``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from kiln.build.toolchains.recipe import VerifySpec
from kiln.matrix import Entry
from kiln.run import install_hint, require_tool
from kiln.verify.base import (
    Check,
    ToolNeed,
    VerifyContext,
    VerifyReport,
    model_check,
    run_and_compare,
    smoke_program,
    smoke_server,
    smoke_stdout,
    stdout_smoke,
    unicode_check,
)
from kiln.verify.inspect import inspect_first
from kiln.verify.server import server_check

__all__ = ["QemuVerifier"]


def _needs_sysroot(entry: Entry) -> bool:
    return entry.libc == "glibc"


class QemuVerifier:
    method = "qemu"

    def needs(self, entry: Entry, spec: VerifySpec) -> Sequence[ToolNeed]:
        q = spec.qemu_for(entry.arch)
        if q is None:
            return (ToolNeed(program=f"qemu-{entry.arch}",
                             hint=f"recipes/verify.yaml has no qemu entry for {entry.arch}"),)
        needs = [ToolNeed(program=q.program, hint=install_hint(q.program))]
        if _needs_sysroot(entry):
            needs.append(ToolNeed(path=q.sysroot,
                                  hint=f"apt-get install -y {q.sysroot_package}"))
        return needs

    def verify(self, ctx: VerifyContext) -> VerifyReport:
        entry = ctx.entry
        out = inspect_first(ctx)
        ids = None
        text = None
        q = ctx.spec.qemu_for(entry.arch)
        model, problem = model_check(ctx)
        if q is None:
            out.append(Check(name="run", ok=False, detail=f"no qemu for {entry.arch}"))
        elif problem is not None or model is None:
            out.append(problem or Check(name="model", ok=False, detail="missing"))
        else:
            prefix = [require_tool(q.program, path=ctx.env.get("PATH"))]
            if _needs_sysroot(entry):
                if not Path(q.sysroot).is_dir():
                    out.append(Check(name="run", ok=False,
                                     detail=f"{q.sysroot} is missing (apt-get install -y "
                                            f"{q.sysroot_package})"))
                    return VerifyReport(entry_id=entry.id, method=self.method,
                                        checks=tuple(out))
                prefix += ["-L", q.sysroot]
            if stdout_smoke(ctx) is not None:
                check, text = smoke_stdout(ctx, how=f"ran under {q.program}", prefix=prefix,
                                           model_arg=str(model), env=ctx.env)
                out.append(check)
                return VerifyReport(entry_id=entry.id, method=self.method,
                                    checks=tuple(out), output=text)
            exe = smoke_program(ctx)
            check, ids = run_and_compare(ctx, how=f"ran under {q.program}", prefix=prefix,
                                         exe=exe, model_arg=str(model), env=ctx.env)
            out.append(check)
            out.append(unicode_check(ctx, how=f"ran under {q.program}", prefix=prefix, exe=exe,
                                     model=model, env=ctx.env))
            server = smoke_server(ctx)
            if server is not None:
                out.append(server_check(ctx, how=f"ran under {q.program}", prefix=prefix,
                                        exe=server, model_arg=str(model), env=ctx.env,
                                        cli_ids=ids))
        return VerifyReport(entry_id=entry.id, method=self.method, checks=tuple(out),
                            generated_ids=ids)
