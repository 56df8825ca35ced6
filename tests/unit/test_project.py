"""kiln.toml (kiln/project.py) and where a project's source comes from (kiln/build/source.py):
the two projects in this repository parse, every malformed description is refused by name,
and a pinned sdist is fetched, checked and unpacked once, never half."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

import kiln.build.source
from kiln.build.source import resolve_source
from kiln.cli import main
from kiln.errors import ConfigError, IntegrityError
from kiln.files import sha256_file
from kiln.project import Project, find_root, load_project

LLAMA = "examples/llamacpp"


def _write(root: Path, text: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "kiln.toml").write_text(text, encoding="utf-8")
    return root


GOOD = """
[project]
name = "demo"
license = "LICENSE"
source = "src"

[smoke]
program = "demo-run"
args = ["-m", "{model}", "-n", "{n_predict}"]
output = "stdout"
"""


def test_ember_is_one_project_among_others(repo_root: Path) -> None:
    ember = load_project(repo_root)
    assert (ember.name, ember.source_dir, ember.sdist, ember.targets) == (
        "ember", "runtime", None, ())
    assert ember.binding == "runtime/python/ember"
    assert ember.smoke.output == "json-ids" and not ember.smoke.big_endian
    assert ember.artifact_stem(build=7, entry_id="ubuntu-x64") == "ember-b7-bin-ubuntu-x64"
    llama = load_project(repo_root / LLAMA)
    assert llama.name == "llama" and llama.source_dir is None and llama.binding is None
    assert llama.sdist is not None and llama.sdist.requirement == "llama-cpp-python==0.3.36"
    assert llama.sdist.subdir == "vendor/llama.cpp"
    assert llama.smoke.program in llama.targets and llama.smoke.output == "stdout"
    assert llama.artifact_stem(build=9, entry_id="win-cpu-x64") == "llama-b9-bin-win-cpu-x64"
    argv = llama.smoke.argv(model="m.gguf", prompt="hi there", n_predict=16, threads=1)
    assert argv[:6] == ["-m", "m.gguf", "-p", "hi there", "-n", "16"]
    assert llama.smoke.convert_argv(python="py", source="/s", model="/m")[:2] == [
        "py", "/s/gguf-py/gguf/scripts/gguf_convert_endian.py"]


def test_the_smoke_args_reproduce_ember_clis_command_line(repo_root: Path) -> None:
    """ember's smoke test in kiln.toml is the command line the verifiers always ran."""
    smoke = load_project(repo_root).smoke
    assert smoke.argv(model="M", prompt="P", n_predict=16, threads=1) == [
        "-m", "M", "-p", "P", "-n", "16", "--temp", "0", "--ignore-eos", "-t", "1", "--json"]


def test_cli_names_come_from_the_project(repo_root: Path) -> None:
    out = io.StringIO()
    assert main(["-C", LLAMA, "plan", "ubuntu-x64", "win-cpu-x64", "--json",
                 "--build-number", "5"], env={"HOME": "/nonexistent"}, stdout=out,
                cwd=repo_root) == 0
    import json
    artifacts = {j["id"]: j["artifact"] for j in json.loads(out.getvalue())}
    assert artifacts == {"ubuntu-x64": "llama-b5-bin-ubuntu-x64.tar.gz",
                         "win-cpu-x64": "llama-b5-bin-win-cpu-x64.zip"}


def test_find_root_prefers_the_nearest_kiln_toml(repo_root: Path) -> None:
    assert find_root(repo_root / LLAMA / "matrix") == repo_root / LLAMA
    assert find_root(repo_root / "kiln" / "build") == repo_root


@pytest.mark.parametrize(("text", "says"), [
    ("", "'project' is missing"),
    ("[project]\nname='x'\nlicense='L'\nsource='s'\n", "'smoke' is missing"),
    (GOOD.replace('name = "demo"', 'name = "Demo Project"'), "project.name 'Demo Project'"),
    (GOOD.replace('source = "src"', 'source = "../elsewhere"'), "must be a relative path"),
    (GOOD.replace('source = "src"', 'source = "/abs"'), "must be a relative path"),
    (GOOD.replace('source = "src"', ''), "exactly one of project.source"),
    (GOOD.replace('license = "LICENSE"', 'licence = "LICENSE"'), "did you mean 'license'"),
    (GOOD.replace('[smoke]', '[project.sdist]\nrequirement="a==1"\nsha256="' + "0" * 64
                  + '"\nsubdir="x"\n[smoke]'), "exactly one of project.source"),
    (GOOD.replace('name = "demo"', 'name = "demo"\narchive = "{name}-{id}/x"'),
     "project.archive"),
    (GOOD.replace('name = "demo"', 'name = "demo"\narchive = "{name}-{version}"'),
     "project.archive"),
    (GOOD.replace('output = "stdout"', 'output = "stderr"'), "smoke.output 'stderr'"),
    (GOOD.replace('"{model}", ', ''), "must pass the model"),
    (GOOD.replace('"{n_predict}"', '"{seed}"'), "unknown placeholder '{seed}'"),
    (GOOD.replace('program = "demo-run"', 'program = "../bin/sh"'), "smoke.program"),
    (GOOD + '\n[build]\ntargets = ["other"]\n', "not among build.targets"),
    (GOOD + '\n[build]\ntargets = ["a;rm -rf"]\n', "not a CMake target name"),
    (GOOD.replace('output = "stdout"', 'output = "stdout"\nbig_endian = ["{python}"]'),
     "must name the model"),
    (GOOD.replace('output = "stdout"', 'output = "stdout"\nbig_endian = ["{home}/{model}"]'),
     "unknown placeholder '{home}'"),
    (GOOD.replace('[smoke]', '[smoke]\nprogramme = "x"'), "did you mean 'program'"),
    ("[project\nname=", "not valid TOML"),
])
def test_a_bad_description_is_refused_by_name(tmp_path: Path, text: str, says: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_project(_write(tmp_path / "p", text))
    assert says in err.value.render()


@pytest.mark.parametrize(("sdist", "says"), [
    ('requirement = "llama-cpp-python"\nsha256 = "' + "a" * 64 + '"\nsubdir = "v"',
     "must pin one version"),
    ('requirement = "x==1"\nsha256 = "' + "A" * 64 + '"\nsubdir = "v"', "64 lower-case hex"),
    ('requirement = "x==1"\nsha256 = "' + "a" * 64 + '"\nsubdir = "../v"', "relative path"),
    ('requirement = "x==1"\nsha256 = "' + "a" * 64 + '"', "'subdir' is missing"),
])
def test_a_bad_sdist_pin_is_refused(tmp_path: Path, sdist: str, says: str) -> None:
    text = GOOD.replace('source = "src"', "").replace("[smoke]", f"[project.sdist]\n{sdist}\n"
                                                                 "[smoke]")
    with pytest.raises(ConfigError) as err:
        load_project(_write(tmp_path / "p", text))
    assert says in err.value.render()


def test_a_missing_description_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_project(tmp_path)
    assert "kiln.toml" in err.value.render()


# --------------------------------------------------------------------------------------------
# sdist sources


def _sdist(path: Path, files: Mapping[str, bytes], top: str = "demo-1.0") -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _sdist_project(tmp_path: Path, sha: str) -> Project:
    text = GOOD.replace('source = "src"', "").replace(
        "[smoke]", f'[project.sdist]\nrequirement = "demo==1.0"\nsha256 = "{sha}"\n'
                   'subdir = "vendor/demo"\n[smoke]')
    return load_project(_write(tmp_path / "project", text))


class FakePip:
    """``pip download`` that puts one prepared sdist into --dest (and counts its calls)."""

    def __init__(self, sdist: Path) -> None:
        self.sdist = sdist
        self.calls = 0

    def __call__(self, argv: Sequence[str], **kwargs: Any) -> None:
        self.calls += 1
        assert argv[1:4] == ["-m", "pip", "download"] and argv[-1] == "demo==1.0"
        dest = Path(argv[argv.index("--dest") + 1])
        (dest / self.sdist.name).write_bytes(self.sdist.read_bytes())


def test_an_sdist_is_fetched_checked_and_unpacked_once(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    tarball = _sdist(tmp_path / "demo-1.0.tar.gz", {
        "vendor/demo/CMakeLists.txt": b"project(demo C)\n", "vendor/demo/LICENSE": b"MIT\n"})
    pip = FakePip(tarball)
    monkeypatch.setattr(kiln.build.source, "run", pip)
    project = _sdist_project(tmp_path, sha256_file(tarball))
    cache = tmp_path / "cache"
    first = resolve_source(project, cache_root=cache, python="python3", env={}, run_env={})
    again = resolve_source(project, cache_root=cache, python="python3", env={}, run_env={})
    assert first == again and pip.calls == 1
    assert (first.path / "CMakeLists.txt").read_bytes() == b"project(demo C)\n"
    assert len(first.digest) == 64 and first.path.is_relative_to(cache / "sources")


def test_an_sdist_with_other_bytes_is_refused_and_nothing_kept(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tarball = _sdist(tmp_path / "demo-1.0.tar.gz", {"vendor/demo/CMakeLists.txt": b"x"})
    monkeypatch.setattr(kiln.build.source, "run", FakePip(tarball))
    project = _sdist_project(tmp_path, "0" * 64)
    cache = tmp_path / "cache"
    with pytest.raises(IntegrityError) as err:
        resolve_source(project, cache_root=cache, python="python3", env={}, run_env={})
    assert "but kiln.toml pins" in err.value.render()
    assert not any((cache / "sources").iterdir())


def test_a_hostile_sdist_is_refused_before_anything_is_written(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tarball = tmp_path / "demo-1.0.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        info = tarfile.TarInfo("demo-1.0/../../escaped")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    monkeypatch.setattr(kiln.build.source, "run", FakePip(tarball))
    project = _sdist_project(tmp_path, sha256_file(tarball))
    cache = tmp_path / "cache"
    with pytest.raises(IntegrityError):
        resolve_source(project, cache_root=cache, python="python3", env={}, run_env={})
    assert not (tmp_path / "escaped").exists() and not (cache / "escaped").exists()
    assert not any((cache / "sources").iterdir())


def test_an_sdist_without_the_cmake_project_says_so(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    tarball = _sdist(tmp_path / "demo-1.0.tar.gz", {"README": b"no cmake here"})
    monkeypatch.setattr(kiln.build.source, "run", FakePip(tarball))
    project = _sdist_project(tmp_path, sha256_file(tarball))
    with pytest.raises(ConfigError) as err:
        resolve_source(project, cache_root=tmp_path / "cache", python="p", env={}, run_env={})
    assert "no CMakeLists.txt in vendor/demo/" in err.value.render()


def test_reproducing_a_commit_from_before_kiln_toml_uses_this_checkouts_description(
        tmp_path: Path, repo_root: Path) -> None:
    """kiln reproduce of a release whose commit has no kiln.toml: the stages did then what
    this checkout's description says, so it is read with the old tree as its root."""
    from kiln.release.reproduce import _project_of

    old = tmp_path / "old-commit"
    old.mkdir()
    project = _project_of(old, repo_root)
    assert project.root == old and project.name == "ember" and project.source_dir == "runtime"
    assert project.recipes_dir == old / "recipes"
    _write(old, GOOD)
    assert _project_of(old, repo_root).name == "demo"


def test_release_settings(repo_root: Path, tmp_path: Path) -> None:
    ember = load_project(repo_root).release_settings()
    assert (ember.github, ember.sources, ember.tag_prefix) == ("ember-ml/ember", ("runtime",), "")
    assert ember.base_url("b7") == "https://github.com/ember-ml/ember/releases/download/b7/"
    assert ember.git_tag("b7") == "b7"
    llama = load_project(repo_root / LLAMA).release_settings()
    # another project released from ember's repository: its own git tags and GitHub releases
    assert llama.git_tag("b7") == "llama-b7"
    assert llama.base_url("b7").endswith("/releases/download/llama-b7/")
    assert llama.sources == ()  # the sdist is listed as a component instead
    root = _write(tmp_path / "p", GOOD)
    with pytest.raises(ConfigError, match=r"no \[release\] table"):
        load_project(root).release_settings()
    assert load_project(_write(root, GOOD + '[release]\ngithub = "o/r"\n')
                        ).release_settings().sources == ("src",)


@pytest.mark.parametrize(("table", "message"), [
    ('github = "o/r"\ndownload_ur = "https://x"', "unknown key 'download_ur'"),
    ('download_url = "https://x"', "'github' is missing"),
    ('github = "not a repo"', "is not OWNER/REPO"),
    ('github = "o/r"\ndownload_url = "ftp://x/{tag}"', "is not a URL"),
    ('github = "o/r"\nsources = ["../up"]', "must be a relative path"),
    ('github = "o/r"\nindex_expiry_days = 0', "is not a number of days"),
    ('github = "o/r"\ntag_prefix = "llama"', "is not a name followed by"),
    ('github = "o/r"\ntag_prefix = "x y-"', "is not a name followed by"),
    ("github = 'o/r'\n[release.x]", "unknown key 'x'"),
    ("github = 'o/r'\nthird_party = 'x.json'", "must be a table"),
    ("github = 'o/r'\n[release.third_party]\nrecord = 'x.json'", "'used_by' is missing"),
    ("github = 'o/r'\n[release.third_party]\nrecord = '/x.json'\nused_by = 's'",
     "must be a relative path"),
    ("github = 'o/r'\n[release.third_party]\nrecord = 'x.json'\nused_by = 's'\nwhy = 1",
     "unknown key 'why'"),
])
def test_bad_release_settings(tmp_path: Path, table: str, message: str) -> None:
    root = _write(tmp_path / "p", GOOD + "[release]\n" + table + "\n")
    with pytest.raises(ConfigError, match=message):
        load_project(root)


def test_what_every_tree_must_hold(repo_root: Path) -> None:
    ember = load_project(repo_root).layout
    assert ember.groups("windows") == (
        ("bin/ember-cli.exe",), ("bin/ember-bench.exe",), ("bin/ember-server.exe",),
        ("include/ember.h",), ("share/ember/licenses/civetweb.md",),
        ("share/ember/licenses/cJSON.txt",), ("bin/ember.dll",))
    assert ember.groups("linux")[-1] == ("lib/libember.so",)
    assert ember.groups("android")[-1] == ("lib/libember.a",)
    assert ember.groups("macos")[0] == ("bin/ember-cli",)
    # without [package]: the programs of build.targets in bin/
    llama = load_project(repo_root / LLAMA).layout
    assert llama.groups("windows") == (
        ("bin/llama-completion.exe",), ("bin/llama-simple.exe",), ("bin/llama-bench.exe",),
        ("bin/llama-quantize.exe",))


def test_alternatives_in_the_layout(tmp_path: Path) -> None:
    root = _write(tmp_path / "p", GOOD + '[package]\nrequired = ["lib/a.so | lib/a.so.1"]\n')
    assert load_project(root).layout.groups("linux") == (("lib/a.so", "lib/a.so.1"),)


@pytest.mark.parametrize(("table", "message"), [
    ('required = ["../up"]', "must be a relative path"),
    ('required = ["bin/{name}"]', "may use only {exe}"),
    ('required = "bin/x"', "expected a list of strings"),
    ('required = ["x"]\n[package.library]\nbeos = "lib/x"', "unknown key 'beos'"),
    ('required = ["x"]\n[package.library]\nlinux = "/abs/x"', "must be a relative path"),
    ('requires = ["x"]', "unknown key 'requires'"),
])
def test_bad_layouts(tmp_path: Path, table: str, message: str) -> None:
    root = _write(tmp_path / "p", GOOD + "[package]\n" + table + "\n")
    with pytest.raises(ConfigError, match=message):
        load_project(root)


def test_the_server_the_smoke_test_also_checks(repo_root: Path, tmp_path: Path) -> None:
    server = load_project(repo_root).smoke.server
    assert server is not None and server.program == "ember-server"
    assert server.argv(model="m.gguf", threads=2)[:2] == ["-m", "m.gguf"]
    assert server.argv(model="m.gguf", threads=2)[-2:] == ["-t", "2"]
    assert load_project(repo_root / LLAMA).smoke.server is None  # no server check
    ids = GOOD.replace('output = "stdout"', 'output = "json-ids"')
    table = '[smoke.server]\nprogram = "demo-serve"\nargs = ["--model", "{model}"]\n'
    got = load_project(_write(tmp_path / "a", ids + table)).smoke.server
    assert got is not None and (got.program, got.args) == ("demo-serve", ("--model", "{model}"))
    with pytest.raises(ConfigError, match=r"needs smoke\.output"):
        load_project(_write(tmp_path / "b", GOOD + table))
    with pytest.raises(ConfigError, match="must be a file name"):
        load_project(_write(tmp_path / "c", ids + table.replace("demo-serve", "../x")))
    with pytest.raises(ConfigError, match="must be a table"):
        load_project(_write(tmp_path / "d", ids.replace("[smoke]", "[smoke]\nserver = \"x\"")))
    with pytest.raises(ConfigError, match="must pass the model"):
        load_project(_write(tmp_path / "e", ids + table.replace('"--model", "{model}"', '"-x"')))
    with pytest.raises(ConfigError, match=r"unknown placeholder '\{port\}'"):
        load_project(_write(tmp_path / "f", ids + table.replace('"--model"', '"{port}"')))


def test_how_the_smoke_program_is_pointed_at_a_backend(repo_root: Path) -> None:
    smoke = load_project(repo_root).smoke
    vulkan, openvino = smoke.backend("vulkan"), smoke.backend("openvino")
    assert vulkan is not None and openvino is not None and smoke.backend("cann") is None
    env = vulkan.environment({"PATH": "/bin", "EMBER_BACKEND": "cpu"})
    assert env == {"PATH": "/bin", "EMBER_VULKAN_DEVICE": "cpu"}
    assert vulkan.args == ("--backend", "vulkan")
    got = openvino.environment({}, runtime="/rt/libopenvino_c.so")
    assert got["EMBER_OPENVINO_LIB"] == "/rt/libopenvino_c.so"
    shown = openvino.shown(runtime="/rt/libopenvino_c.so")
    assert "EMBER_OPENVINO_LIB=/rt/libopenvino_c.so" in shown
    assert load_project(repo_root / LLAMA).smoke.backends == ()


@pytest.mark.parametrize(("table", "message"), [
    ('[smoke.backends]\nvulkan = "x"', "must be a table"),
    ('[smoke.backends.Vulkan]\nargs = []', "is not a backend name"),
    ('[smoke.backends.vulkan]\nargv = []', "unknown key 'argv'"),
    ('[smoke.backends.vulkan]\nenv = { "A B" = "1" }', "not an environment variable name"),
    ('[smoke.backends.vulkan]\nenv = { A = "{lib}" }', "unknown placeholder '{lib}'"),
    ('[smoke.backends.vulkan]\nunset = ["1X"]', "not an environment variable name"),
    ('[smoke.backends.vulkan]\nargs = ["{model}"]', "unknown placeholder '{model}'"),
])
def test_bad_backend_runs(tmp_path: Path, table: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_project(_write(tmp_path / "p", GOOD + table + "\n"))


def test_the_options_and_device_code_kiln_passes(repo_root: Path, tmp_path: Path) -> None:
    names = load_project(repo_root).names
    assert (names.name, names.option("CUDA")) == ("ember", "EMBER_CUDA")
    assert names.device_source("cuda") == "src/backends/cuda/ember_kernels.cu"
    llama = load_project(repo_root / LLAMA).names
    with pytest.raises(ConfigError, match="has no \\[build\\] option_prefix"):
        llama.option("CUDA")
    with pytest.raises(ConfigError, match="names no device code for hip"):
        llama.device_source("hip")
    for table, message in [
        ('[build]\noption_prefix = "ember_"', "must be upper-case"),
        ('[build]\noption_prefix = "EMBER"', "ending in '_'"),
        ('[build.device_code]\nmetal = "k.metal"', "unknown key 'metal'"),
        ('[build.device_code]\ncuda = "../k.cu"', "must be a relative path"),
        ('[build]\ndevice_code = "k.cu"', "must be a table"),
    ]:
        with pytest.raises(ConfigError, match=message):
            load_project(_write(tmp_path / "p", GOOD + table + "\n"))

WHEEL_GOOD = GOOD + """
[build]
binding = "python/demo"

[package]
required = ["bin/demo-run{exe}"]

[package.library]
linux = "lib/libdemo.so"

[wheel]
summary = "demo ({what})"
readme = "README.md.j2"
"""


def test_the_wheel_table(repo_root: Path, tmp_path: Path) -> None:
    """[wheel] goes with build.binding; ember's names a readme that exists."""
    ember = load_project(repo_root)
    assert ember.wheel is not None and (repo_root / ember.wheel.readme).is_file()
    assert ember.wheel.summary_for(name="ember", what="CPU build").endswith("(CPU build)")
    assert load_project(repo_root / LLAMA).wheel is None
    demo = load_project(_write(tmp_path / "p", WHEEL_GOOD + 'license = "MIT"\n'
                                                            'cmake = { DEMO_SHARED = "ON" }\n'))
    assert demo.wheel is not None
    assert (demo.wheel.readme, demo.wheel.license, demo.wheel.cmake, demo.wheel.classifiers,
            demo.wheel.server_licenses) == ("README.md.j2", "MIT", (("DEMO_SHARED", "ON"),),
                                             (), ())


@pytest.mark.parametrize(("text", "says"), [
    (GOOD + '\n[build]\nbinding = "python/demo"\n', "build.binding needs a [wheel] table"),
    (GOOD + '\n[wheel]\nsummary = "x"\nreadme = "r"\n', "describes the wheels of build.binding"),
    ('wheel = "x"\n' + WHEEL_GOOD.split("[wheel]")[0], "[wheel] must be a table"),
    (WHEEL_GOOD + 'summry = "x"\n', "did you mean 'summary'"),
    (WHEEL_GOOD.replace('readme = "README.md.j2"\n', ""), "'readme' is missing"),
    (WHEEL_GOOD.replace('"demo ({what})"', '"demo {version}"'), "unknown placeholder '{version}'"),
    (WHEEL_GOOD.replace('"README.md.j2"', '"../README.md.j2"'), "must be a relative path"),
    (WHEEL_GOOD.replace('"python/demo"', '"python/demo-py"'), "the name of a Python package"),
    (WHEEL_GOOD.replace('linux = "lib/libdemo.so"', 'android = "lib/libdemo.a"'),
     "needs [package.library] to name the shared library"),
    (WHEEL_GOOD + 'server_licenses = ["share/demo/LICENSE"]\n', "needs [smoke.server]"),
    (WHEEL_GOOD + 'license = ""\n', "wheel.license: expected a non-empty one-line string"),
    (WHEEL_GOOD + 'classifiers = "Topic :: X"\n', "wheel.classifiers: expected a list"),
    (WHEEL_GOOD + 'cmake = ["DEMO_SHARED=ON"]\n', "wheel.cmake must be a table"),
    (WHEEL_GOOD + 'cmake = { "A B" = "1" }\n', "'A B' is not a CMake variable name"),
    (WHEEL_GOOD + 'cmake = { CMAKE_BUILD_TYPE = "Debug" }\n', "kiln sets CMAKE_BUILD_TYPE"),
    (WHEEL_GOOD + 'cmake = { DEMO_SHARED = true }\n', "wheel.cmake.DEMO_SHARED: expected"),
])
def test_a_bad_wheel_table_is_refused_by_name(tmp_path: Path, text: str, says: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_project(_write(tmp_path / "p", text))
    assert says in err.value.render()
