"""Conan 2 recipe of ember's prebuilt binaries (one package per os, arch, build_type, backend).

ember is not compiled by Conan: kiln builds every matrix entry, verifies it, and packages a
release archive; ``kiln publish --to conan://REMOTE`` unpacks each archive and runs

    conan export-pkg recipes/conanfile.py --name ember --version 0.0.<N> \
        -s os=Linux -s arch=x86_64 -s build_type=Release -o "ember/*:backend=cpu" \
        -c user.ember:prebuilt=<unpacked archive>

then uploads. ``package()`` copies the header, the shared library (with its import library on
Windows), the tools and the licenses (ember's, and civetweb's and cJSON's, which ember-server
is built from) out of that tree, after checking that its
``BUILD-INFO.json`` names the os and arch the settings say.

Consumers::

    [requires]
    ember/0.0.<N>
    [options]
    ember/*:backend=cu124        # or cpu (default), cu133, vulkan, rocm7.2, ...
    [generators]
    CMakeDeps
    CMakeToolchain

    find_package(ember REQUIRED)
    target_link_libraries(app PRIVATE ember::ember)

No ``compiler`` setting: ember's API is C, so one binary serves every compiler of a platform.
Only Release binaries are published; a Debug consumer asks for them with
``-s ember/*:build_type=Release``. The backend values are the variant names of the wheel
indexes (``kiln/package/wheel.py``: ``variant``); a unit test keeps the two lists in step.
"""

import json
import os

from conan import ConanFile
from conan.errors import ConanException, ConanInvalidConfiguration
from conan.tools.files import copy

# Conan's names -> the matrix's (BUILD-INFO.json of the archive).
CONAN_OS = {"Linux": "linux", "Macos": "macos", "Windows": "windows"}
CONAN_ARCH = {"x86_64": "x86_64", "armv8": "aarch64", "s390x": "s390x"}
BACKENDS = ["cpu", "cu124", "cu133", "rocm7.2", "vulkan", "opencl", "openvino", "sycl",
            "syclfp16", "cann", "kleidiai"]


class EmberConan(ConanFile):
    name = "ember"
    description = "ember: a small C11 inference runtime for GGUF language models (prebuilt)"
    license = "MIT"
    topics = ("llm", "gguf", "inference", "prebuilt")
    package_type = "shared-library"
    settings = "os", "arch", "build_type"
    # Conan reads these class attributes (its documented recipe form).
    options = {"backend": BACKENDS}  # noqa: RUF012
    default_options = {"backend": "cpu"}  # noqa: RUF012

    def validate(self):
        if str(self.settings.os) not in CONAN_OS:
            raise ConanInvalidConfiguration(
                f"ember is published for {', '.join(CONAN_OS)}, not {self.settings.os}")
        if str(self.settings.arch) not in CONAN_ARCH:
            raise ConanInvalidConfiguration(
                f"ember is published for {', '.join(CONAN_ARCH)}, not {self.settings.arch}")

    def _prebuilt(self):
        folder = self.conf.get("user.ember:prebuilt", check_type=str)
        if not folder or not os.path.isdir(folder):
            raise ConanException(
                "ember's recipe packages prebuilt binaries: pass the unpacked release archive "
                "with -c user.ember:prebuilt=DIR (kiln publish --to conan://REMOTE does this)")
        return folder

    def _check_build_info(self, folder):
        path = os.path.join(folder, "BUILD-INFO.json")
        if not os.path.isfile(path):
            raise ConanException(f"{folder} has no BUILD-INFO.json: is it a kiln archive?")
        with open(path, encoding="utf-8") as fh:
            info = json.load(fh)
        want = (CONAN_OS[str(self.settings.os)], CONAN_ARCH[str(self.settings.arch)])
        have = (info.get("os"), info.get("arch"))
        if have != want:
            raise ConanException(
                f"{path} is a build for {have[0]} {have[1]}, but the settings ask for "
                f"{want[0]} {want[1]}")

    def package(self):
        src = self._prebuilt()
        self._check_build_info(src)
        pkg = self.package_folder
        copy(self, "ember.h", os.path.join(src, "include"), os.path.join(pkg, "include"))
        copy(self, "LICENSE", src, os.path.join(pkg, "licenses"))
        # civetweb's and cJSON's, which ember-server is built from
        copy(self, "*", os.path.join(src, "share", "ember", "licenses"),
             os.path.join(pkg, "licenses"))
        copy(self, "ember-*", os.path.join(src, "bin"), os.path.join(pkg, "bin"))
        lib, dst_lib = os.path.join(src, "lib"), os.path.join(pkg, "lib")
        if self.settings.os == "Windows":
            copy(self, "ember.dll", os.path.join(src, "bin"), os.path.join(pkg, "bin"))
            copy(self, "libember.dll.a", lib, dst_lib)
            copy(self, "ember.lib", lib, dst_lib)
        elif self.settings.os == "Macos":
            copy(self, "libember*.dylib", lib, dst_lib)
        else:
            copy(self, "libember.so*", lib, dst_lib)

    def package_info(self):
        self.cpp_info.libs = ["ember"]
        self.cpp_info.set_property("cmake_file_name", "ember")
        self.cpp_info.set_property("cmake_target_name", "ember::ember")
        self.cpp_info.set_property("pkg_config_name", "ember")
        if self.settings.os == "Linux":
            self.cpp_info.system_libs = ["m", "pthread"]
        self.cpp_info.bindirs = ["bin"]
