#!/usr/bin/env bash
# Build the server peer, llama.cpp's own llama-server, from the sources vendored in the
# llama-cpp-python 0.3.36 sdist (the same llama.cpp as scripts/peer.sh and peer_vulkan.sh), once,
# into a cache, and print the path of its llama-server. bench/bench_server.py runs it against
# ember-server on the same model, threads and requests.
#
# The build is CPU only with native tuning (GGML_NATIVE=ON, as the CPU peer of
# bench/bench_cpu.py), static, and needs no network beyond PyPI: HTTPS support (OpenSSL), the
# prebuilt web UI (downloaded from Hugging Face at build time by default) and the npm UI build
# are off, so the server answers the API and serves a placeholder page at /. LLAMA_CURL is no
# longer an option of this llama.cpp (it is deprecated and ignored), so it is not passed.
#
# The sdist is kept in the cache ($cache/sdist-$VERSION), checked against its pinned sha256, so
# that a rebuild with other flags downloads nothing. peer.sh builds through `pip wheel`, which
# fetches the sdist itself, so the two cannot share more than the version, the cache directory
# and the lock convention without changing peer.sh.
#
# Cache: $EMBER_PEER_CACHE (default ~/.cache/ember/peer)/server-<key>, the key covering the
# version, the flags, the architecture and the CPU model (a native build may not run on another
# CPU); complete once its stamp file exists, so an interrupted build is redone, never half-used.
# A lock serialises runs. Parallelism: $EMBER_PEER_JOBS (default nproc).
# Usage: scripts/peer_server.sh   (prints the llama-server path; the build log goes to stderr on
# failure). Needs cmake, ninja-build, g++ and PyPI.
set -euo pipefail

VERSION=0.3.36
SDIST_SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
CMAKE_FLAGS="-DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF"
PY=${PYTHON:-python3}
JOBS=${EMBER_PEER_JOBS:-$(nproc)}

for tool in cmake ninja g++ sha256sum flock; do
  command -v "$tool" >/dev/null || {
    echo "peer_server: $tool is missing (scripts/apt-packages.txt: cmake ninja-build g++)" >&2
    exit 5
  }
done

cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo 2>/dev/null | head -n1 || true)
key=$(printf '%s|%s|%s|%s' "$VERSION" "$CMAKE_FLAGS" "$(uname -m)" "$cpu" | sha256sum | cut -c1-12)
cache=${EMBER_PEER_CACHE:-$HOME/.cache/ember/peer}
dir=$cache/server-$key
sdist=$cache/sdist-$VERSION/llama_cpp_python-$VERSION.tar.gz
mkdir -p "$cache"
exec 9>"$cache/.lock-server"
flock 9

if [[ ! -f "$dir/.complete" ]]; then
  rm -rf "$dir"
  tmp=$(mktemp -d "$cache/.server-XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  if [[ ! -f "$sdist" ]] || [[ "$(sha256sum "$sdist" | cut -d' ' -f1)" != "$SDIST_SHA256" ]]; then
    echo "peer_server: downloading the llama-cpp-python $VERSION sdist" >&2
    "$PY" -m pip download -q --disable-pip-version-check --no-deps --no-binary :all: \
      -d "$tmp/sdist" "llama-cpp-python==$VERSION" >&2
    got=$(sha256sum "$tmp/sdist/llama_cpp_python-$VERSION.tar.gz" | cut -d' ' -f1)
    if [[ "$got" != "$SDIST_SHA256" ]]; then
      echo "peer_server: the sdist has sha256 $got, not the pinned $SDIST_SHA256: refusing it" >&2
      exit 12
    fi
    mkdir -p "$(dirname "$sdist")"
    mv "$tmp/sdist/llama_cpp_python-$VERSION.tar.gz" "$sdist.part"
    mv "$sdist.part" "$sdist"
  fi
  tar -xzf "$sdist" -C "$tmp"
  src=$tmp/llama_cpp_python-$VERSION/vendor/llama.cpp
  echo "peer_server: building llama-server (CPU, native; several minutes)" >&2
  # shellcheck disable=SC2086 # CMAKE_FLAGS is a list of flags
  if ! { cmake -S "$src" -B "$tmp/build" -G Ninja $CMAKE_FLAGS &&
         cmake --build "$tmp/build" --target llama-server -j "$JOBS"; } >"$tmp/build.log" 2>&1; then
    tail -n 40 "$tmp/build.log" >&2
    echo "peer_server: the build failed (log above)" >&2
    exit 6
  fi
  mkdir -p "$tmp/out"
  cp "$tmp/build/bin/llama-server" "$tmp/out/"
  "$tmp/out/llama-server" --version >"$tmp/out/version.txt" 2>&1 || true
  mv "$tmp/out" "$dir"
  touch "$dir/.complete"
fi
echo "$dir/llama-server"
