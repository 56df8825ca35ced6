"""Host probes, fed from machine profiles (no programs run: tests/conftest.py forbids it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kiln.errors import ConfigError
from kiln.install.host import FixtureSource, Output, load_profile, probe, x86_level
from kiln.install.host.probe import x86_flags

HOSTS = Path(__file__).parent / "fixtures" / "hosts"


def profile(name: str) -> FixtureSource:
    return load_profile(HOSTS / f"{name}.yaml")


def linux(files: dict[str, str], commands: dict[str, Output] | None = None,
          machine: str = "x86_64", env: dict[str, str] | None = None) -> FixtureSource:
    return FixtureSource(name="t", description="", system_name="Linux", machine_name=machine,
                         environ=env or {}, files=files, commands=commands or {})


@pytest.mark.parametrize(("flags", "level"), [
    ("sse sse2", "x86-64"),
    ("mmx sse sse2 pni ssse3 cx16 sse4_1 sse4_2 popcnt lahf_lm", "x86-64-v2"),
    ("mmx sse sse2 pni ssse3 cx16 sse4_1 sse4_2 popcnt lahf_lm avx avx2 bmi1 bmi2 fma f16c "
     "movbe xsave abm", "x86-64-v3"),
    ("mmx sse sse2 pni ssse3 cx16 sse4_1 sse4_2 popcnt lahf_lm avx avx2 bmi1 bmi2 fma f16c "
     "movbe xsave abm avx512f avx512bw avx512cd avx512dq avx512vl", "x86-64-v4"),
    # AVX-512 without the v3 set (a broken hypervisor mask) does not skip levels
    ("mmx sse sse2 pni ssse3 cx16 sse4_1 sse4_2 popcnt lahf_lm avx512f avx512bw avx512cd "
     "avx512dq avx512vl", "x86-64-v2"),
])
def test_x86_level_from_archspec_feature_lists(flags: str, level: str) -> None:
    assert x86_level(x86_flags(flags.split())) == level


def test_macos_sysctl_spellings_are_converted() -> None:
    flags = x86_flags(["SSE", "SSE2", "SSE3", "SSSE3", "SSE4.1", "SSE4.2", "POPCNT", "LZCNT",
                       "CX16", "LAHF", "MMX"], darwin=True)
    assert {"sse4_1", "sse4_2", "abm", "lahf_lm"} <= flags
    assert x86_level(flags) == "x86-64-v2"


def test_musl_version_from_ldd_stderr() -> None:
    h = probe(profile("alpine-musl"))
    assert (h.libc, h.libc_version) == ("musl", "1.2.5")


def test_glibc_from_ldd_when_getconf_is_missing() -> None:
    h = probe(profile("rhel6-too-old-glibc"))
    assert (h.libc, h.libc_version) == ("glibc", "2.12")


def test_unknown_libc_is_a_note() -> None:
    h = probe(linux({"/proc/cpuinfo": "flags : sse\n"}))
    assert h.libc == "unknown"
    assert any("C library" in n for n in h.notes)


def test_nvidia_driver_and_gpus() -> None:
    h = probe(profile("ubuntu-cuda13-rtx4090"))
    assert h.nvidia_driver == "580.65.06"
    assert [(g.vendor, g.name, g.arch) for g in h.gpus] == [
        ("nvidia", "NVIDIA GeForce RTX 4090", "8.9")]
    assert h.vulkan_gpu == "NVIDIA GeForce RTX 4090 (nvidia_icd)"
    assert [i.name for i in h.vulkan_icds if i.cpu] == ["lvp_icd.x86_64"]


def test_nvidia_driver_from_proc_only_notes_missing_smi() -> None:
    h = probe(linux({"/proc/driver/nvidia/version":
                     "NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.14  Thu\n"},
                    {"getconf GNU_LIBC_VERSION": Output(rc=0, stdout="glibc 2.35", stderr="")}))
    assert h.nvidia_driver == "550.54.14"
    assert any("nvidia-smi did not answer" in n for n in h.notes)


def test_wsl_uses_the_wsl_nvidia_smi() -> None:
    h = probe(profile("wsl2-nvidia"))
    assert h.nvidia_driver == "581.15"
    assert h.gpus[0].arch == "8.6"


def test_amd_gfx_target_from_kfd_topology() -> None:
    h = probe(profile("rocm72-rx7900"))
    assert h.rocm_version == "7.2.0"
    assert h.hip_runtime == "/opt/rocm/lib/libamdhip64.so.7"
    assert [g.arch for g in h.gpus_of("amd")] == ["gfx1100"]


@pytest.mark.parametrize(("version", "target"), [(90010, "gfx90a"), (110001, "gfx1101"),
                                                 (120001, "gfx1201"), (90402, "gfx942")])
def test_kfd_gfx_target_spelling(version: int, target: str) -> None:
    h = probe(linux({"/sys/class/kfd/kfd/topology/nodes/1/properties":
                     f"gfx_target_version {version}\n"}))
    assert [g.arch for g in h.gpus] == [target]


def test_mesa_drivers_without_matching_gpu_do_not_count() -> None:
    h = probe(linux({"/usr/lib/x86_64-linux-gnu/libvulkan.so.1": "",
                     "/usr/share/vulkan/icd.d/radeon_icd.x86_64.json": "{}",
                     "/usr/share/vulkan/icd.d/intel_icd.x86_64.json": "{}"}))
    assert h.vulkan_loader is not None
    assert h.vulkan_gpu is None


def test_vulkaninfo_is_trusted_over_manifests() -> None:
    h = probe(profile("lavapipe-only-vm"))
    assert h.vulkan_gpu is None


def test_vk_driver_files_override() -> None:
    h = probe(linux({"/usr/lib64/libvulkan.so.1": ""},
                    env={"VK_DRIVER_FILES": "/opt/x/nvidia_icd.json:/opt/y/lvp_icd.json"}))
    assert [(i.name, i.cpu) for i in h.vulkan_icds] == [("nvidia_icd", False),
                                                        ("lvp_icd", True)]


def test_intel_gpu_level_zero_and_openvino() -> None:
    h = probe(profile("intel-arc-oneapi"))
    assert [g.vendor for g in h.gpus] == ["intel"]
    assert h.level_zero is not None
    assert h.openvino == "/opt/intel/openvino_2026.2.0/runtime/lib/intel64/libopenvino_c.so"
    assert h.opencl_icds == ("intel.icd",)


def test_ascend_driver() -> None:
    h = probe(profile("openeuler-ascend-910b"))
    assert h.ascend_driver == "24.1.rc2"
    assert h.distro == "openeuler"


def test_arm_core_named_by_archspec() -> None:
    h = probe(profile("graviton-arm64"))
    assert h.cpu.uarch == "neoverse_v1"
    assert h.cpu.level == "armv8.2-a"
    assert {"neon", "dotprod", "i8mm", "sve"} <= h.cpu.features


def test_s390x_level_from_machine_type() -> None:
    h = probe(profile("s390x-z15"))
    assert (h.arch, h.cpu.level, h.cpu.features) == ("s390x", "z15", frozenset({"vxe"}))


def test_android_from_termux() -> None:
    h = probe(profile("android-termux"))
    assert (h.os, h.os_version, h.libc) == ("android", "34", "bionic")
    assert {"neon", "dotprod", "i8mm", "sve"} <= h.cpu.features


def test_rosetta_shell_reports_the_native_arch() -> None:
    h = probe(profile("rosetta-shell-m1"))
    assert (h.arch, h.process_arch, h.emulation) == ("aarch64", "x86_64", "rosetta")
    assert h.can_emulate_x86_64


def test_apple_silicon_without_rosetta_cannot_emulate() -> None:
    src = profile("apple-silicon-m2")
    bare = FixtureSource(name="x", description="", system_name="Darwin", machine_name="arm64",
                         commands=src.commands)
    h = probe(bare)
    assert not h.can_emulate_x86_64


def test_windows_on_arm_x64_process_sees_the_native_arch() -> None:
    src = profile("windows-arm64-adreno")
    emulated = FixtureSource(name="x", description="", system_name="Windows",
                             machine_name="AMD64", environ=src.environ, files=src.files,
                             commands=src.commands)
    h = probe(emulated)
    assert (h.arch, h.process_arch, h.emulation) == ("aarch64", "x86_64",
                                                     "windows-x64-emulation")
    assert h.os_name == "Windows 11 (10.0.26100)"
    assert h.can_emulate_x86_64


def test_windows_prefers_the_discrete_gpu_for_vulkan() -> None:
    h = probe(profile("windows-x64-rtx-driver581"))
    assert h.vulkan_gpu == "NVIDIA GeForce RTX 4070"
    assert h.nvidia_driver == "581.15"


def test_fixture_source_directories() -> None:
    src = linux({"/a/b/c.txt": "x", "/a/d": ""})
    assert src.listdir("/a") == ("b", "d")
    assert src.exists("/a/b") and not src.exists("/a/x")
    assert src.read("/a/b/c.txt") == "x" and src.read("/nope") is None
    assert src.tool(["nvidia-smi"]) is None


def test_profile_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("system: Linux\nmachin: x86_64\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad\.yaml: unknown keys"):
        load_profile(bad)


def test_host_json_round_trip_keys() -> None:
    data = probe(profile("ubuntu-cuda13-rtx4090")).to_json()
    assert data["cpu"]["level"] == "x86-64-v4"
    assert data["gpus"][0]["arch"] == "8.9"


def test_openvino_from_pip_is_found_by_its_versioned_name(tmp_path: Path) -> None:
    """pip's openvino wheel ships only libopenvino_c.so.2621: on the library path or in the
    active virtual environment, it counts (as ember's backend finds it)."""
    venv = "/home/u/.venvs/ai"
    libs = f"{venv}/lib/python3.12/site-packages/openvino/libs"
    text = ("system: Linux\nmachine: x86_64\n"
            f"env:\n  VIRTUAL_ENV: {venv}\n"
            f"files:\n  {libs}/libopenvino_c.so.2621: ''\n  {libs}/libopenvino.so.2621: ''\n")
    (tmp_path / "pip.yaml").write_text(text)
    assert probe(load_profile(tmp_path / "pip.yaml")).openvino == f"{libs}/libopenvino_c.so.2621"
    (tmp_path / "ldpath.yaml").write_text(text.replace(f"VIRTUAL_ENV: {venv}",
                                                       f"LD_LIBRARY_PATH: /x:{libs}"))
    assert probe(load_profile(tmp_path / "ldpath.yaml")).openvino == (
        f"{libs}/libopenvino_c.so.2621")
    (tmp_path / "none.yaml").write_text(text.replace(f"VIRTUAL_ENV: {venv}", "X: y"))
    assert probe(load_profile(tmp_path / "none.yaml")).openvino is None
