"""What every verification method shares: the report, the context, running the smoke program
(kiln.toml's ``[smoke]``) and comparing its ids or output with the host build's. The methods
are in this package; kiln/verify/__init__.py registers them."""


from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from kiln.build.toolchains.recipe import VerifySpec
from kiln.errors import KilnError, ToolMissing, VerifyError
from kiln.matrix import Entry
from kiln.package.records import Verification
from kiln.plan import Job
from kiln.project import FILE, Layout, Smoke
from kiln.run import run

__all__ = [
    "UNICODE_PROMPT",
    "VERIFY_VERSION",
    "Check",
    "CliRun",
    "ToolNeed",
    "Verifier",
    "VerifyContext",
    "VerifyReport",
    "backend_device_check",
    "cli_args",
    "compare_ids",
    "exe_name",
    "log_line",
    "missing_backend",
    "model_check",
    "parse_cli_json",
    "project_source",
    "run_and_compare",
    "run_cli",
    "smoke_program",
    "smoke_server",
    "smoke_stdout",
    "stdout_smoke",
    "unicode_check",
]

# Bump when a verifier's checks change, so cached reports are redone.
VERIFY_VERSION = 5

# The second prompt of the run-based verifiers: Latin accents, a dash and CJK, so a build that
# passes its command line through a legacy code page (Windows' ANSI argv turns them into '?')
# tokenizes it differently from the same text read from a UTF-8 file.
UNICODE_PROMPT = "Café naïve — 東京の天気は？"
# The folder the model is linked into for that run: a non-ASCII path (and a space).
UNICODE_DIR = "modèle 東京"


@dataclass(frozen=True, kw_only=True)
class Check:
    """One thing verified and what was seen."""

    name: str
    ok: bool
    detail: str


@dataclass(frozen=True, kw_only=True)
class VerifyReport:
    """The outcome of verifying one entry's staged build."""

    entry_id: str
    method: str
    checks: tuple[Check, ...]
    generated_ids: tuple[int, ...] | None = None
    # what a smoke test with output "stdout" printed (the host build's is the reference)
    output: str | None = None

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    @property
    def detail(self) -> str:
        """One line: what failed, or what was proven."""
        failed = [c for c in self.checks if not c.ok]
        shown = failed or list(self.checks)
        return "; ".join(f"{c.name}: {c.detail}" for c in shown)

    def to_verification(self) -> Verification:
        return Verification(method=self.method, ok=self.ok, detail=self.detail)

    def to_json(self) -> dict[str, Any]:
        return {
            "entry_id": self.entry_id, "method": self.method, "ok": self.ok,
            "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in self.checks],
            "generated_ids": None if self.generated_ids is None else list(self.generated_ids),
            **({} if self.output is None else {"output": self.output}),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> VerifyReport:
        ids = data.get("generated_ids")
        return cls(entry_id=str(data["entry_id"]), method=str(data["method"]),
                   checks=tuple(Check(name=str(c["name"]), ok=bool(c["ok"]),
                                      detail=str(c["detail"])) for c in data["checks"]),
                   generated_ids=None if ids is None else tuple(int(i) for i in ids),
                   output=None if data.get("output") is None else str(data["output"]))


@dataclass(frozen=True, kw_only=True)
class ToolNeed:
    """A program (or a directory) a verifier needs, and how to get it."""

    program: str | None = None
    path: str | None = None
    hint: str = ""


@dataclass(frozen=True, kw_only=True)
class VerifyContext:
    """Everything a verifier needs; built by kiln/build.py."""

    job: Job
    stage: Path
    spec: VerifySpec
    env: Mapping[str, str]                     # explicit environment for the programs run
    log_file: Path
    model: Path | None                          # the small GGUF model (None: not found)
    reference_ids: tuple[int, ...] | None       # the host build's ids; None for the host build
    reference_error: str | None = None          # why there are no reference ids
    reference_output: str | None = None         # the host build's smoke output ("stdout")
    smoke: Smoke                                # kiln.toml's [smoke]
    layout: Layout                              # what the tree must hold (kiln.toml)
    # the project's source directory (the top CMakeLists.txt's), which [build.device_code]
    # is relative to, and how details name it: kiln.toml's project.source ("src"), or the
    # sdist's subdir; None: not given (see project_source)
    source: Path | None = None
    source_label: str = ""
    host_paths: tuple[str, ...] = ()            # must not appear inside any built file
    wine_root: Path | None = None
    host_arch: str = "x86_64"
    extra: Mapping[str, str] = field(default_factory=dict)

    @property
    def entry(self) -> Entry:
        return self.job.entry


class Verifier(Protocol):
    method: str

    def needs(self, entry: Entry, spec: VerifySpec) -> Sequence[ToolNeed]:
        """What must be installed to verify ``entry`` (checked before any build starts)."""
        ...

    def verify(self, ctx: VerifyContext) -> VerifyReport:
        ...


def exe_name(entry: Entry, tool: str) -> str:
    return f"{tool}.exe" if entry.os == "windows" else tool


def log_line(ctx: VerifyContext, text: str) -> None:
    with ctx.log_file.open("a", encoding="utf-8") as fh:
        fh.write(text.rstrip("\n") + "\n")


@dataclass(frozen=True, kw_only=True)
class CliRun:
    """What the smoke program printed as JSON (``smoke.output = "json-ids"``)."""

    prompt_ids: tuple[int, ...]
    generated_ids: tuple[int, ...]
    text: str


def stdout_smoke(ctx: VerifyContext) -> Smoke | None:
    """kiln.toml's smoke test when its output is compared as text (None: ids as JSON)."""
    return ctx.smoke if ctx.smoke.output == "stdout" else None


def smoke_program(ctx: VerifyContext) -> Path:
    """The smoke test's program in the staged tree's bin/."""
    return ctx.stage / "bin" / exe_name(ctx.entry, ctx.smoke.program)


def smoke_server(ctx: VerifyContext) -> Path | None:
    """The server the smoke test also checks (kiln.toml's smoke.server), in bin/; None: none."""
    if ctx.smoke.server is None:
        return None
    return ctx.stage / "bin" / exe_name(ctx.entry, ctx.smoke.server.program)


def project_source(ctx: VerifyContext) -> tuple[Path, str] | None:
    """The project's source directory and how details name it (``ctx.source``, which the
    build stage passes); None when it is not known."""
    if ctx.source is not None:
        return ctx.source, ctx.source_label or ctx.source.name
    return None


def missing_backend(backend: str, program: str, how: str) -> Check:
    """The failed check of a backend verifier whose project does not say how ``program`` runs
    on ``backend`` (kiln.toml has no ``[smoke.backends.<backend>]``)."""
    return Check(name=how, ok=False,
                 detail=f"{FILE} has no [smoke.backends.{backend}]: add it to say how "
                        f"{program} runs on its {backend} backend (args, env, unset)")


def cli_args(ctx: VerifyContext, model_arg: str) -> list[str]:
    r = ctx.spec.run
    return ctx.smoke.argv(model=model_arg, prompt=r.prompt, n_predict=r.n_predict,
                          threads=r.threads)


def parse_cli_json(stdout: str, program: str) -> CliRun:
    """The one JSON object the smoke program ``program`` prints, its last line that starts
    with ``{`` (wine may add CRs, emulators noise)."""
    for line in reversed(stdout.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                data = json.loads(line)
            except json.JSONDecodeError as exc:
                raise VerifyError(f"{program} printed invalid JSON: {exc}: {line[:200]}") from exc
            try:
                return CliRun(prompt_ids=tuple(int(i) for i in data["prompt_ids"]),
                              generated_ids=tuple(int(i) for i in data["generated_ids"]),
                              text=str(data.get("text", "")))
            except (KeyError, TypeError, ValueError) as exc:
                raise VerifyError(f"{program}'s JSON lacks prompt_ids/generated_ids: "
                                  f"{line[:200]}") from exc
    raise VerifyError(f"{program} printed no JSON object",
                      hint="it must print one line {\"prompt_ids\": ..., \"generated_ids\": ...}"
                           " (kiln.toml's smoke.output = \"json-ids\")")


def backend_device_check(stdout: str, accept: Callable[[str, str], bool], expected: str, *,
                         program: str) -> Check:
    """Whether the smoke program ``program`` ran where a backend verifier wants it:
    ``accept(backend, device)`` judges the ``backend`` and ``device`` fields of the last JSON
    object it printed; ``expected`` says what was wanted."""
    for line in reversed(stdout.splitlines()):
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError:
            break
        backend, device = str(data.get("backend", "")), str(data.get("device", ""))
        ok = accept(backend, device)
        return Check(name="device", ok=ok, detail=f"backend {backend}, device {device}"
                     + ("" if ok else f" (expected {expected})"))
    return Check(name="device", ok=False, detail=f"{program} printed no JSON object")


def run_cli(ctx: VerifyContext, argv: Sequence[str], *, env: Mapping[str, str],
            what: str, cwd: Path | None = None) -> CliRun:
    """Run the smoke program (``argv`` is the full command line, emulator first) and parse
    its JSON."""
    done = run(argv, env=env, cwd=cwd, check=False, timeout=ctx.spec.run.timeout_s, what=what)
    log_line(ctx, "+ " + " ".join(done.argv))
    log_line(ctx, done.stdout)
    if done.stderr.strip():
        log_line(ctx, done.stderr)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise VerifyError(f"{what} exited with {done.returncode}: {tail}")
    return parse_cli_json(done.stdout, ctx.smoke.program)


def compare_ids(got: CliRun, ctx: VerifyContext, *, how: str) -> Check:
    """The run's ids against the host build's."""
    n = ctx.spec.run.n_predict
    if len(got.generated_ids) != n:
        return Check(name=how, ok=False,
                     detail=f"generated {len(got.generated_ids)} ids, expected {n}")
    if ctx.reference_ids is None:
        if ctx.reference_error is not None:
            return Check(name=how, ok=False, detail=f"no host build to compare with: "
                                                    f"{ctx.reference_error}")
        return Check(name=how, ok=True,
                     detail=f"{n} ids {list(got.generated_ids[:6])}... (the host build: the "
                            "reference for the others)")
    if got.generated_ids != ctx.reference_ids:
        first = next(i for i, (a, b) in enumerate(
            zip(got.generated_ids, ctx.reference_ids, strict=True)) if a != b)
        return Check(name=how, ok=False,
                     detail=f"ids differ from the host build's at step {first}: "
                            f"{list(got.generated_ids)} vs {list(ctx.reference_ids)}")
    return Check(name=how, ok=True, detail=f"{n} ids identical to the host build's")


def model_check(ctx: VerifyContext) -> tuple[Path | None, Check | None]:
    if ctx.model is None:
        return None, Check(name="model", ok=False,
                           detail="none of " + ", ".join(ctx.spec.run.models) + " exists "
                                  "(run scripts/make_tiny_model.py)")
    return ctx.model, None


def run_and_compare(ctx: VerifyContext, *, how: str, prefix: Sequence[str],
                    exe: Path, model_arg: str, env: Mapping[str, str],
                    cwd: Path | None = None) -> tuple[Check, tuple[int, ...] | None]:
    """Run the smoke program behind ``prefix`` (emulator) and compare; never raises for a
    failed run."""
    try:
        got = run_cli(ctx, [*prefix, str(exe), *cli_args(ctx, model_arg)], env=env, what=how,
                      cwd=cwd)
    except ToolMissing:
        raise
    except KilnError as exc:
        return Check(name=how, ok=False, detail=exc.message), None
    return compare_ids(got, ctx, how=how), got.generated_ids


def _prompt_option(smoke: Smoke) -> str:
    """How the smoke run gives the prompt, for messages: its option ("-p"), else "argument"."""
    for i, a in enumerate(smoke.args):
        if a == "{prompt}" and i > 0 and smoke.args[i - 1].startswith("-"):
            return smoke.args[i - 1]
    return "argument"


def unicode_check(ctx: VerifyContext, *, how: str, prefix: Sequence[str], exe: Path,
                  model: Path, env: Mapping[str, str], cwd: Path | None = None,
                  path_arg: Callable[[Path], str] = str) -> Check:
    """Non-ASCII text on the command line: ``UNICODE_PROMPT`` given as smoke.args give the
    prompt, with a copy of the model under a non-ASCII folder, against the same prompt read
    from a UTF-8 file (smoke.prompt_file_args, with the model's own path). File bytes reach
    the program as they are, so both runs must give the same prompt and generated ids;
    ``path_arg`` turns a host path into the program's (wine: a Z: path). A project whose
    kiln.toml has no prompt_file_args (or whose args give no {prompt}) gets a passing check
    that says it was skipped. Never raises for a failed run."""
    name = f"{how} (non-ASCII prompt and model path)"
    smoke = ctx.smoke
    if not smoke.prompt_file_args or not any("{prompt}" in a for a in smoke.args):
        missing = ("smoke.prompt_file_args (the run with the prompt read from a UTF-8 file, "
                   "{prompt_file})" if not smoke.prompt_file_args
                   else "a {prompt} in smoke.args")
        return Check(name=name, ok=True,
                     detail=f"skipped: {FILE} has no {missing}, so {smoke.program}'s non-ASCII "
                            "command line is not compared with a prompt file")
    with tempfile.TemporaryDirectory(prefix="kiln-verify-") as tmp:
        folder = Path(tmp) / UNICODE_DIR
        folder.mkdir()
        linked = folder / model.name
        try:
            os.link(model, linked)
        except OSError:  # another file system, or links not allowed: a copy will do
            shutil.copyfile(model, linked)
        prompt_file = folder / "prompt.txt"
        prompt_file.write_bytes(UNICODE_PROMPT.encode("utf-8"))
        r = ctx.spec.run
        try:
            by_arg = run_cli(ctx, [*prefix, str(exe), *smoke.argv(
                model=path_arg(linked), prompt=UNICODE_PROMPT, n_predict=r.n_predict,
                threads=r.threads)], env=env, what=name, cwd=cwd)
            by_file = run_cli(ctx, [*prefix, str(exe), *smoke.prompt_file_argv(
                model=path_arg(model), prompt_file=path_arg(prompt_file),
                n_predict=r.n_predict, threads=r.threads)], env=env, what=name, cwd=cwd)
        except ToolMissing:
            raise
        except KilnError as exc:
            return Check(name=name, ok=False, detail=exc.message)
    if by_arg.prompt_ids != by_file.prompt_ids:
        return Check(name=name, ok=False,
                     detail=f"{_prompt_option(smoke)} {UNICODE_PROMPT!r} tokenizes to "
                            f"{list(by_arg.prompt_ids)}, the same text from a UTF-8 file to "
                            f"{list(by_file.prompt_ids)} (the command line lost characters)")
    if by_arg.generated_ids != by_file.generated_ids:
        return Check(name=name, ok=False,
                     detail=f"same prompt ids, but generated {list(by_arg.generated_ids)} vs "
                            f"{list(by_file.generated_ids)} from the UTF-8 file")
    return Check(name=name, ok=True,
                 detail=f"{len(by_arg.prompt_ids)} prompt ids and {len(by_arg.generated_ids)} "
                        f"generated ids identical to the UTF-8 prompt file's, model under "
                        f"'{UNICODE_DIR}'")


def smoke_stdout(ctx: VerifyContext, *, how: str, prefix: Sequence[str], model_arg: str,
                 env: Mapping[str, str], cwd: Path | None = None) -> tuple[Check, str | None]:
    """Run kiln.toml's smoke program (greedy, a fixed count) behind ``prefix`` and compare
    what it printed on standard output with the host build's, byte for byte (line ends
    normalised: wine may print CRLF). Never raises for a failed run."""
    smoke = ctx.smoke
    assert smoke is not None
    exe = ctx.stage / "bin" / exe_name(ctx.entry, smoke.program)
    argv = [*prefix, str(exe), *cli_args(ctx, model_arg)]
    try:
        done = run(argv, env=env, cwd=cwd, check=False, timeout=ctx.spec.run.timeout_s,
                   what=how)
    except ToolMissing:
        raise
    except KilnError as exc:
        return Check(name=how, ok=False, detail=exc.message), None
    log_line(ctx, "+ " + " ".join(done.argv))
    log_line(ctx, done.stdout)
    if done.stderr.strip():
        log_line(ctx, "\n".join(done.stderr.strip().splitlines()[-20:]))
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        return Check(name=how, ok=False,
                     detail=f"{smoke.program} exited with {done.returncode}: {tail}"), None
    text = done.stdout.replace("\r\n", "\n")
    if not text.strip():
        return Check(name=how, ok=False, detail=f"{smoke.program} printed nothing"), None
    shown = " ".join(text.split())[:80]
    if ctx.reference_output is None:
        if ctx.reference_error is not None:
            return Check(name=how, ok=False,
                         detail=f"no host build to compare with: {ctx.reference_error}"), text
        return Check(name=how, ok=True,
                     detail=f"{smoke.program} printed {shown!r}... (the host build: the "
                            "reference for the others)"), text
    if text != ctx.reference_output:
        ref = ctx.reference_output
        first = next((i for i, (a, b) in enumerate(zip(text, ref, strict=False)) if a != b),
                     min(len(text), len(ref)))
        return Check(name=how, ok=False,
                     detail=f"output differs from the host build's at character {first}: "
                            f"{text[first:first + 60]!r} vs {ref[first:first + 60]!r}"), text
    return Check(name=how, ok=True,
                 detail=f"{smoke.program}'s output ({len(text)} characters, {shown!r}...) "
                        "identical to the host build's"), text
