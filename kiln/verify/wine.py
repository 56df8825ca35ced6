"""``wine``: run the Windows x86_64 build's smoke program (kiln.toml) under wine and compare.

The wine prefix lives in kiln's cache (``<cache>/wine/<arch>``) and is shared by builds; its
first use creates it (about 9 s), later runs take about a second. A lock serialises runs on
one prefix. ``WINEDEBUG=-all`` keeps wine's diagnostics out of the output, and
``WINEDLLOVERRIDES`` skips the Mono and Gecko installers a new prefix would offer. There is no
arm64 Windows emulation on this host: win-cpu-arm64 is inspected instead.

Besides the host build's prompt, the build runs a non-ASCII prompt with the model under a
non-ASCII folder (``unicode_check``): a Windows program that reads its arguments through the
ANSI code page gets '?' for them. Wine builds the UTF-16 command line from the Unix one with
the locale's charset, so wine runs under ``LC_ALL=C.UTF-8``.

The server check (``kiln.verify.server.server_check``) then runs the smoke test's server under
the same wine, with ``--port 0``, asks it over HTTP for the program's tokens, stops it and ends
what the prefix still runs with ``wineserver -k``.

Before running anything, ``inspect_first`` checks the Authenticode signature of every .exe and
.dll (``kiln.verify.inspect.check_pe_signature``), so an unsigned or altered file fails.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import PurePath

from filelock import FileLock

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
from kiln.verify.inspect import inspect_first, signature_needs
from kiln.verify.server import server_check

__all__ = ["WineVerifier", "windows_path"]


def windows_path(path: PurePath | str) -> str:
    """The Z: drive path wine maps to an absolute Unix path."""
    return "Z:" + str(path).replace("/", "\\")


class WineVerifier:
    method = "wine"

    def needs(self, entry: Entry, spec: VerifySpec) -> Sequence[ToolNeed]:
        # inspect_first checks the Authenticode signatures (osslsigncode) before the run
        # wineserver: ends what the server check leaves running in the prefix
        return (ToolNeed(program="wine", hint=install_hint("wine")),
                ToolNeed(program="wineserver", hint=install_hint("wine")),
                *signature_needs(entry))

    def verify(self, ctx: VerifyContext) -> VerifyReport:
        entry = ctx.entry
        out = inspect_first(ctx)
        ids = None
        model, problem = model_check(ctx)
        if entry.os != "windows" or entry.arch != "x86_64":
            out.append(Check(name="run", ok=False,
                             detail=f"wine here runs x86_64 Windows builds only, not "
                                    f"{entry.os} {entry.arch}"))
        elif problem is not None or model is None:
            out.append(problem or Check(name="model", ok=False, detail="missing"))
        elif ctx.wine_root is None:
            out.append(Check(name="run", ok=False, detail="no wine prefix directory given"))
        else:
            wine = require_tool("wine", path=ctx.env.get("PATH"))
            prefix_dir = ctx.wine_root / entry.arch
            ctx.wine_root.mkdir(parents=True, exist_ok=True)
            env = dict(ctx.env)
            env.update({"WINEPREFIX": str(prefix_dir), "WINEDEBUG": "-all",
                        "WINEARCH": "win64", "WINEDLLOVERRIDES": "mscoree,mshtml=",
                        "LC_ALL": "C.UTF-8"})
            env.pop("DISPLAY", None)
            if stdout_smoke(ctx) is not None:
                with FileLock(str(ctx.wine_root / f"{entry.arch}.lock")):
                    check, text = smoke_stdout(ctx, how="ran under wine", prefix=[wine],
                                               model_arg=windows_path(model), env=env,
                                               cwd=ctx.stage / "bin")
                out.append(check)
                return VerifyReport(entry_id=entry.id, method=self.method,
                                    checks=tuple(out), output=text)
            exe = smoke_program(ctx)
            server = smoke_server(ctx)
            with FileLock(str(ctx.wine_root / f"{entry.arch}.lock")):
                check, ids = run_and_compare(ctx, how="ran under wine", prefix=[wine],
                                             exe=exe, model_arg=windows_path(model), env=env,
                                             cwd=exe.parent)
                out.append(check)
                out.append(unicode_check(ctx, how="ran under wine", prefix=[wine], exe=exe,
                                         model=model, env=env, cwd=exe.parent,
                                         path_arg=windows_path))
                # SIGTERM reaches the Unix processes, not the program's console handler: the
                # exit status is not the contract's, and wineserver -k ends what the prefix
                # still runs (this verifier holds the prefix's lock)
                if server is not None:
                    wineserver = require_tool("wineserver", path=ctx.env.get("PATH"))
                    out.append(server_check(ctx, how="ran under wine", prefix=[wine],
                                            exe=server, model_arg=windows_path(model),
                                            env=env, cli_ids=ids, cwd=exe.parent,
                                            cleanup=[wineserver, "-k"], exit_zero=False))
        return VerifyReport(entry_id=entry.id, method=self.method, checks=tuple(out),
                            generated_ids=ids)
