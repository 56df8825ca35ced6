"""The verifiers take what they run and expect from kiln.toml, not from ember: lavapipe's and
openvino-cpu's backend runs (``[smoke.backends.<backend>]``: ember's command lines,
environments and log lines as they were; a project without the table fails the check, naming
it), the prompt-file run of the non-ASCII check (``smoke.prompt_file_args``) and the device
code that CUDA/HIP inspection messages name. ``kiln.run.run`` is replaced in-process: unit
tests start no programs."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from ember_project import EMBER, NAMES

import kiln.verify.lavapipe as lavapipe
import kiln.verify.openvino_cpu as openvino_cpu
from kiln.build.toolchains.recipe import load_verify_spec
from kiln.errors import ConfigError
from kiln.matrix import load_matrix
from kiln.plan import make_job
from kiln.project import BackendRun, Names, Smoke, load_project
from kiln.run import Completed
from kiln.verify import VerifyContext
from kiln.verify.base import cli_args
from kiln.verify.inspect import device_code_note

LLVMPIPE = "llvmpipe (LLVM 15.0.6, 256 bits) (Vulkan 1.3.230, f64)"
OV_CPU = "Intel(R) Xeon(R) (OpenVINO 2026.2.1, CPU plugin, f32)"
BASE_ENV = {"PATH": "/usr/bin", "HOME": "/home/k", "EMBER_BACKEND": "cuda"}


def make_ctx(repo_root: Path, tmp_path: Path, entry_id: str, *, smoke: Smoke = EMBER.smoke,
             names: Names = NAMES, **kw: Any) -> VerifyContext:
    job = make_job(load_matrix(repo_root / "matrix").get(entry_id), 1, names)
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    args: dict[str, Any] = dict(job=job, stage=tmp_path / "stage",
                                spec=load_verify_spec(repo_root / "recipes"), env=BASE_ENV,
                                log_file=tmp_path / "v.log", model=model, reference_ids=None,
                                smoke=smoke, layout=EMBER.layout, host_arch="x86_64",
                                source=repo_root / "runtime", source_label="runtime")
    args.update(kw)
    return VerifyContext(**args)


class FakeRun:
    """``kiln.run.run`` standing in for the smoke program: prints ``n`` ids as JSON, with the
    backend and device the run asked for (``devices``: backend argument -> device)."""

    def __init__(self, n: int, devices: Mapping[str, tuple[str, str]]) -> None:
        self.n = n
        self.devices = devices
        self.calls: list[tuple[list[str], dict[str, str]]] = []

    def __call__(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None,
                 **kw: Any) -> Completed:
        self.calls.append((list(argv), dict(env or {})))
        backend, device = self.devices[argv[-1]]
        out = {"prompt_ids": [1, 2], "generated_ids": list(range(self.n)), "text": "",
               "backend": backend, "device": device}
        return Completed(argv=tuple(argv), returncode=0, stdout=json.dumps(out) + "\n",
                         stderr="")


# --------------------------------------------------------------------------------------------
# lavapipe


@pytest.fixture
def manifest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "lvp_icd.x86_64.json"
    path.write_text("{}")
    monkeypatch.setattr(lavapipe, "manifest_for", lambda arch, icd_dir=None: path)
    monkeypatch.setattr(lavapipe, "inspect_first", lambda ctx: [])
    return path


def test_lavapipe_runs_embers_commands_as_before(repo_root: Path, tmp_path: Path,
                                                 manifest: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = make_ctx(repo_root, tmp_path, "ubuntu-vulkan-x64")
    fake = FakeRun(ctx.spec.run.n_predict, {"vulkan": ("vulkan", LLVMPIPE),
                                            "cpu": ("cpu", "cpu")})
    monkeypatch.setattr(lavapipe, "run", fake)
    report = lavapipe.LavapipeVerifier().verify(ctx)
    assert report.ok, report.detail
    exe = str(ctx.stage / "bin" / "ember-cli")
    env = {"PATH": "/usr/bin", "HOME": "/home/k", "VK_DRIVER_FILES": str(manifest),
           "VK_ICD_FILENAMES": str(manifest), "EMBER_VULKAN_DEVICE": "cpu"}
    assert fake.calls == [([exe, *cli_args(ctx, str(ctx.model)), "--backend", "vulkan"], env),
                          ([exe, *cli_args(ctx, str(ctx.model)), "--backend", "cpu"], env)]
    details = {c.name: c.detail for c in report.checks}
    assert details["vulkan = cpu"] == "the archive's --backend cpu gives the same ids"
    assert details["device"] == f"backend vulkan, device {LLVMPIPE}"
    log = ctx.log_file.read_text()
    assert f"+ VK_DRIVER_FILES={manifest} EMBER_VULKAN_DEVICE=cpu {exe} -m" in log
    assert log.count("EMBER_VULKAN_DEVICE=cpu") == 2


def test_lavapipe_runs_another_projects_backend_tables(repo_root: Path, tmp_path: Path,
                                                       manifest: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    smoke = dataclasses.replace(EMBER.smoke, program="demo-cli", backends=(
        ("cpu", BackendRun(args=("--device", "none"), env=(("DEMO_THREADS", "1"),))),
        ("vulkan", BackendRun(args=("--device", "vk"), env=(("DEMO_VK_CPU", "1"),),
                              unset=("DEMO_DEVICE",)))))
    ctx = make_ctx(repo_root, tmp_path, "ubuntu-vulkan-x64", smoke=smoke,
                   env={"PATH": "/usr/bin", "DEMO_DEVICE": "gpu", "EMBER_BACKEND": "x"})
    fake = FakeRun(ctx.spec.run.n_predict, {"vk": ("vulkan", LLVMPIPE), "none": ("cpu", "cpu")})
    monkeypatch.setattr(lavapipe, "run", fake)
    report = lavapipe.LavapipeVerifier().verify(ctx)
    assert report.ok, report.detail
    (vk_argv, vk_env), (cpu_argv, cpu_env) = fake.calls
    assert vk_argv[0].endswith("/bin/demo-cli") and vk_argv[-2:] == ["--device", "vk"]
    assert cpu_argv[-2:] == ["--device", "none"]
    assert vk_env["DEMO_VK_CPU"] == "1" and "DEMO_DEVICE" not in vk_env
    assert vk_env["EMBER_BACKEND"] == "x"  # ember's variables are ember's kiln.toml's
    assert cpu_env == {**vk_env, "DEMO_THREADS": "1"}
    details = {c.name: c.detail for c in report.checks}
    assert details["vulkan = cpu"] == "the archive's --device none gives the same ids"
    assert "DEMO_VK_CPU=1 DEMO_THREADS=1" in ctx.log_file.read_text()


@pytest.mark.parametrize("keep, missing", [((), "vulkan"), (("vulkan",), "cpu")])
def test_lavapipe_without_a_backend_table_fails_naming_it(repo_root: Path, tmp_path: Path,
                                                          manifest: Path, keep: tuple[str, ...],
                                                          missing: str,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    smoke = dataclasses.replace(EMBER.smoke, backends=tuple(
        (b, r) for b, r in EMBER.smoke.backends if b in keep))
    ctx = make_ctx(repo_root, tmp_path, "ubuntu-vulkan-x64", smoke=smoke)
    monkeypatch.setattr(lavapipe, "run", FakeRun(1, {}))
    report = lavapipe.LavapipeVerifier().verify(ctx)
    assert not report.ok
    assert [(c.name, c.detail) for c in report.checks] == [
        ("ran on lavapipe", f"kiln.toml has no [smoke.backends.{missing}]: add it to say how "
                            f"ember-cli runs on its {missing} backend (args, env, unset)")]


# --------------------------------------------------------------------------------------------
# openvino-cpu


@pytest.fixture
def runtime(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    installed: list[str] = []

    def install(paths: Any, version: str, os: str, **kw: Any) -> str:
        installed.append(version)
        return "rt"

    monkeypatch.setattr(openvino_cpu, "install_openvino", install)
    monkeypatch.setattr(openvino_cpu, "runtime_library",
                        lambda rt, os: Path("/cache/openvino/libopenvino_c.so"))
    monkeypatch.setattr(openvino_cpu, "inspect_first", lambda ctx: [])
    return installed


def test_openvino_runs_embers_command_as_before(repo_root: Path, tmp_path: Path,
                                                runtime: list[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = make_ctx(repo_root, tmp_path, "ubuntu-openvino-2026.2-x64",
                   extra={"toolchains": str(tmp_path / "toolchains")})
    fake = FakeRun(ctx.spec.run.n_predict, {"openvino": ("openvino", OV_CPU)})
    monkeypatch.setattr(openvino_cpu, "run", fake)
    report = openvino_cpu.OpenvinoCpuVerifier().verify(ctx)
    assert report.ok, report.detail
    exe = str(ctx.stage / "bin" / "ember-cli")
    lib = "/cache/openvino/libopenvino_c.so"
    assert fake.calls == [([exe, *cli_args(ctx, str(ctx.model)), "--backend", "openvino"],
                           {"PATH": "/usr/bin", "HOME": "/home/k", "EMBER_OPENVINO_LIB": lib,
                            "EMBER_OPENVINO_DEVICE": "CPU"})]
    assert report.checks[0].detail == f"backend openvino, device {OV_CPU}"
    log = ctx.log_file.read_text()
    assert f"EMBER_OPENVINO_LIB={lib}" in log and "EMBER_OPENVINO_DEVICE=CPU" in log


def test_openvino_without_its_table_fails_naming_it(repo_root: Path, tmp_path: Path,
                                                    runtime: list[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    smoke = dataclasses.replace(EMBER.smoke, program="demo-cli", backends=())
    ctx = make_ctx(repo_root, tmp_path, "ubuntu-openvino-2026.2-x64", smoke=smoke,
                   extra={"toolchains": str(tmp_path / "toolchains")})
    monkeypatch.setattr(openvino_cpu, "run", FakeRun(1, {}))
    report = openvino_cpu.OpenvinoCpuVerifier().verify(ctx)
    assert not report.ok and runtime == []  # nothing fetched for a run that cannot happen
    assert [(c.name, c.detail) for c in report.checks] == [
        ("ran on OpenVINO's CPU plugin",
         "kiln.toml has no [smoke.backends.openvino]: add it to say how demo-cli runs on its "
         "openvino backend (args, env, unset)")]


def test_the_device_checks_name_the_program() -> None:
    assert lavapipe.device_check("nothing\n", "demo-cli").detail == (
        "demo-cli printed no JSON object")
    assert openvino_cpu.device_check("x\n", "ember-cli").detail == (
        "ember-cli printed no JSON object")


# --------------------------------------------------------------------------------------------
# CUDA / HIP messages name the project's device code


def test_device_code_notes_come_from_the_project(repo_root: Path, tmp_path: Path) -> None:
    ctx = make_ctx(repo_root, tmp_path, "ubuntu-cuda-13.3-x64")
    assert device_code_note(ctx, "cuda") == (
        "runtime/src/backends/cuda/ember_kernels.cu (EMBER_CUDA_BLOBS unset?)")
    assert device_code_note(ctx, "hip") == (
        "runtime/src/backends/hip/ember_kernels.hip (EMBER_HIP_BLOBS unset?)")
    demo = Names(name="demo", archive="{name}-b{build}-bin-{id}", option_prefix="DEMO_",
                 device_code=(("cuda", "kern/k.cu"),))
    ctx = make_ctx(repo_root, tmp_path, "ubuntu-cuda-13.3-x64", names=demo,
                   source=tmp_path / "native", source_label="native")
    assert device_code_note(ctx, "cuda") == "native/kern/k.cu (DEMO_CUDA_BLOBS unset?)"
    assert device_code_note(ctx, "hip") == (
        "the project's hip device code ([build.device_code] in kiln.toml)")


# --------------------------------------------------------------------------------------------
# smoke.prompt_file_args in kiln.toml


def _project(tmp_path: Path, smoke_extra: str, output: str = "json-ids") -> Any:
    (tmp_path / "kiln.toml").write_text(f"""
[project]
name = "demo"
license = "LICENSE"
source = "src"

[smoke]
program = "demo-cli"
args = ["-m", "{{model}}", "-p", "{{prompt}}", "-n", "{{n_predict}}"]
output = "{output}"
{smoke_extra}
""")
    return load_project(tmp_path)


def test_prompt_file_args_are_read_and_filled(tmp_path: Path) -> None:
    assert _project(tmp_path, "").smoke.prompt_file_args == ()
    p = _project(tmp_path, 'prompt_file_args = ["--model", "{model}", "--file", "{prompt_file}",'
                           ' "-n", "{n_predict}", "-t", "{threads}"]')
    assert p.smoke.prompt_file_argv(model="m", prompt_file="p.txt", n_predict=4, threads=2) == [
        "--model", "m", "--file", "p.txt", "-n", "4", "-t", "2"]
    assert EMBER.smoke.prompt_file_argv(model="m", prompt_file="f", n_predict=3, threads=1) == [
        "-m", "m", "-f", "f", "-n", "3", "--temp", "0", "--ignore-eos", "-t", "1", "--json"]


@pytest.mark.parametrize("extra, output, message", [
    ('prompt_file_args = ["-m", "{model}", "-p", "{prompt}"]', "json-ids",
     "unknown placeholder '{prompt}'"),
    ('prompt_file_args = ["-m", "{model}"]', "json-ids", "the prompt file ({prompt_file})"),
    ('prompt_file_args = ["-f", "{prompt_file}"]', "json-ids", "must pass the model"),
    ('prompt_file_args = ["-m", "{model}", "-f", "{prompt_file}"]', "stdout",
     'needs smoke.output = "json-ids"'),
])
def test_bad_prompt_file_args_are_refused(tmp_path: Path, extra: str, output: str,
                                          message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        _project(tmp_path, extra, output)
