"""Ranking: the machine profiles of fixtures/hosts/ against a release of the real matrix.

Each row names a profile, the build that must be chosen (``None``: nothing fits), the order
of the first fallbacks, and phrases the explanation must contain. The release is made from
``matrix/`` itself, so a change of floors or driver minimums there shows up here.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from kiln.errors import InstallError
from kiln.install.host import Host, load_profile, probe
from kiln.install.installer import Choice, rank, require_choice
from kiln.matrix import load_matrix
from kiln.package.records import AssetRecord, Tool, Verification
from kiln.release.assemble import disabled_builds
from kiln.release.index import matrix_index
from kiln.release.manifest import MissingBuild, ReleaseAsset, ReleaseManifest

REPO = Path(__file__).resolve().parents[2]
HOSTS = Path(__file__).parent / "fixtures" / "hosts"


def matrix_manifest(*, missing: tuple[str, ...] = (), tag: str = "b42") -> ReleaseManifest:
    """A release of every enabled entry of matrix/, as ``kiln release`` would describe it."""
    matrix = load_matrix(REPO / "matrix")
    assets = []
    for e in matrix.enabled:
        if e.id in missing:
            continue
        name = f"ember-{tag}-bin-{e.id}.{e.archive}"
        record = AssetRecord(
            name=name, kind="archive", entry_id=e.id, os=e.os, arch=e.arch,
            backend=e.backend, backend_version=e.backend_version, libc=e.libc,
            libc_floor=e.libc_floor, min_os=e.min_os, cpu_baseline=e.cpu_baseline,
            cpu_dispatch=e.cpu_dispatch, gpu_targets=e.gpu_targets, min_driver=e.min_driver,
            build_number=int(tag[1:]), commit="0" * 40, size=1000, sha256="0" * 64,
            unpacked_size=4000,
            toolchain=(Tool(name="zig", version="0.17.1"),),
            verification=Verification(method=e.verify, ok=True, detail="ok"))
        assets.append(ReleaseAsset(record=record, url=f"https://example.invalid/{name}"))
    return ReleaseManifest(
        project="ember", tag=tag, build_number=int(tag[1:]), commit="0" * 40,
        date="2026-01-01T00:00:00Z", base_url="https://example.invalid/",
        assets=tuple(assets),
        missing=tuple(MissingBuild(entry_id=m, reason="no archive was built")
                      for m in missing),
        disabled=disabled_builds(matrix))


def placement() -> dict[str, tuple[str | None, str]]:
    """Entry id -> (distribution, scope), as the release index records them."""
    index = matrix_index(matrix_manifest(), load_matrix(REPO / "matrix"))
    return {a.record.entry_id: (a.distro, a.scope) for a in index.releases[0].assets}


def host(name: str) -> Host:
    return probe(load_profile(HOSTS / f"{name}.yaml"))


def choose(name: str, **kw: str) -> Choice:
    return rank(matrix_manifest(), host(name), placement=placement(), **kw)


# profile, chosen entry (None: nothing fits), first fallbacks in order, phrases of the reasons
TABLE: list[tuple[str, str | None, tuple[str, ...], tuple[str, ...]]] = [
    ("ubuntu-cuda13-rtx4090", "ubuntu-cuda-13.3-x64",
     ("ubuntu-cuda-12.4-x64", "ubuntu-vulkan-x64", "ubuntu-x64"),
     ("choice: ubuntu-cuda-13.3-x64: driver 580.65.06 >= 580.65 needed by CUDA 13.3",
      "RTX 4090 sm_89 covered")),
    ("ubuntu-cuda12-driver550", "ubuntu-cuda-12.4-x64", ("ubuntu-x64",),
     ("driver 550.90.07 >= 550.54 needed by CUDA 12.4",
      "ubuntu-cuda-13.3-x64: driver 550.90.07 < 580.65 needed by CUDA 13.3")),
    ("pascal-gtx1080-driver580", "ubuntu-cuda-12.4-x64", ("ubuntu-x64",),
     ("ubuntu-cuda-13.3-x64: GPU NVIDIA GeForce GTX 1080 (sm_61) has no device code in this "
      "build (sm_75..sm_120 + PTX compute_120)", "GTX 1080 sm_61 covered")),
    ("wsl2-nvidia", "ubuntu-cuda-13.3-x64", ("ubuntu-cuda-12.4-x64", "ubuntu-x64"),
     ("driver 581.15 >= 580.65 needed by CUDA 13.3",)),
    ("centos7-old-glibc", "ubuntu-x64", (),
     ("glibc 2.17 >= 2.17", "openeuler-x64: made for openeuler; this machine runs centos")),
    ("rhel6-too-old-glibc", None, (),
     ("ubuntu-x64: needs glibc >= 2.17; this machine has glibc 2.12",)),
    ("alpine-musl", None, (),
     ("ubuntu-x64: needs glibc >= 2.17; this machine's C library is musl 1.2.5",)),
    ("no-avx2-sandybridge", "ubuntu-x64", (),
     ("x86-64-v2 CPU, SSE4.2 kernels (no AVX2)",)),
    ("fedora-avx512", "ubuntu-x64", (),
     ("x86-64-v4 CPU, AVX-512+VNNI kernels", "general Linux build",
      "openeuler-x64: made for openeuler; this machine runs fedora")),
    ("debian12-x64", "ubuntu-x64", (),
     ("choice: ubuntu-x64: CPU build, general Linux build, glibc 2.36 >= 2.17",
      "openeuler-x64: made for openeuler; this machine runs debian (the general Linux build "
      "is preferred; --backend openeuler-x64 installs it anyway)")),
    ("rocm72-rx7900", "ubuntu-rocm-7.2-x64", ("ubuntu-vulkan-x64", "ubuntu-x64"),
     ("ROCm 7.2.0 and AMD GPU gfx1100",)),
    ("vulkan-only-radeon", "ubuntu-vulkan-x64", ("ubuntu-x64",),
     ("Vulkan on AMD GPU (amdgpu) (radeon_icd.x86_64)",
      "ubuntu-rocm-7.2-x64: no ROCm installation found")),
    ("lavapipe-only-vm", "ubuntu-x64", (),
     ("ubuntu-vulkan-x64: Vulkan drivers only for the CPU",)),
    ("intel-arc-oneapi", "ubuntu-sycl-fp32-x64",
     ("ubuntu-sycl-fp16-x64", "ubuntu-openvino-2026.2-x64", "ubuntu-vulkan-x64", "ubuntu-x64"),
     ("Intel GPU (i915) with Level Zero",)),
    ("apple-silicon-m2", "macos-arm64", ("macos-x64",),
     ("apple-m1 CPU", "fallback: macos-x64", "macos-arm64-kleidiai: KleidiAI",
      "tracking: https://github.com/ggml-org/llama.cpp/pull/21259")),
    ("rosetta-shell-m1", "macos-arm64", ("macos-x64",),
     ("this shell runs x86_64 under Rosetta 2", "choice: macos-arm64")),
    ("intel-mac-ventura", "macos-x64", (), ("x86-64-v3 CPU, AVX2 kernels",)),
    ("old-intel-mac-mojave", None, (),
     ("macos-x64: needs macOS 10.15 or newer; this machine runs macOS 10.14.6",)),
    ("windows-arm64-adreno", "win-opencl-adreno-arm64",
     ("win-cpu-arm64", "win-vulkan-x64", "win-cpu-x64"),
     ("Adreno(TM) X1-85 GPU with an OpenCL driver",)),
    ("windows-x64-rtx-driver581", "win-cuda-13.3-x64",
     ("win-cuda-12.4-x64", "win-vulkan-x64", "win-cpu-x64"),
     ("driver 581.15 >= 580.88 needed by CUDA 13.3",)),
    ("s390x-z15", "ubuntu-s390x", (), ("z15 CPU",)),
    ("openeuler-x64", "openeuler-x64", ("ubuntu-x64",),
     ("made for openeuler, glibc 2.34 >= 2.28",)),
    ("openeuler-ascend-910b", "openeuler-arm64", ("ubuntu-arm64",),
     ("disabled: openeuler-ascend-910b-arm64: The CANN toolkit",
      "https://github.com/ggml-org/llama.cpp/pull/17192")),
    ("android-termux", "android-arm64", (), ("Android 14 (API 34)", "static executable")),
    ("graviton-arm64", "ubuntu-arm64", (), ("dotprod kernels",)),
]


def test_every_profile_is_in_the_table() -> None:
    assert sorted(p.stem for p in HOSTS.glob("*.yaml")) == sorted(row[0] for row in TABLE)
    assert len(TABLE) >= 15


@pytest.mark.parametrize(("profile", "want", "fallbacks", "phrases"), TABLE,
                         ids=[row[0] for row in TABLE])
def test_profile_choice(profile: str, want: str | None, fallbacks: tuple[str, ...],
                        phrases: tuple[str, ...]) -> None:
    choice = choose(profile)
    text = "\n".join(choice.explain())
    got = choice.chosen.entry_id if choice.chosen else None
    assert got == want, text
    rest = [c.entry_id for c in choice.candidates[1:]]
    assert rest[:len(fallbacks)] == list(fallbacks), text
    for phrase in phrases:
        assert phrase in text, f"{phrase!r} not in:\n{text}"
    if want is None:
        with pytest.raises(InstallError, match="no build of b42 runs on this machine"):
            require_choice(choice)
    else:
        assert choice.summary().startswith(f"{want}: ")


def test_summary_names_reason_and_fallbacks() -> None:
    s = choose("ubuntu-cuda13-rtx4090").summary()
    assert s.startswith("ubuntu-cuda-13.3-x64: driver 580.65.06 >= 580.65 needed by CUDA 13.3")
    assert s.endswith("fallback ubuntu-cuda-12.4-x64, ubuntu-vulkan-x64, ubuntu-x64")


def test_missing_entry_is_skipped_with_its_reason() -> None:
    m = matrix_manifest(missing=("ubuntu-cuda-13.3-x64",))
    choice = rank(m, host("ubuntu-cuda13-rtx4090"))
    assert choice.chosen is not None
    assert choice.chosen.entry_id == "ubuntu-cuda-12.4-x64"
    assert "not in release: ubuntu-cuda-13.3-x64: no archive was built" in choice.explain()


@pytest.mark.parametrize("spelling", ["vulkan", "vulkan-1.3", "vulkan@1.3",
                                      "ubuntu-vulkan-x64"])
def test_backend_forces_one_and_turns_runtime_check_into_a_note(spelling: str) -> None:
    choice = choose("lavapipe-only-vm", backend=spelling)
    assert [c.entry_id for c in choice.candidates] == ["ubuntu-vulkan-x64"]
    best = choice.chosen
    assert best is not None
    assert best.why == f"forced by --backend {spelling}"
    assert any("Vulkan drivers only for the CPU" in n for n in best.notes)


def test_backend_cannot_force_a_build_for_another_platform() -> None:
    choice = choose("alpine-musl", backend="cuda")
    assert choice.chosen is None
    with pytest.raises(InstallError, match="--backend cuda"):
        require_choice(choice)


def test_backend_unknown_lists_what_this_platform_has() -> None:
    choice = choose("apple-silicon-m2", backend="cuda")
    with pytest.raises(InstallError) as info:
        require_choice(choice)
    assert "macos-arm64" in (info.value.hint or "")


def test_emulated_builds_come_after_native_ones() -> None:
    choice = choose("windows-arm64-adreno")
    flags = [c.emulated for c in choice.candidates]
    assert flags == sorted(flags)
    assert [c.entry_id for c in choice.candidates if c.emulated] == [
        "win-vulkan-x64", "win-cpu-x64"]


def test_windows_10_on_arm_cannot_run_x64_builds() -> None:
    h = replace(host("windows-arm64-adreno"), can_emulate_x86_64=False)
    choice = rank(matrix_manifest(), h)
    assert all(c.record.arch == "aarch64" for c in choice.candidates)


def test_cuda_without_compute_capability_checks_driver_only() -> None:
    h = replace(host("ubuntu-cuda13-rtx4090"), gpus=())
    choice = rank(matrix_manifest(), h)
    assert choice.chosen is not None and choice.chosen.entry_id == "ubuntu-cuda-13.3-x64"
    assert any("compute capability unknown" in n for n in choice.chosen.notes)


def test_rocm_of_another_major_version_is_rejected() -> None:
    h = replace(host("rocm72-rx7900"), rocm_version="6.4.1")
    choice = rank(matrix_manifest(), h)
    assert choice.chosen is not None and choice.chosen.entry_id == "ubuntu-vulkan-x64"
    assert ("not usable: ubuntu-rocm-7.2-x64: built for ROCm 7.2; this machine has ROCm 6.4.1 "
            "(install ROCm 7.x >= 7.2)") in choice.explain()


def test_json_form_lists_every_entry() -> None:
    data = choose("ubuntu-cuda13-rtx4090").to_json()
    seen = {c["entry_id"] for c in data["candidates"]} | {r["entry_id"] for r in data["rejected"]}
    assert len(seen) == 27
    assert data["choice"] == "ubuntu-cuda-13.3-x64"


def test_docs_state_the_matrix_driver_minimums() -> None:
    """docs/install.md quotes the CUDA driver minimums and glibc floors; keep them in step."""
    text = " ".join((REPO / "docs" / "install.md").read_text(encoding="utf-8").split())
    matrix = load_matrix(REPO / "matrix")
    for e in matrix.enabled:
        if e.backend == "cuda" and e.os == "linux":
            assert f"{e.min_driver} for CUDA {e.backend_version}" in text, e.id
        if e.libc_floor:
            family = e.id.split("-")[0]
            assert (f"{e.libc_floor} for `{family}-*`" in text
                    or f"{e.libc_floor} for `{family}-{e.backend}-*`" in text), e.id


def test_a_distributions_own_build_is_installed_when_asked_for_by_id() -> None:
    choice = choose("debian12-x64", backend="openeuler-x64")
    assert choice.chosen is not None and choice.chosen.entry_id == "openeuler-x64"
    assert "installed because --backend named it" in choice.chosen.why


def test_without_an_index_the_entry_id_names_the_distribution() -> None:
    """A manifest ranked without placement (no index) keeps the old rule: every build is
    general, a build named after the host's distribution is preferred."""
    choice = rank(matrix_manifest(), host("openeuler-x64"))
    assert choice.chosen is not None and choice.chosen.entry_id == "openeuler-x64"
