#!/usr/bin/env bash
# Build the peer, llama.cpp through llama-cpp-python 0.3.36, once, into a cached virtual
# environment, and print that environment's python.
#
# The tests need it for one thing: llama.cpp's own quantizer, which makes the SmolLM2 variants
# (F32 ... Q6_K) that the committed references were produced from (`scripts/models.py
# quantize` checks each file's sha256 against tests/runtime/data/models.json). Quantization
# uses ggml's reference code, so a portable build (no -march=native, no tools) gives the same
# bytes on any x86-64 or arm64 host and builds in a few minutes; the benchmarks and the
# reference outputs use the native build described in bench/bench_cpu.py and
# scripts/make_references.py instead.
#
# Cache: $EMBER_PEER_CACHE (default ~/.cache/ember/peer), keyed by version, flags and Python
# version. The wheel is built into a temporary directory and renamed into place; the venv is
# complete only once its stamp file exists, so an interrupted run is redone, never half-used.
# A lock serialises concurrent runs.
set -euo pipefail

VERSION=0.3.36
CMAKE_FLAGS="-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF"
PY=${PYTHON:-python3}

pyver=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
key=$(printf '%s|%s|%s|%s' "$VERSION" "$CMAKE_FLAGS" "$pyver" "$(uname -m)" | sha256sum | cut -c1-12)
cache=${EMBER_PEER_CACHE:-$HOME/.cache/ember/peer}
wheels=$cache/wheels-$key
venv=$cache/venv-$key
mkdir -p "$cache"

exec 9>"$cache/.lock"
flock 9

if [[ ! -f "$venv/.complete" ]]; then
  rm -rf "$venv"
  if ! compgen -G "$wheels/llama_cpp_python-$VERSION-*.whl" >/dev/null; then
    tmp=$(mktemp -d "$cache/.build-XXXXXX")
    trap 'rm -rf "$tmp"' EXIT
    echo "peer: building llama-cpp-python $VERSION ($CMAKE_FLAGS); a few minutes" >&2
    # --no-cache-dir: pip's wheel cache is keyed by the sdist alone, so it could hand back a
    # wheel built earlier with other CMAKE_ARGS
    if ! CMAKE_ARGS="$CMAKE_FLAGS" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
        "$PY" -m pip wheel --no-deps --no-cache-dir --disable-pip-version-check -q \
        --no-binary llama-cpp-python -w "$tmp/wheels" "llama-cpp-python==$VERSION" \
        >"$tmp/build.log" 2>&1; then
      tail -n 40 "$tmp/build.log" >&2
      echo "peer: building llama-cpp-python $VERSION failed (log above); it needs cmake, g++" \
           "and PyPI (apt-get install cmake g++)" >&2
      exit 1
    fi
    rm -rf "$wheels"
    mv "$tmp/wheels" "$wheels"
  fi
  "$PY" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "$wheels"/*.whl "gguf==0.19.0" >&2
  "$venv/bin/python" -c 'import llama_cpp, gguf' >&2
  touch "$venv/.complete"
fi
echo "$venv/bin/python"
