"""The project kiln releases, described by ``kiln.toml`` at the project's root.

kiln's stages build, verify, package and release a C/C++ CMake project; what they know about
*which* project comes from here and nowhere else:

```toml
[project]
name = "demo"                       # archives are "{name}-b{build}-bin-{id}.<ext>"
archive = "{name}-b{build}-bin-{id}"
license = "LICENSE"                 # goes into every archive (relative to the root, or the source)
source = "src"                      # the directory with the top CMakeLists.txt ...

[project.sdist]                     # ... or an sdist, pinned, fetched with pip into kiln's cache
requirement = "llama-cpp-python==0.3.36"
sha256 = "<64 hex digits>"
subdir = "vendor/llama.cpp"         # the CMake project inside it

[build]
targets = ["llama-simple"]          # build these and stage them from bin/; empty: cmake --install
binding = "python/demo"             # the Python package a wheel carries (absent: no wheels)
option_prefix = "DEMO_"             # kiln passes DEMO_CUDA=ON, DEMO_GPU_TARGETS, DEMO_CUDA_BLOBS...

[build.device_code]                 # compiled by kiln (cuda, hip) or checked (opencl)
cuda = "backends/cuda/kernels.cu"   # relative to the source

[smoke]                             # how a run-based verifier proves a build works
program = "demo-cli"                # in the archive's bin/ (".exe" added for Windows)
args = ["-m", "{model}", "-p", "{prompt}", "-n", "{n_predict}"]
output = "json-ids"                 # or "stdout": it must equal the host build's, byte for byte
# for big-endian entries (s390x): the command that byte-swaps a copy of the model first
big_endian = ["{python}", "{source}/gguf-py/gguf/scripts/gguf_convert_endian.py", "{model}", "big"]
# json-ids: the same run with the prompt read from a UTF-8 file (the non-ASCII argv check)
prompt_file_args = ["-m", "{model}", "-f", "{prompt_file}", "-n", "{n_predict}"]

[smoke.server]                      # an OpenAI-compatible server checked the same way
program = "demo-server"
args = ["-m", "{model}", "--port", "0", "-t", "{threads}"]

[smoke.backends.vulkan]             # how the program runs on a backend kiln provides
args = ["--backend", "vulkan"]      # (lavapipe; openvino: OpenVINO's CPU plugin)
env = { DEMO_VULKAN_DEVICE = "cpu" }

[wheel]                             # what the wheels of build.binding say (needed with it)
summary = "demo runtime ({what})"   # METADATA's Summary; {name}, {what}: "CPU build", ...
readme = "recipes/wheel.md.j2"      # the long description: Jinja2, from the root
license = "MIT"                     # METADATA's License; classifiers: beside kiln's own
server_licenses = ["share/demo/licenses/dep.txt"]  # shipped beside [smoke.server]'s program
cmake = { DEMO_BUILD_SHARED = "ON" }  # cibuildwheel's native build (kiln.package.wheel)
```

``matrix/`` and ``recipes/`` sit beside ``kiln.toml``. Parsed once, at the edge, into the
frozen ``Project``; unknown keys are errors that name the closest key.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kiln.errors import ConfigError
from kiln.matrix.catalogue import DEVICE_CODE_BACKENDS

__all__ = ["FILE", "FILE_NAME_RE", "LIBRARY_OSES", "OUTPUTS", "BackendRun", "Layout", "Names",
           "Project", "Release", "SdistSource", "ServerSmoke", "Smoke", "ThirdParty", "Wheel",
           "find_root", "load_project"]

FILE = "kiln.toml"
OUTPUTS = ("json-ids", "stdout")
PLACEHOLDERS = ("model", "prompt", "n_predict", "threads")
CONVERT_PLACEHOLDERS = ("python", "source", "model")
# smoke.prompt_file_args: the smoke run with its prompt read from a UTF-8 file
PROMPT_FILE_PLACEHOLDERS = ("model", "prompt_file", "n_predict", "threads")
# The architectures whose byte order is big-endian (a model may have to be converted for them).
BIG_ENDIAN_ARCHES = ("s390x",)
_NAME = re.compile(r"[a-z][a-z0-9_-]{0,39}")
_ARCHIVE_FIELDS = ("name", "build", "id")
_TOP_KEYS = ("project", "build", "package", "smoke", "release", "wheel")
_WHEEL_KEYS = ("summary", "readme", "license", "classifiers", "server_licenses", "cmake")
WHEEL_SUMMARY_PLACEHOLDERS = ("name", "what")
# CMake options kiln's native wheel build sets itself (kiln.package.wheel.native_wheel)
_WHEEL_KILN_CMAKE = ("CMAKE_BUILD_TYPE", "CMAKE_OSX_ARCHITECTURES",
                     "CMAKE_OSX_DEPLOYMENT_TARGET")
_PROJECT_KEYS = ("name", "archive", "license", "source", "sdist")
_SDIST_KEYS = ("requirement", "sha256", "subdir")
_BUILD_KEYS = ("targets", "binding", "option_prefix", "device_code")
_SMOKE_KEYS = ("program", "args", "output", "big_endian", "server", "backends",
               "prompt_file_args")
_SERVER_KEYS = ("program", "args")
SERVER_PLACEHOLDERS = ("model", "threads")
_BACKEND_RUN_KEYS = ("args", "env", "unset")
# what a backend run's environment values may name: the backend's runtime library, where the
# verifier provides one (OpenVINO's C API library for openvino-cpu)
BACKEND_ENV_PLACEHOLDERS = ("runtime",)
# A file name in a tree (a program in bin/, a library): no separator, no space.
FILE_NAME_RE = re.compile(r"[A-Za-z0-9._+-]+")
_OPTION_PREFIX = re.compile(r"[A-Z][A-Z0-9]*_")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PACKAGE_KEYS = ("required", "library")
LIBRARY_OSES = ("linux", "android", "macos", "windows")
_RELEASE_KEYS = ("github", "download_url", "sources", "index_expiry_days", "tag_prefix",
                 "third_party")
_THIRD_PARTY_KEYS = ("record", "used_by")
_GITHUB_REPO = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+")
# A git tag prefix: the project's releases are tagged <prefix>b<N> in its repository.
_TAG_PREFIX = re.compile(r"([a-z][a-z0-9_-]{0,39}[-/])?")


@dataclass(frozen=True, kw_only=True)
class SdistSource:
    """A source distribution from the package index, pinned by its sha256."""

    requirement: str
    sha256: str
    subdir: str


@dataclass(frozen=True, kw_only=True)
class ServerSmoke:
    """An OpenAI-compatible server in ``bin/`` that the run-based verifiers start, behind the
    same emulator as the smoke program, and ask for the same greedy completion
    (``[smoke.server]``; kiln/verify/server.py has the contract: it prints a line holding
    ``listening on http://HOST:PORT`` once it accepts connections)."""

    program: str
    args: tuple[str, ...]  # after the program; {model} and {threads} are filled in

    def argv(self, *, model: str, threads: int) -> list[str]:
        values = {"model": model, "threads": str(threads)}
        return [_fill(a, values) for a in self.args]


@dataclass(frozen=True, kw_only=True)
class BackendRun:
    """How the smoke program is pointed at one of its backends by a verifier that runs it on
    a device it provides (lavapipe for vulkan, OpenVINO's CPU plugin for openvino):
    ``[smoke.backends.<backend>]``."""

    args: tuple[str, ...] = ()   # appended to the smoke program's arguments
    env: tuple[tuple[str, str], ...] = ()  # set for the run; "{runtime}": the runtime library
    unset: tuple[str, ...] = ()  # removed from the environment first

    def environment(self, base: Mapping[str, str], *, runtime: str = "") -> dict[str, str]:
        out = {k: v for k, v in base.items() if k not in self.unset}
        out.update({k: _fill(v, {"runtime": runtime}) for k, v in self.env})
        return out

    def shown(self, *, runtime: str = "") -> str:
        """The variables set, for a log line: ``A=1 B=2``."""
        return " ".join(f"{k}={_fill(v, {'runtime': runtime})}" for k, v in self.env)


@dataclass(frozen=True, kw_only=True)
class Smoke:
    """The command a run-based verifier runs, and how its output is compared."""

    program: str
    args: tuple[str, ...]
    output: str
    # run on a copy of the model before a big-endian entry's run (empty: the model as it is)
    big_endian: tuple[str, ...] = ()
    # the server the run-based verifiers check too; None: no server check
    server: ServerSmoke | None = None
    backends: tuple[tuple[str, BackendRun], ...] = ()  # (backend, how to run on it)
    # the same run with the prompt read from a UTF-8 file ({prompt_file}); empty: the program
    # cannot, and the non-ASCII command-line check is skipped (json-ids only)
    prompt_file_args: tuple[str, ...] = ()

    def backend(self, name: str) -> BackendRun | None:
        """How to point the program at backend ``name``; None when kiln.toml does not say."""
        return dict(self.backends).get(name)

    def convert_argv(self, *, python: str, source: str, model: str) -> list[str]:
        values = {"python": python, "source": source, "model": model}
        return [_fill(a, values) for a in self.big_endian]

    def argv(self, *, model: str, prompt: str, n_predict: int, threads: int) -> list[str]:
        values = {"model": model, "prompt": prompt, "n_predict": str(n_predict),
                  "threads": str(threads)}
        return [_fill(a, values) for a in self.args]

    def prompt_file_argv(self, *, model: str, prompt_file: str, n_predict: int,
                         threads: int) -> list[str]:
        values = {"model": model, "prompt_file": prompt_file, "n_predict": str(n_predict),
                  "threads": str(threads)}
        return [_fill(a, values) for a in self.prompt_file_args]


@dataclass(frozen=True, kw_only=True)
class Layout:
    """What every staged tree (and so every archive) must hold besides the licence: files
    relative to the tree, ``{exe}`` being ".exe" on Windows and ``" | "`` separating
    alternatives, then the project's library where each OS looks for it (``[package]``).
    Without ``[package]``: the programs of ``build.targets`` in ``bin/``."""

    required: tuple[str, ...]
    library: tuple[tuple[str, str], ...] = ()  # (os, path) pairs

    def groups(self, os: str) -> tuple[tuple[str, ...], ...]:
        """Groups of paths of which at least one must be a file, for an entry of ``os``."""
        exe = ".exe" if os == "windows" else ""
        out = [tuple(alt.strip().replace("{exe}", exe) for alt in item.split(" | "))
               for item in self.required]
        out += [(path,) for where, path in self.library if where == os]
        return tuple(out)


@dataclass(frozen=True, kw_only=True)
class ThirdParty:
    record: str   # the JSON record of the vendored code, relative to the project's root
    used_by: str  # what it is compiled into, e.g. the server program


@dataclass(frozen=True, kw_only=True)
class Release:
    """How the project is released (``[release]``): where its repository and downloads are,
    what the SBOM lists as its sources, how long an index is valid, how its git tags are
    named."""

    github: str  # OWNER/REPO: commit and pull-request links, the default download URL
    download_url: str  # where a release's assets live; "{tag}" is replaced by bN
    sources: tuple[str, ...]  # directories whose git-tracked files the SBOM lists
    # How long a release's index.json is valid after the release date (installers refuse an
    # expired index: docs/index.md).
    index_expiry_days: int = 365
    # The git tag (and GitHub release) of release bN is <tag_prefix>bN: "" for the project
    # that owns the repository, e.g. "llama-" for another project released from it, so that
    # the two projects' tags, previous tags and release notes never mix.
    tag_prefix: str = ""
    # Third-party code vendored among the sources, which the SBOM lists with its upstream,
    # licence and patches: the record (JSON, relative to the root; kiln/release/sbom.py) and
    # what it is compiled into. None: no vendored code.
    third_party: ThirdParty | None = None

    @property
    def repo_url(self) -> str:
        return f"https://github.com/{self.github}"

    def base_url(self, tag: str) -> str:
        return self.download_url.replace("{tag}", tag).rstrip("/") + "/"

    def git_tag(self, tag: str) -> str:
        """The git tag of release ``tag`` (bN)."""
        return f"{self.tag_prefix}{tag}"


@dataclass(frozen=True, kw_only=True)
class Names:
    """What a build job takes from the project (kiln.plan.make_job): the archive's name, and
    the names of the CMake options kiln itself passes."""

    name: str
    archive: str
    # kiln's own CMake options are <option_prefix><OPTION>: the backend's switch (CUDA=ON),
    # GPU_TARGETS, the device code kiln compiled (CUDA_BLOBS, HIP_BLOBS), ...; None: the
    # project has no such options, so only CPU entries can be built
    option_prefix: str | None = None
    # backend -> the device code kiln compiles or checks, relative to the source directory
    device_code: tuple[tuple[str, str], ...] = ()

    def option(self, suffix: str) -> str:
        """The full name of kiln's CMake option ``suffix`` for this project, or a
        ``ConfigError`` when the project names no option prefix."""
        if self.option_prefix is None:
            raise ConfigError(f"project {self.name} has no [build] option_prefix, so kiln "
                              f"cannot pass its {suffix} option",
                              hint="name the prefix of the project's CMake options in "
                                   f"{FILE} (e.g. option_prefix = \"MYPROJ_\")")
        return self.option_prefix + suffix

    def device_source(self, backend: str) -> str:
        """The device code of ``backend``, relative to the source directory."""
        path = dict(self.device_code).get(backend)
        if path is None:
            raise ConfigError(f"project {self.name} names no device code for {backend}",
                              hint=f"add {backend} = \"PATH\" to [build.device_code] in {FILE}")
        return path


@dataclass(frozen=True, kw_only=True)
class Wheel:
    """What the wheels of a project with a Python binding say about it (``[wheel]``). What
    they hold comes from the rest of kiln.toml (kiln/package/wheel.py): the binding
    (build.binding), the shared library ([package.library], under the name it is linked by),
    the server ([smoke.server]'s program, with a console script)."""

    summary: str  # METADATA's Summary; {name} and {what} ("CPU build", "cuda 12.4 build")
    readme: str  # the long description: a Jinja2 template, relative to the project root
    license: str | None = None  # METADATA's License (e.g. "MIT"); None: no such line
    classifiers: tuple[str, ...] = ()  # beside the OS and Python ones kiln adds (sorted)
    # files of the staged tree shipped in the dist-info's licenses/ beside the server (the
    # licences of third-party code it is built from); a tree with the server must have them
    server_licenses: tuple[str, ...] = ()
    # the CMake options of the native build cibuildwheel runs (kiln.package.wheel.native_wheel)
    cmake: tuple[tuple[str, str], ...] = ()

    def summary_for(self, *, name: str, what: str) -> str:
        return _fill(self.summary, {"name": name, "what": what})


@dataclass(frozen=True, kw_only=True)
class Project:
    root: Path
    name: str
    archive: str
    license: str
    source_dir: str | None
    sdist: SdistSource | None
    targets: tuple[str, ...]
    binding: str | None
    smoke: Smoke
    layout: Layout
    release: Release | None = None  # None: the project has no [release] table
    wheel: Wheel | None = None  # [wheel]: present exactly when binding is
    option_prefix: str | None = None
    device_code: tuple[tuple[str, str], ...] = ()

    @property
    def names(self) -> Names:
        return Names(name=self.name, archive=self.archive, option_prefix=self.option_prefix,
                     device_code=self.device_code)

    @property
    def matrix_dir(self) -> Path:
        return self.root / "matrix"

    @property
    def recipes_dir(self) -> Path:
        return self.root / "recipes"

    def artifact_stem(self, *, build: int, entry_id: str) -> str:
        return self.archive.format(name=self.name, build=build, id=entry_id)

    def release_settings(self) -> Release:
        """``[release]``, or a ``ConfigError`` that says it is needed."""
        if self.release is None:
            raise ConfigError(f"{self.root / FILE}: no [release] table",
                              hint='add [release] with github = "OWNER/REPO"')
        return self.release


def _fill(text: str, values: Mapping[str, str]) -> str:
    out = text
    for key, value in values.items():
        out = out.replace("{" + key + "}", value)
    return out


def _keys(where: str, data: Mapping[str, Any], allowed: tuple[str, ...],
          required: tuple[str, ...] = ()) -> None:
    for key in data:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            raise ConfigError(f"{where}: unknown key '{key}'",
                              hint=f"did you mean '{close[0]}'?" if close
                              else "keys: " + ", ".join(allowed))
    for key in required:
        if key not in data:
            raise ConfigError(f"{where}: '{key}' is missing")


def _text(where: str, value: Any) -> str:
    if not isinstance(value, str) or not value or "\0" in value or "\n" in value:
        raise ConfigError(f"{where}: expected a non-empty one-line string, got {value!r}")
    return value


def _relative(where: str, value: Any) -> str:
    text = _text(where, value)
    parts = Path(text).parts
    if Path(text).is_absolute() or ".." in parts or "\\" in text:
        raise ConfigError(f"{where}: '{text}' must be a relative path inside the project",
                          hint="no absolute path, no '..', '/' as separator")
    return text


def _strings(where: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ConfigError(f"{where}: expected a list of strings")
    return tuple(_text(f"{where}[{i}]", v) for i, v in enumerate(value))


def _command(where: str, value: Any, placeholders: tuple[str, ...]) -> tuple[str, ...]:
    """A list of strings that may use only ``placeholders`` (``{name}``)."""
    argv = _strings(where, value)
    for a in argv:
        for used in re.findall(r"\{([^{}]*)\}", a):
            if used not in placeholders:
                raise ConfigError(f"{where}: unknown placeholder '{{{used}}}'",
                                  hint="placeholders: " + ", ".join(
                                      "{" + p + "}" for p in placeholders))
    return argv


def load_project(root: Path) -> Project:
    """Read ``root/kiln.toml``."""
    path = root / FILE
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}",
                          hint=f"a project kiln builds has a {FILE} at its root") from exc
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    where = FILE
    _keys(where, data, _TOP_KEYS, ("project", "smoke"))
    proj = data["project"]
    if not isinstance(proj, dict):
        raise ConfigError(f"{where}: [project] must be a table")
    _keys(f"{where} [project]", proj, _PROJECT_KEYS, ("name", "license"))
    name = _text(f"{where} project.name", proj["name"])
    if not _NAME.fullmatch(name):
        raise ConfigError(f"{where}: project.name '{name}' must be lower-case letters, digits, "
                          "'-' or '_', starting with a letter (at most 40)")
    archive = _text(f"{where} project.archive", proj.get("archive", "{name}-b{build}-bin-{id}"))
    fields = set(re.findall(r"\{([^{}]*)\}", archive))
    if fields - set(_ARCHIVE_FIELDS) or "id" not in fields or "/" in archive:
        raise ConfigError(f"{where}: project.archive '{archive}' may use only "
                          "{name}, {build} and {id}, must use {id}, and holds no '/'")
    source_dir = sdist = None
    if ("source" in proj) == ("sdist" in proj):
        raise ConfigError(f"{where}: give exactly one of project.source (a directory) and "
                          "[project.sdist]")
    if "source" in proj:
        source_dir = _relative(f"{where} project.source", proj["source"])
    else:
        s = proj["sdist"]
        if not isinstance(s, dict):
            raise ConfigError(f"{where}: [project.sdist] must be a table")
        _keys(f"{where} [project.sdist]", s, _SDIST_KEYS, _SDIST_KEYS)
        digest = _text(f"{where} project.sdist.sha256", s["sha256"])
        if not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise ConfigError(f"{where}: project.sdist.sha256 must be 64 lower-case hex digits")
        requirement = _text(f"{where} project.sdist.requirement", s["requirement"])
        if not re.fullmatch(r"[A-Za-z0-9._-]+==[A-Za-z0-9.+!_-]+", requirement):
            raise ConfigError(f"{where}: project.sdist.requirement '{requirement}' must pin one "
                              "version: NAME==VERSION")
        sdist = SdistSource(requirement=requirement, sha256=digest,
                            subdir=_relative(f"{where} project.sdist.subdir", s["subdir"]))
    license_rel = _relative(f"{where} project.license", proj["license"])
    build = data.get("build", {})
    if not isinstance(build, dict):
        raise ConfigError(f"{where}: [build] must be a table")
    _keys(f"{where} [build]", build, _BUILD_KEYS)
    targets = _strings(f"{where} build.targets", build.get("targets", []))
    for t in targets:
        if not re.fullmatch(r"[A-Za-z0-9._+-]+", t):
            raise ConfigError(f"{where}: build target '{t}' is not a CMake target name")
    binding = build.get("binding")
    binding = None if binding is None else _relative(f"{where} build.binding", binding)
    smoke = data["smoke"]
    if not isinstance(smoke, dict):
        raise ConfigError(f"{where}: [smoke] must be a table")
    _keys(f"{where} [smoke]", smoke, _SMOKE_KEYS, ("program", "args", "output"))
    program = _file_name(f"{where}: smoke.program", smoke["program"])
    args = _command(f"{where}: smoke.args", smoke["args"], PLACEHOLDERS)
    if not any("{model}" in a for a in args):
        raise ConfigError(f"{where}: smoke.args must pass the model ({{model}})")
    output = _text(f"{where} smoke.output", smoke["output"])
    if output not in OUTPUTS:
        raise ConfigError(f"{where}: smoke.output '{output}' is not one of "
                          + ", ".join(OUTPUTS))
    big_endian = _command(f"{where}: smoke.big_endian", smoke.get("big_endian", []),
                          CONVERT_PLACEHOLDERS)
    if big_endian and not any("{model}" in a for a in big_endian):
        raise ConfigError(f"{where}: smoke.big_endian must name the model ({{model}}) it "
                          "converts")
    if targets and program not in targets:
        raise ConfigError(f"{where}: smoke.program '{program}' is not among build.targets",
                          hint="the smoke test runs a program the archive carries")
    server = None if "server" not in smoke else _server(where, smoke["server"], output)
    prompt_file_args = _command(f"{where}: smoke.prompt_file_args",
                                smoke.get("prompt_file_args", []), PROMPT_FILE_PLACEHOLDERS)
    if prompt_file_args and not all(any(f"{{{p}}}" in a for a in prompt_file_args)
                                    for p in ("model", "prompt_file")):
        raise ConfigError(f"{where}: smoke.prompt_file_args must pass the model ({{model}}) "
                          "and the prompt file ({prompt_file})")
    if prompt_file_args and output != "json-ids":
        raise ConfigError(f"{where}: smoke.prompt_file_args needs smoke.output = \"json-ids\" "
                          "(the prompt ids of the two runs are compared)")
    backends = _backends(where, smoke.get("backends", {}))
    option_prefix = build.get("option_prefix")
    if option_prefix is not None:
        option_prefix = _text(f"{where} build.option_prefix", option_prefix)
        if not _OPTION_PREFIX.fullmatch(option_prefix):
            raise ConfigError(f"{where}: build.option_prefix '{option_prefix}' must be "
                              "upper-case letters and digits ending in '_' (e.g. MYPROJ_)")
    device_code = _device_code(where, build.get("device_code", {}))
    release = (_release(where, data["release"], source_dir=source_dir)
               if "release" in data else None)
    layout = (_layout(where, data["package"]) if "package" in data
              else Layout(required=tuple(f"bin/{t}{{exe}}" for t in targets)))
    wheel = _wheel(where, data.get("wheel"), binding=binding, layout=layout,
                   server=server is not None)
    return Project(root=root.absolute(), name=name, archive=archive, license=license_rel,
                   source_dir=source_dir, sdist=sdist, targets=targets, binding=binding,
                   smoke=Smoke(program=program, args=args, output=output,
                               big_endian=big_endian, server=server, backends=backends,
                               prompt_file_args=prompt_file_args),
                   layout=layout, release=release, wheel=wheel, option_prefix=option_prefix,
                   device_code=device_code)


def _file_name(where: str, value: Any) -> str:
    name = _text(where, value)
    if not FILE_NAME_RE.fullmatch(name) or name in (".", ".."):
        raise ConfigError(f"{where} '{name}' must be a file name in bin/")
    return name


def _server(where: str, table: Any, output: str) -> ServerSmoke:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: [smoke.server] must be a table (program, args)")
    _keys(f"{where} [smoke.server]", table, _SERVER_KEYS, _SERVER_KEYS)
    program = _file_name(f"{where}: smoke.server.program", table["program"])
    args = _command(f"{where}: smoke.server.args", table["args"], SERVER_PLACEHOLDERS)
    if not any("{model}" in a for a in args):
        raise ConfigError(f"{where}: smoke.server.args must pass the model ({{model}})")
    if output != "json-ids":
        raise ConfigError(f"{where}: [smoke.server] needs smoke.output = \"json-ids\" (the "
                          "server's tokens are compared with the program's ids)")
    return ServerSmoke(program=program, args=args)


def _backends(where: str, table: Any) -> tuple[tuple[str, BackendRun], ...]:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: [smoke.backends] must be a table of backends")
    out = []
    for backend, run in sorted(table.items()):
        w = f"{where} [smoke.backends.{backend}]"
        if not re.fullmatch(r"[a-z][a-z0-9_]*", backend):
            raise ConfigError(f"{w}: '{backend}' is not a backend name")
        if not isinstance(run, dict):
            raise ConfigError(f"{w} must be a table (args, env, unset)")
        _keys(w, run, _BACKEND_RUN_KEYS)
        args = _command(f"{w}: args", run.get("args", []), ())
        env = run.get("env", {})
        if not isinstance(env, dict):
            raise ConfigError(f"{w}: env must be a table of variables")
        pairs = []
        for k, v in sorted(env.items()):
            if not _ENV_NAME.fullmatch(k):
                raise ConfigError(f"{w}: '{k}' is not an environment variable name")
            pairs.append((k, _command(f"{w}: env.{k}", [v], BACKEND_ENV_PLACEHOLDERS)[0]))
        unset = _strings(f"{w} unset", run.get("unset", []))
        for k in unset:
            if not _ENV_NAME.fullmatch(k):
                raise ConfigError(f"{w}: '{k}' is not an environment variable name")
        out.append((backend, BackendRun(args=args, env=tuple(pairs), unset=unset)))
    return tuple(out)


def _device_code(where: str, table: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: [build.device_code] must be a table: backend = PATH")
    _keys(f"{where} [build.device_code]", table, DEVICE_CODE_BACKENDS)
    return tuple((b, _relative(f"{where} build.device_code.{b}", p))
                 for b, p in sorted(table.items()))


def _layout(where: str, table: Any) -> Layout:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: [package] must be a table")
    _keys(f"{where} [package]", table, _PACKAGE_KEYS, ("required",))
    required = _strings(f"{where} package.required", table["required"])
    for i, item in enumerate(required):
        for alt in item.split(" | "):
            if re.findall(r"\{([^{}]*)\}", alt.replace("{exe}", "")):
                raise ConfigError(f"{where}: package.required[{i}] '{item}' may use only "
                                  "{exe}")
            _relative(f"{where} package.required[{i}]", alt.strip())
    library = table.get("library", {})
    if not isinstance(library, dict):
        raise ConfigError(f"{where}: [package.library] must be a table of OS = path")
    _keys(f"{where} [package.library]", library, LIBRARY_OSES)
    pairs = tuple((os_name, _relative(f"{where} package.library.{os_name}", library[os_name]))
                  for os_name in LIBRARY_OSES if os_name in library)
    return Layout(required=required, library=pairs)


def _wheel(where: str, table: Any, *, binding: str | None, layout: Layout,
           server: bool) -> Wheel | None:
    """``[wheel]``: given exactly when build.binding is (a wheel's summary and description
    are the project's to write), with [package.library] naming a library to carry."""
    if table is None:
        if binding is not None:
            raise ConfigError(f"{where}: build.binding needs a [wheel] table (the wheels' "
                              "summary and readme)",
                              hint='add [wheel] with summary = "..." and readme = "PATH"')
        return None
    if binding is None:
        raise ConfigError(f"{where}: [wheel] describes the wheels of build.binding, which is "
                          "not given", hint="name the Python binding, or remove [wheel]")
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: [wheel] must be a table")
    _keys(f"{where} [wheel]", table, _WHEEL_KEYS, ("summary", "readme"))
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", Path(binding).name):
        raise ConfigError(f"{where}: build.binding '{binding}' must end in the name of a "
                          "Python package (letters, digits, '_'), which wheels install")
    if not any(os_name in dict(layout.library) for os_name in ("linux", "macos", "windows")):
        raise ConfigError(f"{where}: [wheel] needs [package.library] to name the shared "
                          "library of linux, macos or windows (a wheel carries it)")
    summary = _text(f"{where} wheel.summary", table["summary"])
    for used in re.findall(r"\{([^{}]*)\}", summary):
        if used not in WHEEL_SUMMARY_PLACEHOLDERS:
            raise ConfigError(f"{where}: wheel.summary: unknown placeholder '{{{used}}}'",
                              hint="placeholders: " + ", ".join(
                                  "{" + p + "}" for p in WHEEL_SUMMARY_PLACEHOLDERS))
    licenses = tuple(_relative(f"{where} wheel.server_licenses[{i}]", v) for i, v in
                     enumerate(_strings(f"{where} wheel.server_licenses",
                                        table.get("server_licenses", []))))
    if licenses and not server:
        raise ConfigError(f"{where}: wheel.server_licenses needs [smoke.server] (they are "
                          "shipped beside the server)")
    cmake = table.get("cmake", {})
    if not isinstance(cmake, dict):
        raise ConfigError(f"{where}: wheel.cmake must be a table of CMake options: "
                          'NAME = "VALUE"')
    options = []
    for key, value in sorted(cmake.items()):
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise ConfigError(f"{where}: wheel.cmake: '{key}' is not a CMake variable name")
        if key in _WHEEL_KILN_CMAKE:
            raise ConfigError(f"{where}: wheel.cmake: kiln sets {key} itself")
        options.append((key, _text(f"{where} wheel.cmake.{key}", value)))
    return Wheel(summary=summary, readme=_relative(f"{where} wheel.readme", table["readme"]),
                 license=(_text(f"{where} wheel.license", table["license"])
                          if "license" in table else None),
                 classifiers=_strings(f"{where} wheel.classifiers",
                                      table.get("classifiers", [])),
                 server_licenses=licenses, cmake=tuple(options))


def _release(where: str, table: Any, *, source_dir: str | None) -> Release:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: [release] must be a table")
    _keys(f"{where} [release]", table, _RELEASE_KEYS, ("github",))
    github = table["github"]
    if not isinstance(github, str) or not _GITHUB_REPO.fullmatch(github):
        raise ConfigError(f"{where}: release.github = {github!r} is not OWNER/REPO",
                          hint='write e.g. github = "OWNER/REPO"')
    prefix = table.get("tag_prefix", "")
    if not isinstance(prefix, str) or not _TAG_PREFIX.fullmatch(prefix):
        raise ConfigError(f"{where}: release.tag_prefix = {prefix!r} is not a name followed "
                          "by '-' or '/'", hint='write e.g. tag_prefix = "llama-" (tags '
                                                'llama-b<N>), or leave it out (tags b<N>)')
    download_url = table.get("download_url",
                             f"https://github.com/{github}/releases/download/{prefix}{{tag}}")
    if not isinstance(download_url, str) or not download_url.startswith(
            ("https://", "http://", "file:")):
        raise ConfigError(f"{where}: release.download_url = {download_url!r} is not a URL",
                          hint="write an https URL; {tag} is replaced by the tag")
    sources = tuple(_relative(f"{where} release.sources[{i}]", v) for i, v in
                    enumerate(_strings(f"{where} release.sources",
                                       table.get("sources", [source_dir] if source_dir
                                                 else []))))
    expiry = table.get("index_expiry_days", 365)
    if not isinstance(expiry, int) or isinstance(expiry, bool) or not 1 <= expiry <= 36500:
        raise ConfigError(f"{where}: release.index_expiry_days = {expiry!r} is not a number "
                          "of days from 1 to 36500")
    third_party = None
    if "third_party" in table:
        tp = table["third_party"]
        if not isinstance(tp, dict):
            raise ConfigError(f"{where}: [release.third_party] must be a table (record, "
                              "used_by)")
        _keys(f"{where} [release.third_party]", tp, _THIRD_PARTY_KEYS, _THIRD_PARTY_KEYS)
        third_party = ThirdParty(
            record=_relative(f"{where} release.third_party.record", tp["record"]),
            used_by=_text(f"{where} release.third_party.used_by", tp["used_by"]))
    return Release(github=github, download_url=download_url, sources=sources,
                   index_expiry_days=expiry, tag_prefix=prefix, third_party=third_party)


def find_root(start: Path) -> Path:
    """The project root: the nearest directory, upwards, that has ``kiln.toml`` or
    ``matrix/defaults.yaml``; ``start`` when none has."""
    for d in (start, *start.parents):
        if (d / FILE).is_file() or (d / "matrix" / "defaults.yaml").is_file():
            return d
    return start
