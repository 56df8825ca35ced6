#!/usr/bin/env bash
# Build the Vulkan peer, llama.cpp's own Vulkan backend (ggml-vulkan) from the sources vendored
# in the llama-cpp-python 0.3.36 sdist, once, into a cache, and print the path of its
# llama-bench. bench/bench_backends.py --peer-vulkan runs it on the same device as ember's
# Vulkan backend (lavapipe here).
#
# Why the headers come from elsewhere: ggml-vulkan.cpp needs the VK_EXT_layer_settings
# declarations of Vulkan-Headers / Vulkan-Hpp 1.3.261 or newer (vk::LayerSettingEXT), and
# Debian 12's libvulkan-dev is 1.3.239; ggml-vulkan also wants SPIRV-Headers with its CMake
# package file. Debian 13's libvulkan-dev 1.4.309 (vulkan_core.h and vulkan.hpp) and
# spirv-headers 1.4.309 are downloaded from the Debian archive, pinned by sha256, and only
# their headers are used (unpacked with dpkg-deb into the cache, nothing is installed). The loader that runs the peer stays Debian 12's libvulkan1 (the API version the
# peer asks for at run time is what lavapipe offers), and the shaders are compiled with Debian
# 12's glslc.
#
# Cache: $EMBER_PEER_CACHE (default ~/.cache/ember/peer)/vulkan-<key>; complete once its stamp
# file exists, so an interrupted build is redone, never half-used. A lock serialises runs.
# Usage: scripts/peer_vulkan.sh   (prints the llama-bench path; the build log goes to stderr
# on failure). Needs cmake, ninja-build, g++, glslc, libvulkan1, dpkg-deb and PyPI + Debian.
set -euo pipefail

VERSION=0.3.36
POOL=https://deb.debian.org/debian/pool/main
DEBS="$POOL/v/vulkan-loader/libvulkan-dev_1.4.309.0-1_amd64.deb 8d329d465e16168afff58b1bd0dd6db46aac2cc3f56054a481b25a04e90b345a
$POOL/s/spirv-headers/spirv-headers_1.6.1+1.4.309.0-1_all.deb dc18db866d63680351c40ac6b6bece34cb52da64a7799ce1cc4f16f6bff4d064"
CMAKE_FLAGS="-DCMAKE_BUILD_TYPE=Release -DGGML_VULKAN=ON -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_TOOLS=ON -DBUILD_SHARED_LIBS=OFF"
PY=${PYTHON:-python3}

for tool in cmake ninja g++ glslc dpkg-deb curl; do
  command -v "$tool" >/dev/null || {
    echo "peer_vulkan: $tool is missing (scripts/apt-packages.txt: cmake ninja-build g++ glslc)" >&2
    exit 5
  }
done

key=$(printf '%s|%s|%s|%s' "$VERSION" "$CMAKE_FLAGS" "$DEBS" "$(uname -m)" | sha256sum | cut -c1-12)
cache=${EMBER_PEER_CACHE:-$HOME/.cache/ember/peer}
dir=$cache/vulkan-$key
mkdir -p "$cache"
exec 9>"$cache/.lock-vulkan"
flock 9

if [[ ! -f "$dir/.complete" ]]; then
  rm -rf "$dir"
  tmp=$(mktemp -d "$cache/.vulkan-XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  while read -r url sha; do
    echo "peer_vulkan: headers from $url" >&2
    curl -fsSL --retry 3 -o "$tmp/headers.deb" "$url"
    got=$(sha256sum "$tmp/headers.deb" | cut -d' ' -f1)
    if [[ "$got" != "$sha" ]]; then
      echo "peer_vulkan: $url has sha256 $got, not the pinned $sha: refusing it" >&2
      exit 12
    fi
    dpkg-deb -x "$tmp/headers.deb" "$tmp/headers"
  done <<<"$DEBS"
  echo "peer_vulkan: llama.cpp from the llama-cpp-python $VERSION sdist" >&2
  "$PY" -m pip download -q --disable-pip-version-check --no-deps --no-binary :all: \
    -d "$tmp/sdist" "llama-cpp-python==$VERSION" >&2
  tar -xzf "$tmp"/sdist/llama_cpp_python-"$VERSION".tar.gz -C "$tmp"
  src=$tmp/llama_cpp_python-$VERSION/vendor/llama.cpp
  echo "peer_vulkan: building ggml-vulkan and llama-bench (its shaders take a while)" >&2
  # shellcheck disable=SC2086 # CMAKE_FLAGS is a list of flags
  if ! { cmake -S "$src" -B "$tmp/build" -G Ninja $CMAKE_FLAGS \
           -DVulkan_INCLUDE_DIR="$tmp/headers/usr/include" \
           -DSPIRV-Headers_DIR="$tmp/headers/usr/share/cmake/SPIRV-Headers" \
           -DCMAKE_CXX_FLAGS="-I$tmp/headers/usr/include" &&
         cmake --build "$tmp/build" --target llama-bench -j "$(nproc)"; } >"$tmp/build.log" 2>&1; then
    tail -n 40 "$tmp/build.log" >&2
    echo "peer_vulkan: the build failed (log above)" >&2
    exit 6
  fi
  mkdir -p "$tmp/out"
  cp "$tmp/build/bin/llama-bench" "$tmp/out/"
  mv "$tmp/out" "$dir"
  touch "$dir/.complete"
fi
echo "$dir/llama-bench"
