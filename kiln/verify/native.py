"""``native``: run the build's smoke program (kiln.toml) on this host and compare with the host
build's ids or output.

Only an entry for this host's architecture and OS can run natively (x86_64 Linux here); the
build that is the reference itself (``recipes/verify.yaml`` run.reference) checks that it runs
and generates the requested number of ids, which the other entries then must match. A second
run gives a non-ASCII prompt on the command line and the model under a non-ASCII folder
(``unicode_check``).
"""

from __future__ import annotations

from collections.abc import Sequence

from kiln.build.toolchains.recipe import VerifySpec
from kiln.matrix import Entry
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

__all__ = ["NativeVerifier"]


class NativeVerifier:
    method = "native"

    def needs(self, entry: Entry, spec: VerifySpec) -> Sequence[ToolNeed]:
        return ()

    def verify(self, ctx: VerifyContext) -> VerifyReport:
        entry = ctx.entry
        out = inspect_first(ctx)
        ids = None
        text = None
        if entry.os not in ("linux", "android") or entry.arch != ctx.host_arch:
            out.append(Check(name="run", ok=False,
                             detail=f"{entry.os} {entry.arch} cannot run natively on this "
                                    f"{ctx.host_arch} Linux host (use qemu, wine or inspect)"))
        else:
            model, problem = model_check(ctx)
            if problem is not None or model is None:
                out.append(problem or Check(name="model", ok=False, detail="missing"))
            elif stdout_smoke(ctx) is not None:
                check, text = smoke_stdout(ctx, how="ran natively", prefix=(),
                                           model_arg=str(model), env=ctx.env)
                out.append(check)
            else:
                exe = smoke_program(ctx)
                check, ids = run_and_compare(ctx, how="ran natively", prefix=(), exe=exe,
                                             model_arg=str(model), env=ctx.env)
                out.append(check)
                out.append(unicode_check(ctx, how="ran natively", prefix=(), exe=exe,
                                         model=model, env=ctx.env))
                server = smoke_server(ctx)
                if server is not None:
                    out.append(server_check(ctx, how="ran natively", prefix=(), exe=server,
                                            model_arg=str(model), env=ctx.env, cli_ids=ids))
        return VerifyReport(entry_id=entry.id, method=self.method, checks=tuple(out),
                            generated_ids=ids, output=text)
